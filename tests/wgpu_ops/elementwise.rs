//! fill, copy, add, add_inplace, scale_inplace: exact (one f32 operation per element).

use crate::{assert_close, both, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[
    ("fill", elementwise_parity),
    ("copy", elementwise_parity),
    ("add", elementwise_parity),
    ("add_inplace", elementwise_parity),
    ("scale_inplace", elementwise_parity),
];

#[test]
fn elementwise_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(11);
    // n not a multiple of the workgroup, and a tail left untouched (p.n < len)
    let (len, n) = (70_001, 69_999);
    let a = crate::common::randv(&mut rng, len, 1.0);
    let b = crate::common::randv(&mut rng, len, 1.0);
    let p = ElementwiseParams::new(n).unwrap();
    let (ca, ga) = both(g, &a);
    let (cb, gb) = both(g, &b);
    let (mut cout, mut gout) = both(g, &b);
    c.fill(&mut cout, 2.5, p).unwrap();
    g.fill(&mut gout, 2.5, p).unwrap();
    assert_close("fill", &g.download(&gout).unwrap(), &cout, 0.0, 0.0);
    c.copy(&mut cout, &ca, p).unwrap();
    g.copy(&mut gout, &ga, p).unwrap();
    assert_close("copy", &g.download(&gout).unwrap(), &cout, 0.0, 0.0);
    c.add(&mut cout, &ca, &cb, p).unwrap();
    g.add(&mut gout, &ga, &gb, p).unwrap();
    assert_close("add", &g.download(&gout).unwrap(), &cout, 0.0, 0.0);
    c.add_inplace(&mut cout, &cb, p).unwrap();
    g.add_inplace(&mut gout, &gb, p).unwrap();
    assert_close("add_inplace", &g.download(&gout).unwrap(), &cout, 0.0, 0.0);
    c.scale_inplace(&mut cout, -0.75, p).unwrap();
    g.scale_inplace(&mut gout, -0.75, p).unwrap();
    assert_close("scale_inplace", &g.download(&gout).unwrap(), &cout, 0.0, 0.0);
    // many small dispatches in one batch, then one read: program order holds across the batch
    let mut x = g.upload(&[1.0; 8]).unwrap();
    for _ in 0..3000 {
        g.add_inplace(&mut x, &ga, ElementwiseParams::new(8).unwrap()).unwrap();
    }
    let want: Vec<f32> = (0..8).map(|i| (0..3000).fold(1.0f32, |acc, _| acc + a[i])).collect();
    assert_close("3000 batched add_inplace", &g.download(&x).unwrap(), &want, 0.0, 0.0);
    // a host write between dispatches is ordered after the earlier ones and before the later ones
    let mut y = g.upload(&[0.0; 4]).unwrap();
    g.fill(&mut y, 1.0, ElementwiseParams::new(4).unwrap()).unwrap();
    g.write(&mut y, &[5.0, 5.0]).unwrap();
    g.scale_inplace(&mut y, 2.0, ElementwiseParams::new(4).unwrap()).unwrap();
    assert_close("write ordering", &g.download(&y).unwrap(), &[10.0, 10.0, 2.0, 2.0], 0.0, 0.0);
}

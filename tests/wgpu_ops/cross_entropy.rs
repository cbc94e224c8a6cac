//! cross_entropy_fwd/bwd against the CPU backend, with rows without a target (negative ids).
//!
//! Tolerances: lse and losses 2e-5 absolute + 1e-6 relative (the CPU sums exp sequentially in
//! f32, the GPU in a tree after per-invocation online sums, or for v <= SMALL_V one online pass
//! per row; the difference grows like sqrt(v) ulp); dlogits 1e-6 absolute + 1e-5 relative.
//! Shapes on both sides of SMALL_V (1024 and 1025) run both forward kernels.

use crate::{assert_close, both, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[("cross_entropy_fwd", cross_entropy_parity), ("cross_entropy_bwd", cross_entropy_parity)];

#[test]
fn cross_entropy_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(51);
    for &(n, v) in &[(1usize, 1usize), (5, 7), (37, 64), (9, 1000), (4, 5003), (300, 33), (70, 1024), (3, 1025)] {
        let what = |s: &str| format!("{s} n={n} v={v}");
        let p = CrossEntropyParams { n: n as u32, v: v as u32 };
        let (cl, gl) = both(g, &crate::common::randv(&mut rng, n * v, 3.0));
        let targets: Vec<i32> = (0..n).map(|i| if i % 4 == 3 { -1 - (i as i32 % 3) * 50 } else { rng.below(v as u64) as i32 }).collect();
        let gt = g.upload_ids(&targets).unwrap();
        let (mut closs, mut gloss) = both(g, &vec![7.0; n]);
        let (mut clse, mut glse) = both(g, &vec![7.0; n]);
        c.cross_entropy_fwd(&mut closs, &mut clse, &cl, &targets, p).unwrap();
        g.cross_entropy_fwd(&mut gloss, &mut glse, &gl, &gt, p).unwrap();
        assert_close(&what("cross_entropy_fwd lse"), &g.download(&glse).unwrap(), &clse, 2e-5, 1e-6);
        assert_close(&what("cross_entropy_fwd losses"), &g.download(&gloss).unwrap(), &closs, 2e-5, 1e-6);

        let (cdl, gdl) = both(g, &crate::common::randv(&mut rng, n, 1.0));
        let glse = g.upload(&clse).unwrap();
        let (mut cd, mut gd) = both(g, &vec![7.0; n * v]);
        c.cross_entropy_bwd(&mut cd, &cdl, &cl, &clse, &targets, p).unwrap();
        g.cross_entropy_bwd(&mut gd, &gdl, &gl, &glse, &gt, p).unwrap();
        assert_close(&what("cross_entropy_bwd"), &g.download(&gd).unwrap(), &cd, 1e-6, 1e-5);
    }
    // a target outside the vocabulary: NaN loss and gradient row (the CPU rejects it)
    let p = CrossEntropyParams { n: 2, v: 3 };
    let logits = g.upload(&[0.0, 1.0, 2.0, 0.0, 1.0, 2.0]).unwrap();
    let t = g.upload_ids(&[2, 3]).unwrap();
    let (mut loss, mut lse) = (g.alloc(2).unwrap(), g.alloc(2).unwrap());
    g.cross_entropy_fwd(&mut loss, &mut lse, &logits, &t, p).unwrap();
    let l = g.download(&loss).unwrap();
    assert!(l[0].is_finite() && l[1].is_nan(), "{l:?}");
    let mut d = g.alloc(6).unwrap();
    g.cross_entropy_bwd(&mut d, &g.upload(&[1.0, 1.0]).unwrap(), &logits, &lse, &t, p).unwrap();
    let d = g.download(&d).unwrap();
    assert!(d[..3].iter().all(|x| x.is_finite()) && d[3..].iter().all(|x| x.is_nan()), "{d:?}");
}

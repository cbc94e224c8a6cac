//! fill, copy, add, add_inplace, scale_inplace: exact (one f32 operation per element). Sizes
//! cover the float4 body and the scalar tail (n % 4 != 0) and several blocks.

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, &str)] = &[
    ("fill", "elementwise_parity"),
    ("copy", "elementwise_parity"),
    ("add", "elementwise_parity"),
    ("add_inplace", "elementwise_parity"),
    ("scale_inplace", "elementwise_parity"),
];

const SIZES: &[usize] = &[1, 3, 4, 1027, 70_001, 1_000_003];

fn run<B: Backend>(be: &B, n: usize) -> Outputs {
    let mut rng = Rng::new(n as u64);
    let p = ElementwiseParams::new(n);
    let a = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let b = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    // one extra element beyond n: must stay untouched
    let mut out = be.upload(&vec![9.0; n + 1]).unwrap();
    be.fill(&mut out, -2.5, p).unwrap();
    let filled = dl(be, &out);
    be.copy(&mut out, &a, p).unwrap();
    let copied = dl(be, &out);
    be.add(&mut out, &a, &b, p).unwrap();
    let added = dl(be, &out);
    be.add_inplace(&mut out, &b, p).unwrap();
    be.scale_inplace(&mut out, 0.75, p).unwrap();
    vec![("fill", filled), ("copy", copied), ("add", added), ("add_inplace+scale", dl(be, &out))]
}

#[test]
fn elementwise_parity() {
    parity!(SIZES, (0.0, 0.0), run);
}

//! cross_entropy_fwd and cross_entropy_bwd (rows without a target included): within 2e-5 absolute
//! plus 2e-5 relative; in bf16 storage (bf16 logits and dlogits, f32 losses and lse) within
//! `bf16_tol` of that.

use crate::{bf16_tol, cin, cout, dl, parity, parity_bf16, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[
    ("cross_entropy_fwd", cross_entropy_parity),
    ("cross_entropy_bwd", cross_entropy_parity),
    ("cross_entropy_fwd_bf16", cross_entropy_bf16_parity),
    ("cross_entropy_bwd_bf16", cross_entropy_bf16_parity),
];

const CASES: &[(usize, usize)] = &[(1, 1), (6, 37), (33, 5000), (4, 50257)];

fn run<B: Backend>(be: &B, (n, v): (usize, usize)) -> Outputs {
    let mut rng = Rng::new(29);
    let p = CrossEntropyParams { n: n as u32, v: v as u32 };
    let logits = cin(be, &crate::common::randv(&mut rng, n * v, 3.0));
    let targets: Vec<i32> = (0..n).map(|i| if i % 5 == 3 { -1 } else { rng.below(v as u64) as i32 }).collect();
    let targets = be.upload_ids(&targets).unwrap();
    let (mut losses, mut lse) = (be.alloc(n).unwrap(), be.alloc(n).unwrap());
    be.cross_entropy_fwd(&mut losses, &mut lse, &logits, &targets, p).unwrap();
    let dl_in = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let mut dlogits = cin(be, &vec![3.0; n * v]);
    be.cross_entropy_bwd(&mut dlogits, &dl_in, &logits, &lse, &targets, p).unwrap();
    vec![("losses", dl(be, &losses)), ("lse", dl(be, &lse)), ("dlogits", cout(be, &mut dlogits))]
}

#[test]
fn cross_entropy_parity() {
    parity!(CASES, (2e-5, 2e-5), run);
}

#[test]
fn cross_entropy_bf16_parity() {
    parity_bf16!(CASES, bf16_tol((2e-5, 2e-5)), run);
}

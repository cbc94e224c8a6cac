//! sample: greedy, temperature, top-k, top-p and both, with ties and NaN: the same token ids as
//! the CPU (exact). The CUDA masses are tree sums, so a draw could differ only within rounding of
//! a threshold; the seeded cases here do not sit on one. In bf16 storage the logits are rounded to
//! bf16 on both backends (more ties: the order "logit descending, index ascending" settles them)
//! and the ids must still agree exactly.

use crate::{cin, dl_ids, parity, parity_bf16, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[("sample", sample_parity), ("sample_bf16", sample_bf16_parity)];

const CASES: &[(usize, usize, f32, u32, f32, u32)] = &[
    (8, 50, 0.0, 0, 1.0, 0),
    (16, 1000, 1.0, 0, 1.0, 1),
    (16, 1000, 0.7, 40, 1.0, 2),
    (16, 1000, 1.3, 0, 0.9, 3),
    (16, 5000, 1.0, 50, 0.8, 4),
    (3, 50257, 1.0, 0, 1.0, 5),
    (4, 7, 1.0, 1, 1.0, 6),
];

fn run<B: Backend>(be: &B, (n, v, temperature, top_k, top_p, step): (usize, usize, f32, u32, f32, u32)) -> Outputs {
    let mut rng = Rng::new(41 + v as u64);
    let mut logits = crate::common::randv(&mut rng, n * v, 2.0);
    // ties: row 0 has its maximum twice
    if v > 3 {
        logits[1] = 10.0;
        logits[3] = 10.0;
    }
    let logits = cin(be, &logits);
    // the step sits at index 1 of its buffer
    let steps = be.upload_ids(&[-7, step as i32]).unwrap();
    let p = SampleParams { n: n as u32, v: v as u32, temperature, top_k, top_p, seed_lo: 1234, seed_hi: 5, step_at: 1 };
    let mut out = be.alloc_ids(n).unwrap();
    be.sample(&mut out, &logits, &steps, p).unwrap();
    vec![("tokens", dl_ids(be, &out))]
}

#[test]
fn sample_parity() {
    parity!(CASES, (0.0, 0.0), run);
}

#[test]
fn sample_bf16_parity() {
    parity_bf16!(CASES, (0.0, 0.0), run);
}

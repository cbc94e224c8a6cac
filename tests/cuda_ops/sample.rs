//! sample: greedy, temperature, top-k, top-p and both, at small vocabularies and at GPT-2's
//! (50257) and Qwen2's (151936), with ties (odd rows are quantised to steps of 0.5, row 0 has its
//! maximum twice) and a NaN: the same token ids as the CPU, exactly. The kernel repeats the CPU's
//! arithmetic in single rounded operations and sums the top-p masses as integers, so nothing
//! depends on the order of a reduction. In bf16 storage the logits are rounded to bf16 on both
//! backends (more ties) and the ids must still agree exactly.

use crate::{cin, dl_ids, parity, parity_bf16, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[("sample", sample_parity), ("sample_bf16", sample_bf16_parity)];

/// (rows, vocabulary, temperature, top_k, top_p, step)
const CASES: &[(usize, usize, f32, u32, f32, u32)] = &[
    (8, 50, 0.0, 0, 1.0, 0),
    (16, 1000, 1.0, 0, 1.0, 1),
    (16, 1000, 0.7, 40, 1.0, 2),
    (16, 1000, 1.3, 0, 0.9, 3),
    (16, 5000, 1.0, 50, 0.8, 4),
    (16, 300, 2.0, 3, 0.3, 9),
    (4, 7, 1.0, 1, 1.0, 6),
    (4, 7, 1.0, 0, 0.0, 10),
    (3, 50257, 0.0, 0, 1.0, 11),
    (3, 50257, 1.0, 0, 1.0, 5),
    (3, 50257, 0.8, 50, 1.0, 7),
    (3, 50257, 1.0, 0, 0.9, 8),
    (2, 151936, 0.9, 40, 0.95, 12),
    (2, 151936, 1.1, 0, 0.7, 13),
];

fn run<B: Backend>(be: &B, (n, v, temperature, top_k, top_p, step): (usize, usize, f32, u32, f32, u32)) -> Outputs {
    let mut rng = Rng::new(41 + v as u64);
    let mut logits = crate::common::randv(&mut rng, n * v, 2.0);
    // ties: odd rows in steps of 0.5, row 0 has its maximum twice and a NaN
    for (i, x) in logits.iter_mut().enumerate() {
        if (i / v) % 2 == 1 {
            *x = (*x * 2.0).round() * 0.5;
        }
    }
    if v > 3 {
        logits[1] = 10.0;
        logits[3] = 10.0;
        logits[2] = f32::NAN;
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

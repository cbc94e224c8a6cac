//! embedding_fwd (overwrite and accumulate): exact; embedding_bwd: the same token order on both
//! backends (a fixed order per column on CUDA), within 1e-6 + 1e-6 relative. In bf16 storage the
//! forward is exact (one f32 addition or a copy, rounded the same way); the backward rounds
//! `dtable` to bf16 after each token's addition on CUDA (each rounding of a partial sum s errs by at
//! most 2^-8 |s| <= 2^-8 S, S = |dtable0| + sum of the |dout| added into that element) where the
//! reference rounds once, so element (id, j) hit by r tokens is within (r + 1) 2^-8 S (1.01 for the
//! f32 sums) + 1e-6.

use crate::{cin, cout, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[
    ("embedding_fwd", embedding_parity),
    ("embedding_bwd", embedding_parity),
    ("embedding_fwd_bf16", embedding_bf16_parity),
    ("embedding_bwd_bf16", embedding_bf16_parity),
];

const CASES: &[(usize, usize, usize)] = &[(1, 8, 3), (37, 48, 11), (300, 257, 50)];

fn ids_of(n: usize, vocab: usize) -> Vec<i32> {
    let mut rng = Rng::new(11);
    (0..n).map(|_| rng.below(vocab as u64) as i32).collect()
}

fn run<B: Backend>(be: &B, (n, c, vocab): (usize, usize, usize)) -> Outputs {
    let mut rng = Rng::new(12);
    let ids = be.upload_ids(&ids_of(n, vocab)).unwrap();
    let table = cin(be, &crate::common::randv(&mut rng, vocab * c, 1.0));
    let mut out = cin(be, &crate::common::randv(&mut rng, n * c, 1.0));
    let mut p = EmbeddingParams { n: n as u32, c: c as u32, accumulate: 1, vocab: vocab as u32 };
    be.embedding_fwd(&mut out, &ids, &table, p).unwrap();
    let acc = cout(be, &mut out);
    p.accumulate = 0;
    be.embedding_fwd(&mut out, &ids, &table, p).unwrap();
    let over = cout(be, &mut out);
    let mut dout = cin(be, &crate::common::randv(&mut rng, n * c, 1.0));
    let mut dtable = cin(be, &crate::common::randv(&mut rng, vocab * c, 1.0));
    let dtable0 = cout(be, &mut dtable);
    be.embedding_bwd(&mut dtable, &dout, &ids, p).unwrap();
    vec![("fwd accumulate", acc), ("fwd", over), ("bwd", cout(be, &mut dtable)), ("dtable0", dtable0), ("dout", cout(be, &mut dout))]
}

#[test]
fn embedding_parity() {
    parity!(CASES, (1e-6, 1e-6), run);
}

#[test]
fn embedding_bf16_parity() {
    let Some(g) = crate::gpu_bf16() else { return };
    for &(n, c, vocab) in CASES {
        let (want, got) = crate::bf16_runs_on(g, (n, c, vocab), run, run);
        for i in [0, 1, 3, 4] {
            crate::assert_close(&format!("bf16 {:?} {}", (n, c, vocab), want[i].0), &got[i].1, &want[i].1, 0.0, 0.0);
        }
        // the bound of the header, per table element
        let ids = ids_of(n, vocab);
        let (dtable0, dout) = (&want[3].1, &want[4].1);
        let mut s: Vec<f32> = dtable0.iter().map(|x| x.abs()).collect();
        let mut hits = vec![0.0f32; vocab * c];
        for (i, &id) in ids.iter().enumerate() {
            for j in 0..c {
                s[id as usize * c + j] += dout[i * c + j].abs();
                hits[id as usize * c + j] += 1.0;
            }
        }
        let bound: Vec<f32> = s.iter().zip(&hits).map(|(s, r)| 1.01 * (r + 1.0) * s / 256.0 + 1e-6).collect();
        crate::common::assert_within_on("cuda", &format!("bf16 {:?} bwd", (n, c, vocab)), &got[2].1, &want[2].1, &bound);
    }
}

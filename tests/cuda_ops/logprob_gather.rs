//! logprob_gather_fwd and logprob_gather_bwd (chunked vocabulary, temperature, rows without a
//! target): within 5e-5 absolute + 1e-4 relative (cuBLAS tiles, tree-reduced chunk statistics).
//! bf16 storage (`h`, `w`, `dh`, `dw` bf16): see `logprob_gather_bf16_parity`.

use crate::{bf16_tol, cin, cout, dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[
    ("logprob_gather_fwd", logprob_gather_parity),
    ("logprob_gather_bwd", logprob_gather_parity),
    ("logprob_gather_fwd_bf16", logprob_gather_bf16_parity),
    ("logprob_gather_bwd_bf16", logprob_gather_bf16_parity),
];

type Case = (usize, usize, usize, usize, f32);

const CASES: &[Case] = &[(1, 4, 3, 4096, 1.0), (9, 32, 1000, 128, 0.7), (40, 64, 5003, 1024, 1.0), (70, 48, 300, 300, 1.5)];

/// Outputs 0 .. 5: logp, entropy, lse, dh, dw; then the inputs the bf16 bound needs (dlogp,
/// dentropy, h, w as the op read them).
fn run<B: Backend>(be: &B, (n, c, v, chunk, temp): Case) -> Outputs {
    let mut rng = Rng::new(53);
    let mut h = cin(be, &crate::common::randv(&mut rng, n * c, 1.0));
    let mut w = cin(be, &crate::common::randv(&mut rng, v * c, 0.3));
    let targets: Vec<i32> = (0..n).map(|i| if i % 4 == 2 { -1 } else { rng.below(v as u64) as i32 }).collect();
    let targets = be.upload_ids(&targets).unwrap();
    let p = LogprobParams::new(n, c, v).chunk(chunk).temperature(temp);
    let (mut logp, mut ent, mut lse) = (be.alloc(n).unwrap(), be.alloc(n).unwrap(), be.alloc(n).unwrap());
    be.logprob_gather_fwd(&mut logp, &mut ent, &mut lse, &h, &targets, &w, p).unwrap();
    let dlogp = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let dent = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let mut dh = cin(be, &vec![4.0; n * c]);
    let mut dw = cin(be, &crate::common::randv(&mut rng, v * c, 1.0));
    be.logprob_gather_bwd(&mut dh, &mut dw, &dlogp, &dent, &h, &targets, &lse, &ent, &w, p).unwrap();
    vec![
        ("logp", dl(be, &logp)),
        ("entropy", dl(be, &ent)),
        ("lse", dl(be, &lse)),
        ("dh", cout(be, &mut dh)),
        ("dw", cout(be, &mut dw)),
        ("dlogp", dl(be, &dlogp)),
        ("dentropy", dl(be, &dent)),
        ("h", cout(be, &mut h)),
        ("w", cout(be, &mut w)),
    ]
}

#[test]
fn logprob_gather_parity() {
    parity!(CASES, (5e-5, 1e-4), run);
}

/// bf16 storage: the logits tile is f32 from bf16 operands (cuBLAS, f32 accumulation), so the
/// forward's f32 outputs keep the f32 tolerance (`bf16_tol` of it is used, as for every op). The
/// backward rounds each dlogits tile to bf16 (relative error <= 2^-8, nearest even) before its two
/// products, where the reference multiplies the f32 dlogits. With
/// `dz_ij = dlogp_i (onehot - p_ij) - dentropy_i p_ij (lp_ij + H_i)`,
/// `sum_j |dz_ij| <= R_i = 2 |dlogp_i| + 2 |dentropy_i| H_i` (as `sum_j p_ij |lp_ij| = H_i`), so
/// before the final rounding of dh and dw, on top of the f32 tolerance:
/// `|err dh_ic| <= 2^-8 / T max_j |w_jc| R_i` and `|err dw_jc| <= 2^-8 / T max_i |h_ic| sum_i R_i`;
/// the final rounding of each to bf16 adds one bf16 ulp (as in `bf16_tol`: the sum scaled by
/// 1 + 2^-8, plus `BF16_ULP |want|`).
#[test]
fn logprob_gather_bf16_parity() {
    let Some(g) = crate::gpu_bf16() else { return };
    let k = 1.0 + 1.0 / 256.0;
    let (atol, rtol) = bf16_tol((5e-5, 1e-4));
    for &case in CASES {
        let (n, c, v, _, temp) = case;
        let (want, got) = crate::bf16_runs_on(g, case, run, run);
        for i in [0, 1, 2, 5, 6, 7, 8] {
            crate::assert_close(&format!("bf16 {case:?} {}", want[i].0), &got[i].1, &want[i].1, atol, rtol);
        }
        let (ent, dlogp, dent, h, w) = (&want[1].1, &want[5].1, &want[6].1, &want[7].1, &want[8].1);
        let r: Vec<f32> = (0..n).map(|i| 2.0 * dlogp[i].abs() + 2.0 * dent[i].abs() * ent[i].abs()).collect();
        let col_max = |x: &[f32], rows: usize, j: usize| (0..rows).map(|row| x[row * c + j].abs()).fold(0.0f32, f32::max);
        let w_max: Vec<f32> = (0..c).map(|j| col_max(w, v, j)).collect();
        let h_max: Vec<f32> = (0..c).map(|j| col_max(h, n, j)).collect();
        let r_sum: f32 = r.iter().sum();
        let bound = |want: &[f32], extra: &dyn Fn(usize) -> f32| -> Vec<f32> {
            want.iter().enumerate().map(|(e, x)| k * (atol + 1e-4 * x.abs() + extra(e) / (256.0 * temp)) + crate::BF16_ULP * x.abs()).collect()
        };
        let dh_bound = bound(&want[3].1, &|e| w_max[e % c] * r[e / c]);
        crate::common::assert_within_on("cuda", &format!("bf16 {case:?} dh"), &got[3].1, &want[3].1, &dh_bound);
        let dw_bound = bound(&want[4].1, &|e| h_max[e % c] * r_sum);
        crate::common::assert_within_on("cuda", &format!("bf16 {case:?} dw"), &got[4].1, &want[4].1, &dw_bound);
    }
}

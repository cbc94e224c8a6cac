//! LayerNorm and RMSNorm forward and backward: within 2e-5 absolute + 2e-5 relative (f32 tree
//! reductions on the GPU, f64 on the CPU; parameter gradients summed over rows in another order);
//! in bf16 storage (mean and rstd f32, everything else bf16) within `bf16_tol` of that.

use crate::{bf16_tol, calloc, cin, cout, dl, parity, parity_bf16, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] =
    &[("layernorm_fwd", norm_parity), ("layernorm_bwd", norm_parity), ("rmsnorm_fwd", norm_parity), ("rmsnorm_bwd", norm_parity),
      ("layernorm_fwd_bf16", norm_bf16_parity), ("layernorm_bwd_bf16", norm_bf16_parity), ("rmsnorm_fwd_bf16", norm_bf16_parity),
      ("rmsnorm_bwd_bf16", norm_bf16_parity)];

/// (n, c): c across the 16-byte loads (multiples of 4 and of 8 and neither); the last two cut
/// the parameter gradients' rows into several chunks, the last one shorter (two-stage sums).
const CASES: &[(usize, usize)] = &[(1, 1), (3, 7), (5, 12), (64, 768), (130, 1000), (9, 4096), (203, 40), (250, 70)];

fn run<B: Backend>(be: &B, (n, c): (usize, usize)) -> Outputs {
    let mut rng = Rng::new(5 + c as u64);
    let r = |rng: &mut Rng, len, s| cin(be, &crate::common::randv(rng, len, s));
    let p = NormParams { n: n as u32, c: c as u32, eps: 1e-5, _pad: 0 };
    let x = cin(be, &crate::common::randv(&mut rng, n * c, 2.0).iter().map(|v| v + 0.5).collect::<Vec<_>>());
    let (w, b, dy) = (r(&mut rng, c, 1.0), r(&mut rng, c, 1.0), r(&mut rng, n * c, 1.0));
    let (mut out, mut mean, mut rstd) = (calloc(be, n * c), be.alloc(n).unwrap(), be.alloc(n).unwrap());
    be.layernorm_fwd(&mut out, &mut mean, &mut rstd, &x, &w, &b, p).unwrap();
    let (ln_out, ln_mean, ln_rstd) = (cout(be, &mut out), dl(be, &mean), dl(be, &rstd));
    let (mut dx, mut dw, mut db) = (calloc(be, n * c), r(&mut rng, c, 1.0), r(&mut rng, c, 1.0));
    be.layernorm_bwd(&mut dx, &mut dw, &mut db, &dy, &x, &mean, &rstd, &w, p).unwrap();
    let (ln_dx, ln_dw, ln_db) = (cout(be, &mut dx), cout(be, &mut dw), cout(be, &mut db));
    be.rmsnorm_fwd(&mut out, &mut rstd, &x, &w, p).unwrap();
    let (rms_out, rms_rstd) = (cout(be, &mut out), dl(be, &rstd));
    // a fresh dw: the one above may differ by an ulp between the backends in bf16
    let mut dw = r(&mut rng, c, 1.0);
    be.rmsnorm_bwd(&mut dx, &mut dw, &dy, &x, &rstd, &w, p).unwrap();
    vec![
        ("ln out", ln_out),
        ("ln mean", ln_mean),
        ("ln rstd", ln_rstd),
        ("ln dx", ln_dx),
        ("ln dw", ln_dw),
        ("ln db", ln_db),
        ("rms out", rms_out),
        ("rms rstd", rms_rstd),
        ("rms dx", cout(be, &mut dx)),
        ("rms dw", cout(be, &mut dw)),
    ]
}

/// The last two shapes run the parameter gradients' column sums in several chunks (the last one
/// shorter), the first four in one.
#[test]
fn norm_cases_cover_several_row_chunks() {
    crate::matmul::assert_uneven_row_chunks(&CASES[6..]);
    assert!(CASES[..4].iter().all(|&(n, c)| rlhf::backend::cuda::column_sum::row_chunks(n, c).chunks == 1));
}

#[test]
fn norm_parity() {
    parity!(CASES, (2e-5, 2e-5), run);
}

#[test]
fn norm_bf16_parity() {
    parity_bf16!(CASES, bf16_tol((2e-5, 2e-5)), run);
}

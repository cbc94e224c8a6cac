//! matmul (every transpose, batched with broadcast strides, accumulate, alpha) through cuBLAS and
//! through the SIMT kernel, bias_add and bias_bwd: within 1e-4 absolute + 1e-4 relative (another
//! summation order over k); cuBLAS with tf32 / bf16 / f16 operands within the bound stated at
//! `matmul_fast_precisions_parity`. The SIMT matmul is batch-invariant: a row's bits do not depend on
//! how many rows are multiplied with it. bf16 storage: see `matmul_bf16_parity`; bias ops within
//! `bf16_tol` of their f32 tolerance. The matmuls with fused epilogues (`matmul_bias`,
//! `matmul_bias_gelu`, `matmul_gelu_bwd`: cuBLASLt on CUDA, the unfused ops on the CPU) within
//! 1e-4 absolute + 1e-4 relative, `bf16_tol` of that in bf16 storage.

use crate::{bf16_tol, calloc, cin, cout, dl, parity, parity_bf16, Outputs};
use rlhf::backend::ops::*;
use rlhf::backend::cuda::epilogue::EpilogueLevel;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[
    ("matmul", matmul_parity),
    ("matmul", simt_matmul_parity_and_batch_invariance),
    ("matmul", matmul_fast_precisions_parity),
    ("bias_add", bias_parity),
    ("bias_bwd", bias_parity),
    ("matmul_bf16", matmul_bf16_parity),
    ("bias_add_bf16", bias_bf16_parity),
    ("bias_bwd_bf16", bias_bf16_parity),
    ("matmul", matmul_epilogues_parity),
    ("matmul_bias", matmul_epilogues_parity),
    ("matmul_bias_gelu", matmul_epilogues_parity),
    ("matmul_gelu_bwd", matmul_epilogues_parity),
    ("matmul_bf16", matmul_epilogues_bf16_parity),
    ("matmul_bias_bf16", matmul_epilogues_bf16_parity),
    ("matmul_bias_gelu_bf16", matmul_epilogues_bf16_parity),
    ("matmul_gelu_bwd_bf16", matmul_epilogues_bf16_parity),
];

type Case = (usize, usize, usize, usize, bool, bool, bool);

/// A case's a, b, initial out and params: a broadcast over the batch (stride 0) when batch > 1,
/// b batched, alpha 0.5.
fn inputs((m, n, k, batch, ta, tb, acc): Case) -> (Vec<f32>, Vec<f32>, Vec<f32>, MatmulParams) {
    let mut rng = Rng::new((m * 31 + n * 7 + k) as u64);
    let a = crate::common::randv(&mut rng, m * k, 1.0);
    let b = crate::common::randv(&mut rng, batch * k * n, 1.0);
    let out = crate::common::randv(&mut rng, batch * m * n, 1.0);
    let mut p = MatmulParams::new(m, n, k, ta, tb).accumulate(acc).batched(batch, 0, k * n, m * n);
    p.alpha = 0.5;
    (a, b, out, p)
}

fn run<B: Backend>(be: &B, case: Case) -> Outputs {
    let (a, b, out, p) = inputs(case);
    let mut out = be.upload(&out).unwrap();
    be.matmul(&mut out, &be.upload(&a).unwrap(), &be.upload(&b).unwrap(), p).unwrap();
    vec![("out", dl(be, &out))]
}

const CASES: &[Case] = &[
    (1, 1, 1, 1, false, false, false),
    (17, 33, 65, 1, false, false, false),
    (64, 48, 40, 3, true, false, true),
    (31, 70, 29, 2, false, true, false),
    (50, 20, 77, 1, true, true, true),
    (256, 300, 128, 2, false, true, true),
];

#[test]
fn matmul_parity() {
    parity!(CASES, (1e-4, 1e-4), run);
}

/// The SIMT backend (or `None`, having said why, when there is no CUDA device).
fn simt() -> Option<rlhf::backend::CudaBackend> {
    crate::gpu()?;
    Some(rlhf::backend::CudaBackend::with_matmul(0, true).unwrap())
}

#[test]
fn simt_matmul_parity_and_batch_invariance() {
    let Some(g) = simt() else { return };
    crate::compare(CASES, (1e-4, 1e-4), run, |_, c| run(&g, c));
    // row 5 of a 1 x k @ k x n product equals row 5 of the 77-row product, bit for bit
    let (m, n, k) = (77, 50, 300);
    let mut rng = Rng::new(9);
    let a = crate::common::randv(&mut rng, m * k, 1.0);
    let b = g.upload(&crate::common::randv(&mut rng, k * n, 1.0)).unwrap();
    let mut all = g.alloc(m * n).unwrap();
    g.matmul(&mut all, &g.upload(&a).unwrap(), &b, MatmulParams::new(m, n, k, false, false)).unwrap();
    let mut one = g.alloc(n).unwrap();
    g.matmul(&mut one, &g.upload(&a[5 * k..6 * k]).unwrap(), &b, MatmulParams::new(1, n, k, false, false)).unwrap();
    let all = dl(&g, &all);
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&dl(&g, &one)), bits(&all[5 * n..6 * n]), "SIMT matmul row depends on the batch");
}

/// `--matmul-precision tf32 | bf16 | f16` (cuBLAS `GemmStridedBatchedEx`, f32 A/B/C, compute
/// type `_FAST_TF32 | _FAST_16BF | _FAST_16F`) against the CPU's f32 product, per element within
/// tests/common `rounded_matmul_bound` with the format's stored mantissa bits (tf32 10, bf16 7,
/// f16 10): `(2u + u^2 + 2.1 k 2^-24) |alpha| sum_l |a_il||b_lj| + 2e-7 k |alpha| + 2^-22 |cpu|`,
/// u = 2^-bits (operands rounded to either neighbour, sums in f32 in any order). Each mode must
/// also really round: its mean error at least 4x that of the f32 sgemm path. The SIMT matmul
/// refuses every precision but f32.
#[test]
fn matmul_fast_precisions_parity() {
    let Some(f32_be) = crate::gpu() else { return };
    let cpu = rlhf::backend::CpuBackend::new();
    for prec in [MatmulPrecision::Tf32, MatmulPrecision::Bf16, MatmulPrecision::F16] {
        let mut g = rlhf::backend::CudaBackend::with_matmul(0, false).unwrap();
        if let Err(e) = g.set_matmul_precision(prec) {
            let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("SKIPPED cuda {prec} matmul (no cuBLAS?): {e}\n"));
            return;
        }
        assert_eq!(g.matmul_precision(), prec);
        assert!(g.device_description().contains(&format!("[matmul {prec}]")));
        let (mut err_fast, mut err_f32) = (0.0, 0.0);
        for &case in CASES {
            let (a, b, out0, p) = inputs(case);
            let want = &run(&cpu, case)[0].1;
            let abs = |x: &[f32]| x.iter().map(|v| v.abs()).collect::<Vec<_>>();
            let mut s = vec![0.0; out0.len()];
            cpu.matmul(&mut s, &abs(&a), &abs(&b), MatmulParams { alpha: 1.0, accumulate: 0, ..p }).unwrap();
            let bound = crate::common::rounded_matmul_bound(prec.mantissa_bits(), p.k as usize, p.alpha, &s, want);
            let got = &run(&g, case)[0].1;
            crate::common::assert_within_on("cuda", &format!("{prec} {case:?}"), got, want, &bound);
            err_fast += crate::common::mean_abs_diff(got, want);
            err_f32 += crate::common::mean_abs_diff(&run(f32_be, case)[0].1, want);
        }
        assert!(err_fast > 4.0 * err_f32, "{prec}: mean error {err_fast} vs f32's {err_f32}: the operands were not rounded");
    }
    let mut simt = rlhf::backend::CudaBackend::with_matmul(0, true).unwrap();
    let e = simt.set_matmul_precision(MatmulPrecision::F16).unwrap_err().to_string();
    assert!(e.contains("--matmul-precision f16") && e.contains("SIMT"), "{e}");
    assert!(simt.set_matmul_precision(MatmulPrecision::F32).is_ok());
}

fn run_bias<B: Backend>(be: &B, (n, c): (usize, usize)) -> Outputs {
    let mut rng = Rng::new(3);
    let p = BiasParams { n: n as u32, c: c as u32 };
    let mut out = cin(be, &crate::common::randv(&mut rng, n * c, 1.0));
    let bias = cin(be, &crate::common::randv(&mut rng, c, 1.0));
    be.bias_add(&mut out, &bias, p).unwrap();
    let added = cout(be, &mut out);
    let mut db = cin(be, &crate::common::randv(&mut rng, c, 1.0));
    let dout = cin(be, &crate::common::randv(&mut rng, n * c, 1.0));
    be.bias_bwd(&mut db, &dout, p).unwrap();
    vec![("bias_add", added), ("bias_bwd", cout(be, &mut db))]
}

/// (n, c) of the bias ops; from (300, 770) on bias_bwd cuts the rows into chunks (both stages of
/// the column sum run), the last two with a shorter last chunk.
const BIAS_CASES: &[(usize, usize)] = &[(1, 1), (5, 33), (300, 770), (203, 40), (250, 70)];

/// Each of `cases` runs a two-stage column sum in several chunks, the last chunk shorter.
pub fn assert_uneven_row_chunks(cases: &[(usize, usize)]) {
    use rlhf::backend::cuda::column_sum::row_chunks;
    for &(n, c) in cases {
        let r = row_chunks(n, c);
        let last = n - (r.chunks - 1) * r.rows;
        assert!(r.chunks >= 3 && last < r.rows, "[{n}, {c}]: {r:?} should be several chunks with a shorter last one");
    }
}

#[test]
fn bias_cases_cover_several_row_chunks() {
    assert_uneven_row_chunks(&BIAS_CASES[3..]);
    assert_eq!(rlhf::backend::cuda::column_sum::row_chunks(300, 770).chunks, 5);
}

#[test]
fn bias_parity() {
    parity!(BIAS_CASES, (2e-5, 2e-5), run_bias);
}

#[test]
fn bias_bf16_parity() {
    parity_bf16!(BIAS_CASES, bf16_tol((2e-5, 2e-5)), run_bias);
}

/// A case's product in the storage under test: bf16 operands and `out` (compute-typed), and the
/// same product into an f32 `out` (allowed from compute operands).
fn run_typed<B: Backend>(be: &B, case: Case) -> Outputs {
    let (a, b, out0, p) = inputs(case);
    let (a, b) = (cin(be, &a), cin(be, &b));
    let mut out = cin(be, &out0);
    be.matmul(&mut out, &a, &b, p).unwrap();
    let mut out_f32 = be.upload(&out0).unwrap();
    be.matmul(&mut out_f32, &a, &b, p).unwrap();
    vec![("out", cout(be, &mut out)), ("out f32", dl(be, &out_f32))]
}

/// bf16 storage through cuBLAS (`GemmStridedBatchedEx`, CUDA_R_16BF A and B, C bf16 or f32,
/// CUBLAS_COMPUTE_32F) and through the SIMT `matmul_bf16*` kernels, against the CPU's f32 product
/// of the same bf16 operands. The products of bf16 values are exact in f32, so only the two f32
/// sums differ: per element `rounded_matmul_bound` with no operand rounding (u = 2^-24) for the f32
/// `out`, plus one bf16 ulp of the rounded `out` (`BF16_ULP` |want|, the bound scaled by 1 + 2^-8).
#[test]
fn matmul_bf16_parity() {
    let Some(g) = crate::gpu_bf16() else { return };
    let mut simt = rlhf::backend::CudaBackend::with_matmul(0, true).unwrap();
    simt.set_compute_dtype(Dtype::Bf16).unwrap();
    let cpu = rlhf::backend::CpuBackend::new();
    for be in [g, &simt] {
        for &case in CASES {
            let (want, got) = crate::bf16_runs_on(be, case, run_typed, run_typed);
            // |a| and |b| of the bf16 operands (the rounded inputs both backends used)
            let (mut a, mut b, out0, p) = inputs(case);
            rlhf::backend::storage::round_bf16_slice(&mut a);
            rlhf::backend::storage::round_bf16_slice(&mut b);
            let abs = |x: &[f32]| x.iter().map(|v| v.abs()).collect::<Vec<_>>();
            let mut s = vec![0.0; out0.len()];
            cpu.matmul(&mut s, &abs(&a), &abs(&b), MatmulParams { alpha: 1.0, accumulate: 0, ..p }).unwrap();
            let what = format!("bf16 {} {case:?}", be.device_description());
            let f32_bound = crate::common::rounded_matmul_bound(24, p.k as usize, p.alpha, &s, &want[1].1);
            crate::common::assert_within_on("cuda", &format!("{what} out f32"), &got[1].1, &want[1].1, &f32_bound);
            let k = 1.0 + 1.0 / 256.0;
            let bound: Vec<f32> = crate::common::rounded_matmul_bound(24, p.k as usize, p.alpha, &s, &want[0].1)
                .iter()
                .zip(&want[0].1)
                .map(|(b, w)| b * k + crate::BF16_ULP * w.abs())
                .collect();
            crate::common::assert_within_on("cuda", &format!("{what} out bf16"), &got[0].1, &want[0].1, &bound);
        }
    }
    // --matmul-precision applies to f32 storage only
    let e = simt.set_matmul_precision(MatmulPrecision::Tf32).unwrap_err().to_string();
    assert!(e.contains("tf32"), "{e}");
    let mut cublas = rlhf::backend::CudaBackend::with_matmul(0, false).unwrap();
    cublas.set_compute_dtype(Dtype::Bf16).unwrap();
    if cublas.device_description().contains("cuBLAS") {
        assert!(cublas.set_matmul_precision(MatmulPrecision::Bf16).is_ok());
        let e = cublas.set_matmul_precision(MatmulPrecision::F16).unwrap_err().to_string();
        assert!(e.contains("already are bf16"), "{e}");
    }
}

/// m, n, k, trans_a, trans_b, and whether the bias product accumulates into `out`.
type FusedCase = (usize, usize, usize, bool, bool, bool);

/// Shapes cuBLASLt takes (leading dimensions that are multiples of 8) and some it may refuse
/// (which then run unfused: the results must agree either way).
const FUSED_CASES: &[FusedCase] = &[
    (17, 40, 65, false, false, false),
    (64, 96, 40, false, true, true),
    (48, 64, 32, true, false, true),
    (31, 70, 29, false, true, false),
    (256, 768, 128, false, true, true),
    (1, 8, 16, false, false, true),
];

/// Each fused matmul on one case (run with `RLHF_CUDA_EPILOGUES=all`'s level on CUDA) (alpha 0.5): the bias product (accumulating or not), the GELU
/// forward with and without a bias (activation and pre-activation), the GELU backward.
fn run_fused<B: Backend>(be: &B, (m, n, k, ta, tb, acc): FusedCase) -> Outputs {
    let mut rng = Rng::new((m * 13 + n * 5 + k) as u64);
    let mut input = |len: usize, scale: f32| cin(be, &crate::common::randv(&mut rng, len, scale));
    // b scaled by 1/sqrt(k): products of order 1, like a layer's
    let (a, b, bias, pre_in) = (input(m * k, 1.0), input(k * n, 1.0 / (k as f32).sqrt()), input(n, 1.0), input(m * n, 2.0));
    let mut out = input(m * n, 1.0);
    let mut p = MatmulParams::new(m, n, k, ta, tb);
    p.alpha = 0.5;
    be.matmul_bias(&mut out, &a, &b, &bias, p.accumulate(acc)).unwrap();
    let mut outs = vec![("bias", cout(be, &mut out))];
    for (bias, act_name, pre_name) in [(Some(&bias), "gelu", "pre"), (None, "gelu without bias", "pre without bias")] {
        let (mut act, mut pre) = (calloc(be, m * n), calloc(be, m * n));
        be.matmul_bias_gelu(&mut act, &mut pre, &a, &b, bias, p).unwrap();
        outs.extend([(act_name, cout(be, &mut act)), (pre_name, cout(be, &mut pre))]);
    }
    let (mut dpre, mut dact) = (calloc(be, m * n), calloc(be, m * n));
    be.matmul_gelu_bwd(&mut dpre, &mut dact, &a, &b, &pre_in, p).unwrap();
    outs.push(("gelu backward", cout(be, &mut dpre)));
    outs
}

/// After a run on `g`: with cuBLASLt there, some shapes must have run fused (else the test
/// compared the unfused ops with themselves).
fn assert_some_ran_fused(g: &rlhf::backend::CudaBackend) {
    let r = g.epilogue_report();
    eprintln!("cuBLASLt epilogues on {}: {r:?}", g.device_description());
    if g.device_description().contains("cuBLASLt") {
        assert!(r.fused > 0, "cuBLASLt is loaded but refused every epilogue: {r:?}");
    }
}

#[test]
fn matmul_epilogues_parity() {
    let Some(g) = crate::gpu() else { return };
    g.set_epilogues(EpilogueLevel::All);
    parity!(FUSED_CASES, (1e-4, 1e-4), run_fused);
    assert_some_ran_fused(g);
}

/// bf16 storage: fused, cuBLASLt rounds each output to bf16 once, as the reference does. A shape
/// it refuses runs unfused, which also rounds the product before the bias or GELU: one more bf16
/// ulp of a product of order 1 (under 1e-2 here) besides `bf16_tol` of the f32 tolerance.
#[test]
fn matmul_epilogues_bf16_parity() {
    let Some(g) = crate::gpu_bf16() else { return };
    g.set_epilogues(EpilogueLevel::All);
    parity_bf16!(FUSED_CASES, bf16_tol((1e-2, 1e-4)), run_fused);
    assert_some_ran_fused(g);
}

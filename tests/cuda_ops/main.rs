//! Every op of the op list on the CUDA backend against the CPU backend (the reference), with the
//! tolerance stated in each module. One module per op family (the names of `kernels/`); each lists
//! its ops and tests in `CHECKS`, and `every_op_has_a_cuda_kernel_and_parity_test` fails when an
//! op of the op list lacks a kernel or a parity test.
//!
//! Each test body is one function generic over the backend (`parity!`): it builds its inputs from
//! a seeded generator, runs the op, and returns the named outputs; the harness runs it on the CPU
//! and on CUDA and compares. Without a GPU driver they run on the CUDA emulator (tests/cuda_emu:
//! every kernel compiled for the CPU behind a stand-in libcuda.so); without NVRTC or a C++
//! compiler every test prints that it skipped, on stderr, or fails under `CI=true`.
//!
//! bf16 storage (`--precision bf16`): every op with compute-typed buffers also has a bf16 check
//! (a `("<op>_bf16", test)` entry in its module's `CHECKS`; `every_op_with_compute_buffers_has_a_bf16_parity_test`
//! fails when one is missing). The run functions allocate compute-typed buffers with [`cin`] /
//! [`calloc`] and read them with [`cout`]; in a bf16 run ([`compare_bf16`], `parity_bf16!`) CUDA
//! stores them in bf16, and the reference is the CPU op (f32) on the same bf16-rounded inputs with
//! each compute output rounded to bf16 once. Both compute in f32 from identical inputs, so their
//! f32 results differ by the op's f32 tolerance δ at most, and rounding each to bf16 adds at most
//! half an ulp on each side: one bf16 ulp, at most 2^-7 of the value (2^-8 at the top of a
//! binade), i.e. `δ (1 + 2^-8) + 2^-7 (1 + 2^-8) |want|` ([`BF16_ULP`] is that relative term).

#[path = "../common/mod.rs"]
#[macro_use]
mod common;

op_family_suites!();

use rlhf::backend::ops::{Backend, Dtype, Storage};
use rlhf::backend::storage::round_bf16_slice;
use rlhf::backend::CudaBackend;
use std::cell::Cell;
use std::io::Write;
use std::sync::OnceLock;

/// The process-wide CUDA backend, or `None` after a visible skip message.
pub fn gpu() -> Option<&'static CudaBackend> {
    static GPU: OnceLock<Option<CudaBackend>> = OnceLock::new();
    GPU.get_or_init(|| {
        let be = common::cuda_or_skip("cuda op tests")?;
        let _ = writeln!(std::io::stderr(), "cuda tests on {}", be.device_description());
        Some(be)
    })
    .as_ref()
}

/// The CUDA backend with bf16 compute storage, or `None` after a visible skip message (no device,
/// or one below sm_80).
pub fn gpu_bf16() -> Option<&'static CudaBackend> {
    static GPU: OnceLock<Option<CudaBackend>> = OnceLock::new();
    GPU.get_or_init(|| {
        gpu()?;
        let mut be = CudaBackend::new().unwrap();
        match be.set_compute_dtype(Dtype::Bf16) {
            Ok(()) => Some(be),
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "SKIPPED cuda bf16 op tests: {e}");
                None
            }
        }
    })
    .as_ref()
}

/// The relative term of the bf16 tolerance: one bf16 ulp, `2^-7 (1 + 2^-8)` of the value (see the
/// header).
pub const BF16_ULP: f32 = (1.0 + 1.0 / 256.0) / 128.0;

thread_local! {
    static BF16_RUN: Cell<bool> = const { Cell::new(false) };
}

/// A compute-typed buffer (`Storage::Compute`) holding `data`, rounded to bf16 in a bf16 run (on
/// both backends: the CPU reference then computes in f32 on the rounded values).
pub fn cin<B: Backend>(be: &B, data: &[f32]) -> B::Buf {
    let mut b = be.alloc_as(data.len(), Storage::Compute).unwrap();
    let mut v = data.to_vec();
    if BF16_RUN.with(Cell::get) {
        round_bf16_slice(&mut v);
    }
    be.write(&mut b, &v).unwrap();
    b
}

/// A zero-filled compute-typed buffer.
pub fn calloc<B: Backend>(be: &B, len: usize) -> B::Buf {
    be.alloc_as(len, Storage::Compute).unwrap()
}

/// Downloads a compute-typed output. In a bf16 run the values are rounded to bf16 and written back
/// (on CUDA a no-op: the buffer is bf16; on the CPU reference the op's f32 result rounded once, which
/// later ops of the run then read, as they read the bf16 buffer on CUDA).
pub fn cout<B: Backend>(be: &B, b: &mut B::Buf) -> Vec<f32> {
    let mut v = be.download(b).unwrap();
    if BF16_RUN.with(Cell::get) {
        round_bf16_slice(&mut v);
        be.write(b, &v).unwrap();
    }
    v
}

/// The outputs of `cpu_run` (the CPU reference) and `gpu_run` (on `g`, whose compute type must be
/// bf16) for `case` in a bf16 run (see [`cin`], [`cout`]).
pub fn bf16_runs_on<C: Copy>(
    g: &CudaBackend,
    case: C,
    cpu_run: impl Fn(&rlhf::backend::CpuBackend, C) -> Outputs,
    gpu_run: impl Fn(&CudaBackend, C) -> Outputs,
) -> (Outputs, Outputs) {
    assert_eq!(g.compute_dtype(), Dtype::Bf16);
    BF16_RUN.with(|f| f.set(true));
    let want = cpu_run(&rlhf::backend::CpuBackend::new(), case);
    let got = gpu_run(g, case);
    BF16_RUN.with(|f| f.set(false));
    assert_eq!(want.len(), got.len());
    (want, got)
}

/// The bf16 tolerance of an op whose f32 parity tolerance is `(atol, rtol)` (see the header):
/// `(atol (1 + 2^-8), rtol (1 + 2^-8) + BF16_ULP)`.
pub fn bf16_tol((atol, rtol): (f32, f32)) -> (f32, f32) {
    let k = 1.0 + 1.0 / 256.0;
    (atol * k, rtol * k + BF16_ULP)
}

/// Runs `run` on the CPU reference and on CUDA in bf16 storage for every case and compares with
/// `(atol, rtol)` (usually [`bf16_tol`] of the op's f32 tolerance).
pub fn compare_bf16<C: Copy + std::fmt::Debug>(
    cases: &[C],
    tol: (f32, f32),
    cpu_run: impl Fn(&rlhf::backend::CpuBackend, C) -> Outputs,
    gpu_run: impl Fn(&CudaBackend, C) -> Outputs,
) {
    let Some(g) = gpu_bf16() else { return };
    for &case in cases {
        let (want, got) = bf16_runs_on(g, case, &cpu_run, &gpu_run);
        for ((name, w), (_, x)) in want.iter().zip(&got) {
            assert_close(&format!("bf16 {case:?} {name}"), x, w, tol.0, tol.1);
        }
    }
}

/// `parity_bf16!(cases, tol, run)`: [`compare_bf16`] of a generic `run` (as `parity!`).
#[macro_export]
macro_rules! parity_bf16 {
    ($cases:expr, $tol:expr, $run:ident) => {
        $crate::compare_bf16($cases, $tol, |be, c| $run(be, c), |be, c| $run(be, c))
    };
}

/// `max |got - want| <= atol + rtol * |want|` element-wise, with the worst element in the message.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    common::assert_close_on("cuda", what, got, want, atol, rtol)
}

/// Named outputs of one run.
pub type Outputs = Vec<(&'static str, Vec<f32>)>;

/// Downloads a buffer.
pub fn dl<B: Backend>(be: &B, b: &B::Buf) -> Vec<f32> {
    be.download(b).unwrap()
}

/// Downloads ids as f32 (compared exactly).
pub fn dl_ids<B: Backend>(be: &B, b: &B::Ids) -> Vec<f32> {
    be.download_ids(b).unwrap().into_iter().map(|x| x as f32).collect()
}

/// Runs `run` on the CPU and on CUDA for every case and compares the outputs with `(atol, rtol)`.
pub fn compare<C: Copy + std::fmt::Debug>(
    cases: &[C],
    tol: (f32, f32),
    cpu_run: impl Fn(&rlhf::backend::CpuBackend, C) -> Outputs,
    gpu_run: impl Fn(&CudaBackend, C) -> Outputs,
) {
    let Some(g) = gpu() else { return };
    let c = rlhf::backend::CpuBackend::new();
    for &case in cases {
        let want = cpu_run(&c, case);
        let got = gpu_run(g, case);
        assert_eq!(want.len(), got.len());
        for ((name, w), (_, x)) in want.iter().zip(&got) {
            assert_close(&format!("{case:?} {name}"), x, w, tol.0, tol.1);
        }
    }
}

/// `parity!(cases, tol, run)`: `run` is a generic `fn run<B: Backend>(be: &B, case) -> Outputs`.
#[macro_export]
macro_rules! parity {
    ($cases:expr, $tol:expr, $run:ident) => {
        $crate::compare($cases, $tol, |be, c| $run(be, c), |be, c| $run(be, c))
    };
}

#[test]
fn every_op_has_a_cuda_kernel_and_parity_test() {
    let entries: Vec<&str> = rlhf::backend::cuda::kernels::FAMILIES.iter().flat_map(|(_, s)| rlhf::backend::cuda::kernels::entry_points(s)).collect();
    common::assert_every_op_covered("cuda", "kernels/", &entries, &family_checks());
}

#[test]
fn every_op_with_compute_buffers_has_a_bf16_parity_test() {
    let checks: Vec<(&str, fn())> = family_checks().into_iter().flat_map(|(_, rows)| rows.iter().copied()).collect();
    for op in common::ops_with_compute_buffers() {
        let bf16 = format!("{op}_bf16");
        assert!(
            checks.iter().any(|(name, _)| *name == bf16),
            "op `{op}` has compute-typed buffers but no bf16 parity test (a `(\"{bf16}\", test)` entry in CHECKS)"
        );
    }
}

#[test]
fn download_range_reads_exactly_the_range() {
    for be in [gpu(), gpu_bf16()].into_iter().flatten() {
        common::check_download_range(be);
    }
}

//! Every op of the op list on the CUDA backend against the CPU backend (the reference), with the
//! tolerance stated in each module. One module per op family (the names of `kernels/`); each lists
//! its ops and tests in `CHECKS`, and `every_op_has_a_cuda_kernel_and_parity_test` fails when an
//! op of `OP_NAMES` lacks a kernel or a parity test.
//!
//! Each test body is one function generic over the backend (`parity!`): it builds its inputs from
//! a seeded generator, runs the op, and returns the named outputs; the harness runs it on the CPU
//! and on CUDA and compares. Without a CUDA device (libcuda, NVRTC and a GPU) every test prints
//! that it skipped, on stderr; CI has no GPU, so these skip there too.

#[path = "../common/mod.rs"]
#[macro_use]
mod common;

op_family_suites!(
    activation,
    advantage,
    attention,
    cross_entropy,
    decode,
    elementwise,
    embedding,
    layernorm,
    logprob_gather,
    matmul,
    optimizer,
    preference,
    reward,
    rl_losses,
    rope,
    sample,
);

use rlhf::backend::ops::Backend;
use rlhf::backend::CudaBackend;
use std::io::Write;
use std::sync::OnceLock;

/// The process-wide CUDA backend, or `None` after a visible skip message.
pub fn gpu() -> Option<&'static CudaBackend> {
    static GPU: OnceLock<Option<CudaBackend>> = OnceLock::new();
    GPU.get_or_init(|| match CudaBackend::new() {
        Ok(be) => {
            let _ = writeln!(std::io::stderr(), "cuda tests on {}", be.device_description());
            Some(be)
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED cuda op tests: {e}");
            None
        }
    })
    .as_ref()
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
    let (checks, sources) = (family_checks(), family_sources());
    let entries: Vec<&str> = rlhf::backend::cuda::kernels::FAMILIES.iter().flat_map(|(_, s)| rlhf::backend::cuda::kernels::entry_points(s)).collect();
    common::assert_every_op_covered("cuda", "kernels/", &entries, &checks, &sources);
}

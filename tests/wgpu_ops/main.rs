//! Every op of the op list on the wgpu backend against the CPU backend (the reference), with the
//! tolerance stated in each test. One module per op family, the names of `shaders/`; each module
//! lists its ops and the tests covering them in `CHECKS`, and `every_op_has_a_wgsl_entry_and_parity_test`
//! fails when an op of `OP_NAMES` lacks a WGSL entry point or a parity test, or an `_f16` entry
//! point (`--matmul-precision f16`) lacks one in `matmul_f16::F16_CHECKS`.
//!
//! Without an adapter every test prints that it skipped (straight to stderr, so it shows even
//! when the harness captures output); with `CI=true` a missing adapter fails instead.

#[path = "../common/mod.rs"]
#[macro_use]
mod common;

op_family_suites!();
mod matmul_f16;

use rlhf::backend::ops::Backend;
use rlhf::backend::{CpuBackend, WgpuBackend};
use std::io::Write;
use std::sync::OnceLock;

/// The process-wide wgpu backend (pipelines compile once per test binary), or `None` after a
/// visible skip message. Panics in CI (`CI=true`) when there is no adapter.
pub fn gpu() -> Option<&'static WgpuBackend> {
    static GPU: OnceLock<Option<WgpuBackend>> = OnceLock::new();
    GPU.get_or_init(|| match WgpuBackend::new() {
        Ok(be) => {
            let _ = writeln!(std::io::stderr(), "wgpu tests on {}", be.device_description());
            Some(be)
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("CI=true but no wgpu adapter: {e}");
            }
            let _ = writeln!(std::io::stderr(), "SKIPPED wgpu op tests: {e}");
            None
        }
    })
    .as_ref()
}

/// A second wgpu backend with `--matmul-precision f16`, or `None` after a visible skip message
/// (no adapter, or one without shader-f16).
pub fn gpu_f16() -> Option<&'static WgpuBackend> {
    static GPU: OnceLock<Option<WgpuBackend>> = OnceLock::new();
    GPU.get_or_init(|| {
        gpu()?;
        match WgpuBackend::with_matmul_precision(rlhf::backend::MatmulPrecision::F16) {
            Ok(be) => Some(be),
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "SKIPPED wgpu f16 matmul tests: {e}");
                None
            }
        }
    })
    .as_ref()
}

pub fn cpu() -> CpuBackend {
    CpuBackend::new()
}

/// `max |got - want| <= atol + rtol * |want|` element-wise, with the worst element in the message.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    common::assert_close_on("wgpu", what, got, want, atol, rtol)
}

/// Uploads `data` to both backends.
pub fn both(g: &WgpuBackend, data: &[f32]) -> (Vec<f32>, rlhf::backend::wgpu::GpuBuf) {
    (data.to_vec(), g.upload(data).unwrap())
}

#[test]
fn every_op_has_a_wgsl_entry_and_parity_test() {
    let entries = WgpuBackend::entry_points();
    common::assert_every_op_covered("wgpu", "shaders/", &entries, &family_checks());

    // every f16 variant (suffix `_f16`) of an entry point has a parity test
    let f16: Vec<&str> = entries.iter().copied().filter(|e| e.ends_with("_f16")).collect();
    assert!(!f16.is_empty(), "no `_f16` entry points in shaders/");
    for e in &f16 {
        assert!(entries.contains(&e.trim_end_matches("_f16")), "f16 entry point `{e}` is not a variant of an entry point");
        assert!(matmul_f16::F16_CHECKS.iter().any(|(name, _)| name == e), "f16 entry point `{e}` has no parity test in F16_CHECKS");
    }
    for (e, _) in matmul_f16::F16_CHECKS {
        assert!(f16.contains(e), "F16_CHECKS names `{e}`, which is no f16 entry point");
    }
}

/// The op families of the op list are the WGSL families of shaders/ (less the precision variants
/// `<family>_f16.wgsl`, compiled with their base family).
#[test]
fn shader_families_are_the_op_families() {
    let mut wgsl: Vec<&str> = rlhf::backend::wgpu::shaders::FAMILIES.iter().map(|(f, _)| *f).filter(|f| !f.ends_with("_f16")).collect();
    wgsl.sort();
    let mut declared: Vec<&str> = rlhf::backend::ops::FAMILIES.iter().map(|f| f.name).collect();
    declared.sort();
    assert_eq!(wgsl, declared, "shaders/*.wgsl and the op list name different op families");
}

#[test]
fn download_range_reads_exactly_the_range() {
    if let Some(g) = gpu() {
        common::check_download_range(g);
    }
}

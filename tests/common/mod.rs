//! Helpers shared by the op tests: seeded random vectors and central finite differences.
#![allow(dead_code)]

use rlhf::data::rng::Rng;

pub fn randv(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() * scale).collect()
}

pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Central differences (step 1e-2) of `loss` at `x` compared with `grad` on up to 48 coordinates,
/// relative error below 2e-2 (with a 1e-2 floor on the scale).
pub fn fd_check(name: &str, x: &[f32], grad: &[f32], loss: impl Fn(&[f32]) -> f64) {
    assert_eq!(x.len(), grad.len(), "{name}: gradient length");
    let eps = 1e-2f32;
    let step = (x.len() / 48).max(1);
    for i in (0..x.len()).step_by(step) {
        let mut xp = x.to_vec();
        xp[i] += eps;
        let lp = loss(&xp);
        xp[i] -= 2.0 * eps;
        let lm = loss(&xp);
        let num = (lp - lm) / (2.0 * eps as f64);
        let err = (num - grad[i] as f64).abs() / (1e-2 + num.abs().max(grad[i].abs() as f64));
        assert!(err < 2e-2, "{name}[{i}]: finite difference {num:.6} vs analytic {:.6}", grad[i]);
    }
}

/// The wgpu backend for whole-model tests, or `None` after a skip message written straight to
/// stderr (visible even when the harness captures output). With `CI=true` a missing adapter
/// panics: CI must not skip the GPU tests silently.
pub fn wgpu_or_skip(what: &str) -> Option<rlhf::backend::WgpuBackend> {
    use std::io::Write;
    match rlhf::backend::WgpuBackend::new() {
        Ok(be) => Some(be),
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("{what}: CI=true but no wgpu adapter: {e}");
            }
            let _ = writeln!(std::io::stderr(), "SKIPPED {what}: {e}");
            None
        }
    }
}

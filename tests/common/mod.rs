//! Helpers shared by the op tests: seeded random vectors and central finite differences.
#![allow(dead_code)]

pub mod fixtures;
#[path = "../cuda_emu/install.rs"]
pub mod cuda_emu;

use rlhf::data::rng::Rng;

pub fn randv(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() * scale).collect()
}

/// AdamW op parameters for the op tests: lr 3e-3, betas 0.9 and 0.95, eps 1e-8, weight decay 0.1,
/// the bias corrections of (1-based) step `step`, clipping threshold `max_grad_norm` (0 = off).
pub fn adamw_params(n: usize, step: i32, max_grad_norm: f32) -> rlhf::backend::ops::AdamWParams {
    let (beta1, beta2) = (0.9f32, 0.95f32);
    rlhf::backend::ops::AdamWParams {
        n: n as u32,
        lr: 3e-3,
        beta1,
        beta2,
        eps: 1e-8,
        weight_decay: 0.1,
        bias_correction1: 1.0 - beta1.powi(step),
        bias_correction2: 1.0 - beta2.powi(step),
        max_grad_norm,
        ..Default::default()
    }
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

/// Whether a CUDA test that gets no device must fail instead of skipping: `CI=true` (or `1`), or
/// `RLHF_REQUIRE_CUDA=1`. Without a GPU the CUDA emulator stands in (see [`cuda_emu`]), so only a
/// missing C++ compiler or NVRTC leaves no device.
pub fn cuda_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") || std::env::var("RLHF_REQUIRE_CUDA").is_ok_and(|v| v == "1")
}

/// The CUDA backend for whole-model tests (on the CUDA emulator when the machine has no driver),
/// or `None` after a skip message written straight to stderr. Panics instead of skipping when
/// [`cuda_required`].
pub fn cuda_or_skip(what: &str) -> Option<rlhf::backend::CudaBackend> {
    use std::io::Write;
    let made = cuda_emu::driver().and_then(|_| rlhf::backend::CudaBackend::new().map_err(|e| e.to_string()));
    match made {
        Ok(be) => Some(be),
        Err(e) => {
            if cuda_required() {
                panic!("{what}: CI=true (or RLHF_REQUIRE_CUDA=1) but no CUDA device, real or emulated: {e}");
            }
            let _ = writeln!(std::io::stderr(), "SKIPPED {what}: {e}");
            None
        }
    }
}

/// `max |got - want| <= atol + rtol * |want|` element-wise (a NaN matches only a NaN), with the
/// worst element and the `backend` in the message; the comparison of every op parity suite.
#[track_caller]
pub fn assert_close_on(backend: &str, what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0.0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if excess.is_nan() || excess > worst.1 || g.is_nan() != w.is_nan() {
            worst = (i, if excess.is_nan() { f32::INFINITY } else { excess });
        }
    }
    let (i, excess) = worst;
    assert!(excess <= 0.0, "{what}[{i}]: {backend} {} vs cpu {} (atol {atol}, rtol {rtol})", got[i], want[i]);
}

/// Fails when an op of the op list (`rlhf::backend::ops::FAMILIES`) has no `(op, test)` row in
/// the `CHECKS` of its family's module (`checks`, by family, from [`op_family_suites`]), when one
/// of its kernel ops (those without a reference composition) has no entry point among `entries`
/// (`where_` names the kernel folder), or when a row names no op of its family (`<op>_bf16` counts
/// as `<op>`). The tests themselves are function pointers in `CHECKS`, so the compiler sees that
/// they exist.
pub fn assert_every_op_covered(backend: &str, where_: &str, entries: &[&str], checks: &[(&str, &[(&str, fn())])]) {
    for family in rlhf::backend::ops::FAMILIES {
        let rows = checks.iter().find(|(f, _)| *f == family.name).map(|(_, rows)| *rows).unwrap_or_else(|| panic!("no {backend} suite module for op family `{}`", family.name));
        for op in family.ops {
            assert!(rows.iter().any(|(name, _)| *name == op.name), "op `{}` has no {backend} parity test in the CHECKS of `{}`", op.name, family.name);
        }
        for op in family.kernel_ops() {
            assert!(entries.contains(&op), "op `{op}` has no {backend} entry point in {where_}");
        }
        for (name, _) in rows {
            let op = name.strip_suffix("_bf16").unwrap_or(name);
            assert!(family.ops.iter().any(|o| o.name == op), "the {backend} CHECKS of `{}` name `{name}`, which is no op of that family", family.name);
        }
    }
}

/// `decode_advance` over `steps` decode steps of `n` rows drawn from `slots` slots (rows in
/// shuffled slot order, a fifth of the slots finished before the first step, random lengths and
/// sampled ids that hit the stop ids, `max_new_tokens` and the context end): every buffer the op
/// writes after every step, as f32 for the parity suites (compared exactly).
pub fn decode_advance_steps<B: rlhf::backend::ops::Backend>(be: &B, (slots, n, steps, seed): (usize, usize, usize, u64)) -> Vec<(&'static str, Vec<f32>)> {
    use rlhf::backend::ops::{decode_finish as fin, DecodeAdvanceParams};
    let mut rng = Rng::new(seed);
    let (t_max, stride) = (16usize, 8usize);
    let p = DecodeAdvanceParams {
        n: n as u32,
        slots: slots as u32,
        t_max: t_max as u32,
        stride: stride as u32,
        max_new: 6,
        max_len: 14,
        n_stop: 3,
        dump_row: (slots * stride) as u32,
    };
    let mut order: Vec<i32> = (0..slots as i32).collect();
    rng.shuffle(&mut order);
    // the sampling step counter after the slots (each call adds 1) starts at 40
    let mut state = vec![0i32; fin::state_len(slots)];
    state[slots * fin::STATE] = 40;
    for s in 0..slots {
        let len = 2 + rng.below(10) as i32;
        let resp = 1 + rng.below(4) as i32;
        let finish = if rng.below(5) == 0 { 1 + rng.below(3) as i32 } else { fin::RUNNING };
        state[s * fin::STATE..][..fin::STATE].copy_from_slice(&[len, resp, finish, rng.below(20) as i32]);
    }
    let rows = &order[..n];
    let st = |s: i32| &state[s as usize * fin::STATE..][..fin::STATE];
    let cache_rows: Vec<i32> = rows.iter().map(|&s| s * t_max as i32 + st(s)[0]).collect();
    let record_rows: Vec<i32> = rows.iter().map(|&s| s * stride as i32 + st(s)[1]).collect();
    let tokens: Vec<i32> = rows.iter().map(|&s| st(s)[3]).collect();
    let positions: Vec<i32> = rows.iter().map(|&s| st(s)[0]).collect();
    let history: Vec<i32> = (0..slots * stride).map(|i| -(i as i32) - 1).collect();
    let (mut state_b, mut history_b) = (be.upload_ids(&state).unwrap(), be.upload_ids(&history).unwrap());
    let (mut tokens_b, mut positions_b) = (be.upload_ids(&tokens).unwrap(), be.upload_ids(&positions).unwrap());
    let (mut cache_b, mut record_b) = (be.upload_ids(&cache_rows).unwrap(), be.upload_ids(&record_rows).unwrap());
    let stops = be.upload_ids(&[3, 7, 11]).unwrap();
    let ids = |b: &B::Ids| be.download_ids(b).unwrap().into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    let mut out = Vec::new();
    for _ in 0..steps {
        let sampled: Vec<i32> = (0..n).map(|_| rng.below(20) as i32).collect();
        let sampled = be.upload_ids(&sampled).unwrap();
        be.decode_advance(&mut state_b, &mut history_b, &mut tokens_b, &mut positions_b, &mut cache_b, &mut record_b, &sampled, &stops, p).unwrap();
        out.extend([
            ("state", ids(&state_b)),
            ("history", ids(&history_b)),
            ("tokens", ids(&tokens_b)),
            ("positions", ids(&positions_b)),
            ("cache_rows", ids(&cache_b)),
            ("record_rows", ids(&record_b)),
        ]);
    }
    out
}

/// The per-element bound on `|got - cpu|` of a matmul whose operands were rounded to `bits` bits
/// of mantissa (`MatmulPrecision::mantissa_bits`) and summed in f32, against the CPU's f32 result
/// `want`. Rounding an operand to either neighbour (WGSL and cuBLAS do not promise nearest) is a
/// relative error u = 2^-bits, so a product a_h b_h is within (2u + u^2) |a| |b| of a b; the two
/// f32 sums of depth k (one per backend, in different orders) add k 2^-24 each, relative to
/// S = sum_l |a_il| |b_lj| (`abs_product`: the CPU product of |a| and |b|); operands below the
/// format's normal range lose at most 2^-25 absolute each (2e-7 k with N(0, 1) entries); the final
/// alpha * acc (+ out) rounds once more (2^-22 |want|). So per element:
/// `(2u + u^2 + 2.1 k 2^-24) |alpha| S + 2e-7 k |alpha| + 2^-22 |want|`.
pub fn rounded_matmul_bound(bits: u32, k: usize, alpha: f32, abs_product: &[f32], want: &[f32]) -> Vec<f32> {
    let u = 2f32.powi(-(bits as i32));
    let rel = 2.0 * u + u * u + 2.1 * k as f32 * 2f32.powi(-24);
    abs_product.iter().zip(want).map(|(s, w)| (rel * s + 2e-7 * k as f32) * alpha.abs() + 2f32.powi(-22) * w.abs()).collect()
}

/// `|got - want| <= bound` element-wise (a NaN fails), with the worst element in the message.
#[track_caller]
pub fn assert_within_on(backend: &str, what: &str, got: &[f32], want: &[f32], bound: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got.iter().zip(want).zip(bound).enumerate().map(|(i, ((g, w), b))| (i, (g - w).abs() / b)).fold((0, 0.0f32), |a, x| {
        if x.1 > a.1 || x.1.is_nan() {
            x
        } else {
            a
        }
    });
    let i = worst.0;
    assert!(worst.1 <= 1.0, "{what}[{i}]: {backend} {} vs cpu {} (bound {})", got[i], want[i], bound[i]);
}

/// Mean of `|x - y|`.
pub fn mean_abs_diff(x: &[f32], y: &[f32]) -> f64 {
    x.iter().zip(y).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / x.len().max(1) as f64
}

/// Declares a parity suite's op-family modules (`tests/<suite>/<family>.rs`), one per family of the
/// op list (`rlhf::op_list!`), with `family_checks()`: every module's `CHECKS` by family name, for
/// [`assert_every_op_covered`]. A family without its module fails the build.
#[allow(unused_macros)]
macro_rules! op_family_suites {
    () => {
        rlhf::op_list!(op_family_suites);
    };
    ([] $($(#[$attr:meta])* $family:ident : $Trait:ident [$($params:ident),*] { $($ops:tt)* })*) => {
        $(mod $family;)*

        fn family_checks() -> Vec<(&'static str, &'static [(&'static str, fn())])> {
            vec![$((stringify!($family), $family::CHECKS)),*]
        }
    };
}

/// The ops that have compute-typed buffers: those not declared `in f32` in the op list.
pub fn ops_with_compute_buffers() -> Vec<&'static str> {
    rlhf::backend::ops::FAMILIES.iter().flat_map(|f| f.ops).filter(|o| o.compute).map(|o| o.name).collect()
}

/// `download_range` (the streaming save's bounded read) returns exactly the values of the range
/// `download` returns, at the start, across the middle and at the end of a buffer, and refuses a
/// range beyond it.
pub fn check_download_range<B: rlhf::backend::ops::Backend>(be: &B) {
    let data: Vec<f32> = (0..1000).map(|i| i as f32 * 0.25 - 7.0).collect();
    let buf = be.upload(&data).unwrap();
    let all = be.download(&buf).unwrap();
    for (start, len) in [(0, 1), (0, 1000), (1, 999), (123, 456), (999, 1), (500, 0)] {
        assert_eq!(be.download_range(&buf, start, len).unwrap(), &all[start..start + len], "{}: values {start}..{}", be.name(), start + len);
    }
    assert!(be.download_range(&buf, 990, 11).is_err(), "{}: a range past the end is refused", be.name());
}

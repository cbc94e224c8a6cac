//! `--matmul-precision f16` on wgpu (`shaders/matmul_f16.wgsl`): every f16 entry point (both
//! tilings, the four storage transposes) against the CPU's f32 matmul on odd shapes, batched with
//! strides and broadcast operands, accumulate, alpha and element offsets; batch invariance within
//! the mode; logprob_gather's chunk products in f16 too.
//!
//! Tolerance (tests/common `rounded_matmul_bound`, bits = 10): operands rounded to f16 (to either
//! neighbour: WGSL does not pin the rounding) are each within u = 2^-10 relative, so per element
//! `|wgpu - cpu| <= (2u + u^2 + 2.1 k 2^-24) |alpha| sum_l |a_il||b_lj| + 2e-7 k |alpha| + 2^-22 |cpu|`.
//! That the mode really rounds: over each case the mean |f16 - cpu| is at least 4x the f32 mode's
//! (f16 keeps 11 significant bits, f32 24: the ratio is ~1000 in practice).

use crate::{both, cpu, gpu, gpu_f16};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

/// Every f16 entry point and the test that runs it (`every_op_has_a_wgsl_entry_and_parity_test`
/// fails for an `_f16` entry point missing here; `matmul_f16_parity` fails if one did not run).
pub const F16_CHECKS: &[(&str, fn())] = &[
    ("matmul_f16", matmul_f16_parity),
    ("matmul_nt_f16", matmul_f16_parity),
    ("matmul_tn_f16", matmul_f16_parity),
    ("matmul_tt_f16", matmul_f16_parity),
    ("matmul_small_f16", matmul_f16_parity),
    ("matmul_small_nt_f16", matmul_f16_parity),
    ("matmul_small_tn_f16", matmul_f16_parity),
    ("matmul_small_tt_f16", matmul_f16_parity),
];

const F16_BITS: u32 = 10;

/// Operand lengths, with the element offsets (a, b, out) of the first matrices.
struct Case {
    p: MatmulParams,
    a_len: usize,
    b_len: usize,
    out_len: usize,
    offsets: (usize, usize, usize),
}

/// Runs one product on the CPU (f32, on the matrices cut out at the offsets), on wgpu in f32 and
/// in f16, and checks the f16 bound; returns (mean |f16 - cpu|, mean |f32 - cpu|).
fn check(what: &str, rng: &mut Rng, c: Case) -> (f64, f64) {
    let (g32, g16) = (gpu().unwrap(), gpu_f16().unwrap());
    let be = cpu();
    let Case { p, a_len, b_len, out_len, offsets: (ao, bo, oo) } = c;
    let a = crate::common::randv(rng, ao + a_len, 1.0);
    let b = crate::common::randv(rng, bo + b_len, 1.0);
    let init = crate::common::randv(rng, oo + out_len, 1.0);
    let abs = |x: &[f32]| x.iter().map(|v| v.abs()).collect::<Vec<_>>();
    // the CPU reference and sum |a||b| on the cut-out matrices
    let (mut want, _) = both(g32, &init[oo..]);
    be.matmul(&mut want, &a[ao..].to_vec(), &b[bo..].to_vec(), p).unwrap();
    let mut s = vec![0.0; out_len];
    be.matmul(&mut s, &abs(&a[ao..]), &abs(&b[bo..]), MatmulParams { alpha: 1.0, accumulate: 0, ..p }).unwrap();
    let mut got = Vec::new();
    for g in [g32, g16] {
        let (_, ga) = both(g, &a);
        let (_, gb) = both(g, &b);
        let (_, mut gout) = both(g, &init);
        g.matmul_at(&mut gout, &ga, &gb, p, (ao, bo, oo)).unwrap();
        let out = g.download(&gout).unwrap();
        assert_eq!(out[..oo], init[..oo], "{what}: wrote before out_off");
        got.push(out[oo..].to_vec());
    }
    // the padding between batch matrices is 0 in `s`: there the bound is ~0 (left as it was)
    let bound = crate::common::rounded_matmul_bound(F16_BITS, p.k as usize, p.alpha, &s, &want);
    crate::common::assert_within_on("wgpu f16", &format!("{what} {p:?}"), &got[1], &want, &bound);
    (crate::common::mean_abs_diff(&got[1], &want), crate::common::mean_abs_diff(&got[0], &want))
}

fn plain(p: MatmulParams) -> Case {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    Case { p, a_len: m * k, b_len: k * n, out_len: m * n, offsets: (0, 0, 0) }
}

#[test]
fn matmul_f16_parity() {
    let (Some(g), Some(g16)) = (gpu(), gpu_f16()) else { return };
    let mut rng = Rng::new(31);
    let (mut err16, mut err32) = (0.0, 0.0);
    let mut add = |(e16, e32): (f64, f64)| {
        err16 += e16;
        err32 += e32;
    };
    // (1040, 1300, 40) and the batch of 120 run the 128 x 128 tiling, the rest the 64 x 64 one;
    // k = 71 and 96 span several K tiles of 32 / 16, with a partial last one
    for &(m, n, k) in &[(1, 1, 1), (37, 53, 71), (130, 257, 96), (3, 700, 5), (1040, 1300, 40)] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let p = MatmulParams::new(m, n, k, ta, tb);
            add(check("plain", &mut rng, plain(p)));
            if (m, n, k) == (37, 53, 71) || (m, n, k) == (1040, 1300, 40) {
                let mut q = p.accumulate(true);
                q.alpha = -0.37;
                add(check("accumulate alpha", &mut rng, plain(q)));
                let mut q = p;
                q.alpha = 2.5;
                let case = Case { offsets: (13, 7, 29), ..plain(q) };
                add(check("alpha offsets", &mut rng, case));
            }
        }
    }
    // batched with padded strides and a broadcast operand, both tilings
    for &(batch, m, n, k) in &[(3usize, 37usize, 53usize, 71usize), (120, 33, 17, 20)] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let (sa, sb, so) = (m * k + 5, k * n + 3, m * n + 7);
            let p = MatmulParams::new(m, n, k, ta, tb).batched(batch, sa, sb, so);
            add(check("batched", &mut rng, Case { p, a_len: sa * batch, b_len: sb * batch, out_len: so * batch, offsets: (3, 0, 1) }));
            let p = MatmulParams::new(m, n, k, ta, tb).batched(batch, sa, 0, so).accumulate(true);
            add(check("batched broadcast b", &mut rng, Case { p, a_len: sa * batch, b_len: k * n, out_len: so * batch, offsets: (0, 0, 0) }));
        }
    }
    assert!(err16 > 4.0 * err32, "the f16 mode does not round its operands: mean error {err16} vs f32's {err32}");
    let ran = g16.dispatched_entry_points();
    for (entry, _) in F16_CHECKS.iter().filter(|(_, t)| std::ptr::fn_addr_eq(*t, matmul_f16_parity as fn())) {
        assert!(ran.contains(entry), "matmul_f16_parity never ran `{entry}`");
    }
    assert!(!g.dispatched_entry_points().iter().any(|e| e.ends_with("_f16")), "the f32 backend ran an f16 entry point");

    // batch invariance within the mode
    crate::matmul::assert_batch_invariant(g16, &mut rng, "f16 matmul");
}

/// logprob_gather's chunk products (matmul at element offsets) follow the backend's precision: on
/// the f16 backend its log-probs differ from the f32 backend's, within the bound the f16 logits
/// allow. Logits z = h w^T / T with each |z_f16 - z| <= d (the matmul bound); logp = z_t - lse(z)
/// then moves by at most 2 max d.
#[test]
fn logprob_gather_runs_its_matmuls_in_f16() {
    let (Some(g32), Some(g16)) = (gpu(), gpu_f16()) else { return };
    let be = cpu();
    let mut rng = Rng::new(33);
    let (n, c, v) = (37, 48, 700);
    let p = LogprobParams::new(n, c, v).chunk(256);
    let h = crate::common::randv(&mut rng, n * c, 1.0);
    let w = crate::common::randv(&mut rng, v * c, 0.5);
    let targets: Vec<i32> = (0..n).map(|_| rng.below(v as u64) as i32).collect();
    let mut logps = Vec::new();
    for g in [g32, g16] {
        let (gh, gw, gt) = (g.upload(&h).unwrap(), g.upload(&w).unwrap(), g.upload_ids(&targets).unwrap());
        let (mut lp, mut ent, mut lse) = (g.alloc(n).unwrap(), g.alloc(n).unwrap(), g.alloc(n).unwrap());
        g.logprob_gather_fwd(&mut lp, &mut ent, &mut lse, &gh, &gt, &gw, p).unwrap();
        logps.push(g.download(&lp).unwrap());
    }
    let mut want = vec![0.0; n];
    let (mut ent, mut lse) = (vec![0.0; n], vec![0.0; n]);
    be.logprob_gather_fwd(&mut want, &mut ent, &mut lse, &h, &targets, &w, p).unwrap();
    // d per row: the matmul bound of the row's largest sum |h||w|
    let abs = |x: &[f32]| x.iter().map(|v| v.abs()).collect::<Vec<_>>();
    let mut s = vec![0.0; n * v];
    be.matmul(&mut s, &abs(&h), &abs(&w), MatmulParams::new(n, v, c, false, true)).unwrap();
    let d = crate::common::rounded_matmul_bound(F16_BITS, c, 1.0, &s, &vec![0.0; n * v]);
    let bound: Vec<f32> = d.chunks(v).map(|row| 2.0 * row.iter().fold(0.0f32, |a, &x| a.max(x)) + 1e-5).collect();
    crate::common::assert_within_on("wgpu f16", "logprob_gather logp", &logps[1], &want, &bound);
    let (e16, e32) = (crate::common::mean_abs_diff(&logps[1], &want), crate::common::mean_abs_diff(&logps[0], &want));
    assert!(e16 > 4.0 * e32, "logprob_gather on the f16 backend did not use f16 matmuls: mean error {e16} vs f32's {e32}");
}

//! matmul (all four storage transposes, both tilings, batched with strides and a broadcast
//! operand, accumulate, alpha), bias_add and bias_bwd against the CPU backend.
//!
//! Tolerance of a product of depth k with N(0, 1) entries: `|gpu - cpu| <= 2e-6 sqrt(k) (1 + |cpu|)`
//! (both sum k fp32 products, in different orders: the GPU one fma chain per output, the CPU
//! gemm's blocked micro-kernel; the results are O(sqrt k)). bias_add is exact; bias_bwd sums n
//! values per column in a different order than the CPU: `1e-6 sqrt(n) (1 + |cpu|)`.

use crate::{assert_close, both, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[("matmul", matmul_parity), ("bias_add", bias_parity), ("bias_bwd", bias_parity),
    ("matmul_bias", matmul_epilogues_parity),
    ("matmul_bias_gelu", matmul_epilogues_parity),
    ("matmul_gelu_bwd", matmul_epilogues_parity),
];

fn tol(k: usize) -> f32 {
    2e-6 * (k.max(1) as f32).sqrt()
}

/// One product on both backends (out starts as `init`), compared.
fn check(what: &str, rng: &mut Rng, p: MatmulParams, a_len: usize, b_len: usize, out_len: usize) {
    let g = gpu().unwrap();
    let c = cpu();
    let a = crate::common::randv(rng, a_len, 1.0);
    let b = crate::common::randv(rng, b_len, 1.0);
    let init = crate::common::randv(rng, out_len, 1.0);
    let (ca, ga) = both(g, &a);
    let (cb, gb) = both(g, &b);
    let (mut cout, mut gout) = both(g, &init);
    c.matmul(&mut cout, &ca, &cb, p).unwrap();
    g.matmul(&mut gout, &ga, &gb, p).unwrap();
    let t = tol(p.k as usize);
    assert_close(&format!("{what} {p:?}"), &g.download(&gout).unwrap(), &cout, t, t);
}

#[test]
fn matmul_parity() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(21);
    // (m, n, k): tiny, awkward, aligned, over a tile edge, larger; (1040, 1300, 40) and the
    // batched ones run the 128 x 128 tiling, the rest the 64 x 64 one.
    let shapes = [(1, 1, 1), (37, 53, 71), (64, 64, 64), (130, 257, 96), (3, 700, 5), (256, 512, 384), (1040, 1300, 40)];
    for &(m, n, k) in &shapes {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let p = MatmulParams::new(m, n, k, ta, tb);
            check("plain", &mut rng, p, m * k, k * n, m * n);
            if (m, n, k) == (130, 257, 96) || (m, n, k) == (37, 53, 71) {
                let mut q = p.accumulate(true);
                q.alpha = -0.37;
                check("accumulate alpha", &mut rng, q, m * k, k * n, m * n);
                let mut q = p;
                q.alpha = 2.5;
                check("alpha", &mut rng, q, m * k, k * n, m * n);
            }
        }
    }
    // k = 0: overwrite with zeros / leave alone
    check("k=0", &mut rng, MatmulParams::new(5, 7, 0, false, false), 1, 1, 35);
    check("k=0 accumulate", &mut rng, MatmulParams::new(5, 7, 0, false, true).accumulate(true), 1, 1, 35);

    // batched with padded strides, a broadcast operand, accumulate; small and big tilings
    for &(batch, m, n, k) in &[(3usize, 37usize, 53usize, 71usize), (120, 33, 17, 20), (2, 300, 200, 24)] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let (sa, sb, so) = (m * k + 5, k * n + 3, m * n + 7);
            let p = MatmulParams::new(m, n, k, ta, tb).batched(batch, sa, sb, so);
            check("batched", &mut rng, p, sa * batch, sb * batch, so * batch);
            let p = MatmulParams::new(m, n, k, ta, tb).batched(batch, sa, 0, so).accumulate(true);
            check("batched broadcast b", &mut rng, p, sa * batch, k * n, so * batch);
            let p = MatmulParams::new(m, n, k, ta, tb).batched(batch, 0, sb, so);
            check("batched broadcast a", &mut rng, p, m * k, sb * batch, so * batch);
        }
    }

    assert_batch_invariant(g, &mut rng, "matmul");
    let (a, b) = (crate::common::randv(&mut rng, 64, 1.0), crate::common::randv(&mut rng, 64, 1.0));
    let (ga, gb) = (g.upload(&a).unwrap(), g.upload(&b).unwrap());

    // shape errors, not panics
    let mut small = g.alloc(10).unwrap();
    assert!(g.matmul(&mut small, &ga, &gb, MatmulParams::new(4, 4, 4, false, false)).is_err());
    let mut out = g.alloc(64).unwrap();
    assert!(g.matmul(&mut out, &ga, &gb, MatmulParams::new(4, 4, 4, false, false).batched(2, 16, 16, 8)).is_err());
}

#[test]
fn bias_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(22);
    for &(n, ch) in &[(1usize, 1usize), (37, 77), (1000, 768), (70_000, 3), (5, 2051)] {
        let p = BiasParams { n: n as u32, c: ch as u32 };
        let x = crate::common::randv(&mut rng, n * ch, 1.0);
        let bias = crate::common::randv(&mut rng, ch, 1.0);
        let (cbias, gbias) = both(g, &bias);
        let (mut cx, mut gx) = both(g, &x);
        c.bias_add(&mut cx, &cbias, p).unwrap();
        g.bias_add(&mut gx, &gbias, p).unwrap();
        assert_close(&format!("bias_add {n}x{ch}"), &g.download(&gx).unwrap(), &cx, 0.0, 0.0);
        // dbias accumulates into a nonzero buffer
        let (mut cd, mut gd) = both(g, &bias);
        c.bias_bwd(&mut cd, &cx, p).unwrap();
        g.bias_bwd(&mut gd, &gx, p).unwrap();
        let t = 1e-6 * (n as f32).sqrt();
        assert_close(&format!("bias_bwd {n}x{ch}"), &g.download(&gd).unwrap(), &cd, t, t);
    }
}

/// Batch invariance: row 0 of a product has the same bits whatever m is and whichever tiling ran
/// (m = 1 and m = 300 take the 64 x 64 tiling, m = 1500 the 128 x 128 one), on `g` in its precision.
pub fn assert_batch_invariant(g: &rlhf::backend::WgpuBackend, rng: &mut Rng, what: &str) {
    let (n, k) = (1100, 70);
    let a = crate::common::randv(rng, 1500 * k, 1.0);
    let b = crate::common::randv(rng, k * n, 1.0);
    let ga = g.upload(&a).unwrap();
    let gb = g.upload(&b).unwrap();
    let mut rows = Vec::new();
    for m in [1usize, 300, 1500] {
        let mut out = g.alloc(m * n).unwrap();
        g.matmul(&mut out, &ga, &gb, MatmulParams::new(m, n, k, false, false)).unwrap();
        rows.push(g.download(&out).unwrap()[..n].to_vec());
    }
    assert!(rows[0] == rows[1] && rows[1] == rows[2], "{what}: row 0 depends on m or on the tiling");
}

/// The matmuls with fused epilogues on one case `(m, n, k, trans_a, trans_b, accumulate)`, alpha
/// 0.5: the bias product, the GELU forward with and without a bias (activation and
/// pre-activation), the GELU backward.
fn run_fused<B: Backend>(be: &B, (m, n, k, ta, tb, acc): (usize, usize, usize, bool, bool, bool)) -> Vec<(&'static str, Vec<f32>)> {
    let mut rng = Rng::new((m * 13 + n * 5 + k) as u64);
    let mut input = |len: usize, scale: f32| be.upload(&crate::common::randv(&mut rng, len, scale)).unwrap();
    let (a, b, bias, pre_in) = (input(m * k, 1.0), input(k * n, 1.0 / (k as f32).sqrt()), input(n, 1.0), input(m * n, 2.0));
    let mut out = input(m * n, 1.0);
    let mut p = MatmulParams::new(m, n, k, ta, tb);
    p.alpha = 0.5;
    be.matmul_bias(&mut out, &a, &b, &bias, p.accumulate(acc)).unwrap();
    let mut outs = vec![("bias", be.download(&out).unwrap())];
    for (bias, act_name, pre_name) in [(Some(&bias), "gelu", "pre"), (None, "gelu without bias", "pre without bias")] {
        let (mut act, mut pre) = (be.alloc(m * n).unwrap(), be.alloc(m * n).unwrap());
        be.matmul_bias_gelu(&mut act, &mut pre, &a, &b, bias, p).unwrap();
        outs.extend([(act_name, be.download(&act).unwrap()), (pre_name, be.download(&pre).unwrap())]);
    }
    let (mut dpre, mut dact) = (be.alloc(m * n).unwrap(), be.alloc(m * n).unwrap());
    be.matmul_gelu_bwd(&mut dpre, &mut dact, &a, &b, &pre_in, p).unwrap();
    outs.push(("gelu backward", be.download(&dpre).unwrap()));
    outs
}

/// `matmul_bias`, `matmul_bias_gelu` and `matmul_gelu_bwd` (the compositions of `matmul`,
/// `bias_add` and `gelu_*` on both backends) within the matmul tolerance of their depth.
#[test]
fn matmul_epilogues_parity() {
    let Some(g) = gpu() else { return };
    for case in [(17, 40, 65, false, false, false), (64, 96, 40, false, true, true), (48, 64, 32, true, false, true), (1, 8, 16, false, false, true)] {
        let (want, got) = (run_fused(&cpu(), case), run_fused(g, case));
        let t = tol(case.2);
        for ((name, w), (_, x)) in want.iter().zip(&got) {
            assert_close(&format!("{case:?} {name}"), x, w, t, t);
        }
    }
}

//! sum_squares and adamw (clipping fused in) against the CPU backend.
//!
//! Tolerances: sum_squares 2e-6 relative (f32 tree sums on the GPU, f64 on the CPU; accumulated
//! onto a nonzero value, over several tensors, both single-workgroup and two-stage sizes); adamw
//! over 6 steps (clipping active, inactive and off) 1e-6 absolute + 1e-5 relative on the
//! parameters, 1e-6 of the largest value + 1e-5 relative on the moments; a NaN or infinite
//! squared norm leaves parameters and moments unchanged bit for bit.

use crate::{assert_close, both, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[("sum_squares", sum_squares_parity), ("adamw", adamw_parity),
    ("sum_squares_many", optimizer_many_parity),
    ("adamw_many", optimizer_many_parity),
];

#[test]
fn sum_squares_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(61);
    let (mut cacc, mut gacc) = both(g, &[1.5]);
    for &n in &[1usize, 7, 1000, 65_536, 65_537, 300_001, 3_000_000] {
        let (cx, gx) = both(g, &crate::common::randv(&mut rng, n, 0.1));
        let p = ElementwiseParams::new(n).unwrap();
        c.sum_squares(&mut cacc, &cx, p).unwrap();
        g.sum_squares(&mut gacc, &gx, p).unwrap();
        assert_close(&format!("sum_squares n={n} (running total)"), &g.download(&gacc).unwrap(), &cacc, 0.0, 2e-6);
        // one tensor alone, from zero
        let (mut c1, mut g1) = both(g, &[0.0]);
        c.sum_squares(&mut c1, &cx, p).unwrap();
        g.sum_squares(&mut g1, &gx, p).unwrap();
        assert_close(&format!("sum_squares n={n}"), &g.download(&g1).unwrap(), &c1, 0.0, 2e-6);
        // deterministic: the same call twice gives the same bits
        let mut g2 = g.upload(&[0.0]).unwrap();
        g.sum_squares(&mut g2, &gx, p).unwrap();
        assert_eq!(g.download(&g1).unwrap(), g.download(&g2).unwrap(), "sum_squares n={n} not deterministic");
    }
}

/// Six steps per size; the squared norm of step k's gradient is measured on the CPU and the
/// threshold picks clipping active (steps 1-2: threshold 1e-3, far under the norm), inactive
/// (3-4: 1e9) and off (5-6: 0).
#[test]
fn adamw_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(63);
    for &n in &[1usize, 7, 1000, 70_001] {
        let (mut cp, mut gp) = both(g, &crate::common::randv(&mut rng, n, 1.0));
        let (mut cm, mut gm) = both(g, &vec![0.0; n]);
        let (mut cv, mut gv) = both(g, &vec![0.0; n]);
        for step in 1..=6 {
            let grad = crate::common::randv(&mut rng, n, 0.01 * step as f32);
            let (cg, gg) = both(g, &grad);
            let norm_sq = grad.iter().map(|x| x * x).sum::<f32>();
            let (cn, gn) = both(g, &[norm_sq]);
            let p = crate::common::adamw_params(n, step, [1e-3, 1e9, 0.0][(step as usize - 1) / 2]);
            c.adamw(&mut cp, &mut cm, &mut cv, &cg, &cn, p).unwrap();
            g.adamw(&mut gp, &mut gm, &mut gv, &gg, &gn, p).unwrap();
            assert_eq!(g.download(&gg).unwrap(), grad, "adamw n={n} modified the gradient");
        }
        // the moments to 1e-6 of their largest value + 1e-5 relative
        let scale = |w: &[f32]| 1e-6 * w.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert_close(&format!("adamw n={n} m"), &g.download(&gm).unwrap(), &cm, scale(&cm), 1e-5);
        assert_close(&format!("adamw n={n} v"), &g.download(&gv).unwrap(), &cv, scale(&cv), 1e-5);
        assert_close(&format!("adamw n={n} param"), &g.download(&gp).unwrap(), &cp, 1e-6, 1e-5);
        // a non-finite squared norm: nothing changes, bit for bit
        let (p0, m0, v0) = (g.download(&gp).unwrap(), g.download(&gm).unwrap(), g.download(&gv).unwrap());
        let gg = g.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
        for bad in [f32::NAN, f32::INFINITY] {
            for max_grad_norm in [1.0, 0.0] {
                let gn = g.upload(&[bad]).unwrap();
                let p = crate::common::adamw_params(n, 1, max_grad_norm);
                g.adamw(&mut gp, &mut gm, &mut gv, &gg, &gn, p).unwrap();
                let bits = |x: Vec<f32>| x.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                let what = format!("adamw n={n} norm_sq={bad} max_grad_norm={max_grad_norm}");
                assert_eq!(bits(g.download(&gp).unwrap()), bits(p0.clone()), "{what}: param changed");
                assert_eq!(bits(g.download(&gm).unwrap()), bits(m0.clone()), "{what}: m changed");
                assert_eq!(bits(g.download(&gv).unwrap()), bits(v0.clone()), "{what}: v changed");
            }
        }
    }
}

/// `adamw_many` slots over `[param, m, v, out]` per tensor; every other slot has an `out`.
fn slots<'a, T>(state: &'a mut [[T; 4]], grads: &'a [T]) -> Vec<AdamWSlot<'a, T>> {
    state
        .iter_mut()
        .zip(grads)
        .enumerate()
        .map(|(i, ([w, m, v, out], grad))| AdamWSlot { param: w, m, v, grad, out: (i % 2 == 0).then_some(out), weight_decay: if i % 2 == 0 { 0.1 } else { 0.0 } })
        .collect()
}

/// `sum_squares_many` over tensors of several sizes onto 0.25, then `adamw_many` (clipping active)
/// with a compute copy on every other slot: the tolerances of `sum_squares_parity` and
/// `adamw_parity` (the copies as the parameters).
#[test]
fn optimizer_many_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(67);
    let sizes = [1usize, 7, 1000, 70_001];
    let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| crate::common::randv(&mut rng, n, 0.1)).collect();
    let (cgrads, ggrads): (Vec<_>, Vec<_>) = grads.iter().map(|x| both(g, x)).unzip();
    let (mut cacc, mut gacc) = both(g, &[0.25]);
    c.sum_squares_many(&mut cacc, &cgrads).unwrap();
    g.sum_squares_many(&mut gacc, &ggrads).unwrap();
    assert_close("sum_squares_many", &g.download(&gacc).unwrap(), &cacc, 0.0, 2e-6);
    let init: Vec<[Vec<f32>; 3]> = sizes
        .iter()
        .map(|&n| [crate::common::randv(&mut rng, n, 1.0), crate::common::randv(&mut rng, n, 0.01), crate::common::randv(&mut rng, n, 0.01).iter().map(|x| x.abs()).collect()])
        .collect();
    let p = crate::common::adamw_params(0, 3, 1.0);
    let mut cstate: Vec<[Vec<f32>; 4]> = init.iter().map(|[w, m, v]| [w.clone(), m.clone(), v.clone(), vec![0.0; w.len()]]).collect();
    let mut gstate: Vec<[rlhf::backend::wgpu::GpuBuf; 4]> = init.iter().map(|[w, m, v]| [g.upload(w).unwrap(), g.upload(m).unwrap(), g.upload(v).unwrap(), g.alloc(w.len()).unwrap()]).collect();
    c.adamw_many(&mut slots(&mut cstate, &cgrads), &cacc, p).unwrap();
    g.adamw_many(&mut slots(&mut gstate, &ggrads), &gacc, p).unwrap();
    let scale = |w: &[f32]| 1e-6 * w.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (i, (cs, gs)) in cstate.iter().zip(&gstate).enumerate() {
        for (k, name) in ["param", "m", "v", "out"].iter().enumerate() {
            let atol = if k == 1 || k == 2 { scale(&cs[k]) } else { 1e-6 };
            assert_close(&format!("adamw_many tensor {i} {name}"), &g.download(&gs[k]).unwrap(), &cs[k], atol, 1e-5);
        }
    }
}

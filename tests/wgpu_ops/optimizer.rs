//! sum_squares, clip_grad and adamw against the CPU backend.
//!
//! Tolerances: sum_squares 2e-6 relative (f32 tree sums on the GPU, f64 on the CPU; accumulated
//! onto a nonzero value, over several tensors, both single-workgroup and two-stage sizes);
//! clip_grad 1e-6 relative (the factor's sqrt and division may differ by an ulp); adamw over
//! 6 steps 1e-6 absolute + 1e-5 relative on the parameters, 1e-6 of the largest value + 1e-5
//! relative on the moments.

use crate::{assert_close, both, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, &str)] = &[("sum_squares", "sum_squares_parity"), ("clip_grad", "clip_grad_parity"), ("adamw", "adamw_parity")];

#[test]
fn sum_squares_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(61);
    let (mut cacc, mut gacc) = both(g, &[1.5]);
    for &n in &[1usize, 7, 1000, 65_536, 65_537, 300_001, 3_000_000] {
        let (cx, gx) = both(g, &crate::common::randv(&mut rng, n, 0.1));
        let p = ElementwiseParams::new(n);
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

#[test]
fn clip_grad_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(62);
    for &(n, norm_sq, max_norm) in &[(1usize, 4.0f32, 1.0f32), (1000, 100.0, 1.0), (70_001, 0.25, 1.0), (70_001, 1e6, 0.5), (5, 0.0, 1.0)] {
        let (cx, gx) = both(g, &crate::common::randv(&mut rng, n, 1.0));
        let (mut cx, mut gx) = (cx, gx);
        let (cn, gn) = both(g, &[norm_sq]);
        let p = ClipParams { n: n as u32, max_norm };
        c.clip_grad(&mut cx, &cn, p).unwrap();
        g.clip_grad(&mut gx, &gn, p).unwrap();
        assert_close(&format!("clip_grad n={n} norm_sq={norm_sq} max_norm={max_norm}"), &g.download(&gx).unwrap(), &cx, 0.0, 1e-6);
    }
}

#[test]
fn adamw_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(63);
    for &n in &[1usize, 7, 1000, 70_001] {
        let (mut cp, mut gp) = both(g, &crate::common::randv(&mut rng, n, 1.0));
        let (mut cm, mut gm) = both(g, &vec![0.0; n]);
        let (mut cv, mut gv) = both(g, &vec![0.0; n]);
        let (b1, b2) = (0.9f32, 0.95f32);
        for step in 1..=6 {
            let (cg, gg) = both(g, &crate::common::randv(&mut rng, n, 0.01 * step as f32));
            let p = AdamWParams {
                n: n as u32,
                lr: 3e-3,
                beta1: b1,
                beta2: b2,
                eps: 1e-8,
                weight_decay: 0.1,
                bias_correction1: 1.0 - b1.powi(step),
                bias_correction2: 1.0 - b2.powi(step),
            };
            c.adamw(&mut cp, &mut cm, &mut cv, &cg, p).unwrap();
            g.adamw(&mut gp, &mut gm, &mut gv, &gg, p).unwrap();
        }
        // the moments to 1e-6 of their largest value + 1e-5 relative
        let scale = |w: &[f32]| 1e-6 * w.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert_close(&format!("adamw n={n} m"), &g.download(&gm).unwrap(), &cm, scale(&cm), 1e-5);
        assert_close(&format!("adamw n={n} v"), &g.download(&gv).unwrap(), &cv, scale(&cv), 1e-5);
        assert_close(&format!("adamw n={n} param"), &g.download(&gp).unwrap(), &cp, 1e-6, 1e-5);
    }
}

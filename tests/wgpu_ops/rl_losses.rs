//! kl_penalty_fwd, kl_penalty_bwd, ppo_loss_fwd_bwd against the CPU backend.
//!
//! Tolerances: per-token outputs `|gpu - cpu| <= 1e-6 max|cpu| + 1e-5 |cpu|` (the device's exp
//! against libm's, and k3 / expm1 from their series for |r| < 0.5 where the CPU cancels between
//! 0.1 and 0.5: both within ~1e-6 relative). The PPO stats (weighted means of O(1) terms, summed
//! in a different order: workgroup trees of 256 then the workgroups, against the CPU's sequential
//! blocks of 1024 added one by one into `stats`) `<= 1e-5 + 1e-5 |cpu|`. The largest difference is
//! the CPU's own drift: 400 sequence blocks added to a stats slot of ~2 put its `weight` 1.5e-5
//! off the exact 2.25 that the shader gets (half the tolerance); everything else stays below a
//! tenth of it. Masked-out tokens carry garbage (NaN, inf, 1e30) in every input but the mask: the
//! outputs there must be exactly 0.

use crate::{assert_close, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::backend::wgpu::GpuBuf;
use rlhf::backend::WgpuBackend;
use rlhf::data::rng::Rng;
use std::time::Instant;

pub const CHECKS: &[(&str, fn())] =
    &[("kl_penalty_fwd", kl_penalty_parity), ("kl_penalty_bwd", kl_penalty_parity), ("ppo_loss_fwd_bwd", ppo_loss_parity)];

const GARBAGE: [f32; 4] = [f32::NAN, 1e30, f32::INFINITY, -3e38];

/// `x` with garbage wherever `mask` is 0.
fn poison(x: &[f32], mask: &[f32]) -> Vec<f32> {
    x.iter().zip(mask).enumerate().map(|(i, (&v, &m))| if m == 0.0 { GARBAGE[i % GARBAGE.len()] } else { v }).collect()
}

fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |a, &v| a.max(v.abs()))
}

#[track_caller]
fn close_scaled(what: &str, got: &[f32], want: &[f32]) {
    assert_close(what, got, want, 1e-6 * max_abs(want), 1e-5);
}

fn up(g: &WgpuBackend, x: &[f32]) -> GpuBuf {
    g.upload(x).unwrap()
}

/// 0/1 mask with about `zero_frac` zeros, in runs (padding-like) and isolated.
fn random_mask(rng: &mut Rng, n: usize, zero_frac: f32) -> Vec<f32> {
    let mut m = vec![1.0f32; n];
    let mut i = 0;
    while i < n {
        if rng.next_f32() < zero_frac / 8.0 {
            let run = 1 + rng.below(16) as usize;
            for x in m.iter_mut().skip(i).take(run) {
                *x = 0.0;
            }
            i += run;
        } else {
            i += 1;
        }
    }
    m
}

#[test]
fn kl_penalty_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let t0 = Instant::now();
    let mut rng = Rng::new(21);
    for &n in &[1usize, 255, 257, 4099, 10_007] {
        let mut mask = random_mask(&mut rng, n, 0.3);
        for (i, m) in mask.iter_mut().enumerate() {
            if i % 97 == 5 && *m != 0.0 {
                *m = 0.5; // non-binary weights multiply through
            }
        }
        let logp: Vec<f32> = (0..n).map(|_| -rng.next_f32() * 5.0).collect();
        // r spread over the series range (|r| < 0.5), beyond, and tiny
        let ref_logp: Vec<f32> = logp
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let r = match i % 3 {
                    0 => rng.normal() * 0.05,
                    1 => rng.normal() * 1.5,
                    _ => rng.normal() * 1e-4,
                };
                l - r
            })
            .collect();
        let dkl: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let (logp_g, ref_g) = (poison(&logp, &mask), poison(&ref_logp, &mask));
        let dkl_g = poison(&dkl, &mask);
        let (gl, gr, gm, gd) = (up(g, &logp_g), up(g, &ref_g), up(g, &mask), up(g, &dkl_g));
        for est in 1..=3u32 {
            let p = KlParams { n: n as u32, estimator: est };
            // outputs start as garbage: overwritten everywhere, 0 under mask 0
            let mut ckl = vec![7.0f32; n];
            let mut gkl = up(g, &vec![f32::NAN; n]);
            c.kl_penalty_fwd(&mut ckl, &logp_g, &ref_g, &mask, p).unwrap();
            g.kl_penalty_fwd(&mut gkl, &gl, &gr, &gm, p).unwrap();
            close_scaled(&format!("kl_penalty_fwd n {n} k{est}"), &g.download(&gkl).unwrap(), &ckl);
            let mut cd = vec![7.0f32; n];
            let mut gdl = up(g, &vec![f32::NAN; n]);
            c.kl_penalty_bwd(&mut cd, &dkl_g, &logp_g, &ref_g, &mask, p).unwrap();
            g.kl_penalty_bwd(&mut gdl, &gd, &gl, &gr, &gm, p).unwrap();
            close_scaled(&format!("kl_penalty_bwd n {n} k{est}"), &g.download(&gdl).unwrap(), &cd);
        }
    }
    // a bad estimator is an error, not a dispatch
    let b = up(g, &[0.0; 4]);
    let mut o = up(g, &[0.0; 4]);
    assert!(g.kl_penalty_fwd(&mut o, &b, &b, &b, KlParams { n: 4, estimator: 4 }).is_err());
    assert!(g.kl_penalty_bwd(&mut o, &b, &b, &b, &b, KlParams { n: 5, estimator: 1 }).is_err());
    eprintln!("kl_penalty_parity: {:.2} s", t0.elapsed().as_secs_f64());
}

/// One PPO batch: inputs (garbage under mask 0) and which optional buffers are passed.
struct PpoCase {
    logp: Vec<f32>,
    old_logp: Vec<f32>,
    adv: Vec<f32>,
    mask: Vec<f32>,
    values: Vec<f32>,
    old_values: Vec<f32>,
    returns: Vec<f32>,
    entropy: Vec<f32>,
    ref_logp: Vec<f32>,
}

fn ppo_case(rng: &mut Rng, mask: Vec<f32>) -> PpoCase {
    let n = mask.len();
    let logp: Vec<f32> = (0..n).map(|_| -0.2 - rng.next_f32() * 4.0).collect();
    // |logp - old_logp| ~ 0.3: ratios on both sides of [0.8, 1.2]; every 5th token ~ 1.5, so that
    // ratios above the dual clip's 3 occur
    let old_logp: Vec<f32> = logp.iter().enumerate().map(|(i, &l)| l + rng.normal() * if i % 5 == 0 { 1.5 } else { 0.3 }).collect();
    let adv: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    let old_values: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    // |V - V_old| ~ 0.3: value clipping (0.2) on about half the tokens
    let values: Vec<f32> = old_values.iter().map(|&v| v + rng.normal() * 0.3).collect();
    let returns: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    let entropy: Vec<f32> = (0..n).map(|_| rng.next_f32() * 3.0).collect();
    let ref_logp: Vec<f32> = logp.iter().enumerate().map(|(i, &l)| l - rng.normal() * if i % 2 == 0 { 0.05 } else { 0.8 }).collect();
    let pz = |x: &[f32]| poison(x, &mask);
    PpoCase {
        logp: pz(&logp),
        old_logp: pz(&old_logp),
        adv: pz(&adv),
        values: pz(&values),
        old_values: pz(&old_values),
        returns: pz(&returns),
        entropy: pz(&entropy),
        ref_logp: pz(&ref_logp),
        mask,
    }
}

/// Runs one configuration on both backends and compares every output and the stats.
fn ppo_compare(g: &WgpuBackend, x: &PpoCase, p: PpoParams, with_values: bool, with_entropy: bool, with_ref: bool, what: &str) {
    let c = cpu();
    let n = x.mask.len();
    let stats0: Vec<f32> = (0..ppo_stat::COUNT).map(|k| 0.25 * k as f32 - 1.0).collect();
    // CPU
    let mut cdl = vec![9.0f32; n];
    let mut cdv = vec![9.0f32; n];
    let mut cde = vec![9.0f32; n];
    let mut cst = stats0.clone();
    c.ppo_loss_fwd_bwd(
        &mut cdl,
        if with_values { Some(&mut cdv) } else { None },
        if with_entropy { Some(&mut cde) } else { None },
        &mut cst,
        &x.logp,
        &x.old_logp,
        &x.adv,
        &x.mask,
        with_values.then_some(&x.values),
        with_values.then_some(&x.old_values),
        with_values.then_some(&x.returns),
        with_entropy.then_some(&x.entropy),
        with_ref.then_some(&x.ref_logp),
        p,
    )
    .unwrap();
    // GPU
    let nan = vec![f32::NAN; n];
    let (mut gdl, mut gdv, mut gde) = (up(g, &nan), up(g, &nan), up(g, &nan));
    let mut gst = up(g, &stats0);
    let (gl, go, ga, gm) = (up(g, &x.logp), up(g, &x.old_logp), up(g, &x.adv), up(g, &x.mask));
    let (gv, gov, gr) = (up(g, &x.values), up(g, &x.old_values), up(g, &x.returns));
    let (ge, grf) = (up(g, &x.entropy), up(g, &x.ref_logp));
    g.ppo_loss_fwd_bwd(
        &mut gdl,
        if with_values { Some(&mut gdv) } else { None },
        if with_entropy { Some(&mut gde) } else { None },
        &mut gst,
        &gl,
        &go,
        &ga,
        &gm,
        with_values.then_some(&gv),
        with_values.then_some(&gov),
        with_values.then_some(&gr),
        with_entropy.then_some(&ge),
        with_ref.then_some(&grf),
        p,
    )
    .unwrap();
    close_scaled(&format!("{what}: dlogp"), &g.download(&gdl).unwrap(), &cdl);
    if with_values {
        close_scaled(&format!("{what}: dvalues"), &g.download(&gdv).unwrap(), &cdv);
    } else {
        assert!(g.download(&gdv).unwrap().iter().all(|v| v.is_nan()), "{what}: dvalues written without values");
    }
    if with_entropy {
        close_scaled(&format!("{what}: dentropy"), &g.download(&gde).unwrap(), &cde);
    }
    let got = g.download(&gst).unwrap();
    if with_values && with_entropy && with_ref && p.dual_clip > 1.0 && n > 100 && x.mask.iter().any(|&m| m != 0.0) {
        // every branch was taken somewhere: each slot moved
        for k in 0..ppo_stat::COUNT {
            assert!((cst[k] - stats0[k]).abs() > 1e-4, "{what}: stats slot {} not exercised", ppo_stat::NAMES[k]);
        }
    }
    for k in 0..ppo_stat::COUNT {
        assert_close(&format!("{what}: stats {}", ppo_stat::NAMES[k]), &got[k..k + 1], &cst[k..k + 1], 1e-5, 1e-5);
    }
}

#[test]
fn ppo_loss_parity() {
    let Some(g) = gpu() else { return };
    let t0 = Instant::now();
    let mut rng = Rng::new(31);
    let base = |n: usize| PpoParams { dual_clip: 3.0, ent_coef: 0.01, kl_coef: 0.05, ..PpoParams::new(n) };

    // token mean, n not a multiple of 256 and over the 4096-token count chunk; every optional
    // buffer with each KL estimator, and without any
    for &n in &[1usize, 300, 10_007] {
        let mask = random_mask(&mut rng, n, 0.3);
        let x = ppo_case(&mut rng, mask);
        for est in 1..=3u32 {
            ppo_compare(g, &x, PpoParams { kl_estimator: est, ..base(n) }, true, true, true, &format!("token mean n {n} k{est}"));
        }
        ppo_compare(g, &x, base(n), false, false, false, &format!("token mean n {n} no optional"));
        ppo_compare(g, &x, base(n), true, false, false, &format!("token mean n {n} values only"));
        ppo_compare(g, &x, base(n), false, true, true, &format!("token mean n {n} entropy + ref"));
        // a shared denominator, no dual clip, no value clipping
        let p = PpoParams { denom: 5000.0, dual_clip: 0.0, value_clip: 0.0, ..base(n) };
        ppo_compare(g, &x, p, true, true, false, &format!("token mean n {n} denom 5000, no clips"));
    }

    // sequence mean: rows of t tokens, some rows fully masked (S counts only the others), more
    // sequences than a workgroup (the denominator pass strides)
    for &(rows, t) in &[(1usize, 37usize), (13, 300), (400, 25)] {
        let n = rows * t;
        let mut mask = random_mask(&mut rng, n, 0.3);
        for r in (0..rows).filter(|r| r % 5 == 2) {
            mask[r * t..(r + 1) * t].fill(0.0);
        }
        let x = ppo_case(&mut rng, mask);
        let p = PpoParams { aggregation: 1, t: t as u32, ..base(n) };
        for est in 1..=3u32 {
            ppo_compare(g, &x, PpoParams { kl_estimator: est, ..p }, true, true, true, &format!("seq mean {rows}x{t} k{est}"));
        }
        ppo_compare(g, &x, p, false, false, false, &format!("seq mean {rows}x{t} no optional"));
        ppo_compare(g, &x, PpoParams { denom: 64.0, ..p }, true, true, true, &format!("seq mean {rows}x{t} denom 64"));
    }

    // nothing masked: zero gradients, stats unchanged
    let n = 777;
    let x = ppo_case(&mut rng, vec![0.0; n]);
    ppo_compare(g, &x, base(n), true, true, true, "all masked, token mean");
    ppo_compare(g, &x, PpoParams { aggregation: 1, t: 7, ..base(n) }, true, true, true, "all masked, seq mean");

    // bad arguments are errors
    let b = up(g, &[0.0; 8]);
    let (mut d, mut s) = (up(g, &[0.0; 8]), up(g, &[0.0; 10]));
    assert!(g.ppo_loss_fwd_bwd(&mut d, None, None, &mut s, &b, &b, &b, &b, Some(&b), None, None, None, None, PpoParams::new(8)).is_err());
    assert!(g
        .ppo_loss_fwd_bwd(&mut d, None, None, &mut s, &b, &b, &b, &b, None, None, None, None, None, PpoParams { aggregation: 1, t: 3, ..PpoParams::new(8) })
        .is_err());
    assert!(g.ppo_loss_fwd_bwd(&mut d, None, None, &mut s, &b, &b, &b, &b, None, None, None, None, None, PpoParams::new(9)).is_err());
    eprintln!("ppo_loss_parity: {:.2} s", t0.elapsed().as_secs_f64());
}

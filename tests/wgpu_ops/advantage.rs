//! gae and masked_whiten against the CPU backend.
//!
//! Tolerances: gae `|gpu - cpu| <= 1e-6 max|cpu| + 1e-5 |cpu|` per row (the same recursion in the
//! same order; only a fused multiply-add the device compiler may form differs, and the scan carries
//! it along the row). masked_whiten: the CPU sums in f64, the shaders in compensated f32 (Neumaier
//! per invocation, TwoSum-merged (hi, lo) pairs across the workgroup and the workgroups), so the
//! mean and std agree to `2e-6` relative (plus `1e-6 std` absolute for a mean near 0) and the
//! count exactly; the whitened values, computed in f32 from the f32 mean and 1/std (the CPU: f64
//! then rounded), to `1e-5 (1 + |mean| / std)` absolute. Garbage (NaN, inf, 1e30) sits under
//! mask 0 in every input: outputs there must be exactly 0. group_advantages and normalize_rewards:
//! the CPU computes in f64, the shaders in f32 with compensated sums, to `2e-5` absolute and
//! relative (advantages of order 1; groups of distinct rewards, so no std near 0).

use crate::{assert_close, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;
use std::time::Instant;

pub const CHECKS: &[(&str, fn())] = &[
    ("gae", gae_parity),
    ("masked_whiten", masked_whiten_parity),
    ("group_advantages", group_advantages_parity),
    ("normalize_rewards", normalize_rewards_parity),
];

const GARBAGE: [f32; 4] = [f32::NAN, 1e30, f32::INFINITY, -3e38];

fn poison(x: &[f32], mask: &[f32]) -> Vec<f32> {
    x.iter().zip(mask).enumerate().map(|(i, (&v, &m))| if m == 0.0 { GARBAGE[i % GARBAGE.len()] } else { v }).collect()
}

/// Rows of `t` with left padding, several response runs separated by gaps, right padding.
fn runs_mask(rng: &mut Rng, b: usize, t: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; b * t];
    for row in m.chunks_mut(t) {
        let mut i = rng.below((t / 4 + 1) as u64) as usize;
        loop {
            let run = 1 + rng.below((t / 3 + 1) as u64) as usize;
            for x in row.iter_mut().skip(i).take(run) {
                *x = 1.0;
            }
            i += run + 1 + rng.below(5) as usize;
            if i >= t || rng.next_f32() < 0.3 {
                break;
            }
        }
    }
    m
}

#[test]
fn gae_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let t0 = Instant::now();
    let mut rng = Rng::new(41);
    // more rows than a workgroup of 64 (70), a long row (1000), a single token
    for &(b, t) in &[(1usize, 1usize), (5, 300), (70, 37), (3, 1000)] {
        let n = b * t;
        let mut mask = runs_mask(&mut rng, b, t);
        if b > 1 {
            mask[t..2 * t].fill(0.0); // an empty row
            mask[0..t].fill(1.0); // a full row
        }
        let rewards = poison(&(0..n).map(|_| rng.normal() * 0.5).collect::<Vec<_>>(), &mask);
        let values = poison(&(0..n).map(|_| rng.normal()).collect::<Vec<_>>(), &mask);
        let (gr, gv, gm) = (g.upload(&rewards).unwrap(), g.upload(&values).unwrap(), g.upload(&mask).unwrap());
        for &(gamma, lambda) in &[(1.0f32, 1.0f32), (0.99, 0.95), (0.5, 0.0)] {
            let p = GaeParams::new(b, t, gamma, lambda);
            let (mut ca, mut cr) = (vec![5.0f32; n], vec![5.0f32; n]);
            c.gae(&mut ca, &mut cr, &rewards, &values, &mask, p).unwrap();
            let (mut ga, mut grt) = (g.upload(&vec![f32::NAN; n]).unwrap(), g.upload(&vec![f32::NAN; n]).unwrap());
            g.gae(&mut ga, &mut grt, &gr, &gv, &gm, p).unwrap();
            let (got_a, got_r) = (g.download(&ga).unwrap(), g.download(&grt).unwrap());
            for row in 0..b {
                let s = row * t..(row + 1) * t;
                let what = format!("gae {b}x{t} gamma {gamma} lambda {lambda} row {row}");
                let scale = |x: &[f32]| 1e-6 * x.iter().fold(0f32, |a, &v| a.max(v.abs()));
                assert_close(&format!("{what}: advantages"), &got_a[s.clone()], &ca[s.clone()], scale(&ca[s.clone()]), 1e-5);
                assert_close(&format!("{what}: returns"), &got_r[s.clone()], &cr[s.clone()], scale(&cr[s.clone()]), 1e-5);
            }
        }
    }
    let b = g.upload(&[0.0; 4]).unwrap();
    let (mut o1, mut o2) = (g.upload(&[0.0; 4]).unwrap(), g.upload(&[0.0; 4]).unwrap());
    assert!(g.gae(&mut o1, &mut o2, &b, &b, &b, GaeParams::new(2, 3, 1.0, 1.0)).is_err());
    assert!(g.gae(&mut o1, &mut o2, &b, &b, &b, GaeParams::new(2, 2, f32::NAN, 1.0)).is_err());
    eprintln!("gae_parity: {:.2} s", t0.elapsed().as_secs_f64());
}

#[test]
fn masked_whiten_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let t0 = Instant::now();
    let mut rng = Rng::new(43);
    // sizes: tiny, not a multiple of 256, several 4096-entry chunks, more chunks than a workgroup
    for &n in &[1usize, 2, 3, 300, 10_007, 1_100_000] {
        let mut mask: Vec<f32> = (0..n).map(|i| if rng.next_f32() < 0.25 || i % 1000 == 999 { 0.0 } else { 1.0 }).collect();
        if n <= 3 {
            mask.fill(1.0);
        }
        let x0 = poison(&(0..n).map(|_| 2.0 + rng.normal() * 1.5).collect::<Vec<_>>(), &mask);
        let gm = g.upload(&mask).unwrap();
        for &(shift, unbiased, eps) in &[(true, true, 1e-8f32), (false, true, 1e-8), (true, false, 1e-2), (false, false, 1e-8)] {
            let p = WhitenParams { eps, ..WhitenParams::new(n).shift_mean(shift).unbiased(unbiased) };
            let what = format!("masked_whiten n {n} shift {shift} unbiased {unbiased} eps {eps}");
            compare(g, &c, &x0, &mask, &gm, p, &what);
        }
    }
    // edge cases: nothing masked, one masked entry (unbiased: var 0), all equal
    for (x0, mask) in [(vec![f32::NAN, 1.0, 2.0], vec![0.0, 0.0, 0.0]), (vec![f32::NAN, 4.0, 1e30], vec![0.0, 1.0, 0.0]), (vec![3.0; 513], vec![1.0; 513])] {
        let gm = g.upload(&mask).unwrap();
        for unbiased in [true, false] {
            let p = WhitenParams::new(x0.len()).unbiased(unbiased);
            compare(g, &c, &x0, &mask, &gm, p, &format!("masked_whiten edge {:?}.. unbiased {unbiased}", &mask[..3]));
        }
    }
    let b = g.upload(&[0.0; 4]).unwrap();
    let mut s = g.upload(&[0.0; 3]).unwrap();
    let mut x = g.upload(&[0.0; 4]).unwrap();
    assert!(g.masked_whiten(&mut x, &mut s, &b, WhitenParams::new(5)).is_err());
    assert!(g.masked_whiten(&mut x, &mut s, &b, WhitenParams { eps: 0.0, ..WhitenParams::new(4) }).is_err());
    eprintln!("masked_whiten_parity: {:.2} s", t0.elapsed().as_secs_f64());
}

fn compare(
    g: &rlhf::backend::WgpuBackend,
    c: &rlhf::backend::CpuBackend,
    x0: &[f32],
    mask: &[f32],
    gm: &rlhf::backend::wgpu::GpuBuf,
    p: WhitenParams,
    what: &str,
) {
    let mut cx = x0.to_vec();
    let mut cs = vec![-7.0f32; whiten_stat::LEN];
    c.masked_whiten(&mut cx, &mut cs, &mask.to_vec(), p).unwrap();
    let mut gx = g.upload(x0).unwrap();
    let mut gs = g.upload(&[f32::NAN; whiten_stat::LEN]).unwrap();
    g.masked_whiten(&mut gx, &mut gs, gm, p).unwrap();
    let got_s = g.download(&gs).unwrap();
    let (mean, std) = (cs[whiten_stat::MEAN], cs[whiten_stat::STD]);
    assert_close(&format!("{what}: mean"), &got_s[0..1], &cs[0..1], 1e-6 * std, 2e-6);
    assert_close(&format!("{what}: std"), &got_s[1..2], &cs[1..2], 0.0, 2e-6);
    assert_close(&format!("{what}: count"), &got_s[2..3], &cs[2..3], 0.0, 0.0);
    let atol = 1e-5 * (1.0 + if std > 0.0 { mean.abs() / std } else { 0.0 });
    assert_close(&format!("{what}: x"), &g.download(&gx).unwrap(), &cx, atol, 1e-5);
}

#[test]
fn group_advantages_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(97);
    use group_estimator::{GRPO, GRPO_NO_STD, RLOO};
    // more tokens than a workgroup, a group of one, a group spanning the batch
    for &(b, t, group, est, beta) in &[(4usize, 3usize, 2usize, GRPO, 0.0f32), (12, 70, 4, GRPO, 0.05), (9, 5, 1, GRPO, 0.0), (16, 130, 8, GRPO_NO_STD, 0.1), (32, 9, 32, RLOO, 0.0), (6, 4, 3, RLOO, 0.2)] {
        let mask: Vec<f32> = (0..b * t).map(|i| if i % t == 0 && t > 1 || rng.below(5) == 0 { 0.0 } else { 1.0 }).collect();
        let rewards: Vec<f32> = (0..b).map(|_| rng.normal()).collect();
        let seq_kl: Vec<f32> = (0..b).map(|_| rng.next_f32() * 3.0).collect();
        let p = GroupAdvantageParams { beta, ..GroupAdvantageParams::new(b, t, group, est) };
        let mut want = vec![f32::NAN; b * t];
        c.group_advantages(&mut want, &rewards, &seq_kl, &mask, p).unwrap();
        let mut got = g.upload(&vec![f32::NAN; b * t]).unwrap();
        g.group_advantages(&mut got, &g.upload(&rewards).unwrap(), &g.upload(&seq_kl).unwrap(), &g.upload(&mask).unwrap(), p).unwrap();
        assert_close(&format!("group_advantages b {b} t {t} group {group} estimator {est} beta {beta}"), &g.download(&got).unwrap(), &want, 2e-5, 2e-5);
    }
    let buf = g.upload(&[0.0; 4]).unwrap();
    let mut out = g.upload(&[0.0; 4]).unwrap();
    assert!(g.group_advantages(&mut out, &buf, &buf, &buf, GroupAdvantageParams::new(4, 1, 3, GRPO)).is_err());
}

#[test]
fn normalize_rewards_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(5);
    for &(count, mean, m2, n) in &[(0.0, 0.0, 0.0, 1usize), (0.0, 0.0, 0.0, 7), (64.0, 1.5, 300.0, 64), (1000.0, -2.0, 4000.0, 1000)] {
        let scores: Vec<f32> = (0..n).map(|_| rng.normal() * 4.0).collect();
        let p = RewardNormParams::new(n, count, mean, m2);
        let mut want = vec![f32::NAN; n];
        c.normalize_rewards(&mut want, &scores, p).unwrap();
        let mut got = g.upload(&vec![f32::NAN; n]).unwrap();
        g.normalize_rewards(&mut got, &g.upload(&scores).unwrap(), p).unwrap();
        assert_close(&format!("normalize_rewards count {count} n {n}"), &g.download(&got).unwrap(), &want, 2e-5, 2e-5);
    }
}

//! PPO's advantage math on the CPU backend: `gae` against a hand-worked example, the
//! gamma = lambda = 1 special case (reward-to-go minus value), padded rows of different lengths
//! against a naive per-row recursion, and `masked_whiten` (zero mean and unit std on the masked
//! entries, zeros elsewhere, the mean kept with `shift_mean` 0), `group_advantages` and
//! `normalize_rewards` (bit for bit the host's estimators and running moments).
//! `tests/ops/main.rs` maps the ops to their tests here in `OP_CHECKS`.

// the references index token by token on purpose: they mirror the formulas
#![allow(clippy::needless_range_loop)]

use rlhf::backend::ops::*;
use rlhf::backend::CpuBackend;
use rlhf::data::rng::Rng;

fn run_gae(rewards: &[f32], values: &[f32], mask: &[f32], b: usize, t: usize, gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>) {
    let be = CpuBackend::new();
    let (mut adv, mut ret) = (vec![f32::NAN; b * t], vec![f32::NAN; b * t]);
    be.gae(&mut adv, &mut ret, &rewards.to_vec(), &values.to_vec(), &mask.to_vec(), GaeParams::new(b, t, gamma, lambda)).unwrap();
    (adv, ret)
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= tol * w.abs().max(1.0), "{what}[{i}]: got {g}, want {w}");
    }
}

/// Naive GAE of one row of response tokens (no padding), straight from the definition
/// `A_t = sum_{l >= 0} (gamma lambda)^l delta_{t+l}` in f64.
fn gae_reference(r: &[f32], v: &[f32], gamma: f64, lambda: f64) -> Vec<f64> {
    let n = r.len();
    let value = |i: usize| if i < n { v[i] as f64 } else { 0.0 };
    let delta: Vec<f64> = (0..n).map(|i| r[i] as f64 + gamma * value(i + 1) - value(i)).collect();
    (0..n).map(|i| (i..n).map(|j| (gamma * lambda).powi((j - i) as i32) * delta[j]).sum()).collect()
}

#[test]
pub(crate) fn gae_hand_worked() {
    // One response of 3 tokens, gamma 0.9, lambda 0.95 (gamma lambda = 0.855),
    // rewards r = [-0.1, -0.2, 1.0] (KL penalties, then the score on the last token),
    // values  V = [ 0.5,  0.6, 0.7], and V after the last token = 0:
    //   t=2: delta = 1.0  + 0.9*0   - 0.7 =  0.3   A = 0.3                     R = 0.3 + 0.7 = 1.0
    //   t=1: delta = -0.2 + 0.9*0.7 - 0.6 = -0.17  A = -0.17 + 0.855*0.3
    //                                                = -0.17 + 0.2565 = 0.0865   R = 0.6865
    //   t=0: delta = -0.1 + 0.9*0.6 - 0.5 = -0.06  A = -0.06 + 0.855*0.0865
    //                                                = -0.06 + 0.0739575 = 0.0139575  R = 0.5139575
    let want_a = [0.0139575, 0.0865, 0.3];
    let want_r = [0.5139575, 0.6865, 1.0];
    let (a, r) = run_gae(&[-0.1, -0.2, 1.0], &[0.5, 0.6, 0.7], &[1.0; 3], 1, 3, 0.9, 0.95);
    assert_close("advantages", &a, &want_a, 1e-6);
    assert_close("returns", &r, &want_r, 1e-6);

    // The same response inside a [2, 6] batch: one masked prompt token before it and two padding
    // tokens after it holding garbage; a second row of 6 response tokens next to it.
    let nan = f32::NAN;
    let rewards = [nan, -0.1, -0.2, 1.0, 1e30, nan, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0];
    let values = [1e30, 0.5, 0.6, 0.7, nan, -1e30, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let mask = [0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
    let (a, r) = run_gae(&rewards, &values, &mask, 2, 6, 0.9, 0.95);
    assert_close("padded advantages", &a[..6], &[0.0, want_a[0], want_a[1], want_a[2], 0.0, 0.0], 1e-6);
    assert_close("padded returns", &r[..6], &[0.0, want_r[0], want_r[1], want_r[2], 0.0, 0.0], 1e-6);
    // row 2: values 0, one reward of 2 at the end: A_t = 0.855^(5 - t) * 2, R_t = A_t
    let want2: Vec<f64> = (0..6).map(|t| 0.855f64.powi(5 - t) * 2.0).collect();
    assert_close("row 2 advantages", &a[6..], &want2, 1e-6);
    assert_close("row 2 returns", &r[6..], &want2, 1e-6);
}

#[test]
fn gae_gamma_lambda_one_is_reward_to_go() {
    // gamma = lambda = 1: the deltas telescope, A_t = sum_{k >= t} r_k - V_t and R_t = sum_{k >= t} r_k
    let mut rng = Rng::new(7);
    let (b, t) = (5, 17);
    let rewards: Vec<f32> = (0..b * t).map(|_| rng.normal()).collect();
    let values: Vec<f32> = (0..b * t).map(|_| rng.normal()).collect();
    let lens = [17, 1, 9, 16, 4];
    let mask: Vec<f32> = (0..b * t).map(|i| if i % t < lens[i / t] { 1.0 } else { 0.0 }).collect();
    let (a, r) = run_gae(&rewards, &values, &mask, b, t, 1.0, 1.0);
    for row in 0..b {
        for i in 0..t {
            let k = row * t + i;
            let (want_r, want_a) = if i < lens[row] {
                let to_go: f64 = (i..lens[row]).map(|j| rewards[row * t + j] as f64).sum();
                (to_go, to_go - values[k] as f64)
            } else {
                (0.0, 0.0)
            };
            assert!((a[k] as f64 - want_a).abs() < 1e-5, "A[{row}, {i}] = {} vs {want_a}", a[k]);
            assert!((r[k] as f64 - want_r).abs() < 1e-5, "R[{row}, {i}] = {} vs {want_r}", r[k]);
        }
    }
}

#[test]
fn gae_padded_rows_of_different_lengths() {
    // Rows of lengths t, 5, 1, 0 and a left-offset response; padding holds garbage that must not
    // leak in. Each row must equal the naive GAE of its response alone, and 0 elsewhere.
    let mut rng = Rng::new(11);
    let (t, gamma, lambda) = (12, 0.99f32, 0.9f32);
    let spans = [(0, 12), (0, 5), (0, 1), (0, 0), (4, 10)];
    let b = spans.len();
    let mut rewards: Vec<f32> = (0..b * t).map(|_| rng.normal()).collect();
    let mut values: Vec<f32> = (0..b * t).map(|_| rng.normal()).collect();
    let mut mask = vec![0f32; b * t];
    for (row, &(s, e)) in spans.iter().enumerate() {
        for i in 0..t {
            if (s..e).contains(&i) {
                mask[row * t + i] = 1.0;
            } else {
                rewards[row * t + i] = if i % 2 == 0 { f32::NAN } else { 1e30 };
                values[row * t + i] = if i % 2 == 0 { f32::INFINITY } else { f32::NAN };
            }
        }
    }
    let (a, r) = run_gae(&rewards, &values, &mask, b, t, gamma, lambda);
    for (row, &(s, e)) in spans.iter().enumerate() {
        let base = row * t;
        let want = gae_reference(&rewards[base + s..base + e], &values[base + s..base + e], gamma as f64, lambda as f64);
        let mut full_a = vec![0f64; t];
        let mut full_r = vec![0f64; t];
        for (j, w) in want.iter().enumerate() {
            full_a[s + j] = *w;
            full_r[s + j] = *w + values[base + s + j] as f64;
        }
        assert_close(&format!("row {row} advantages"), &a[base..base + t], &full_a, 1e-5);
        assert_close(&format!("row {row} returns"), &r[base..base + t], &full_r, 1e-5);
        // the row alone, without padding, gives the same numbers bit for bit
        let (alone_a, _) = run_gae(&rewards[base + s..base + e], &values[base + s..base + e], &vec![1.0; e - s], 1, e - s, gamma, lambda);
        assert_eq!(&a[base + s..base + e], &alone_a[..], "row {row}: padding changed the result");
    }
}

#[test]
fn gae_rejects_bad_arguments() {
    let be = CpuBackend::new();
    let (mut a, mut r) = (vec![0f32; 6], vec![0f32; 6]);
    let x = vec![0f32; 6];
    let short = vec![0f32; 5];
    assert!(be.gae(&mut a, &mut r, &short, &x, &x, GaeParams::new(2, 3, 0.9, 0.95)).is_err());
    assert!(be.gae(&mut a, &mut r, &x, &x, &short, GaeParams::new(2, 3, 0.9, 0.95)).is_err());
    assert!(be.gae(&mut a, &mut r, &x, &x, &x, GaeParams::new(2, 3, -0.9, 0.95)).is_err());
    assert!(be.gae(&mut a, &mut r, &x, &x, &x, GaeParams::new(2, 3, 0.9, f32::NAN)).is_err());
    assert!(be.gae(&mut a, &mut r, &x, &x, &x, GaeParams::new(2, 3, 0.9, 0.95)).is_ok());
}

/// Mean and Bessel-corrected std of `x` where `mask != 0`, in f64.
fn masked_moments(x: &[f32], mask: &[f32]) -> (f64, f64, usize) {
    let sel: Vec<f64> = x.iter().zip(mask).filter(|(_, &m)| m != 0.0).map(|(&v, _)| v as f64).collect();
    let n = sel.len();
    let mean = sel.iter().sum::<f64>() / n as f64;
    let var = sel.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    (mean, var.sqrt(), n)
}

fn random_masked(seed: u64, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = (0..n).map(|_| rng.normal() * 3.0 + 1.5).collect();
    let mask: Vec<f32> = (0..n).map(|_| if rng.normal() > -0.5 { 1.0 } else { 0.0 }).collect();
    (x, mask)
}

#[test]
pub(crate) fn masked_whiten_mean_zero_std_one() {
    let be = CpuBackend::new();
    // 10007 entries: several reduction blocks and a ragged last one
    let n = 10007;
    let (x0, mask) = random_masked(3, n);
    let (mean0, std0, count) = masked_moments(&x0, &mask);
    let mut x = x0.clone();
    let mut stats = vec![f32::NAN; whiten_stat::LEN];
    be.masked_whiten(&mut x, &mut stats, &mask, WhitenParams::new(n)).unwrap();
    let (mean, std, _) = masked_moments(&x, &mask);
    assert!(mean.abs() < 1e-5, "mean after whitening {mean}");
    assert!((std - 1.0).abs() < 1e-5, "std after whitening {std}");
    for i in 0..n {
        if mask[i] == 0.0 {
            assert_eq!(x[i], 0.0, "masked-out entry {i} not zeroed");
        } else {
            let want = (x0[i] as f64 - mean0) / (std0 * std0 + 1e-8).sqrt();
            assert!((x[i] as f64 - want).abs() < 1e-5, "x[{i}] = {} vs {want}", x[i]);
        }
    }
    assert!((stats[whiten_stat::MEAN] as f64 - mean0).abs() < 1e-5, "stats mean {} vs {mean0}", stats[whiten_stat::MEAN]);
    assert!((stats[whiten_stat::STD] as f64 - std0).abs() < 1e-5, "stats std {} vs {std0}", stats[whiten_stat::STD]);
    assert_eq!(stats[whiten_stat::COUNT], count as f32);

    // hand numbers: [1, 2, 3] (and a masked 100): mean 2, unbiased var 1 -> [-1, 0, 1, 0];
    // biased var 2/3 -> [-sqrt(1.5), 0, sqrt(1.5), 0]
    let mask = vec![1.0, 1.0, 1.0, 0.0];
    let mut x = vec![1.0, 2.0, 3.0, 100.0];
    be.masked_whiten(&mut x, &mut stats, &mask, WhitenParams::new(4)).unwrap();
    assert_close("unbiased", &x, &[-1.0, 0.0, 1.0, 0.0], 1e-6);
    assert_close("stats", &stats, &[2.0, 1.0, 3.0], 1e-6);
    let mut x = vec![1.0, 2.0, 3.0, 100.0];
    be.masked_whiten(&mut x, &mut stats, &mask, WhitenParams::new(4).unbiased(false)).unwrap();
    assert_close("biased", &x, &[-(1.5f64.sqrt()), 0.0, 1.5f64.sqrt(), 0.0], 1e-6);

    // the result does not depend on the thread count (fixed reduction order)
    let (x0, mask) = random_masked(5, 30011);
    let mut results = Vec::new();
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut x = x0.clone();
        let mut s = vec![0f32; whiten_stat::LEN];
        pool.install(|| be.masked_whiten(&mut x, &mut s, &mask, WhitenParams::new(x0.len()))).unwrap();
        results.push((x, s));
    }
    assert_eq!(results[0], results[1], "masked_whiten depends on the thread count");
}

#[test]
fn masked_whiten_shift_mean_zero_keeps_the_mean() {
    let be = CpuBackend::new();
    let n = 5000;
    let (x0, mask) = random_masked(9, n);
    let (mean0, std0, _) = masked_moments(&x0, &mask);
    let mut x = x0.clone();
    let mut stats = vec![0f32; whiten_stat::LEN];
    be.masked_whiten(&mut x, &mut stats, &mask, WhitenParams::new(n).shift_mean(false)).unwrap();
    let (mean, std, _) = masked_moments(&x, &mask);
    assert!((mean - mean0).abs() < 1e-4, "mean {mean} vs kept {mean0}");
    assert!((std - 1.0).abs() < 1e-5, "std {std}");
    for i in 0..n {
        if mask[i] == 0.0 {
            assert_eq!(x[i], 0.0);
        } else {
            let want = (x0[i] as f64 - mean0) / std0 + mean0;
            assert!((x[i] as f64 - want).abs() < 1e-4, "x[{i}] = {} vs {want}", x[i]);
        }
    }
}

#[test]
fn masked_whiten_edge_cases() {
    let be = CpuBackend::new();
    let mut stats = vec![0f32; whiten_stat::LEN];
    // nothing masked: all zeros, count 0
    let mut x = vec![1.0, f32::NAN, 3.0];
    be.masked_whiten(&mut x, &mut stats, &vec![0.0; 3], WhitenParams::new(3)).unwrap();
    assert_eq!(x, vec![0.0; 3]);
    assert_eq!(stats, vec![0.0; 3]);
    // one masked entry: var is 0, the entry becomes 0 (its own mean)
    let mut x = vec![1.0, 7.0, 3.0];
    be.masked_whiten(&mut x, &mut stats, &vec![0.0, 1.0, 0.0], WhitenParams::new(3)).unwrap();
    assert_eq!(x, vec![0.0; 3]);
    assert_eq!(stats, vec![7.0, 0.0, 1.0]);
    // bad arguments
    let mask = vec![1.0; 3];
    assert!(be.masked_whiten(&mut x, &mut stats, &mask, WhitenParams::new(4)).is_err());
    assert!(be.masked_whiten(&mut x, &mut vec![0.0; 2], &mask, WhitenParams::new(3)).is_err());
    assert!(be.masked_whiten(&mut x, &mut stats, &mask, WhitenParams { eps: 0.0, ..WhitenParams::new(3) }).is_err());
    assert!(be.masked_whiten(&mut x, &mut stats, &mask, WhitenParams { shift_mean: 2, ..WhitenParams::new(3) }).is_err());
}

/// `group_advantages` equals the host estimators (`kl_penalised`, `sequence_advantages`,
/// `broadcast_to_tokens`) bit for bit on random groups, for each estimator, with and without the
/// KL in the reward; a hand-worked group; and refuses groups that do not divide the batch.
#[test]
pub(crate) fn group_advantages_match_the_host_estimators() {
    use rlhf::rl::advantage_estimators::{broadcast_to_tokens, kl_penalised, sequence_advantages, Estimator};
    let be = CpuBackend::new();
    let mut rng = Rng::new(19);
    let estimators = [(group_estimator::GRPO, Estimator::Grpo { std_scale: true }), (group_estimator::GRPO_NO_STD, Estimator::Grpo { std_scale: false }), (group_estimator::RLOO, Estimator::Rloo)];
    for &(b, t, group) in &[(2usize, 3usize, 2usize), (12, 7, 4), (16, 1, 16), (9, 5, 1), (64, 33, 8)] {
        let rewards: Vec<f32> = (0..b).map(|_| rng.next_f32() * 4.0 - 2.0).collect();
        let seq_kl: Vec<f32> = (0..b).map(|_| rng.next_f32() * 3.0).collect();
        let mask: Vec<f32> = (0..b * t).map(|i| if i % t == 0 && t > 1 || rng.below(5) == 0 { 0.0 } else { 1.0 }).collect();
        for &(code, est) in &estimators {
            if code == group_estimator::RLOO && group < 2 {
                continue;
            }
            for beta in [0.0f32, 0.05] {
                let seq_rewards = if beta == 0.0 { rewards.clone() } else { kl_penalised(&rewards, &seq_kl, beta) };
                let seq = sequence_advantages(est, &seq_rewards, group).unwrap().unwrap();
                let want = broadcast_to_tokens(&seq, &mask, t);
                let mut got = vec![f32::NAN; b * t];
                let p = GroupAdvantageParams { beta, ..GroupAdvantageParams::new(b, t, group, code) };
                be.group_advantages(&mut got, &rewards, &seq_kl, &mask, p).unwrap();
                let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(same, "group_advantages b {b} t {t} group {group} {est:?} beta {beta}: {got:?} vs {want:?}");
            }
        }
    }
    // by hand: rewards [1, 2, 3, 5] in groups of 2, one token each
    let (r, k, m) = (vec![1.0, 2.0, 3.0, 5.0], vec![0.0; 4], vec![1.0; 4]);
    let mut out = vec![0.0; 4];
    be.group_advantages(&mut out, &r, &k, &m, GroupAdvantageParams::new(4, 1, 2, group_estimator::RLOO)).unwrap();
    assert_eq!(out, [-1.0, 1.0, -2.0, 2.0]);
    be.group_advantages(&mut out, &r, &k, &m, GroupAdvantageParams::new(4, 1, 2, group_estimator::GRPO_NO_STD)).unwrap();
    assert_eq!(out, [-0.5, 0.5, -1.0, 1.0]);
    be.group_advantages(&mut out, &r, &k, &m, GroupAdvantageParams::new(4, 1, 2, group_estimator::GRPO)).unwrap();
    // std of {1, 2} is sqrt(0.5), of {3, 5} sqrt(2): both groups give -/+ 1 / sqrt(2) (minus eps)
    for (g, w) in out.iter().zip([-1.0, 1.0, -1.0, 1.0]) {
        assert!((g - w * std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-5, "{out:?}");
    }
    for p in [GroupAdvantageParams::new(4, 1, 3, group_estimator::GRPO), GroupAdvantageParams::new(4, 1, 1, group_estimator::RLOO), GroupAdvantageParams::new(4, 1, 2, 7)] {
        let e = be.group_advantages(&mut out, &r, &k, &m, p).unwrap_err().to_string();
        assert!(e.contains("group_advantages"), "{e}");
    }
}

/// `normalize_rewards` over a stream of batches equals the host's running moments
/// (`RunningMoments::update`, then `(x - mean) / std`) bit for bit, starting from the moments
/// before each batch; the std floor applies to a constant stream.
#[test]
pub(crate) fn normalize_rewards_match_running_moments() {
    use rlhf::rl::running_stats::RunningMoments;
    let be = CpuBackend::new();
    let mut rng = Rng::new(23);
    let mut host = RunningMoments::new();
    for (i, n) in [1usize, 4, 7, 64, 3].into_iter().enumerate() {
        let scores: Vec<f32> = (0..n).map(|_| rng.next_f32() * 10.0 - 3.0 + i as f32).collect();
        let p = RewardNormParams::new(n, host.count, host.mean, host.m2);
        let mut got = vec![f32::NAN; n];
        be.normalize_rewards(&mut got, &scores, p).unwrap();
        host.update(&scores);
        let (m, s) = (host.mean() as f32, host.std().max(1e-6) as f32);
        let want: Vec<f32> = scores.iter().map(|x| (x - m) / s).collect();
        assert_eq!(got, want, "batch {i} of {n}");
    }
    let mut out = vec![0.0; 3];
    be.normalize_rewards(&mut out, &vec![2.0; 3], RewardNormParams::new(3, 5.0, 2.0, 0.0)).unwrap();
    assert_eq!(out, [0.0; 3], "a constant stream: std floored, zeros");
    let e = be.normalize_rewards(&mut out, &vec![2.0; 3], RewardNormParams::new(3, 5.0, 2.0, -1.0)).unwrap_err().to_string();
    assert!(e.contains("normalize_rewards"), "{e}");
}

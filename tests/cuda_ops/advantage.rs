//! gae (several runs of response tokens per row) and masked_whiten (shift or keep the mean,
//! biased or unbiased variance): within 1e-5 absolute + 1e-5 relative. group_advantages (each
//! estimator, with and without the KL in the reward) and normalize_rewards (a stream of batches):
//! the CPU's f64 arithmetic in f64 (only contractions into FMAs and the block reduction's order
//! differ), within 1e-6 absolute + 1e-6 relative.

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[
    ("gae", advantage_parity),
    ("masked_whiten", advantage_parity),
    ("group_advantages", group_advantages_parity),
    ("normalize_rewards", normalize_rewards_parity),
];

fn run<B: Backend>(be: &B, (b, t, shift, unbiased): (usize, usize, bool, bool)) -> Outputs {
    let mut rng = Rng::new(71);
    let n = b * t;
    let mask: Vec<f32> = (0..n).map(|i| if i % t < 2 || rng.below(7) == 0 { 0.0 } else { 1.0 }).collect();
    let m = be.upload(&mask).unwrap();
    let rewards = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let values = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let (mut adv, mut ret) = (be.alloc(n).unwrap(), be.alloc(n).unwrap());
    be.gae(&mut adv, &mut ret, &rewards, &values, &m, GaeParams::new(b, t, 0.99, 0.95)).unwrap();
    let advantages = dl(be, &adv);
    let mut stats = be.alloc(whiten_stat::LEN).unwrap();
    be.masked_whiten(&mut adv, &mut stats, &m, WhitenParams::new(n).shift_mean(shift).unbiased(unbiased)).unwrap();
    vec![("advantages", advantages), ("returns", dl(be, &ret)), ("whitened", dl(be, &adv)), ("stats", dl(be, &stats))]
}

#[test]
fn advantage_parity() {
    parity!(&[(1, 3, true, true), (8, 100, true, true), (33, 257, false, false), (300, 64, true, false)], (1e-5, 1e-5), run);
}

/// `(b, t, group, estimator, beta)`
type GroupCase = (usize, usize, usize, u32, f32);

fn run_group<B: Backend>(be: &B, (b, t, group, estimator, beta): GroupCase) -> Outputs {
    let mut rng = Rng::new(97);
    let mask: Vec<f32> = (0..b * t).map(|i| if i % t == 0 && t > 1 || rng.below(5) == 0 { 0.0 } else { 1.0 }).collect();
    let rewards = be.upload(&crate::common::randv(&mut rng, b, 2.0)).unwrap();
    let seq_kl = be.upload(&crate::common::randv(&mut rng, b, 3.0)).unwrap();
    let m = be.upload(&mask).unwrap();
    let mut adv = be.upload(&vec![f32::NAN; b * t]).unwrap();
    let p = GroupAdvantageParams { beta, ..GroupAdvantageParams::new(b, t, group, estimator) };
    be.group_advantages(&mut adv, &rewards, &seq_kl, &m, p).unwrap();
    vec![("advantages", dl(be, &adv))]
}

#[test]
fn group_advantages_parity() {
    use group_estimator::{GRPO, GRPO_NO_STD, RLOO};
    let cases: &[GroupCase] = &[(4, 3, 2, GRPO, 0.0), (12, 17, 4, GRPO, 0.05), (9, 5, 1, GRPO, 0.0), (16, 130, 8, GRPO_NO_STD, 0.1), (32, 9, 16, RLOO, 0.0), (6, 4, 3, RLOO, 0.2)];
    parity!(cases, (1e-6, 1e-6), run_group);
}

fn run_norm<B: Backend>(be: &B, (count, mean, m2, n): (f64, f64, f64, usize)) -> Outputs {
    let mut rng = Rng::new(5);
    let scores = be.upload(&crate::common::randv(&mut rng, n, 4.0)).unwrap();
    let mut out = be.upload(&vec![f32::NAN; n]).unwrap();
    be.normalize_rewards(&mut out, &scores, RewardNormParams::new(n, count, mean, m2)).unwrap();
    vec![("normalized", dl(be, &out))]
}

#[test]
fn normalize_rewards_parity() {
    let cases = [(0.0, 0.0, 0.0, 1), (0.0, 0.0, 0.0, 7), (64.0, 1.5, 300.0, 64), (1000.0, -2.0, 4000.0, 1000)];
    parity!(&cases, (1e-6, 1e-6), run_norm);
}

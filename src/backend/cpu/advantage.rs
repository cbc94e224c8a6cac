//! Advantages for PPO: generalised advantage estimation and masked whitening.
//!
//! `gae` — `rewards`, `values`, `mask` `[b, t]` (mask 1 on response tokens) to `advantages`,
//! `returns` `[b, t]`. Row by row (rows in parallel, each row a sequential reverse scan):
//!   `delta_t = r_t + gamma V_{t+1} - V_t`,  `A_t = delta_t + gamma lambda A_{t+1}`,
//!   `returns_t = A_t + V_t`,
//! with `V_{t+1} = A_{t+1} = 0` after the last response token (a masked position resets the scan,
//! so each run of response tokens is one episode that ends without bootstrap). Masked positions
//! get 0 in both outputs and their inputs are never read.
//!
//! `masked_whiten` — `x [n]` in place over the entries `m` where `mask [n] != 0`:
//!   `mean = sum_m x / |m|`, `var = sum_m (x - mean)^2 / (|m| - unbiased)`,
//!   `x = (x - mean) / sqrt(var + eps) (+ mean when shift_mean == 0)`, 0 where `mask == 0`;
//!   `stats = [mean, sqrt(var), |m|]`.
//! Two passes (mean, then centred squares, no cancellation) in f64; each pass sums fixed blocks of
//! `WHITEN_BLOCK` entries in parallel and then the block sums in block order, so the result does
//! not depend on the thread count.
//!
//! `group_advantages` — per group of `group` consecutive sequences, `r_s = rewards[s] - beta seq_kl[s]`
//! (f32; the subtraction skipped when `beta` is 0), then in f64 with sums in index order: GRPO
//! `(r - mean) / (std + eps)` (`std` Bessel-corrected, 0 for one sample), Dr. GRPO `r - mean`, RLOO
//! `r - (sum - r) / (n - 1)`; rounded to f32 and written `A_s mask` over the row's `t` tokens.
//!
//! `normalize_rewards` — the running moments `(count, mean, m2)` merged with the batch's
//! `(n, mean_b, var_b)` (two passes in f64) by Chan et al.'s update, then
//! `out = (x - mean') / max(sqrt(m2' / (count' - 1)), eps)` (std 1 with fewer than 2 samples), the
//! mean and std rounded to f32 first.

use super::{check, profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::{group_estimator, whiten_stat, GaeParams, GroupAdvantageParams, RewardNormParams, WhitenParams};
use crate::error::Result;
use rayon::prelude::*;

/// Entries per block of the whitening reductions (fixed, so the summation order is too).
pub const WHITEN_BLOCK: usize = 4096;

pub fn gae(advantages: &mut [f32], returns: &mut [f32], rewards: &[f32], values: &[f32], mask: &[f32], p: GaeParams) {
    let (b, t) = (p.b as usize, p.t as usize);
    if b == 0 || t == 0 {
        return;
    }
    let n = b * t;
    let gl = p.gamma * p.lambda;
    advantages[..n].par_chunks_mut(t).zip(returns[..n].par_chunks_mut(t)).enumerate().for_each(|(row, (adv, ret))| {
        let base = row * t;
        let (r, v, m) = (&rewards[base..base + t], &values[base..base + t], &mask[base..base + t]);
        let (mut next_v, mut next_a) = (0f32, 0f32);
        for i in (0..t).rev() {
            if m[i] == 0.0 {
                adv[i] = 0.0;
                ret[i] = 0.0;
                next_v = 0.0;
                next_a = 0.0;
                continue;
            }
            let delta = r[i] + p.gamma * next_v - v[i];
            let a = delta + gl * next_a;
            adv[i] = a;
            ret[i] = a + v[i];
            next_v = v[i];
            next_a = a;
        }
    });
}

/// Sum over fixed blocks of `f(block of x, block of mask)`, block sums added in block order.
fn block_sum(x: &[f32], mask: &[f32], f: impl Fn(&[f32], &[f32]) -> f64 + Sync) -> f64 {
    let partial: Vec<f64> = x.par_chunks(WHITEN_BLOCK).zip(mask.par_chunks(WHITEN_BLOCK)).map(|(xb, mb)| f(xb, mb)).collect();
    partial.iter().sum()
}

pub fn masked_whiten(x: &mut [f32], stats: &mut [f32], mask: &[f32], p: WhitenParams) {
    let n = p.n as usize;
    let (x, mask) = (&mut x[..n], &mask[..n]);
    let count = block_sum(x, mask, |_, mb| mb.iter().filter(|&&m| m != 0.0).count() as f64);
    let sum = block_sum(x, mask, |xb, mb| xb.iter().zip(mb).filter(|(_, &m)| m != 0.0).map(|(&v, _)| v as f64).sum());
    let mean = if count > 0.0 { sum / count } else { 0.0 };
    let sq = block_sum(x, mask, |xb, mb| xb.iter().zip(mb).filter(|(_, &m)| m != 0.0).map(|(&v, _)| (v as f64 - mean).powi(2)).sum());
    let dof = count - if p.unbiased != 0 { 1.0 } else { 0.0 };
    let var = if dof > 0.0 { sq / dof } else { 0.0 };
    let rstd = 1.0 / (var + p.eps as f64).sqrt();
    let back = if p.shift_mean != 0 { 0.0 } else { mean };
    x.par_chunks_mut(WHITEN_BLOCK).zip(mask.par_chunks(WHITEN_BLOCK)).for_each(|(xb, mb)| {
        for (v, &m) in xb.iter_mut().zip(mb) {
            *v = if m != 0.0 { ((*v as f64 - mean) * rstd + back) as f32 } else { 0.0 };
        }
    });
    stats[whiten_stat::MEAN] = mean as f32;
    stats[whiten_stat::STD] = var.sqrt() as f32;
    stats[whiten_stat::COUNT] = count as f32;
}

/// The sequence advantages of one group of rewards (already KL-penalised), by `p.estimator`.
fn group_sequence_advantages(r: &[f32], p: &GroupAdvantageParams) -> Vec<f32> {
    let n = r.len() as f64;
    let sum = r.iter().map(|&x| x as f64).sum::<f64>();
    if p.estimator == group_estimator::RLOO {
        return r.iter().map(|&x| (x as f64 - (sum - x as f64) / (n - 1.0)) as f32).collect();
    }
    let mean = sum / n;
    let scale = if p.estimator == group_estimator::GRPO {
        let var = if r.len() > 1 { r.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        1.0 / (var.sqrt() + p.eps as f64)
    } else {
        1.0
    };
    r.iter().map(|&x| ((x as f64 - mean) * scale) as f32).collect()
}

pub fn group_advantages(advantages: &mut [f32], rewards: &[f32], seq_kl: &[f32], mask: &[f32], p: GroupAdvantageParams) {
    let (b, t, g) = (p.b as usize, p.t as usize, p.group as usize);
    let r: Vec<f32> = if p.beta == 0.0 { rewards[..b].to_vec() } else { rewards[..b].iter().zip(seq_kl).map(|(&r, &k)| r - p.beta * k).collect() };
    let seq: Vec<f32> = r.chunks(g).flat_map(|group| group_sequence_advantages(group, &p)).collect();
    advantages[..b * t].par_chunks_mut(t.max(1)).zip(mask[..b * t].par_chunks(t.max(1))).zip(&seq).for_each(|((row, m), &a)| {
        for (o, &mi) in row.iter_mut().zip(m) {
            *o = a * mi;
        }
    });
}

pub fn normalize_rewards(out: &mut [f32], scores: &[f32], p: RewardNormParams) {
    let xs = &scores[..p.n as usize];
    let (mut count, mut mean, mut m2) = (p.count, p.mean, p.m2);
    if !xs.is_empty() {
        let nb = xs.len() as f64;
        let mean_b = xs.iter().map(|&x| x as f64).sum::<f64>() / nb;
        let var_b = xs.iter().map(|&x| (x as f64 - mean_b).powi(2)).sum::<f64>() / nb;
        let total = count + nb;
        let delta = mean_b - mean;
        m2 += var_b * nb + delta * delta * count * nb / total;
        mean += delta * nb / total;
        count = total;
    }
    let std = if count > 1.0 { (m2 / (count - 1.0)).sqrt() } else { 1.0 };
    let (m, s) = (mean as f32, std.max(p.eps as f64) as f32);
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = (x - m) / s;
    }
}

impl family::Advantage for CpuBackend {
    fn gae(&self, advantages: &mut Vec<f32>, returns: &mut Vec<f32>, rewards: &Vec<f32>, values: &Vec<f32>, mask: &Vec<f32>, p: GaeParams) -> Result<()> {
        let _t = profile::OpTimer::start("gae");
        let op = "gae";
        let n = p.b as usize * p.t as usize;
        check([advantages.len(), returns.len(), rewards.len(), values.len(), mask.len()].iter().all(|&l| l >= n), op, "buffer shorter than b * t")?;
        check(p.gamma.is_finite() && p.gamma >= 0.0 && p.lambda.is_finite() && p.lambda >= 0.0, op, "gamma and lambda must be finite and >= 0")?;
        gae(advantages, returns, rewards, values, mask, p);
        Ok(())
    }
    fn masked_whiten(&self, x: &mut Vec<f32>, stats: &mut Vec<f32>, mask: &Vec<f32>, p: WhitenParams) -> Result<()> {
        let _t = profile::OpTimer::start("masked_whiten");
        let op = "masked_whiten";
        let n = p.n as usize;
        check(x.len() >= n && mask.len() >= n, op, "x or mask shorter than n")?;
        check(stats.len() >= whiten_stat::LEN, op, "stats shorter than whiten_stat::LEN")?;
        check(p.shift_mean <= 1 && p.unbiased <= 1, op, "shift_mean and unbiased must be 0 or 1")?;
        check(p.eps > 0.0 && p.eps.is_finite(), op, "eps must be positive")?;
        masked_whiten(x, stats, mask, p);
        Ok(())
    }
    fn group_advantages(&self, advantages: &mut Vec<f32>, rewards: &Vec<f32>, seq_kl: &Vec<f32>, mask: &Vec<f32>, p: GroupAdvantageParams) -> Result<()> {
        let _t = profile::OpTimer::start("group_advantages");
        let checked = p.validate([advantages.len(), rewards.len(), seq_kl.len(), mask.len()]);
        check(checked.is_ok(), "group_advantages", checked.err().unwrap_or(""))?;
        group_advantages(advantages, rewards, seq_kl, mask, p);
        Ok(())
    }
    fn normalize_rewards(&self, out: &mut Vec<f32>, scores: &Vec<f32>, p: RewardNormParams) -> Result<()> {
        let _t = profile::OpTimer::start("normalize_rewards");
        let checked = p.validate(out.len(), scores.len());
        check(checked.is_ok(), "normalize_rewards", checked.err().unwrap_or(""))?;
        normalize_rewards(out, scores, p);
        Ok(())
    }
}

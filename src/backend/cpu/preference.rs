//! The DPO family of preference losses (see `PreferenceParams`), forward and gradient in one pass.
//!
//! Shapes: `logp`, `mask`, `dlogp` are `[2P, t]` with the chosen rows `0 .. P` and the rejected
//! rows `P .. 2P` (pair i is rows i and P + i); `ref_sums [2P]` are the cached reference sums.
//! Per row: `s = sum_t mask logp`, `n = sum_t mask`, `d = max(n, 1)` when length-normalised else 1,
//! `a = s / d`, `ra = ref / d`. With `h = (a_c - ra_c) - (a_r - ra_r)`:
//!   sigmoid (cDPO with eps > 0): `z = beta h`, `L = -(1-eps) log s(z) - eps log s(-z)`,
//!     `dL/dh = beta (-(1-eps) s(-z) + eps s(z))`;
//!   IPO: `L = (h - 1/(2 beta))^2`, `dL/dh = 2 (h - 1/(2 beta))`;
//!   SimPO: `z = beta (a_c - a_r) - gamma`, L as sigmoid, `dL/d(a_c - a_r) = beta dL/dz`.
//! `dlogp[c, t] = scale dL/dh mask[c, t] / d_c`, `dlogp[r, t] = -scale dL/dh mask[r, t] / d_r`.
//! `log s(x) = min(x, 0) - log1p(exp(-|x|))` (no overflow, no cancellation).
//! Nothing is saved for backward (the op writes its own gradient). Row sums run in f64 over t in
//! order, stats in f64 over pairs in order: the result does not depend on the thread count.

use super::{check, profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::{preference_loss, preference_stat, PreferenceParams};
use crate::error::Result;

/// `log sigmoid(x)`, stable for any x.
pub fn log_sigmoid(x: f64) -> f64 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `(masked sum, masked count)` of one row.
fn row_sums(logp: &[f32], mask: &[f32]) -> (f64, f64) {
    logp.iter().zip(mask).fold((0.0, 0.0), |(s, n), (&l, &m)| if m != 0.0 { (s + (m * l) as f64, n + m as f64) } else { (s, n) })
}

/// What one pair contributes: its loss, `dL/dh` and the two implicit rewards.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairLoss {
    pub loss: f64,
    pub dh: f64,
    pub chosen_reward: f64,
    pub rejected_reward: f64,
}

/// The loss of one pair from its (normalised) policy terms `a_c, a_r` and reference terms.
pub fn pair_loss(a_c: f64, a_r: f64, ra_c: f64, ra_r: f64, p: &PreferenceParams) -> PairLoss {
    let (beta, eps) = (p.beta as f64, p.label_smoothing as f64);
    let smoothed = |z: f64| {
        let loss = -(1.0 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z);
        (loss, -(1.0 - eps) * sigmoid(-z) + eps * sigmoid(z))
    };
    match p.loss_type {
        preference_loss::SIMPO => {
            let (loss, dz) = smoothed(beta * (a_c - a_r) - p.simpo_gamma as f64);
            PairLoss { loss, dh: beta * dz, chosen_reward: beta * a_c, rejected_reward: beta * a_r }
        }
        t => {
            let h = (a_c - ra_c) - (a_r - ra_r);
            let (loss, dh) = if t == preference_loss::IPO {
                let d = h - 1.0 / (2.0 * beta);
                (d * d, 2.0 * d)
            } else {
                let (loss, dz) = smoothed(beta * h);
                (loss, beta * dz)
            };
            PairLoss { loss, dh, chosen_reward: beta * (a_c - ra_c), rejected_reward: beta * (a_r - ra_r) }
        }
    }
}

pub fn preference_loss_fwd_bwd(dlogp: &mut [f32], stats: &mut [f32], logp: &[f32], mask: &[f32], ref_sums: &[f32], p: PreferenceParams) {
    let (pairs, t) = (p.pairs as usize, p.t as usize);
    let mut acc = [0f64; preference_stat::COUNT];
    for i in 0..pairs {
        let (c, r) = (i, pairs + i);
        let row = |k: usize| (k * t, (k + 1) * t);
        let ((c0, c1), (r0, r1)) = (row(c), row(r));
        let (s_c, n_c) = row_sums(&logp[c0..c1], &mask[c0..c1]);
        let (s_r, n_r) = row_sums(&logp[r0..r1], &mask[r0..r1]);
        let (d_c, d_r) = if p.length_norm != 0 { (n_c.max(1.0), n_r.max(1.0)) } else { (1.0, 1.0) };
        let pl = pair_loss(s_c / d_c, s_r / d_r, ref_sums[c] as f64 / d_c, ref_sums[r] as f64 / d_r, &p);
        let (g_c, g_r) = ((p.scale as f64 * pl.dh / d_c) as f32, (-p.scale as f64 * pl.dh / d_r) as f32);
        for (d, &m) in dlogp[c0..c1].iter_mut().zip(&mask[c0..c1]) {
            *d = g_c * m;
        }
        for (d, &m) in dlogp[r0..r1].iter_mut().zip(&mask[r0..r1]) {
            *d = g_r * m;
        }
        acc[preference_stat::LOSS] += pl.loss;
        acc[preference_stat::CORRECT] += f64::from(u8::from(pl.chosen_reward > pl.rejected_reward));
        acc[preference_stat::CHOSEN_REWARD] += pl.chosen_reward;
        acc[preference_stat::REJECTED_REWARD] += pl.rejected_reward;
        acc[preference_stat::MARGIN] += pl.chosen_reward - pl.rejected_reward;
        acc[preference_stat::PAIRS] += 1.0;
    }
    for (s, a) in stats.iter_mut().zip(acc) {
        *s += a as f32;
    }
}

impl family::Preference for CpuBackend {
    fn preference_loss_fwd_bwd(
        &self,
        dlogp: &mut Vec<f32>,
        stats: &mut Vec<f32>,
        logp: &Vec<f32>,
        mask: &Vec<f32>,
        ref_sums: &Vec<f32>,
        p: PreferenceParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("preference_loss_fwd_bwd");
        let op = "preference_loss_fwd_bwd";
        if let Err(what) = p.validate() {
            return check(false, op, what);
        }
        let n = 2 * p.pairs as usize * p.t as usize;
        check([dlogp.len(), logp.len(), mask.len()].iter().all(|&l| l >= n), op, "dlogp, logp or mask shorter than 2 pairs x t")?;
        check(ref_sums.len() >= 2 * p.pairs as usize, op, "ref_sums shorter than 2 pairs")?;
        check(stats.len() >= preference_stat::COUNT, op, "stats shorter than preference_stat::COUNT")?;
        preference_loss_fwd_bwd(dlogp, stats, logp, mask, ref_sums, p);
        Ok(())
    }
}

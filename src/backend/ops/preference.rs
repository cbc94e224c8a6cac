//! The params of the preference losses (DPO family) (the `preference` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// Loss types of [`PreferenceParams`].
pub mod preference_loss {
    /// DPO: `-(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h)` (eps = label smoothing;
    /// eps > 0 is conservative DPO)
    pub const SIGMOID: u32 = 0;
    /// IPO: `(h - 1 / (2 beta))^2`
    pub const IPO: u32 = 1;
    /// SimPO: `-(1-eps) log sigmoid(z) - eps log sigmoid(-z)`, `z = beta (a_c - a_r) - gamma`,
    /// no reference
    pub const SIMPO: u32 = 2;
    /// names, indexed by the constants
    pub const NAMES: [&str; 3] = ["sigmoid", "ipo", "simpo"];
}

/// Slots of the `stats` buffer of [`Backend::preference_loss_fwd_bwd`](super::Backend::preference_loss_fwd_bwd) (accumulated, unscaled sums
/// over pairs).
pub mod preference_stat {
    /// the per-pair loss
    pub const LOSS: usize = 0;
    /// pairs whose chosen implicit reward is above the rejected one
    pub const CORRECT: usize = 1;
    /// chosen implicit rewards
    pub const CHOSEN_REWARD: usize = 2;
    /// rejected implicit rewards
    pub const REJECTED_REWARD: usize = 3;
    /// chosen minus rejected reward
    pub const MARGIN: usize = 4;
    /// pairs seen
    pub const PAIRS: usize = 5;
    /// number of slots
    pub const COUNT: usize = 6;
    /// slot names, for logging
    pub const NAMES: [&str; COUNT] = ["loss", "correct", "chosen_reward", "rejected_reward", "margin", "pairs"];
}

/// The DPO family of preference losses (DPO, conservative DPO, IPO, SimPO) over `pairs` pairs of
/// sequences whose per-token policy log-probs are the rows of `logp [2 pairs, t]`: rows
/// `0 .. pairs` are the chosen completions, rows `pairs .. 2 pairs` the rejected ones (pair i is
/// rows i and pairs + i). `mask [2 pairs, t]` is 1 on completion tokens (the end token included,
/// never the prompt) and 0 elsewhere; `ref_sums [2 pairs]` holds the reference model's summed
/// completion log-probs, computed once per example (ignored by SimPO).
///
/// Per row, `s = sum_t mask logp`, `n = sum_t mask` and `a = s / max(n, 1)` when `length_norm` is 1
/// (then the reference term is `ref_sums / max(n, 1)` too), else `a = s`. With `a_c, a_r` the
/// chosen and rejected rows and `ra_c, ra_r` their reference terms, `h = (a_c - ra_c) - (a_r - ra_r)`:
/// - [`preference_loss::SIGMOID`]: `L = -(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h)`;
/// - [`preference_loss::IPO`]: `L = (h - 1 / (2 beta))^2` (use `length_norm` 1, as the IPO paper
///   and TRL do);
/// - [`preference_loss::SIMPO`]: `L = -(1-eps) log sigmoid(z) - eps log sigmoid(-z)`,
///   `z = beta (a_c - a_r) - gamma` (use `length_norm` 1).
///
/// Outputs: `dlogp [2 pairs, t]` (overwritten) is `scale dL/dlogp`, i.e.
/// `+-scale dL/dh mask / (n or 1)` (plus on chosen rows, minus on rejected); `scale` is 1 / pairs
/// of the optimiser step for the mean (micro-batches accumulate). `stats [preference_stat::COUNT]`
/// accumulates the unscaled [`preference_stat`] sums, with implicit rewards `beta (a_c - ra_c)`
/// and `beta (a_r - ra_r)` (SimPO: `beta a_c`, `beta a_r`). `log sigmoid` is computed stably.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PreferenceParams {
    pub pairs: u32,
    /// tokens per row
    pub t: u32,
    /// one of [`preference_loss`]
    pub loss_type: u32,
    /// 1: per-token mean log-probs (IPO, SimPO), 0: sums (DPO)
    pub length_norm: u32,
    pub beta: f32,
    /// eps of conservative DPO / SimPO, in [0, 0.5)
    pub label_smoothing: f32,
    /// SimPO's target margin gamma
    pub simpo_gamma: f32,
    /// gradient coefficient (1 / pairs of the optimiser step)
    pub scale: f32,
}

impl PreferenceParams {
    /// Plain DPO (sigmoid loss, sums, beta 0.1) over `pairs` pairs of `t` tokens, scale 1 / pairs.
    pub fn new(pairs: usize, t: usize) -> Self {
        PreferenceParams {
            pairs: pairs as u32,
            t: t as u32,
            loss_type: preference_loss::SIGMOID,
            length_norm: 0,
            beta: 0.1,
            label_smoothing: 0.0,
            simpo_gamma: 0.0,
            scale: 1.0 / pairs.max(1) as f32,
        }
    }

    /// The loss type, beta, label smoothing and flags are in range (every backend checks this).
    pub fn validate(&self) -> std::result::Result<(), &'static str> {
        if self.loss_type > preference_loss::SIMPO {
            return Err("loss_type must be 0 (sigmoid), 1 (ipo) or 2 (simpo)");
        }
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            return Err("beta must be positive");
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return Err("label_smoothing must be in [0, 0.5)");
        }
        if self.length_norm > 1 || !self.simpo_gamma.is_finite() || !self.scale.is_finite() {
            return Err("length_norm must be 0 or 1, simpo_gamma and scale finite");
        }
        Ok(())
    }
}

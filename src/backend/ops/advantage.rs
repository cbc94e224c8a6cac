//! The params of advantages (GAE, whitening) (the `advantage` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// Generalised advantage estimation (Schulman et al. 2016) over `[b, t]` rows of per-token
/// `rewards`, `values` and a 0/1 `mask` (1 on response tokens, which are contiguous per row).
/// Per row, scanning backwards: `delta_t = r_t + gamma V_{t+1} - V_t`,
/// `A_t = delta_t + gamma lambda A_{t+1}`, where `V_{t+1}` and `A_{t+1}` are 0 after the last
/// response token (the episode ends there: no bootstrap); `returns_t = A_t + V_t`. Where
/// `mask == 0` both outputs are 0 and the inputs are never read (padding may be garbage). A row
/// with several runs of response tokens treats each run as its own episode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct GaeParams {
    /// rows (sequences)
    pub b: u32,
    /// tokens per row
    pub t: u32,
    /// discount
    pub gamma: f32,
    /// GAE's bias/variance trade-off (1: Monte-Carlo returns minus values, 0: one-step TD error)
    pub lambda: f32,
}

impl GaeParams {
    pub fn new(b: usize, t: usize, gamma: f32, lambda: f32) -> Self {
        GaeParams { b: b as u32, t: t as u32, gamma, lambda }
    }
}

/// Slots of the `stats` buffer of [`Backend::masked_whiten`](super::Backend::masked_whiten) (overwritten, not accumulated).
pub mod whiten_stat {
    /// mean of the masked entries before whitening
    pub const MEAN: usize = 0;
    /// their standard deviation, `sqrt(var)` (without `eps`)
    pub const STD: usize = 1;
    /// number of masked entries
    pub const COUNT: usize = 2;
    /// number of slots
    pub const LEN: usize = 3;
    /// slot names, for logging
    pub const NAMES: [&str; LEN] = ["mean", "std", "count"];
}

/// Whitening of the masked entries of `x [n]` in place (advantage whitening in PPO):
/// with `m` the entries where `mask != 0`, `mean = sum_m x / |m|`,
/// `var = sum_m (x - mean)^2 / (|m| - 1)` (`unbiased` 1, as `torch.var` and TRL's `masked_var`)
/// or `/ |m|` (`unbiased` 0), and `x = (x - mean) / sqrt(var + eps)`, plus `mean` again when
/// `shift_mean` is 0 (TRL's `masked_whiten(shift_mean=False)`: rescale but keep the mean).
/// Entries with `mask == 0` are set to 0. The sums run in f64 in a fixed order, independent of
/// the thread count. Fewer than 2 (unbiased) or 1 masked entries give `var = 0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct WhitenParams {
    pub n: u32,
    /// 1: subtract the mean (zero-mean output); 0: keep it
    pub shift_mean: u32,
    /// 1: Bessel-corrected variance (divide by count - 1); 0: divide by count
    pub unbiased: u32,
    pub eps: f32,
}

impl WhitenParams {
    /// TRL's defaults: shift the mean, unbiased variance, eps 1e-8.
    pub fn new(n: usize) -> Self {
        WhitenParams { n: n as u32, shift_mean: 1, unbiased: 1, eps: 1e-8 }
    }
    pub fn shift_mean(mut self, yes: bool) -> Self {
        self.shift_mean = yes as u32;
        self
    }
    pub fn unbiased(mut self, yes: bool) -> Self {
        self.unbiased = yes as u32;
        self
    }
}

/// Codes of [`GroupAdvantageParams::estimator`].
pub mod group_estimator {
    /// GRPO: `(r - mean_g) / (std_g + eps)`, `std_g` Bessel-corrected (0 for a group of one)
    pub const GRPO: u32 = 0;
    /// GRPO without std scaling (Dr. GRPO): `r - mean_g`
    pub const GRPO_NO_STD: u32 = 1;
    /// RLOO: `r - mean_{j != i} r_j` (groups of at least 2)
    pub const RLOO: u32 = 2;
}

/// Group-relative sequence advantages broadcast to tokens (`rlhf grpo`'s GRPO, Dr. GRPO and RLOO
/// estimators on the device). Sequence `s` of `b` (prompt-major: groups of `group` consecutive
/// sequences) has the reward `r_s = rewards[s] - beta seq_kl[s]` (f32, `beta` 0 when the KL is not
/// in the reward); its advantage `A_s` is the estimator's over its group (mean and variance in
/// f64 on the CPU and CUDA, two passes in index order), and `advantages[s t + i] = A_s mask[s t + i]`
/// for the `t` tokens of its row (overwritten). `b` must be a multiple of `group`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct GroupAdvantageParams {
    /// sequences
    pub b: u32,
    /// tokens per row of `advantages` and `mask`
    pub t: u32,
    /// sequences per group
    pub group: u32,
    /// one of [`group_estimator`]
    pub estimator: u32,
    /// the KL coefficient subtracted with `seq_kl` (0: the rewards as they are)
    pub beta: f32,
    /// added to the group std (GRPO)
    pub eps: f32,
}

impl GroupAdvantageParams {
    /// `eps` 1e-6 (the host estimators' `GROUP_STD_EPS`), `beta` 0.
    pub fn new(b: usize, t: usize, group: usize, estimator: u32) -> Self {
        GroupAdvantageParams { b: b as u32, t: t as u32, group: group as u32, estimator, beta: 0.0, eps: 1e-6 }
    }

    /// The checks every backend runs before the op: buffer lengths `[advantages, rewards, seq_kl,
    /// mask]`, the estimator, the group size and the coefficients.
    pub fn validate(&self, lens: [usize; 4]) -> std::result::Result<(), &'static str> {
        let (b, t, g) = (self.b as usize, self.t as usize, self.group as usize);
        let [adv, rewards, seq_kl, mask] = lens;
        if adv < b * t || mask < b * t {
            return Err("advantages or mask shorter than b * t");
        }
        if rewards < b || (self.beta != 0.0 && seq_kl < b) {
            return Err("rewards or seq_kl shorter than b");
        }
        if self.estimator > group_estimator::RLOO {
            return Err("unknown estimator");
        }
        let min_group = if self.estimator == group_estimator::RLOO { 2 } else { 1 };
        if g < min_group || b % g != 0 {
            return Err("b must be a multiple of group (at least 2 for RLOO)");
        }
        if !(self.beta.is_finite() && self.eps >= 0.0 && self.eps.is_finite()) {
            return Err("beta and eps must be finite, eps >= 0");
        }
        Ok(())
    }
}

/// Reward normalisation by running moments that include this batch (PPO's `--reward-norm`, as
/// TRL's and OpenRLHF's `RunningMoments`): the moments of everything seen before the batch
/// (`count`, `mean`, `m2` = sum of squared deviations; f64, from the host's running state) are
/// merged with the batch's own `n` scores (Chan et al.'s parallel update, the batch moments two
/// passes in f64), and `out[i] = (scores[i] - mean') / max(std', eps)` with `std'` the
/// Bessel-corrected deviation of the merged data (1 with fewer than 2 samples). The host merges the
/// same batch into its own state after the step's read-back, so nothing comes back early.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RewardNormParams {
    /// samples seen before this batch
    pub count: f64,
    /// their mean
    pub mean: f64,
    /// their sum of squared deviations from the mean
    pub m2: f64,
    /// scores in this batch
    pub n: u32,
    /// the smallest std divided by
    pub eps: f32,
}

impl RewardNormParams {
    /// `eps` 1e-6 (`--reward-norm`'s floor on the std).
    pub fn new(n: usize, count: f64, mean: f64, m2: f64) -> Self {
        RewardNormParams { count, mean, m2, n: n as u32, eps: 1e-6 }
    }

    /// The checks every backend runs before the op: buffer lengths and the running moments.
    pub fn validate(&self, out: usize, scores: usize) -> std::result::Result<(), &'static str> {
        let n = self.n as usize;
        if out < n || scores < n {
            return Err("out or scores shorter than n");
        }
        if !(self.count >= 0.0 && self.count.is_finite() && self.mean.is_finite() && self.m2 >= 0.0 && self.m2.is_finite()) {
            return Err("the running moments must be finite, count and m2 >= 0");
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err("eps must be positive");
        }
        Ok(())
    }
}

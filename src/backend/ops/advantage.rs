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

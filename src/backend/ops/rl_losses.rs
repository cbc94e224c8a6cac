//! The params of the KL penalty and the PPO losses (the `rl_losses` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// Per-token KL between the policy and a frozen reference at the sampled tokens, from their
/// log-probs: `r = logp - ref_logp`, and with `estimator` 1: `k1 = r`, 2: `k2 = r^2 / 2`,
/// 3: `k3 = exp(-r) - 1 + r` (unbiased for KL(policy || reference) and never negative).
/// `kl[i] = mask[i] * k(r_i)`; where `mask[i] == 0` the output and the gradient are 0 whatever
/// the log-probs hold (padding may be garbage).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct KlParams {
    pub n: u32,
    /// 1, 2 or 3 (k1, k2, k3)
    pub estimator: u32,
}

/// Slots of the `stats` buffer of [`Backend::ppo_loss_fwd_bwd`](super::Backend::ppo_loss_fwd_bwd), each a weighted sum over the
/// masked tokens with the same aggregation weights as the loss (token mean: each masked token
/// weighs 1 / masked tokens; sequence mean: 1 / (sequences * that sequence's masked tokens)).
pub mod ppo_stat {
    /// the clipped surrogate (dual clip included)
    pub const POLICY_LOSS: usize = 0;
    /// the (clipped) value loss, before `vf_coef`
    pub const VALUE_LOSS: usize = 1;
    /// the mean entropy (the `entropy` input), before `ent_coef`
    pub const ENTROPY: usize = 2;
    /// fraction of tokens where the clipped surrogate is the larger (its gradient is zero)
    pub const CLIPFRAC: usize = 3;
    /// `k3` estimate of KL(old || new): `(ratio - 1) - log(ratio)`
    pub const APPROX_KL: usize = 4;
    /// the KL-to-reference term (chosen estimator), before `kl_coef`
    pub const KL: usize = 5;
    /// `policy + vf_coef * value - ent_coef * entropy + kl_coef * kl`: the loss whose gradient the op writes
    pub const TOTAL_LOSS: usize = 6;
    /// fraction of tokens where the clipped value loss is the larger
    pub const VALUE_CLIPFRAC: usize = 7;
    /// fraction of tokens where the dual clip bounds the loss (A < 0)
    pub const DUAL_CLIPFRAC: usize = 8;
    /// the sum of the aggregation weights: 1 for a whole batch with any masked token, 0 for none
    pub const WEIGHT: usize = 9;
    /// number of slots
    pub const COUNT: usize = 10;
    /// slot names, for logging
    pub const NAMES: [&str; COUNT] =
        ["policy_loss", "value_loss", "entropy", "clipfrac", "approx_kl", "kl", "total_loss", "value_clipfrac", "dual_clipfrac", "weight"];
}

/// PPO's clipped losses over `n` tokens, forward and backward in one op. Per token, with
/// `ratio = exp(logp - old_logp)` and advantage `A`:
/// `pg = max(-A ratio, -A clip(ratio, 1 - clip_low, 1 + clip_high))`, and with the dual clip
/// (`dual_clip = c > 1`) `pg = min(pg, -c A)` where `A < 0`;
/// value loss (when values are given) `vl = 0.5 max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2)`
/// (`value_clip = eps_v`; 0 turns the clipping off: `vl = 0.5 (V - R)^2`);
/// KL in the loss (when `ref_logp` is given) `kl = k(logp - ref_logp)` with `kl_estimator` 1/2/3
/// as in [`KlParams`];
/// `loss_i = pg + vf_coef vl - ent_coef entropy + kl_coef kl`.
/// Aggregation: `loss = sum_i w_i loss_i` with `mask` weights `m_i` (0/1):
/// 0 (token mean) `w_i = m_i / sum_j m_j`; 1 (sequence mean of token means, rows `[b, t]`)
/// `w_i = m_i / (S * sum_{j in seq(i)} m_j)` with S the number of sequences with a masked token.
/// `denom > 0` replaces `sum_j m_j` (mode 0) or S (mode 1), so that micro-batches of one
/// minibatch can share its denominator. All-masked input gives zero loss and zero gradients.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PpoParams {
    pub n: u32,
    /// tokens per sequence (rows `[n / t, t]`); used by aggregation 1
    pub t: u32,
    /// 0: token mean over the batch, 1: mean over sequences of per-sequence token means
    pub aggregation: u32,
    /// 1, 2 or 3: the estimator of the KL-in-loss term
    pub kl_estimator: u32,
    pub clip_low: f32,
    pub clip_high: f32,
    /// dual-clip constant c (> 1 on; 0 off)
    pub dual_clip: f32,
    /// eps_v of the value clipping (0 off)
    pub value_clip: f32,
    pub vf_coef: f32,
    pub ent_coef: f32,
    pub kl_coef: f32,
    /// 0: this call's denominator; > 0: use this one (see above)
    pub denom: f32,
}

impl PpoParams {
    /// Token-mean PPO with clip 0.2 on both sides, no dual clip, value clip 0.2, vf_coef 0.5,
    /// no entropy bonus, no KL in the loss (k3 if one is set).
    pub fn new(n: usize) -> Self {
        PpoParams {
            n: n as u32,
            t: n as u32,
            aggregation: 0,
            kl_estimator: 3,
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: 0.0,
            value_clip: 0.2,
            vf_coef: 0.5,
            ent_coef: 0.0,
            kl_coef: 0.0,
            denom: 0.0,
        }
    }
}

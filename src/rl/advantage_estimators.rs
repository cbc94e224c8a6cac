//! Critic-free advantage estimators (`rlhf grpo --estimator`), the host references of the device
//! paths: the inputs are one reward per sequence (`P` prompts x `n` samples, prompt-major) or per
//! token.
//!
//! - GRPO (DeepSeekMath): `A_i = (r_i - mean_g) / (std_g + eps)` over the `n` samples of a prompt's
//!   group, `std_g` the Bessel-corrected standard deviation (as `torch.std`, which TRL and verl
//!   use), `eps = 1e-6`; without std scaling (Dr. GRPO) `A_i = r_i - mean_g`.
//! - RLOO: `A_i = r_i - mean_{j != i} r_j` (the leave-one-out baseline; needs `n >= 2`).
//! - REINFORCE++ (OpenRLHF): token rewards (`-beta KL_t` when the KL is in the reward, plus the
//!   sequence reward on the last response token), returns `G_t = sum_{u >= t} r_u` (gamma 1) per
//!   sequence, then whitened over every response token of the batch:
//!   `A_t = (G_t - mean) / sqrt(var + 1e-8)`, `var` Bessel-corrected (as `masked_whiten`).
//!
//! Each sequence advantage applies to every response token of that sequence. The trainer runs
//! every estimator on the device: GRPO, Dr. GRPO and RLOO with the `group_advantages` op
//! ([`kl_penalised`], [`sequence_advantages`] and [`broadcast_to_tokens`] are its reference, equal
//! bit for bit on the CPU backend), REINFORCE++ with `gae` (values 0, gamma 1, lambda 1 gives the
//! reversed cumulative sums) and `masked_whiten` ([`reinforce_pp_advantages`] is its reference).

use crate::error::{Error, Result};

/// The epsilon added to the group standard deviation.
pub const GROUP_STD_EPS: f32 = 1e-6;

/// Which advantage estimator `rlhf grpo` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Estimator {
    /// group-relative: `(r - mean) / (std + eps)`, or `r - mean` without std scaling (Dr. GRPO)
    Grpo { std_scale: bool },
    /// leave-one-out baseline
    Rloo,
    /// batch-whitened returns of token rewards
    ReinforcePp,
}

impl Estimator {
    /// Parses `grpo`, `rloo` or `reinforce++` (`std_scale` applies to GRPO only).
    pub fn parse(name: &str, std_scale: bool) -> Result<Self> {
        match name {
            "grpo" => Ok(Estimator::Grpo { std_scale }),
            "rloo" => Ok(Estimator::Rloo),
            "reinforce++" | "reinforce-pp" => Ok(Estimator::ReinforcePp),
            _ => Err(Error::invalid(format!("--estimator {name:?}: expected grpo, rloo or reinforce++"))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Estimator::Grpo { std_scale: true } => "grpo",
            Estimator::Grpo { std_scale: false } => "grpo (no std scaling)",
            Estimator::Rloo => "rloo",
            Estimator::ReinforcePp => "reinforce++",
        }
    }
}

fn check_groups(rewards: &[f32], group: usize, min_group: usize) -> Result<()> {
    if group < min_group || rewards.len() % group != 0 {
        return Err(Error::invalid(format!("{} rewards do not form groups of {group} (at least {min_group} per group)", rewards.len())));
    }
    Ok(())
}

/// GRPO's group-relative advantages of `rewards` (`[P, group]`, prompt-major).
pub fn grpo_advantages(rewards: &[f32], group: usize, std_scale: bool) -> Result<Vec<f32>> {
    check_groups(rewards, group, 1)?;
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group) {
        let n = g.len() as f64;
        let mean = g.iter().map(|&r| r as f64).sum::<f64>() / n;
        let var = if g.len() > 1 { g.iter().map(|&r| (r as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        let scale = if std_scale { 1.0 / (var.sqrt() + GROUP_STD_EPS as f64) } else { 1.0 };
        out.extend(g.iter().map(|&r| ((r as f64 - mean) * scale) as f32));
    }
    Ok(out)
}

/// RLOO's leave-one-out advantages of `rewards` (`[P, group]`, prompt-major, `group >= 2`).
pub fn rloo_advantages(rewards: &[f32], group: usize) -> Result<Vec<f32>> {
    check_groups(rewards, group, 2)?;
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group) {
        let sum = g.iter().map(|&r| r as f64).sum::<f64>();
        out.extend(g.iter().map(|&r| (r as f64 - (sum - r as f64) / (g.len() - 1) as f64) as f32));
    }
    Ok(out)
}

/// The sequence rewards with the KL in the reward: `r_s - beta sum_t KL_{s,t}` (`seq_kl` holds the
/// per-sequence sums).
pub fn kl_penalised(scores: &[f32], seq_kl: &[f32], beta: f32) -> Vec<f32> {
    scores.iter().zip(seq_kl).map(|(r, k)| r - beta * k).collect()
}

/// Sequence advantages for the group estimators (GRPO, RLOO); `None` for REINFORCE++, whose
/// advantages are per token.
pub fn sequence_advantages(est: Estimator, rewards: &[f32], group: usize) -> Result<Option<Vec<f32>>> {
    match est {
        Estimator::Grpo { std_scale } => grpo_advantages(rewards, group, std_scale).map(Some),
        Estimator::Rloo => rloo_advantages(rewards, group).map(Some),
        Estimator::ReinforcePp => Ok(None),
    }
}

/// REINFORCE++ on the host (the reference of the device path): `token_rewards`, `mask` `[b, t]`
/// row-major (mask 1 on the response tokens, contiguous per row); returns the whitened returns
/// (0 where the mask is 0).
pub fn reinforce_pp_advantages(token_rewards: &[f32], mask: &[f32], t: usize) -> Result<Vec<f32>> {
    if t == 0 || token_rewards.len() != mask.len() || mask.len() % t != 0 {
        return Err(Error::invalid("REINFORCE++: token rewards and mask must both be [b, t]"));
    }
    let mut returns = vec![0f64; mask.len()];
    for (r_row, (m_row, g_row)) in token_rewards.chunks(t).zip(mask.chunks(t).zip(returns.chunks_mut(t))) {
        let mut acc = 0f64;
        for i in (0..t).rev() {
            if m_row[i] != 0.0 {
                acc += r_row[i] as f64;
                g_row[i] = acc;
            } else {
                acc = 0.0;
            }
        }
    }
    let picked: Vec<f64> = returns.iter().zip(mask).filter(|(_, &m)| m != 0.0).map(|(&g, _)| g).collect();
    let n = picked.len() as f64;
    let mean = picked.iter().sum::<f64>() / n.max(1.0);
    let var = if picked.len() > 1 { picked.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    let inv = 1.0 / (var + 1e-8).sqrt();
    Ok(returns.iter().zip(mask).map(|(&g, &m)| if m != 0.0 { ((g - mean) * inv) as f32 } else { 0.0 }).collect())
}

/// Spreads one advantage per sequence over its response tokens: `out[s * t + i] = adv[s] mask[s * t + i]`.
pub fn broadcast_to_tokens(seq_adv: &[f32], mask: &[f32], t: usize) -> Vec<f32> {
    mask.chunks(t).zip(seq_adv).flat_map(|(m, &a)| m.iter().map(move |&x| a * x)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimator_names_parse() {
        assert_eq!(Estimator::parse("grpo", false).unwrap(), Estimator::Grpo { std_scale: false });
        assert_eq!(Estimator::parse("reinforce++", true).unwrap(), Estimator::ReinforcePp);
        assert!(Estimator::parse("ppo", true).unwrap_err().to_string().contains("--estimator"));
    }

    #[test]
    fn kl_in_the_reward_lowers_it() {
        assert_eq!(kl_penalised(&[1.0, 2.0], &[0.5, -1.0], 0.2), vec![0.9, 2.2]);
    }

    #[test]
    fn broadcast_masks_the_prompt() {
        assert_eq!(broadcast_to_tokens(&[2.0, -1.0], &[0.0, 1.0, 1.0, 1.0, 0.0, 0.0], 3), vec![0.0, 2.0, 2.0, -1.0, 0.0, 0.0]);
    }
}

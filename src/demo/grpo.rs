//! The GRPO stage of the demo (`rlhf demo --method grpo`): GRPO from the demo's SFT model with
//! the built-in task's oracle as a verifiable reward (no reward model), the KL to the SFT model in
//! the loss (k3). Returns the trained policy and every step's report (the oracle score of each
//! step's samples among them), as the PPO stage of [`crate::demo`] does.

use crate::backend::ops::Backend;
use crate::data::tokenizer::Tokenizer;
use crate::error::Result;
use crate::model::Model;
use crate::rl::advantage_estimators::Estimator;
use super::task;
use crate::rl::grpo::{run_grpo, GrpoConfig, GrpoModels, GrpoStepReport, KlPlacement, LossAgg, RewardSource};
use crate::train::AdamWConfig;
use std::path::Path;

/// The stage's settings: `steps` of `prompts_per_step` prompts x `group_size` samples.
pub fn demo_grpo_config(out: &Path, seed: u64, steps: usize) -> GrpoConfig {
    GrpoConfig {
        out: out.to_path_buf(),
        steps,
        prompts_per_step: 4,
        group_size: 8,
        estimator: Estimator::Grpo { std_scale: true },
        mini_batch: 16,
        epochs: 1,
        max_new_tokens: 24,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        sync_every: 1,
        lr: 5e-4,
        warmup: 0,
        min_lr_ratio: 1.0,
        optim: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
        kl_coef: 0.05,
        kl_in: KlPlacement::Loss,
        kl_estimator: 3,
        loss_agg: LossAgg::TokenMean,
        clip: 0.2,
        micro_batch_tokens: 0,
        seed,
        log_every: 10,
        control: crate::train::resume::RunControl::replacing(),
    }
}

/// Trains GRPO from the SFT model in `sft_dir` (also the frozen reference) on the task's prompts
/// with the oracle as the reward; saves the policy into `cfg.out`.
pub fn run_grpo_stage<B: Backend>(be: &B, sft_dir: &Path, tok: &Tokenizer, cfg: &GrpoConfig) -> Result<(Model<B>, Vec<GrpoStepReport>)> {
    let mut policy = Model::load(be, sft_dir)?;
    let reference = Model::load(be, sft_dir)?.into_frozen();
    let prompts: Vec<Vec<u32>> = task::prompts(512, cfg.seed ^ 0x9).iter().map(|p| tok.encode(p, true)).collect::<Result<_>>()?;
    let score = |r: &[u32]| tok.decode_with(r, true).map(|s| task::oracle_score(&s)).unwrap_or(0.0);
    let reward = |_: usize, r: &[u32]| score(r);
    let oracle = |_: &[u32], r: &[u32]| score(r);
    let models = GrpoModels { policy: &mut policy, reference: &reference, reward: RewardSource::Function(&reward) };
    let reports = run_grpo(be, models, tok, &prompts, cfg, Some(&oracle))?;
    Ok((policy, reports))
}

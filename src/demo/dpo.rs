//! The DPO stage of `rlhf demo --method dpo`: DPO from the demo's SFT model on the demo task's
//! oracle-labelled (noisy) preference pairs ([`task::preference_groups`], rankings as best
//! against each other), with the SFT model as the reference. Returns the trained policy so that
//! the caller measures its oracle score and KL to the SFT model as it does for PPO
//! ([`crate::demo::evaluate`]).

use crate::backend::ops::Backend;
use crate::data::tokenizer::Tokenizer;
use crate::error::Result;
use crate::model::Model;
use super::task;
use crate::rl::dpo::{run_dpo, DpoConfig, DpoSummary};
use std::path::Path;

/// The demo task's label noise (as the reward-model stage uses).
const LABEL_NOISE: f32 = 0.1;

/// What the DPO stage returns: the trained policy and the run's summary.
pub struct DpoStage<B: Backend> {
    pub policy: Model<B>,
    pub summary: DpoSummary,
}

/// The stage's settings: `quick` is the shortened run of the tests.
pub fn demo_dpo_config(out: &Path, seed: u64, quick: bool) -> DpoConfig {
    let mut cfg = DpoConfig::new(out.to_path_buf(), if quick { 60 } else { 150 }, 16);
    cfg.train.lr = 2e-4;
    cfg.train.warmup = 5;
    cfg.train.seq_len = 64;
    cfg.train.seed = seed;
    cfg.beta = 0.3;
    cfg.eval_fraction = 0.1;
    cfg.train.log_every = 20;
    cfg.train.control = crate::train::resume::RunControl::replacing();
    cfg
}

/// Trains DPO from the SFT checkpoint in `sft_dir` into `out` (checkpoint, metrics.jsonl,
/// ref_logps.json) on `pairs` oracle-labelled comparisons (300 quick, 600 full).
pub fn run_dpo_stage<B: Backend>(be: &B, sft_dir: &Path, tok: &Tokenizer, out: &Path, seed: u64, quick: bool) -> Result<DpoStage<B>> {
    let n = if quick { 300 } else { 600 };
    let groups = task::preference_groups(tok, n, LABEL_NOISE, seed ^ 0x5EED)?;
    let mut policy = Model::load(be, sft_dir)?;
    let cfg = demo_dpo_config(out, seed, quick);
    let summary = run_dpo(be, &mut policy, None, tok, groups, &cfg)?;
    Ok(DpoStage { policy, summary })
}

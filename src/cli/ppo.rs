//! `rlhf ppo`: PPO against a reward model with a per-token KL penalty to the frozen SFT model.

use anyhow::{bail, Result};
use clap::Args;
use rlhf::train::resume::RunControl;
use rlhf::backend::Backend;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::model::{Model, ModelConfig};
use rlhf::train::AdamWConfig;
use std::path::PathBuf;
use super::common::*;

#[derive(Args, Debug)]
pub struct PpoArgs {
    /// The policy to train (an SFT model folder); also the frozen reference unless --reference
    #[arg(long)]
    pub policy: PathBuf,
    /// The frozen reference for the KL penalty (default: --policy)
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// The reward model (as `rlhf rm` saves it)
    #[arg(long, required_unless_present_any = ["reward_cmd", "reward_url"], conflicts_with_all = ["reward_cmd", "reward_url"])]
    pub reward_model: Option<PathBuf>,
    #[command(flatten)]
    pub program: crate::cli::RewardCmdArgs,
    /// The value model's starting point (default: the reward model, as in InstructGPT)
    #[arg(long, conflicts_with = "value_head")]
    pub value_model: Option<PathBuf>,
    /// Use a value head on the policy's own trunk instead of a separate value model
    #[arg(long)]
    pub value_head: bool,
    /// JSONL with {"prompt": "..."} or {"messages": [...]} lines
    #[arg(long)]
    pub prompts: PathBuf,
    /// Output folder: the trained policy (HF layout + tokenizer) and metrics.jsonl
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Prompts sampled per step
    #[arg(long, default_value_t = 16)]
    pub rollout_batch: usize,
    /// The policy-gradient algorithm: ppo (clipped surrogate, --ppo-epochs passes over
    /// minibatches) or a2c (advantage actor-critic: one gradient step per rollout over the whole
    /// batch, no ratio or value clipping; the same rollout, critic and GAE)
    #[arg(long, value_parser = ["ppo", "a2c"], default_value = "ppo")]
    pub algo: String,
    /// Sequences per optimiser step inside an epoch (default 8; a2c: the whole rollout batch)
    #[arg(long)]
    pub mini_batch: Option<usize>,
    /// Passes over each rollout batch (default 4; a2c: 1)
    #[arg(long)]
    pub ppo_epochs: Option<usize>,
    #[command(flatten)]
    pub sampling: RolloutSamplingArgs,
    #[arg(long, default_value_t = 1e-6, allow_negative_numbers = true)]
    pub lr: f32,
    #[arg(long, default_value_t = 1e-5, allow_negative_numbers = true)]
    pub value_lr: f32,
    /// KL coefficient beta (initial value with --kl-target)
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub kl_coef: f32,
    /// Adaptive KL controller: target KL per sequence (with --kl-horizon)
    #[arg(long)]
    pub kl_target: Option<f32>,
    #[arg(long, default_value_t = 10000.0)]
    pub kl_horizon: f32,
    /// Put the KL in the loss with this estimator (1, 2 or 3) instead of in the reward
    #[arg(long)]
    pub kl_in_loss: Option<u32>,
    #[arg(long, default_value_t = 1.0)]
    pub gamma: f32,
    #[arg(long, default_value_t = 0.95)]
    pub lambda: f32,
    /// Ratio clipping of the surrogate (default 0.2; a2c has none)
    #[arg(long, allow_negative_numbers = true)]
    pub clip: Option<f32>,
    /// Value clipping around the rollout's values (default 0.2; a2c has none)
    #[arg(long, allow_negative_numbers = true)]
    pub value_clip: Option<f32>,
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub vf_coef: f32,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub ent_coef: f32,
    /// Do not whiten advantages
    #[arg(long)]
    pub no_whiten: bool,
    /// Normalise reward-model scores with running moments
    #[arg(long)]
    pub reward_norm: bool,
    /// Token budget of one micro-batch (0 = a whole minibatch at once)
    #[arg(long, default_value_t = 0)]
    pub micro_batch_tokens: usize,
    /// PPO-ptx: pretraining/SFT data (JSONL, as `rlhf sft` reads it) mixed into the policy's loss
    #[arg(long)]
    pub ptx_data: Option<PathBuf>,
    /// PPO-ptx: coefficient of the language-modelling loss
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub ptx_coef: f32,
    /// PPO-ptx: sequences of pretraining data per optimiser step
    #[arg(long, default_value_t = 4)]
    pub ptx_batch_size: usize,
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub max_grad_norm: f32,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    #[command(flatten)]
    pub run: RunControl,
    #[command(flatten)]
    pub common: Common,
}

/// `(mini_batch, ppo_epochs, clip, value_clip)` of `--algo`: PPO's flags (or their defaults), or
/// A2C's fixed schedule (a flag that contradicts it is refused).
fn schedule(a: &PpoArgs) -> Result<(usize, usize, f32, f32)> {
    if a.algo == "a2c" {
        let contradicts = [
            ("--ppo-epochs", a.ppo_epochs.is_some_and(|e| e != 1)),
            ("--mini-batch", a.mini_batch.is_some_and(|m| m != a.rollout_batch)),
            ("--clip", a.clip.is_some()),
            ("--value-clip", a.value_clip.is_some()),
        ];
        if let Some((flag, _)) = contradicts.iter().find(|(_, bad)| *bad) {
            bail!("--algo a2c takes one unclipped gradient step per rollout over the whole batch: {flag} does not apply (drop it, or use --algo ppo)");
        }
        // the policy has not moved since the rollout, so the ratio is 1 and a clip range that
        // wide never binds: the surrogate's gradient is A2C's, A grad log pi
        return Ok((a.rollout_batch, 1, rlhf::rl::ppo::A2C_NO_CLIP, 0.0));
    }
    Ok((a.mini_batch.unwrap_or(8), a.ppo_epochs.unwrap_or(4), a.clip.unwrap_or(0.2), a.value_clip.unwrap_or(0.2)))
}

pub fn cmd_ppo<B: Backend>(be: &B, a: &PpoArgs) -> Result<()> {
    let (mini_batch, ppo_epochs, clip, value_clip) = schedule(a)?;
    let cfg = rlhf::rl::ppo::PpoConfig {
        out: a.out.clone(),
        steps: a.steps,
        rollout_batch: a.rollout_batch,
        mini_batch,
        ppo_epochs,
        max_new_tokens: a.sampling.max_new_tokens,
        temperature: a.sampling.temperature,
        top_k: a.sampling.top_k,
        top_p: a.sampling.top_p,
        sync_every: a.sampling.sync_every(be.name()),
        lr: a.lr,
        value_lr: a.value_lr,
        optim: AdamWConfig { weight_decay: 0.0, max_grad_norm: a.max_grad_norm, ..AdamWConfig::default() },
        kl_coef: a.kl_coef,
        kl_target: a.kl_target.map(|t| (t, a.kl_horizon)),
        kl_in_loss: a.kl_in_loss,
        gamma: a.gamma,
        lambda: a.lambda,
        clip,
        value_clip,
        vf_coef: a.vf_coef,
        ent_coef: a.ent_coef,
        whiten_advantages: !a.no_whiten,
        reward_norm: a.reward_norm,
        micro_batch_tokens: a.micro_batch_tokens,
        ptx_coef: a.ptx_coef,
        ptx_batch_size: a.ptx_batch_size,
        seed: a.seed,
        log_every: a.log_every,
        control: a.run.clone(),
    };
    cfg.validate()?;
    if !(a.max_grad_norm >= 0.0 && a.max_grad_norm.is_finite()) {
        bail!("--max-grad-norm must be a non-negative number");
    }
    let tok = Tokenizer::load(&a.policy)?;
    if let Some(dir) = &a.reward_model {
        let reward_tok = Tokenizer::load(dir)?;
        if reward_tok.vocab_size() != tok.vocab_size() || reward_tok.eos_id() != tok.eos_id() {
            bail!(
                "the reward model's tokenizer ({} tokens) differs from the policy's ({} tokens): PPO needs one tokenizer",
                reward_tok.vocab_size(),
                tok.vocab_size()
            );
        }
        if !ModelConfig::load(dir)?.score_head {
            bail!("{}: config.json does not describe a reward model (architectures *ForSequenceClassification); train one with `rlhf rm`", dir.display());
        }
    }
    let value_from = match (a.value_head, a.value_model.as_ref().or(a.reward_model.as_ref())) {
        (true, _) => None,
        (false, Some(dir)) => Some(dir),
        (false, None) => bail!("an outside reward (--reward-cmd, --reward-url) gives no reward model to start the value model from: give --value-model DIR (a reward model folder) or --value-head"),
    };
    let mut policy = Model::load(be, &a.policy)?;
    let reference = Model::load(be, a.reference.as_ref().unwrap_or(&a.policy))?.into_frozen();
    let reward_model = match &a.reward_model {
        Some(dir) => Some(Model::load_reward(be, dir, a.seed)?.into_frozen()),
        None => None,
    };
    let mut value = match value_from {
        Some(dir) => Some(Model::load_reward(be, dir, a.seed)?),
        None => None,
    };
    let context = policy.cfg().max_positions.min(reward_model.as_ref().map_or(usize::MAX, |m| m.cfg().max_positions));
    let prompts = rlhf::data::jsonl::load_prompts_jsonl(&a.prompts, &tok, context)?;
    let program = a.program.start(&a.prompts, &prompts, &tok)?;
    let cmd_fn = |samples: &[(usize, &[u32])]| program.as_ref().expect("only used with --reward-cmd or --reward-url").score(samples);
    let reward = match &reward_model {
        Some(m) => rlhf::rl::grpo::RewardSource::Model(m),
        None => rlhf::rl::grpo::RewardSource::Batch(&cmd_fn),
    };
    let ptx = match &a.ptx_data {
        Some(path) => {
            if !(a.ptx_coef > 0.0 && a.ptx_coef.is_finite()) {
                bail!("--ptx-data needs a positive --ptx-coef");
            }
            Some(rlhf::data::jsonl::load_sft_jsonl(path, &tok)?)
        }
        None if a.ptx_coef != 0.0 => bail!("--ptx-coef needs --ptx-data"),
        None => None,
    };
    eprintln!(
        "ppo: {} prompts from {}, policy {} ({:.2}M parameters), backend {}",
        prompts.len(),
        a.prompts.display(),
        policy.cfg().model_type,
        policy.cfg().num_params() as f64 / 1e6,
        be.name()
    );
    let models = rlhf::rl::ppo::PpoModels { policy: &mut policy, reference: &reference, reward, value: value.as_mut() };
    let reports = rlhf::rl::ppo::run_ppo(be, models, &tok, &prompts, &cfg, ptx, None)?;
    let (first, last) = (reports.first(), reports.last());
    println!(
        "ppo done: reward {:.3} -> {:.3}, KL to the reference {:.3} (last step); policy and metrics.jsonl in {}",
        first.map_or(f32::NAN, |r| r.score_mean),
        last.map_or(f32::NAN, |r| r.score_mean),
        last.map_or(f32::NAN, |r| r.kl_k1),
        a.out.display()
    );
    Ok(())
}

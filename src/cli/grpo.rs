//! `rlhf grpo`: its flags and the command (critic-free RL: GRPO, RLOO, REINFORCE++ with a reward
//! model or a built-in reward function). See `rlhf::rl::grpo` for the training loop.

use super::common::Common;
use anyhow::{bail, Result};
use clap::Args;
use rlhf::train::resume::RunControl;
use rlhf::backend::Backend;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::model::{Model, ModelConfig};
use rlhf::rl::advantage_estimators::Estimator;
use rlhf::rl::grpo::{run_grpo, GrpoConfig, GrpoModels, KlPlacement, LossAgg, RewardSource};
use rlhf::rl::reward_fns::{exact_match, load_answers, RewardFnKind};
use rlhf::train::AdamWConfig;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct GrpoArgs {
    /// The policy to train (an SFT model folder); also the frozen reference unless --ref-model
    #[arg(long)]
    pub model: PathBuf,
    /// The frozen reference of the KL term (default: --model)
    #[arg(long)]
    pub ref_model: Option<PathBuf>,
    /// JSONL with {"prompt": ...} or {"messages": [...]} lines (plus "answer" for --reward-fn exact-match)
    #[arg(long)]
    pub prompts: PathBuf,
    /// Output folder: the trained policy (HF layout + tokenizer) and metrics.jsonl
    #[arg(long)]
    pub out: PathBuf,
    /// Advantage estimator: grpo, rloo or reinforce++
    #[arg(long, default_value = "grpo")]
    pub estimator: String,
    /// Samples per prompt (n)
    #[arg(long, default_value_t = 4)]
    pub group_size: usize,
    /// GRPO without dividing by the group's standard deviation (Dr. GRPO)
    #[arg(long)]
    pub no_std_scale: bool,
    /// Reward model (as `rlhf rm` saves it)
    #[arg(long, conflicts_with_all = ["reward_fn", "reward_cmd", "reward_url"])]
    pub reward_model: Option<PathBuf>,
    /// Built-in reward function: oracle (the demo task's) or exact-match (against each line's "answer")
    #[arg(long, conflicts_with_all = ["reward_cmd", "reward_url"])]
    pub reward_fn: Option<String>,
    #[command(flatten)]
    pub program: crate::cli::RewardCmdArgs,
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Prompts per step (each sampled --group-size times)
    #[arg(long, default_value_t = 8)]
    pub prompts_per_step: usize,
    /// Sequences per optimiser step inside an epoch
    #[arg(long, default_value_t = 16)]
    pub mini_batch: usize,
    /// Passes over each step's samples
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[command(flatten)]
    pub sampling: crate::cli::RolloutSamplingArgs,
    #[arg(long, default_value_t = 1e-6, allow_negative_numbers = true)]
    pub lr: f32,
    /// Linear warm-up steps
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Final learning rate of the cosine decay, as a fraction of --lr (1 = constant)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub min_lr_ratio: f32,
    /// KL coefficient beta (0 = no KL term)
    #[arg(long, default_value_t = 0.04, allow_negative_numbers = true)]
    pub kl_coef: f32,
    /// Where the KL goes: loss (per token, GRPO) or reward
    #[arg(long, default_value = "loss")]
    pub kl_in: String,
    /// KL estimator: k1, k2 or k3 (default: k3 in the loss, k1 in the reward)
    #[arg(long)]
    pub kl_estimator: Option<String>,
    /// Loss aggregation: token-mean, seq-mean or constant (Dr. GRPO: / (max_new_tokens x sequences))
    #[arg(long, default_value = "token-mean")]
    pub loss_agg: String,
    /// Clip range of the ratio
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    pub clip: f32,
    /// Token budget of one micro-batch (0 = a whole minibatch at once)
    #[arg(long, default_value_t = 0)]
    pub micro_batch_tokens: usize,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub weight_decay: f32,
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

fn kl_estimator(name: Option<&str>, kl_in: KlPlacement) -> Result<u32> {
    Ok(match name {
        None if kl_in == KlPlacement::Loss => 3,
        None => 1,
        Some("k1") => 1,
        Some("k2") => 2,
        Some("k3") => 3,
        Some(other) => bail!("--kl-estimator {other:?}: expected k1, k2 or k3"),
    })
}

/// The configuration the flags describe for `backend` (flag errors before any model is loaded).
pub fn grpo_config(a: &GrpoArgs, backend: &str) -> Result<GrpoConfig> {
    let kl_in = match a.kl_in.as_str() {
        "loss" => KlPlacement::Loss,
        "reward" => KlPlacement::Reward,
        other => bail!("--kl-in {other:?}: expected loss or reward"),
    };
    let estimator = Estimator::parse(&a.estimator, !a.no_std_scale)?;
    if a.no_std_scale && !matches!(estimator, Estimator::Grpo { .. }) {
        bail!("--no-std-scale applies to --estimator grpo only");
    }
    if !(a.weight_decay >= 0.0 && a.weight_decay.is_finite() && a.max_grad_norm >= 0.0 && a.max_grad_norm.is_finite()) {
        bail!("--weight-decay and --max-grad-norm must be non-negative numbers");
    }
    let cfg = GrpoConfig {
        out: a.out.clone(),
        steps: a.steps,
        prompts_per_step: a.prompts_per_step,
        group_size: a.group_size,
        estimator,
        mini_batch: a.mini_batch,
        epochs: a.epochs,
        max_new_tokens: a.sampling.max_new_tokens,
        temperature: a.sampling.temperature,
        top_k: a.sampling.top_k,
        top_p: a.sampling.top_p,
        sync_every: a.sampling.sync_every(backend),
        lr: a.lr,
        warmup: a.warmup,
        min_lr_ratio: a.min_lr_ratio,
        optim: AdamWConfig { weight_decay: a.weight_decay, max_grad_norm: a.max_grad_norm, ..AdamWConfig::default() },
        kl_coef: a.kl_coef,
        kl_in,
        kl_estimator: kl_estimator(a.kl_estimator.as_deref(), kl_in)?,
        loss_agg: LossAgg::parse(&a.loss_agg)?,
        clip: a.clip,
        micro_batch_tokens: a.micro_batch_tokens,
        seed: a.seed,
        log_every: a.log_every,
        control: a.run.clone(),
    };
    cfg.validate()?;
    Ok(cfg)
}

pub fn cmd_grpo<B: Backend>(be: &B, a: &GrpoArgs) -> Result<()> {
    let cfg = grpo_config(a, be.name())?;
    const NO_SOURCE: &str = "give a reward source: --reward-model DIR, --reward-fn oracle|exact-match, --reward-cmd CMD or --reward-url URL";
    let reward_fn = match (&a.reward_model, &a.reward_fn) {
        (None, None) if !a.program.given() => bail!(NO_SOURCE),
        (None, None) => None,
        (_, Some(name)) => Some(RewardFnKind::parse(name)?),
        (Some(_), None) => None,
    };
    let tok = Tokenizer::load(&a.model)?;
    let mut policy = Model::load(be, &a.model)?;
    let reference = Model::load(be, a.ref_model.as_ref().unwrap_or(&a.model))?.into_frozen();
    let reward_model = match &a.reward_model {
        Some(dir) => {
            if !ModelConfig::load(dir)?.score_head {
                bail!("{}: config.json does not describe a reward model (architectures *ForSequenceClassification); train one with `rlhf rm`", dir.display());
            }
            let rt = Tokenizer::load(dir)?;
            if rt.vocab_size() != tok.vocab_size() || rt.eos_id() != tok.eos_id() {
                bail!(
                    "the reward model's tokenizer ({} tokens) differs from the policy's ({} tokens): GRPO needs one tokenizer",
                    rt.vocab_size(),
                    tok.vocab_size()
                );
            }
            Some(Model::load_reward(be, dir, a.seed)?.into_frozen())
        }
        None => None,
    };
    let context = policy.cfg().max_positions.min(reward_model.as_ref().map_or(usize::MAX, |m| m.cfg().max_positions));
    let prompts = rlhf::data::jsonl::load_prompts_jsonl(&a.prompts, &tok, context)?;
    let answers = match reward_fn {
        Some(RewardFnKind::ExactMatch) => load_answers(&a.prompts)?,
        _ => Vec::new(),
    };
    let decode = |r: &[u32]| tok.decode_with(r, true).unwrap_or_default();
    let oracle_fn = |_: usize, r: &[u32]| rlhf::demo::task::oracle_score(&decode(r));
    let exact_fn = |i: usize, r: &[u32]| exact_match(&decode(r), &answers[i]);
    let program = a.program.start(&a.prompts, &prompts, &tok)?;
    let cmd_fn = |samples: &[(usize, &[u32])]| program.as_ref().expect("only used with --reward-cmd or --reward-url").score(samples);
    let reward = match (reward_fn, reward_model.as_ref()) {
        (Some(RewardFnKind::Oracle), _) => RewardSource::Function(&oracle_fn),
        (Some(RewardFnKind::ExactMatch), _) => RewardSource::Function(&exact_fn),
        (None, Some(m)) => RewardSource::Model(m),
        (None, None) if program.is_some() => RewardSource::Batch(&cmd_fn),
        (None, None) => bail!(NO_SOURCE),
    };
    eprintln!(
        "grpo: {} prompts from {}, {} x {} samples per step, estimator {}, policy {} ({:.2}M parameters), backend {}",
        prompts.len(),
        a.prompts.display(),
        cfg.prompts_per_step,
        cfg.group_size,
        cfg.estimator.name(),
        policy.cfg().model_type,
        policy.cfg().num_params() as f64 / 1e6,
        be.name()
    );
    let models = GrpoModels { policy: &mut policy, reference: &reference, reward };
    let reports = run_grpo(be, models, &tok, &prompts, &cfg, None)?;
    let (first, last) = (reports.first(), reports.last());
    println!(
        "grpo done: reward {:.3} -> {:.3}, KL to the reference {:.3} (last step); policy and metrics.jsonl in {}",
        first.map_or(f32::NAN, |r| r.reward_mean),
        last.map_or(f32::NAN, |r| r.reward_mean),
        last.map_or(f32::NAN, |r| r.kl),
        a.out.display()
    );
    Ok(())
}

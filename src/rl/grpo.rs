//! Critic-free policy optimisation (`rlhf grpo`): GRPO, Dr. GRPO, RLOO and REINFORCE++.
//! Each step: P prompts x n samples from the grouped rollout (the n samples of a prompt share its
//! prefill) -> rewards (a reward model's scores or a built-in reward function) -> the reference's
//! log-probs and the per-token KL -> advantages ([`crate::rl::advantage_estimators`]; with the KL
//! in the reward, GRPO/RLOO subtract `beta sum_t KL_t` from each sequence's reward and
//! REINFORCE++ puts `-beta KL_t` on every token) -> `epochs` passes over minibatches of sequences
//! with PPO's clipped surrogate (no value model: `vf_coef` 0) and, with the KL in the loss,
//! `beta KL_t` per token (k3 by default). The old log-probs are those the rollout recorded (at
//! temperature 1; at other temperatures the policy's training forward recomputes them).
//! Loss aggregation: token mean over a minibatch, sequence mean of token means, or Dr. GRPO's
//! constant normaliser `max_new_tokens x sequences`. Metrics go to `<out>/metrics.jsonl`.
//! Every estimator runs on the device (`group_advantages`; REINFORCE++ with `gae` and
//! `masked_whiten`), so a step reads its logged statistics back once, after the whole step is
//! enqueued (`step_readout.rs`).

use crate::backend::ops::{group_estimator, Backend, ElementwiseParams, EmbeddingParams, GaeParams, GroupAdvantageParams, KlParams, MatmulParams, PpoParams, WhitenParams};
use crate::data::rng::Rng;
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::generate::{GenerateConfig, RolloutConfig, RolloutEngine};
use crate::model::{Model, Shape};
use crate::rl::advantage_estimators::Estimator;
use crate::model::sequence_scorer::SequenceScorer;
use crate::rl::reward_fns::OracleFn;
use crate::rl::running_stats::mean_std;
use crate::rl::policy_update::{PpoStats, PpoUpdate, StepTensors};
use crate::rl::reward::RewardTrainer;
use crate::rl::rollout_batch::{pack_rollouts, PackedRollouts};
use crate::rl::step_readout::StepReadout;
use crate::rl::update_epochs::{finish_epochs, update_epochs, EpochPlan, RolloutRows};
use crate::train::resume::RunControl;
use crate::train::{AdamWConfig, LrSchedule, RunSpec, TrainRun};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Where the KL to the reference goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KlPlacement {
    /// `beta KL_t` per token in the loss (GRPO)
    Loss,
    /// subtracted from the reward (InstructGPT, REINFORCE++)
    Reward,
}

/// How per-token losses are reduced to a minibatch's loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossAgg {
    /// sum over the minibatch's response tokens / their count
    TokenMean,
    /// mean over sequences of each sequence's token mean
    SeqMean,
    /// sum / (max_new_tokens x sequences) (Dr. GRPO)
    Constant,
}

impl LossAgg {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "token-mean" => Ok(LossAgg::TokenMean),
            "seq-mean" => Ok(LossAgg::SeqMean),
            "constant" => Ok(LossAgg::Constant),
            _ => Err(Error::invalid(format!("--loss-agg {name:?}: expected token-mean, seq-mean or constant"))),
        }
    }

    /// The loss op's aggregation mode and shared denominator for a minibatch of `seqs` sequences
    /// holding `tokens` response tokens.
    pub fn params(self, mut p: PpoParams, seqs: usize, tokens: usize, max_new_tokens: usize) -> PpoParams {
        let (mode, denom) = match self {
            LossAgg::TokenMean => (0, tokens.max(1)),
            LossAgg::SeqMean => (1, seqs.max(1)),
            LossAgg::Constant => (0, (max_new_tokens * seqs).max(1)),
        };
        p.aggregation = mode;
        p.denom = denom as f32;
        p
    }
}

#[derive(Clone, Debug)]
pub struct GrpoConfig {
    pub out: PathBuf,
    pub steps: usize,
    /// prompts per step (P); the step samples P x group_size sequences
    pub prompts_per_step: usize,
    pub group_size: usize,
    pub estimator: Estimator,
    /// sequences per optimiser step within an epoch
    pub mini_batch: usize,
    pub epochs: usize,
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    /// decode steps between read-backs of the rollout engine (see `RolloutConfig::sync_every`)
    pub sync_every: usize,
    pub lr: f32,
    /// linear warm-up steps, then cosine decay to `min_lr_ratio x lr` (1: constant)
    pub warmup: usize,
    pub min_lr_ratio: f32,
    pub optim: AdamWConfig,
    pub kl_coef: f32,
    pub kl_in: KlPlacement,
    /// 1, 2 or 3 (k1, k2, k3)
    pub kl_estimator: u32,
    pub loss_agg: LossAgg,
    pub clip: f32,
    /// token budget of one micro-batch (0: a whole minibatch at once)
    pub micro_batch_tokens: usize,
    pub seed: u64,
    pub log_every: usize,
    /// checkpoints, resume and the divergence guard
    pub control: RunControl,
}

impl GrpoConfig {
    pub fn validate(&self) -> Result<()> {
        for (flag, v) in [
            ("--steps", self.steps),
            ("--prompts-per-step", self.prompts_per_step),
            ("--mini-batch", self.mini_batch),
            ("--epochs", self.epochs),
            ("--max-new-tokens", self.max_new_tokens),
            ("--sync-every", self.sync_every),
        ] {
            if v == 0 {
                return Err(Error::invalid(format!("{flag} must be at least 1")));
            }
        }
        let min_group = if self.estimator == Estimator::ReinforcePp { 1 } else { 2 };
        if self.group_size < min_group {
            return Err(Error::invalid(format!(
                "--group-size {} is too small for --estimator {}: group baselines need at least 2 samples per prompt",
                self.group_size,
                self.estimator.name()
            )));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::invalid(format!("--lr must be a positive number, got {}", self.lr)));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(Error::invalid(format!("--min-lr-ratio must be in [0, 1], got {}", self.min_lr_ratio)));
        }
        for (flag, v) in [("--kl-coef", self.kl_coef), ("--clip", self.clip)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::invalid(format!("{flag} must be a non-negative number, got {v}")));
            }
        }
        if !(1..=3).contains(&self.kl_estimator) {
            return Err(Error::invalid("--kl-estimator must be k1, k2 or k3"));
        }
        if self.temperature <= 0.0 {
            return Err(Error::invalid("--temperature must be positive for GRPO (the policy's log-probs are those of the sampled distribution)"));
        }
        GenerateConfig { temperature: self.temperature, top_p: self.top_p, ..GenerateConfig::default() }.validate()
    }
}

/// A built-in reward: (index of the prompt in the prompt list, response ids) -> reward.
pub type RewardFn<'a> = dyn Fn(usize, &[u32]) -> f32 + 'a;

/// Rewards of a whole step's samples at once: (index of the prompt, response ids) per sample ->
/// their rewards in order (an outside program's, [`crate::rl::reward_cmd`]).
pub type BatchRewardFn<'a> = dyn Fn(&[(usize, &[u32])]) -> Result<Vec<f32>> + 'a;

/// Where rewards come from.
pub enum RewardSource<'a, B: Backend> {
    /// a reward model's score of prompt + response
    Model(&'a Model<B>),
    /// a built-in function of the response
    Function(&'a RewardFn<'a>),
    /// a function of the step's whole batch of samples
    Batch(&'a BatchRewardFn<'a>),
}

pub struct GrpoModels<'a, B: Backend> {
    pub policy: &'a mut Model<B>,
    /// the frozen reference of the KL term
    pub reference: &'a Model<B>,
    pub reward: RewardSource<'a, B>,
}

/// One step's record (also written to metrics.jsonl).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct GrpoStepReport {
    pub step: usize,
    pub reward_mean: f32,
    pub reward_std: f32,
    /// the oracle's mean score of the step's samples, when an oracle is given
    pub oracle: Option<f32>,
    /// KL to the reference per sequence (the `--kl-estimator`'s per-token values summed)
    pub kl: f32,
    pub response_len: f32,
    pub stats: PpoStats,
    pub rollout_tokens_per_sec: f64,
    pub train_tokens_per_sec: f64,
    pub rollout_s: f64,
    pub training_s: f64,
}

/// The whole training state in one place (what an exact resume needs): the step count, the
/// position in the shuffled prompt order, the RNG, and the optimiser (inside `update`).
pub struct GrpoState<B: Backend> {
    /// steps done
    pub step: usize,
    /// the current shuffled order of the prompts and the next position in it
    pub order: Vec<usize>,
    pub cursor: usize,
    pub rng: Rng,
    /// the policy's gradients and AdamW moments
    pub update: PpoUpdate<B>,
}

impl<B: Backend> GrpoState<B> {
    pub fn new(update: PpoUpdate<B>, n_prompts: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut order: Vec<usize> = (0..n_prompts).collect();
        rng.shuffle(&mut order);
        GrpoState { step: 0, order, cursor: 0, rng, update }
    }

    /// The next `k` prompt indices (reshuffling after each pass over the prompts).
    pub fn next_prompts(&mut self, k: usize) -> Vec<usize> {
        (0..k)
            .map(|_| {
                if self.cursor == self.order.len() {
                    self.rng.shuffle(&mut self.order);
                    self.cursor = 0;
                }
                self.cursor += 1;
                self.order[self.cursor - 1]
            })
            .collect()
    }
}

impl LossAgg {
    /// A step's statistics from its minibatch updates: means, except the loss terms, which are
    /// reported as in the loss whose gradient was applied (under Dr. GRPO's constant normaliser
    /// the weighted sum, not the per-token mean the loss op reports).
    pub fn step_stats(self, mb_stats: &[PpoStats]) -> PpoStats {
        let k = mb_stats.len().max(1) as f32;
        let avg = |f: fn(&PpoStats) -> f32| mb_stats.iter().map(f).sum::<f32>() / k;
        let applied = |f: fn(&PpoStats) -> f32| match self {
            LossAgg::Constant => mb_stats.iter().map(|s| f(s) * s.weight).sum::<f32>() / k,
            _ => avg(f),
        };
        PpoStats {
            policy_loss: applied(|s| s.policy_loss),
            entropy: avg(|s| s.entropy),
            clipfrac: avg(|s| s.clipfrac),
            approx_kl: avg(|s| s.approx_kl),
            kl: applied(|s| s.kl),
            total_loss: applied(|s| s.total_loss),
            policy_grad_norm: avg(|s| s.policy_grad_norm),
            ..PpoStats::default()
        }
    }
}

/// The host state of a GRPO run that a checkpoint keeps (besides the policy and its optimiser).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct GrpoRunState {
    step: usize,
    order: Vec<usize>,
    cursor: usize,
    rng: Rng,
    reports: Vec<GrpoStepReport>,
}

/// Per-step device scratch, allocated once.
struct Scratch<B: Backend> {
    mask: B::Buf,
    kl: B::Buf,
    rewards: B::Buf,
    ones: B::Buf,
    seq_kl: B::Buf,
    scores: B::Buf,
    wstats: B::Buf,
    last_pos: B::Ids,
}

/// REINFORCE++ on the device (rows `[b, t]`): token rewards `rewards = -beta kl` (when `kl` is
/// given) plus `scores[s]` at flat position `last_pos[s]`; returns by `gae` with `zeros` as the
/// values and gamma = lambda = 1 (reversed cumulative sums); `advantages` = the returns whitened
/// over the masked tokens (`wstats` gets the statistics). Matches
/// [`crate::rl::advantage_estimators::reinforce_pp_advantages`].
#[allow(clippy::too_many_arguments)]
pub fn reinforce_pp_on_device<B: Backend>(
    be: &B,
    advantages: &mut B::Buf,
    returns: &mut B::Buf,
    rewards: &mut B::Buf,
    wstats: &mut B::Buf,
    kl: Option<(&B::Buf, f32)>,
    scores: &B::Buf,
    last_pos: &B::Ids,
    zeros: &B::Buf,
    mask: &B::Buf,
    b: usize,
    t: usize,
) -> Result<()> {
    let n = b * t;
    let el = ElementwiseParams::new(n)?;
    match kl {
        Some((kl, beta)) => {
            be.copy(rewards, kl, el)?;
            be.scale_inplace(rewards, -beta, el)?;
        }
        None => be.fill(rewards, 0.0, el)?,
    }
    // rewards[last_pos[s]] += scores[s]: a scatter-add of b one-wide rows
    be.embedding_bwd(rewards, scores, last_pos, EmbeddingParams { n: b as u32, c: 1, accumulate: 0, vocab: n as u32 })?;
    be.gae(advantages, returns, rewards, zeros, mask, GaeParams::new(b, t, 1.0, 1.0))?;
    be.masked_whiten(advantages, wstats, mask, WhitenParams::new(n))
}

/// Runs GRPO (or RLOO / REINFORCE++); `oracle` (when given) scores each sample for reporting.
/// Saves the policy (with `tokenizer`) into `cfg.out` at the end and returns every step's report.
pub fn run_grpo<B: Backend>(
    be: &B,
    models: GrpoModels<'_, B>,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    cfg: &GrpoConfig,
    oracle: Option<&OracleFn<'_>>,
) -> Result<Vec<GrpoStepReport>> {
    cfg.validate()?;
    if prompts.is_empty() {
        return Err(Error::invalid("no prompts"));
    }
    let GrpoModels { policy, reference, reward } = models;
    policy.cfg().check_runs_in_policy_buffers("reference model", reference.cfg())?;
    let vocab = policy.cfg().vocab_size;
    let rm = match &reward {
        RewardSource::Model(m) => Some(*m),
        RewardSource::Function(_) | RewardSource::Batch(_) => None,
    };
    let rm_vocab = rm.map_or(vocab, |m| m.cfg().vocab_size);
    if reference.cfg().vocab_size != vocab || rm_vocab != vocab {
        return Err(Error::invalid(format!(
            "the policy, reference and reward models must share a vocabulary (sizes {vocab}, {}, {rm_vocab})",
            reference.cfg().vocab_size
        )));
    }
    let context = policy.cfg().max_positions.min(reference.cfg().max_positions).min(rm.map_or(usize::MAX, |m| m.cfg().max_positions));
    let longest_prompt = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest_prompt + 1 >= context {
        return Err(Error::invalid(format!("a prompt of {longest_prompt} tokens leaves no room for a response in the context of {context}")));
    }
    let max_len = (longest_prompt + cfg.max_new_tokens).min(context);
    let (n_group, p_step) = (cfg.group_size, cfg.prompts_per_step);
    let b = p_step * n_group;
    let pad = tokenizer.pad_or_default();
    let mut scorer =
        SequenceScorer::new(be, policy, b, max_len).map_err(Error::sized_by(format!("--prompts-per-step x --group-size = {b} sequences x {max_len} tokens")))?;
    let mut rm_scorer = rm.map(|m| RewardTrainer::scorer(be, m, b, max_len)).transpose()?;
    let mb_seqs = cfg.mini_batch.min(b);
    let mut update = PpoUpdate::new(be, policy, None, mb_seqs, max_len, cfg.optim)?;
    update.temperature = cfg.temperature;
    let mut state = GrpoState::new(update, prompts.len(), cfg.seed);
    let kl_in_loss = cfg.kl_in == KlPlacement::Loss && cfg.kl_coef > 0.0;
    let mut step_t = StepTensors::new(be, b, max_len, kl_in_loss)?;
    let n_max = b * max_len;
    be.fill(&mut step_t.values, 0.0, ElementwiseParams::new(n_max)?)?;
    let mut dev: Scratch<B> = Scratch {
        mask: be.alloc(n_max)?,
        kl: be.alloc(n_max)?,
        rewards: be.alloc(n_max)?,
        ones: be.alloc(max_len)?,
        seq_kl: be.alloc(b)?,
        scores: be.alloc(b)?,
        wstats: be.alloc(crate::backend::ops::whiten_stat::LEN)?,
        last_pos: be.alloc_ids(b)?,
    };
    be.fill(&mut dev.ones, 1.0, ElementwiseParams::new(max_len)?)?;
    let slots_per_step = EpochPlan { epochs: cfg.epochs, mini_batch: cfg.mini_batch, micro_batch_tokens: 0, lr: cfg.lr, value_lr: cfg.lr }.readout_slots(b);
    // a step's logged scalars: the per-sequence KL, a reward model's scores, every optimiser step's
    let mut readout = StepReadout::new(be, 2 * b + slots_per_step)?;
    let mut engine = RolloutEngine::new();
    let fingerprint = json!({
        "seed": cfg.seed, "prompts_per_step": cfg.prompts_per_step, "group_size": cfg.group_size, "estimator": cfg.estimator.name(),
        "mini_batch": cfg.mini_batch, "epochs": cfg.epochs, "max_new_tokens": cfg.max_new_tokens, "sync_every": cfg.sync_every,
    });
    let schedule = LrSchedule { lr: cfg.lr, warmup: cfg.warmup, total: cfg.steps, min_lr_ratio: cfg.min_lr_ratio };
    let spec = RunSpec { command: "grpo", out: &cfg.out, steps: cfg.steps, log_every: cfg.log_every, control: &cfg.control, fingerprint, schedule: Some(schedule) };
    let (mut trun, ck) = TrainRun::start(spec)?;
    let mut reports = Vec::with_capacity(cfg.steps);
    if let Some(ck) = ck {
        let run: GrpoRunState = ck.value("run")?;
        policy.restore_state(be, &ck, "policy")?;
        state.update.restore_state(be, &ck)?;
        (state.step, state.order, state.cursor, state.rng) = (run.step, run.order, run.cursor, run.rng);
        reports = run.reports;
    }
    let stop_ids = tokenizer.stop_ids();
    let beta = cfg.kl_coef;
    for step in trun.steps() {
        // ---- grouped rollout: P prompts x n samples ----
        let t0 = Instant::now();
        let picked = state.next_prompts(p_step);
        let batch_prompts: Vec<Vec<u32>> = picked.iter().map(|&i| prompts[i].clone()).collect();
        let longest = batch_prompts.iter().map(Vec::len).max().unwrap_or(0);
        let gen = GenerateConfig {
            max_new_tokens: cfg.max_new_tokens.min(max_len - longest),
            temperature: cfg.temperature,
            top_k: cfg.top_k,
            top_p: cfg.top_p,
            seed: cfg.seed ^ ((step as u64) << 20),
            stop_ids: stop_ids.clone(),
            vocab_limit: Some(tokenizer.vocab_size()),
        };
        let rolled = engine.run_grouped(be, policy, &batch_prompts, n_group, &RolloutConfig { slots: b, gen, sync_every: cfg.sync_every })?;
        let rollout_s = t0.elapsed().as_secs_f64();
        let rollout_tokens: usize = rolled.outputs.iter().map(|o| o.response.len()).sum();

        // ---- scoring: old and reference log-probs, KL, rewards ----
        let t1 = Instant::now();
        let seq_prompt: Vec<usize> = picked.iter().flat_map(|&i| std::iter::repeat_n(i, n_group)).collect();
        let prompt_refs: Vec<&[u32]> = seq_prompt.iter().map(|&i| prompts[i].as_slice()).collect();
        let responses: Vec<Vec<u32>> = rolled.outputs.iter().map(|o| o.response.clone()).collect();
        let PackedRollouts { seqs, t, inputs, targets, mask, last_pos } = pack_rollouts(&prompt_refs, &responses, pad);
        let n = b * t;
        let shape = Shape { b, t };
        be.write(&mut dev.mask, &mask)?;
        be.write_ids(&mut dev.last_pos, &last_pos)?;
        readout.begin(be)?;
        step_t.b = b;
        step_t.t = t;
        // two independent phases, overlapping where the backend can (CUDA: a stream each): the
        // log-probs and per-sequence KL on one, a reward model's scores (when it is the source) on
        // the other
        let mut logprobs_and_kl = || -> Result<()> {
            if cfg.temperature == 1.0 {
                // the rollout recorded the sampled tokens' log-probs at temperature 1
                let mut old = vec![0f32; n];
                for (s, o) in rolled.outputs.iter().enumerate() {
                    let from = s * t + o.prompt.len() - 1;
                    old[from..from + o.logprobs.len()].copy_from_slice(&o.logprobs);
                }
                be.write(&mut step_t.old_logp, &old)?;
            } else {
                scorer.logprobs_into(be, policy, shape, &inputs, &targets, cfg.temperature, &mut step_t.old_logp)?;
            }
            scorer.logprobs_into(be, reference, shape, &inputs, &targets, cfg.temperature, &mut step_t.ref_logp)?;
            be.kl_penalty_fwd(&mut dev.kl, &step_t.old_logp, &step_t.ref_logp, &dev.mask, KlParams { n: n as u32, estimator: cfg.kl_estimator })?;
            // per-sequence KL: kl [b, t] @ ones [t, 1]
            be.matmul(&mut dev.seq_kl, &dev.kl, &dev.ones, MatmulParams::new(b, 1, t, false, false))
        };
        let mut model_scores = || match (&reward, rm_scorer.as_mut(), rm) {
            (RewardSource::Function(_) | RewardSource::Batch(_), _, _) => Ok(()),
            (RewardSource::Model(_), Some(sc), Some(m)) => sc.score_on_device(be, m, &seqs, pad).map(|_| ()),
            _ => Err(Error::invalid("a reward model source without its scorer")),
        };
        be.concurrently(&mut [&mut logprobs_and_kl, &mut model_scores])?;
        // the per-sequence KL and a reward model's scores go into the step's readout (logged);
        // the advantages are computed on the device from them, so nothing comes back before the
        // step's end
        let kl_slot = readout.push_prefix(be, &dev.seq_kl, b)?;
        let (scores, score_slot) = match (&reward, rm_scorer.as_ref()) {
            // the host's reward function ran while the device worked
            (RewardSource::Function(f), _) => (Some(seq_prompt.iter().zip(&responses).map(|(&i, r)| f(i, r)).collect::<Vec<f32>>()), None),
            (RewardSource::Batch(f), _) => {
                let samples: Vec<(usize, &[u32])> = seq_prompt.iter().zip(&responses).map(|(&i, r)| (i, r.as_slice())).collect();
                let rewards = f(&samples)?;
                if rewards.len() != b {
                    return Err(Error::invalid(format!("the reward function gave {} rewards for {b} samples", rewards.len())));
                }
                (Some(rewards), None)
            }
            (RewardSource::Model(_), Some(sc)) => (None, Some(readout.push_prefix(be, sc.scores(), b)?)),
            (RewardSource::Model(_), None) => return Err(Error::invalid("a reward model source without its scorer")),
        };
        let slice = |v: &[f32], at: usize| v.get(at..at + b).map(<[f32]>::to_vec).ok_or_else(|| Error::invalid("a GRPO step's readout is short"));
        let scores_on_device = match (&scores, rm_scorer.as_ref()) {
            (Some(s), _) => {
                be.write(&mut dev.scores, s)?;
                &dev.scores
            }
            (None, Some(sc)) => sc.scores(),
            (None, None) => return Err(Error::invalid("a reward model source without its scorer")),
        };

        // ---- advantages ----
        let kl_in_reward = cfg.kl_in == KlPlacement::Reward && beta > 0.0;
        let group_estimator = match cfg.estimator {
            Estimator::Grpo { std_scale: true } => Some(group_estimator::GRPO),
            Estimator::Grpo { std_scale: false } => Some(group_estimator::GRPO_NO_STD),
            Estimator::Rloo => Some(group_estimator::RLOO),
            Estimator::ReinforcePp => None,
        };
        if let Some(est) = group_estimator {
            let gp = GroupAdvantageParams { beta: if kl_in_reward { beta } else { 0.0 }, ..GroupAdvantageParams::new(b, t, n_group, est) };
            be.group_advantages(&mut step_t.advantages, scores_on_device, &dev.seq_kl, &dev.mask, gp)?;
        } else {
            let kl = kl_in_reward.then_some((&dev.kl, beta));
            let (adv, ret) = (&mut step_t.advantages, &mut step_t.returns);
            reinforce_pp_on_device(be, adv, ret, &mut dev.rewards, &mut dev.wstats, kl, scores_on_device, &dev.last_pos, &step_t.values, &dev.mask, b, t)?;
        }
        let scoring_s = t1.elapsed().as_secs_f64();

        // ---- training: clipped surrogate, no value model ----
        let t2 = Instant::now();
        let lr = trun.lr(step);
        let mut p = PpoParams::new(0);
        p.clip_low = cfg.clip;
        p.clip_high = cfg.clip;
        p.value_clip = 0.0;
        p.vf_coef = 0.0;
        p.ent_coef = 0.0;
        if kl_in_loss {
            p.kl_coef = beta;
            p.kl_estimator = cfg.kl_estimator;
        }
        let mut skipped_updates = 0usize;
        let rows = RolloutRows { inputs: &inputs, targets: &targets, mask: &mask, b, t };
        let plan = EpochPlan { epochs: cfg.epochs, mini_batch: cfg.mini_batch, micro_batch_tokens: cfg.micro_batch_tokens, lr, value_lr: lr };
        let aggregated = |seqs: usize, tokens: usize| cfg.loss_agg.params(p, seqs, tokens, cfg.max_new_tokens);
        let no_extra = |_: &B, _: &mut PpoUpdate<B>, _: &Model<B>| Ok(());
        let GrpoState { update, rng, .. } = &mut state;
        let slots = update_epochs(be, update, policy, None, &step_t, &rows, plan, rng, aggregated, no_extra, &mut readout)?;
        // ---- the step's one read-back: every logged scalar ----
        let values = readout.read(be)?;
        let training_s = t2.elapsed().as_secs_f64();
        let guard = |st: &PpoStats| {
            skipped_updates += usize::from(trun.skip_update(step, st.total_loss, st.policy_grad_norm)?);
            Ok(())
        };
        let mb_stats = finish_epochs(update, &values, &slots, guard)?;
        let seq_kl = slice(&values, kl_slot)?;
        let scores = match (scores, score_slot) {
            (Some(s), _) => s,
            (None, Some(at)) => slice(&values, at)?,
            (None, None) => return Err(Error::invalid("GRPO's rewards are in neither the host nor the readout")),
        };
        state.step = step;

        // ---- metrics ----
        let stats = cfg.loss_agg.step_stats(&mb_stats);
        let (reward_mean, reward_std) = mean_std(&scores);
        let kl = seq_kl.iter().sum::<f32>() / b as f32;
        let response_len = rollout_tokens as f32 / b as f32;
        let oracle_mean = oracle.map(|f| prompt_refs.iter().zip(&responses).map(|(p, r)| f(p, r)).sum::<f32>() / b as f32);
        let trained_tokens = (cfg.epochs * mask.iter().filter(|&&m| m > 0.0).count()) as f64;
        let report = GrpoStepReport {
            step,
            reward_mean,
            reward_std,
            oracle: oracle_mean,
            kl,
            response_len,
            stats,
            rollout_tokens_per_sec: rollout_tokens as f64 / rollout_s.max(1e-9),
            train_tokens_per_sec: trained_tokens / training_s.max(1e-9),
            rollout_s,
            training_s,
        };
        let mut rec = json!({
            "step": step, "estimator": cfg.estimator.name(), "reward_mean": reward_mean, "reward_std": reward_std, "kl": kl,
            "loss": stats.total_loss, "policy_loss": stats.policy_loss, "kl_loss": stats.kl, "clipfrac": stats.clipfrac,
            "approx_kl": stats.approx_kl, "entropy": stats.entropy, "policy_grad_norm": stats.policy_grad_norm,
            "response_len": response_len, "lr": lr,
            "rollout_s": rollout_s, "scoring_s": scoring_s, "training_s": training_s,
            "rollout_tokens_per_sec": report.rollout_tokens_per_sec,
            "prefill_tokens": rolled.stats.prefill_tokens,
            "decode_syncs": rolled.stats.decode_syncs, "idle_slot_steps": rolled.stats.idle_slot_steps,
            "train_tokens_per_sec": report.train_tokens_per_sec,
            "elapsed_s": trun.elapsed_s(), "skipped_updates": skipped_updates,
        });
        if let Some(o) = oracle_mean {
            rec["oracle_score"] = json!(o);
        }
        let o = oracle_mean.map_or(String::new(), |o| format!(" oracle {o:.3}"));
        trun.record(step, &rec, &format!("reward {reward_mean:.3} kl {kl:.3}"), || {
            format!(
                "reward {reward_mean:.3} (std {reward_std:.3}){o} kl {kl:.3} loss {:.4} clipfrac {:.3} len {response_len:.1}",
                stats.total_loss, stats.clipfrac
            )
        })?;
        reports.push(report);
        let run = || GrpoRunState { step, order: state.order.clone(), cursor: state.cursor, rng: state.rng.clone(), reports: reports.clone() };
        trun.save_if_due(step, skipped_updates == 0, run, |w| {
            policy.save_state(be, w, "policy")?;
            state.update.save_state(be, w)
        })?;
    }
    trun.finish(be, policy, tokenizer)?;
    Ok(reports)
}

//! PPO against a reward model with a per-token KL penalty to a frozen reference (InstructGPT).
//! Each step: rollout (sample responses to a batch of prompts) -> scoring (reference log-probs,
//! values, reward-model scores, and the policy's own log-probs under the training forward) ->
//! advantages (per-token reward `-beta * KL_t`, plus the score on the last response token; GAE;
//! whitening) -> training (`ppo_epochs` passes over minibatches with the fused PPO loss) -> the KL
//! controller's update. Metrics go to `<out>/metrics.jsonl` with the time each phase took.
//! A step reads its logged statistics back once, after the whole step is enqueued
//! (`step_readout.rs`); `--reward-norm` normalises the scores on the device (`normalize_rewards`).

use crate::backend::ops::{Backend, ElementwiseParams, EmbeddingParams, GaeParams, KlParams, MatmulParams, PpoParams, RewardNormParams, WhitenParams};
use crate::data::batch::Batcher;
use crate::data::jsonl::Example;
use crate::data::rng::Rng;
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::generate::{GenerateConfig, RolloutConfig, RolloutEngine};
use crate::model::sequence_scorer::SequenceScorer;
use crate::model::{Model, Shape};
pub use crate::rl::reward_fns::OracleFn;
use crate::rl::running_stats::mean_std;
use crate::rl::kl_controller::KlController;
use crate::rl::policy_update::{PpoStats, PpoUpdate, StepTensors, ValueHead};
use crate::rl::step_readout::StepReadout;
use crate::rl::grpo::RewardSource;
use crate::rl::reward::RewardTrainer;
use crate::rl::rollout_batch::{pack_rollouts, PackedRollouts};
use crate::rl::running_stats::RunningMoments;
use crate::rl::update_epochs::{finish_epochs, update_epochs, EpochPlan, RolloutRows};
use crate::train::resume::RunControl;
use crate::train::{AdamWConfig, RunSpec, TrainRun};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// The clip range of A2C's single gradient step per rollout (`rlhf ppo --algo a2c`): the policy
/// has not moved since the rollout, so the ratio is 1, and ratios in (1e-6, 2 - 1e-6) never bind;
/// the clipped surrogate's gradient is then A2C's, `A grad log pi`.
pub const A2C_NO_CLIP: f32 = 0.999_999;

#[derive(Clone, Debug)]
pub struct PpoConfig {
    pub out: PathBuf,
    pub steps: usize,
    /// prompts per step
    pub rollout_batch: usize,
    /// sequences per optimiser step within an epoch
    pub mini_batch: usize,
    pub ppo_epochs: usize,
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    /// decode steps between read-backs of the rollout engine (see `RolloutConfig::sync_every`)
    pub sync_every: usize,
    pub lr: f32,
    pub value_lr: f32,
    pub optim: AdamWConfig,
    /// initial (or fixed) KL coefficient
    pub kl_coef: f32,
    /// adaptive KL controller: target KL per sequence and horizon (None: fixed beta)
    pub kl_target: Option<(f32, f32)>,
    /// put the KL in the loss (with this estimator 1/2/3) instead of the reward
    pub kl_in_loss: Option<u32>,
    pub gamma: f32,
    pub lambda: f32,
    pub clip: f32,
    pub value_clip: f32,
    pub vf_coef: f32,
    pub ent_coef: f32,
    pub whiten_advantages: bool,
    /// normalise reward-model scores with running moments
    pub reward_norm: bool,
    /// token budget of one micro-batch (padded tokens); a minibatch is split into micro-batches
    /// that fit it and their gradients add up to the minibatch's (0: the whole minibatch at once)
    pub micro_batch_tokens: usize,
    /// PPO-ptx: coefficient of the language-modelling loss on the pretraining/SFT data
    pub ptx_coef: f32,
    /// PPO-ptx: sequences of pretraining data per optimiser step
    pub ptx_batch_size: usize,
    pub seed: u64,
    pub log_every: usize,
    /// checkpoints, resume and the divergence guard
    pub control: RunControl,
}

impl PpoConfig {
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("--steps", self.steps),
            ("--rollout-batch", self.rollout_batch),
            ("--mini-batch", self.mini_batch),
            ("--ppo-epochs", self.ppo_epochs),
            ("--max-new-tokens", self.max_new_tokens),
            ("--sync-every", self.sync_every),
        ];
        for (flag, v) in positive {
            if v == 0 {
                return Err(Error::invalid(format!("{flag} must be at least 1")));
            }
        }
        for (flag, v) in [("--lr", self.lr), ("--value-lr", self.value_lr)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::invalid(format!("{flag} must be a positive number, got {v}")));
            }
        }
        for (flag, v) in
            [("--kl-coef", self.kl_coef), ("--clip", self.clip), ("--value-clip", self.value_clip), ("--vf-coef", self.vf_coef), ("--ent-coef", self.ent_coef)]
        {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::invalid(format!("{flag} must be a non-negative number, got {v}")));
            }
        }
        if !(0.0..=1.0).contains(&self.gamma) || !(0.0..=1.0).contains(&self.lambda) {
            return Err(Error::invalid("--gamma and --lambda must be in [0, 1]"));
        }
        if let Some(e) = self.kl_in_loss {
            if !(1..=3).contains(&e) {
                return Err(Error::invalid(format!("--kl-in-loss {e}: the KL estimator in the loss must be 1, 2 or 3 (k1, k2 or k3)")));
            }
        }
        if self.temperature <= 0.0 {
            return Err(Error::invalid("--temperature must be positive for PPO (the policy's log-probs are those of the sampled distribution)"));
        }
        GenerateConfig { temperature: self.temperature, top_p: self.top_p, ..GenerateConfig::default() }.validate()
    }
}

/// One step's record (also written to metrics.jsonl).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PpoStepReport {
    pub step: usize,
    pub score_mean: f32,
    pub score_std: f32,
    pub kl_k1: f32,
    pub kl_k3: f32,
    pub beta: f32,
    pub response_len: f32,
    pub stats: PpoStats,
    pub explained_variance: f32,
    pub oracle: Option<f32>,
    pub rollout_s: f64,
    pub scoring_s: f64,
    pub training_s: f64,
}

/// The host state of a PPO run that a checkpoint keeps (besides weights and optimiser state).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct PpoRunState {
    step: usize,
    rng: Rng,
    /// the current epoch's order of prompts, and the next one's index in it
    order: Vec<usize>,
    cursor: usize,
    kl_ctl: KlController,
    reward_moments: RunningMoments,
    /// PPO-ptx: pretraining examples consumed
    ptx_position: Option<u64>,
    /// every step's report so far (the run's return value)
    reports: Vec<PpoStepReport>,
}

/// Per-step device scratch of the advantage phase, allocated once.
struct StepScratch<B: Backend> {
    mask: B::Buf,
    rewards: B::Buf,
    kl1: B::Buf,
    kl3: B::Buf,
    tmp: B::Buf,
    ones: B::Buf,
    scores: B::Buf,
    sums: B::Buf,
    wstats: B::Buf,
    last_pos: B::Ids,
}

impl<B: Backend> StepScratch<B> {
    fn new(be: &B, b: usize, max_len: usize) -> Result<Self> {
        let n = b * max_len;
        Ok(StepScratch {
            mask: be.alloc(n)?,
            rewards: be.alloc(n)?,
            kl1: be.alloc(n)?,
            kl3: be.alloc(n)?,
            tmp: be.alloc(n)?,
            ones: be.alloc(n)?,
            scores: be.alloc(b)?,
            sums: be.alloc(2)?,
            wstats: be.alloc(crate::backend::ops::whiten_stat::LEN)?,
            last_pos: be.alloc_ids(b)?,
        })
    }
}

/// Where the advantage phase put its logged scalars in the step's readout.
struct AdvantageSlots {
    ret_std: usize,
    diff_std: usize,
    kl1_total: usize,
    kl3_total: usize,
}

impl AdvantageSlots {
    /// The scalars from the step's read-back values.
    fn read(&self, values: &[f32]) -> Result<AdvantageStats> {
        let at = |i: usize| values.get(i).copied().ok_or_else(|| Error::invalid(format!("a PPO step's readout holds {} values, not slot {i}", values.len())));
        let (ret_std, diff_std) = (at(self.ret_std)?, at(self.diff_std)?);
        let explained_variance = if ret_std > 0.0 { 1.0 - (diff_std * diff_std) / (ret_std * ret_std) } else { 0.0 };
        Ok(AdvantageStats { explained_variance, kl1_total: at(self.kl1_total)?, kl3_total: at(self.kl3_total)? })
    }
}

/// The readout slots of the advantage phase.
const ADVANTAGE_SLOTS: usize = 4;

/// What the advantage phase reports for logging.
struct AdvantageStats {
    explained_variance: f32,
    /// k1 and k3 KL to the reference, summed over the batch's response tokens
    kl1_total: f32,
    kl3_total: f32,
}

impl<B: Backend> StepScratch<B> {
    /// The advantage phase on the device: per-token rewards `-beta k1_t` (unless the KL is in
    /// the loss) plus each sequence's score at its last response token, GAE, optional
    /// whitening; then the logged scalars (summed KL, the spreads behind the explained variance of
    /// the values) into `readout` (nothing is read back).
    #[allow(clippy::too_many_arguments)]
    fn advantages(&mut self, be: &B, step_t: &mut StepTensors<B>, b: usize, t: usize, beta: f32, cfg: &PpoConfig, readout: &mut StepReadout<B>) -> Result<AdvantageSlots> {
        let n = b * t;
            let el = ElementwiseParams::new(n)?;
            be.kl_penalty_fwd(&mut self.kl1, &step_t.old_logp, &step_t.ref_logp, &self.mask, KlParams { n: n as u32, estimator: 1 })?;
            be.kl_penalty_fwd(&mut self.kl3, &step_t.old_logp, &step_t.ref_logp, &self.mask, KlParams { n: n as u32, estimator: 3 })?;
            if cfg.kl_in_loss.is_none() {
                be.copy(&mut self.rewards, &self.kl1, el)?;
                be.scale_inplace(&mut self.rewards, -beta, el)?;
            } else {
                be.fill(&mut self.rewards, 0.0, el)?;
            }
            // rewards[last_pos[s]] += scores[s]: a scatter-add of b one-wide rows
            be.embedding_bwd(&mut self.rewards, &self.scores, &self.last_pos, EmbeddingParams { n: b as u32, c: 1, accumulate: 0, vocab: n as u32 })?;
            be.gae(&mut step_t.advantages, &mut step_t.returns, &self.rewards, &step_t.values, &self.mask, GaeParams::new(b, t, cfg.gamma, cfg.lambda))?;
            if cfg.whiten_advantages {
                be.masked_whiten(&mut step_t.advantages, &mut self.wstats, &self.mask, WhitenParams::new(n))?;
            }
            // logging scalars: summed KL (k1, k3) and the spread of returns and of returns - values
            be.fill(&mut self.ones, 1.0, el)?;
            be.fill(&mut self.sums, 0.0, ElementwiseParams::new(2)?)?;
            be.matmul(&mut self.sums, &self.kl1, &self.ones, MatmulParams::new(1, 1, n, false, false).accumulate(true))?;
            be.copy(&mut self.tmp, &step_t.returns, el)?;
            be.masked_whiten(&mut self.tmp, &mut self.wstats, &self.mask, WhitenParams::new(n))?;
            let std = [crate::backend::ops::whiten_stat::STD];
            let ret_std = readout.push(be, &self.wstats, &std)?;
            be.copy(&mut self.tmp, &step_t.values, el)?;
            be.scale_inplace(&mut self.tmp, -1.0, el)?;
            be.add_inplace(&mut self.tmp, &step_t.returns, el)?;
            be.masked_whiten(&mut self.tmp, &mut self.wstats, &self.mask, WhitenParams::new(n))?;
            let diff_std = readout.push(be, &self.wstats, &std)?;
            let kl1_total = readout.push(be, &self.sums, &[0])?;
            be.fill(&mut self.sums, 0.0, ElementwiseParams::new(2)?)?;
            be.matmul(&mut self.sums, &self.kl3, &self.ones, MatmulParams::new(1, 1, n, false, false).accumulate(true))?;
            let kl3_total = readout.push(be, &self.sums, &[0])?;
        Ok(AdvantageSlots { ret_std, diff_std, kl1_total, kl3_total })
    }
}

/// The models PPO works with. The reference is the frozen SFT model; the value model is
/// initialised from the reward model (InstructGPT), or replaced by a value head on the policy.
/// The rewards come from a reward model, or from a host function of the samples (an outside
/// program's, `--reward-cmd`).
pub struct PpoModels<'a, B: Backend> {
    pub policy: &'a mut Model<B>,
    pub reference: &'a Model<B>,
    pub reward: RewardSource<'a, B>,
    /// a separate value model, or `None` for a value head on the policy's trunk
    pub value: Option<&'a mut Model<B>>,
}

/// Runs PPO; `oracle` (when given) scores each response for reporting only. Saves the policy
/// (with `tokenizer`) into `cfg.out` at the end and returns every step's report.
pub fn run_ppo<B: Backend>(
    be: &B,
    models: PpoModels<'_, B>,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    cfg: &PpoConfig,
    ptx: Option<Vec<Example>>,
    oracle: Option<&OracleFn<'_>>,
) -> Result<Vec<PpoStepReport>> {
    cfg.validate()?;
    if ptx.is_some() && !(cfg.ptx_coef > 0.0 && cfg.ptx_batch_size > 0) {
        return Err(Error::invalid("pretraining data for PPO-ptx needs --ptx-coef > 0 and --ptx-batch-size >= 1"));
    }
    let mut ptx_batcher = match ptx {
        Some(examples) => Some(Batcher::new(examples, cfg.seed ^ 0x97, tokenizer.pad_or_default())?),
        None => None,
    };
    if prompts.is_empty() {
        return Err(Error::invalid("no prompts"));
    }
    let PpoModels { policy, reference, reward, mut value } = models;
    policy.cfg().check_runs_in_policy_buffers("reference model", reference.cfg())?;
    if let Some(v) = value.as_ref() {
        policy.cfg().check_runs_in_policy_buffers("value model (--value-model, by default the reward model)", v.cfg())?;
    }
    let vocab = policy.cfg().vocab_size;
    let value_vocab = value.as_ref().map_or(vocab, |v| v.cfg().vocab_size);
    let rm = match &reward {
        RewardSource::Model(m) => Some(*m),
        RewardSource::Function(_) | RewardSource::Batch(_) => None,
    };
    let rm_vocab = rm.map_or(vocab, |m| m.cfg().vocab_size);
    if reference.cfg().vocab_size != vocab || rm_vocab != vocab || value_vocab != vocab {
        return Err(Error::invalid(format!(
            "the policy, reference, reward and value models must share a vocabulary (sizes {}, {}, {}, {})",
            vocab,
            reference.cfg().vocab_size,
            rm_vocab,
            value_vocab
        )));
    }
    let context = policy.cfg().max_positions.min(rm.map_or(usize::MAX, |m| m.cfg().max_positions)).min(value.as_ref().map_or(usize::MAX, |v| v.cfg().max_positions));
    let longest_prompt = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest_prompt + 1 >= context {
        return Err(Error::invalid(format!("a prompt of {longest_prompt} tokens leaves no room for a response in the context of {context}")));
    }
    let max_len = (longest_prompt + cfg.max_new_tokens).min(context);
    let b = cfg.rollout_batch;
    let pad = tokenizer.pad_or_default();
    let mut scorer = SequenceScorer::new(be, policy, b, max_len).map_err(Error::sized_by(format!("--rollout-batch {b} x {max_len} tokens")))?;
    let mut rm_scorer = rm.map(|m| RewardTrainer::scorer(be, m, b, max_len)).transpose()?;
    // a host reward function's scores, uploaded
    let mut host_scores = be.alloc(b)?;
    let mb_seqs = cfg.mini_batch.min(b).max(cfg.ptx_batch_size * usize::from(ptx_batcher.is_some()));
    let mut update = PpoUpdate::new(be, policy, value.as_deref(), mb_seqs, max_len, cfg.optim)?;
    if value.is_none() {
        update.value_head = Some(ValueHead::new(be, policy.cfg().hidden_size, cfg.seed ^ 0x7A1)?);
    }
    update.temperature = cfg.temperature.max(1e-6);
    let fingerprint = json!({
        "seed": cfg.seed, "rollout_batch": cfg.rollout_batch, "mini_batch": cfg.mini_batch, "ppo_epochs": cfg.ppo_epochs,
        "max_new_tokens": cfg.max_new_tokens, "sync_every": cfg.sync_every, "value_model": value.is_some(),
    });
    let spec = RunSpec { command: "ppo", out: &cfg.out, steps: cfg.steps, log_every: cfg.log_every, control: &cfg.control, fingerprint, schedule: None };
    let (mut trun, ck) = TrainRun::start(spec)?;
    let mut run: PpoRunState = match ck {
        Some(ck) => {
            let run: PpoRunState = ck.value("run")?;
            policy.restore_state(be, &ck, "policy")?;
            if let Some(v) = value.as_deref_mut() {
                v.restore_state(be, &ck, "value")?;
            }
            update.restore_state(be, &ck)?;
            if let (Some(b), Some(pos)) = (ptx_batcher.as_mut(), run.ptx_position) {
                b.seek(pos);
            }
            run
        }
        None => {
            let kl_ctl = match cfg.kl_target {
                Some((target, horizon)) => KlController::adaptive(cfg.kl_coef as f64, target as f64, horizon as f64)?,
                None => KlController::fixed(cfg.kl_coef as f64)?,
            };
            let mut rng = Rng::new(cfg.seed);
            let mut order: Vec<usize> = (0..prompts.len()).collect();
            rng.shuffle(&mut order);
            PpoRunState {
                step: 0,
                rng,
                order,
                cursor: 0,
                kl_ctl,
                reward_moments: RunningMoments::new(),
                ptx_position: None,
                reports: Vec::with_capacity(cfg.steps),
            }
        }
    };
    let mut step_t = StepTensors::new(be, b, max_len, cfg.kl_in_loss.is_some())?;
    let mut engine = RolloutEngine::new();
    let mut dev = StepScratch::new(be, b, max_len)?;
    let plan = EpochPlan { epochs: cfg.ppo_epochs, mini_batch: cfg.mini_batch, micro_batch_tokens: cfg.micro_batch_tokens, lr: cfg.lr, value_lr: cfg.value_lr };
    // a step's logged scalars: the b scores, the advantage phase's and every optimiser step's
    let mut readout = StepReadout::new(be, b + ADVANTAGE_SLOTS + plan.readout_slots(b))?;
    let stop_ids: Vec<u32> = tokenizer.stop_ids();
    for step in trun.steps() {
        // ---- rollout ----
        let t0 = Instant::now();
        let mut batch_prompts = Vec::with_capacity(b);
        let mut batch_idx = Vec::with_capacity(b);
        for _ in 0..b {
            if run.cursor == run.order.len() {
                run.rng.shuffle(&mut run.order);
                run.cursor = 0;
            }
            batch_idx.push(run.order[run.cursor]);
            batch_prompts.push(&prompts[run.order[run.cursor]]);
            run.cursor += 1;
        }
        // continuous batching over `rollout_batch` KV-cache slots
        let longest = batch_prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let gen = GenerateConfig {
            max_new_tokens: cfg.max_new_tokens.min(max_len - longest),
            temperature: cfg.temperature,
            top_k: cfg.top_k,
            top_p: cfg.top_p,
            seed: cfg.seed ^ ((step as u64) << 20),
            stop_ids: stop_ids.clone(),
            vocab_limit: Some(tokenizer.vocab_size()),
        };
        let prompt_batch: Vec<Vec<u32>> = batch_prompts.iter().map(|p| p.to_vec()).collect();
        let rolled = engine.run(be, policy, &prompt_batch, &RolloutConfig { slots: b, gen, sync_every: cfg.sync_every })?;
        let (decode_syncs, idle_slot_steps) = (rolled.stats.decode_syncs, rolled.stats.idle_slot_steps);
        let responses: Vec<Vec<u32>> = rolled.outputs.into_iter().map(|o| o.response).collect();
        let rollout_s = t0.elapsed().as_secs_f64();
        let rollout_tokens: usize = responses.iter().map(Vec::len).sum();

        // ---- scoring (everything stays on the device; a few scalars come back for logging) ----
        let t1 = Instant::now();
        let prompt_refs: Vec<&[u32]> = batch_prompts.iter().map(|p| p.as_slice()).collect();
        let PackedRollouts { seqs, t, inputs, targets, mask, last_pos } = pack_rollouts(&prompt_refs, &responses, pad);
        let shape = Shape { b, t };
        be.write(&mut dev.mask, &mask)?;
        be.write_ids(&mut dev.last_pos, &last_pos)?;
        readout.begin(be)?;
        step_t.b = b;
        step_t.t = t;
        // two independent phases, overlapping where the backend can (CUDA: a stream each): the
        // policy's log-probs (and its value head's values, from the same pass), the reference's
        // log-probs and a value model's values on one; the reward model's scores on the other
        let (policy_now, value_model, value_head, temperature) = (&*policy, value.as_deref(), update.value_head.as_ref(), update.temperature);
        if value_model.is_none() && value_head.is_none() {
            return Err(Error::invalid("PPO needs a value model or a value head"));
        }
        let mut logprobs_and_values = || -> Result<()> {
            scorer.logprobs_into(be, policy_now, shape, &inputs, &targets, temperature, &mut step_t.old_logp)?;
            if let (None, Some(head)) = (value_model, value_head) {
                scorer.head_values_into(be, &head.weight, shape, policy_now.cfg().hidden_size, &mut step_t.values)?;
            }
            scorer.logprobs_into(be, reference, shape, &inputs, &targets, temperature, &mut step_t.ref_logp)?;
            match value_model {
                Some(v) => scorer.values_into(be, v, shape, &inputs, &mut step_t.values),
                None => Ok(()),
            }
        };
        let mut reward_scores = || match (rm_scorer.as_mut(), rm) {
            (Some(sc), Some(m)) => sc.score_on_device(be, m, &seqs, pad).map(|_| ()),
            _ => Ok(()),
        };
        be.concurrently(&mut [&mut logprobs_and_values, &mut reward_scores])?;
        // a host function's rewards ran while the device worked
        let host_rewards = match &reward {
            RewardSource::Model(_) => None,
            RewardSource::Function(f) => Some(batch_idx.iter().zip(&responses).map(|(&i, r)| f(i, r)).collect::<Vec<f32>>()),
            RewardSource::Batch(f) => {
                let samples: Vec<(usize, &[u32])> = batch_idx.iter().zip(&responses).map(|(&i, r)| (i, r.as_slice())).collect();
                Some(f(&samples)?)
            }
        };
        let step_scores: &B::Buf = match (host_rewards, rm_scorer.as_ref()) {
            (Some(r), _) if r.len() != b => return Err(Error::invalid(format!("the reward function gave {} rewards for {b} samples", r.len()))),
            (Some(r), _) => {
                be.write(&mut host_scores, &r)?;
                &host_scores
            }
            (None, Some(sc)) => sc.scores(),
            (None, None) => return Err(Error::invalid("a reward model source without its scorer")),
        };
        // the b scores: logged from the step's readout. With --reward-norm the device normalises
        // them by the running moments that include this batch (the host's moments of the earlier
        // batches as params); the host merges the batch into its moments after the read-back
        let score_slot = readout.push_prefix(be, step_scores, b)?;
        if cfg.reward_norm {
            let m = &run.reward_moments;
            be.normalize_rewards(&mut dev.scores, step_scores, RewardNormParams::new(b, m.count, m.mean, m.m2))?;
        } else {
            be.copy(&mut dev.scores, step_scores, ElementwiseParams::new(b)?)?;
        }
        let scoring_s = t1.elapsed().as_secs_f64();

        // ---- advantages: reward_t = -beta k1_t (+ score at the last response token), GAE, whitening ----
        // beta is the KL controller's after the previous step's read-back (its update below needs
        // this step's KL, read back with the step's statistics)
        let beta = run.kl_ctl.beta() as f32;
        let adv_slots = dev.advantages(be, &mut step_t, b, t, beta, cfg, &mut readout)?;

        // ---- training ----
        let t2 = Instant::now();
        let mut skipped_updates = 0usize;
        let mut p = PpoParams::new(0);
        p.clip_low = cfg.clip;
        p.clip_high = cfg.clip;
        p.value_clip = cfg.value_clip;
        p.vf_coef = cfg.vf_coef;
        p.ent_coef = cfg.ent_coef;
        if let Some(est) = cfg.kl_in_loss {
            p.kl_coef = beta;
            p.kl_estimator = est;
        }
        let rows = RolloutRows { inputs: &inputs, targets: &targets, mask: &mask, b, t };
        let token_mean = |_seqs: usize, tokens: usize| PpoParams { denom: tokens.max(1) as f32, ..p };
        let ptx = |be: &B, update: &mut PpoUpdate<B>, policy: &Model<B>| match ptx_batcher.as_mut() {
            Some(batcher) => update.accumulate_ptx(be, policy, &batcher.next_batch(cfg.ptx_batch_size, max_len), cfg.ptx_coef),
            None => Ok(()),
        };
        let guard = |st: &PpoStats| {
            let grad_norm = if st.value_grad_norm.is_finite() { st.policy_grad_norm } else { f32::NAN };
            skipped_updates += usize::from(trun.skip_update(step, st.total_loss, grad_norm)?);
            Ok(())
        };
        let slots = update_epochs(be, &mut update, policy, value.as_deref_mut(), &step_t, &rows, plan, &mut run.rng, token_mean, ptx, &mut readout)?;
        // ---- the step's one read-back: every logged scalar ----
        let values = readout.read(be)?;
        let training_s = t2.elapsed().as_secs_f64();
        let raw_scores = values.get(score_slot..score_slot + b).ok_or_else(|| Error::invalid("a PPO step's readout lacks the scores"))?.to_vec();
        if cfg.reward_norm {
            run.reward_moments.update(&raw_scores);
        }
        let AdvantageStats { explained_variance, kl1_total, kl3_total } = adv_slots.read(&values)?;
        let epoch_stats = finish_epochs(&mut update, &values, &slots, guard)?;
        let stats = PpoStats::mean(&epoch_stats);
        let (kl1, kl3) = (kl1_total / b as f32, kl3_total / b as f32);
        run.kl_ctl.update(kl1 as f64, b as u64);
        let (score_mean, score_std) = mean_std(&raw_scores);
        let response_len = rollout_tokens as f32 / b as f32;
        let oracle_mean = oracle.map(|f| batch_prompts.iter().zip(&responses).map(|(p, r)| f(p, r)).sum::<f32>() / b as f32);
        let scored_tokens = (b * t) as f64;
        let report = PpoStepReport {
            step,
            score_mean,
            score_std,
            kl_k1: kl1,
            kl_k3: kl3,
            beta,
            response_len,
            stats,
            explained_variance,
            oracle: oracle_mean,
            rollout_s,
            scoring_s,
            training_s,
        };
        let mut rec = json!({
            "step": step, "reward_mean": score_mean, "reward_std": score_std, "rm_score": score_mean,
            "kl_k1": kl1, "kl_k3": kl3, "beta": beta,
            "policy_loss": stats.policy_loss, "value_loss": stats.value_loss, "clipfrac": stats.clipfrac,
            "approx_kl": stats.approx_kl, "entropy": stats.entropy, "explained_variance": explained_variance,
            "response_len": response_len, "policy_grad_norm": stats.policy_grad_norm, "ptx_loss": stats.ptx_loss, "value_grad_norm": stats.value_grad_norm,
            "lr": cfg.lr,
            "rollout_s": rollout_s, "scoring_s": scoring_s, "training_s": training_s,
            "rollout_tokens_per_sec": rollout_tokens as f64 / rollout_s.max(1e-9),
            "decode_syncs": decode_syncs, "idle_slot_steps": idle_slot_steps,
            "scoring_tokens_per_sec": 3.0 * scored_tokens / scoring_s.max(1e-9),
            "training_tokens_per_sec": cfg.ppo_epochs as f64 * scored_tokens / training_s.max(1e-9),
            "elapsed_s": trun.elapsed_s(), "skipped_updates": skipped_updates,
        });
        if let Some(o) = oracle_mean {
            rec["oracle_score"] = json!(o);
        }
        trun.record(step, &rec, &format!("score {score_mean:.3} kl {kl1:.3}"), || {
            format!("rm score {score_mean:.3} kl {kl1:.3} beta {beta:.3} clipfrac {:.3} len {response_len:.1}", stats.clipfrac)
        })?;
        run.reports.push(report);
        run.step = step;
        run.ptx_position = ptx_batcher.as_ref().map(|b| b.position());
        trun.save_if_due(step, skipped_updates == 0, || &run, |w| {
            policy.save_state(be, w, "policy")?;
            if let Some(v) = value.as_deref() {
                v.save_state(be, w, "value")?;
            }
            update.save_state(be, w)
        })?;
    }
    trun.finish(be, policy, tokenizer)?;
    Ok(run.reports)
}

//! PPO's training phase on the device: given rollouts (token sequences, the response mask, the
//! log-probs recorded when sampling, advantages and returns), one optimiser step of the policy and,
//! when there is one, of the value model (InstructGPT initialises it from the reward model: the
//! decoder with a scalar `score` head, read at every token).
//!
//! Policy: `forward_hidden` -> `logprob_gather_fwd` (log-prob of each response token and the
//! entropy, streamed over the vocabulary) -> `ppo_loss_fwd_bwd` (clipped surrogate, value loss,
//! entropy bonus, optional KL-in-loss; gradients per token) -> `logprob_gather_bwd` -> the decoder's
//! `backward_hidden`. Value model: `forward_hidden` -> per-token values `h @ w_score^T` -> the same
//! loss op's value gradient -> `backward_hidden`. Gradients accumulate over micro-batches; the
//! loss op's statistics are read back once per optimiser step.

use crate::backend::ops::{ppo_stat, Backend, ElementwiseParams, EmbeddingParams, MatmulParams, PpoParams, Storage};
use crate::data::batch::Batch;
use crate::error::{Error, Result};
use crate::model::{refresh_compute_weights, upload_weights, Activations, GradScratch, Model, ParamsMut, Shape};
use crate::rl::step_readout::StepReadout;
use crate::train::optimizer::{enqueue_guarded_adamw_step, settle_guarded_step, AdamW, AdamWConfig, AdamWTensors};
use crate::train::resume::{Checkpoint, StateWriter};

/// One micro-batch of rollouts, `[b, t]` row-major: position i predicts token `targets[i]`
/// (`-1` outside the response). Per-token arrays are aligned with the targets.
#[derive(Clone, Debug, Default)]
pub struct PpoBatch {
    pub b: usize,
    pub t: usize,
    pub inputs: Vec<i32>,
    pub targets: Vec<i32>,
    /// log-probs of the targets when they were sampled
    pub old_logp: Vec<f32>,
    pub advantages: Vec<f32>,
    /// value targets (advantages + values), for the value model
    pub returns: Vec<f32>,
    /// the value model's values when sampling, for value clipping
    pub old_values: Vec<f32>,
    /// the reference model's log-probs, for a KL term in the loss
    pub ref_logp: Option<Vec<f32>>,
}

impl PpoBatch {
    fn check(&self) -> Result<()> {
        let n = self.b * self.t;
        let lens = [self.inputs.len(), self.targets.len(), self.old_logp.len(), self.advantages.len(), self.returns.len(), self.old_values.len()];
        if lens.iter().any(|&l| l != n) || self.ref_logp.as_ref().is_some_and(|r| r.len() != n) {
            return Err(Error::invalid(format!("PPO batch arrays must hold b * t = {n} values each")));
        }
        Ok(())
    }
}

/// Token ids of a micro-batch (host; uploaded, never read back).
struct SeqIds<'a> {
    inputs: &'a [i32],
    targets: &'a [i32],
}

/// One PPO step's per-token tensors `[b, t]` on the device, filled by the scoring and advantage
/// phases and gathered row by row into micro-batches by [`PpoUpdate::accumulate_rows`].
pub struct StepTensors<B: Backend> {
    pub b: usize,
    pub t: usize,
    pub old_logp: B::Buf,
    pub ref_logp: B::Buf,
    pub values: B::Buf,
    pub advantages: B::Buf,
    pub returns: B::Buf,
    /// whether the loss carries the KL to the reference (`ref_logp` is gathered)
    pub kl_in_loss: bool,
}

impl<B: Backend> StepTensors<B> {
    pub fn new(be: &B, max_b: usize, max_t: usize, kl_in_loss: bool) -> Result<Self> {
        let n = max_b * max_t;
        Ok(StepTensors {
            b: 0,
            t: 0,
            old_logp: be.alloc(n)?,
            ref_logp: be.alloc(n)?,
            values: be.alloc(n)?,
            advantages: be.alloc(n)?,
            returns: be.alloc(n)?,
            kl_in_loss,
        })
    }
}

/// The loss op's statistics for one optimiser step (means over its response tokens).
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PpoStats {
    pub policy_loss: f32,
    pub value_loss: f32,
    pub entropy: f32,
    pub clipfrac: f32,
    pub approx_kl: f32,
    pub kl: f32,
    pub total_loss: f32,
    pub value_clipfrac: f32,
    pub policy_grad_norm: f32,
    pub value_grad_norm: f32,
    /// PPO-ptx: the language-modelling loss of the pretraining batches (0 without ptx)
    pub ptx_loss: f32,
    /// the sum of the loss's token weights that the means above divide by: 1 for a token or
    /// sequence mean, tokens / (max_new_tokens x sequences) for Dr. GRPO's constant normaliser,
    /// under which the loss whose gradient is applied is `mean x weight`
    #[serde(default)]
    pub weight: f32,
}

/// Buffers of one model being trained (activations, gradients, optimiser).
struct Trainee<B: Backend> {
    acts: Activations<B>,
    scratch: GradScratch<B>,
    grads: Vec<B::Buf>,
    opt: AdamW<B>,
}

impl PpoStats {
    /// The mean of each statistic over `stats` (a step's minibatch updates).
    pub fn mean(stats: &[PpoStats]) -> PpoStats {
        let n = stats.len().max(1) as f32;
        let avg = |f: &dyn Fn(&PpoStats) -> f32| stats.iter().map(f).sum::<f32>() / n;
        PpoStats {
            policy_loss: avg(&|s| s.policy_loss),
            value_loss: avg(&|s| s.value_loss),
            entropy: avg(&|s| s.entropy),
            clipfrac: avg(&|s| s.clipfrac),
            approx_kl: avg(&|s| s.approx_kl),
            kl: avg(&|s| s.kl),
            total_loss: avg(&|s| s.total_loss),
            value_clipfrac: avg(&|s| s.value_clipfrac),
            policy_grad_norm: avg(&|s| s.policy_grad_norm),
            value_grad_norm: avg(&|s| s.value_grad_norm),
            ptx_loss: avg(&|s| s.ptx_loss),
            weight: avg(&|s| s.weight),
        }
    }
}

impl<B: Backend> Trainee<B> {
    fn new(be: &B, model: &Model<B>, max_seqs: usize, max_tokens: usize, optim: AdamWConfig) -> Result<Self> {
        Ok(Trainee {
            acts: Activations::with_logit_rows(be, model.cfg(), max_seqs, max_tokens, 0)?,
            scratch: GradScratch::with_logit_rows(be, model.cfg(), max_tokens, 0)?,
            grads: model.grads_like(be)?,
            opt: AdamW::new(be, model.layout(), optim)?,
        })
    }

    fn zero_grad(&mut self, be: &B) -> Result<()> {
        for g in self.grads.iter_mut() {
            let n = be.len(g);
            be.fill(g, 0.0, ElementwiseParams::new(n)?)?;
        }
        Ok(())
    }
}

/// A value head on the policy's own trunk (`values = h_policy @ w^T`, `w [1, C]`), the option
/// to a separate value model: the value loss's gradient flows into the policy's trunk as well.
/// It has its own AdamW moments; it is training state only (not part of the saved policy).
pub struct ValueHead<B: Backend> {
    /// `[1, C]` in the compute type; `master` its f32 copy in a reduced-precision mode (else empty)
    pub weight: B::Buf,
    master: Vec<B::Buf>,
    grad: B::Buf,
    m: B::Buf,
    v: B::Buf,
    norm_sq: B::Buf,
    /// `norm_sq + 0 * loss` of the last guarded step
    guard: B::Buf,
    step: usize,
}

impl<B: Backend> ValueHead<B> {
    /// A head of `c` weights drawn from normal(0, 0.02).
    pub fn new(be: &B, c: usize, seed: u64) -> Result<Self> {
        let mut rng = crate::data::rng::Rng::new(seed);
        let w: Vec<f32> = (0..c).map(|_| rng.normal() * 0.02).collect();
        let (mut weight, master) = upload_weights(be, &[w])?;
        let weight = weight.pop().expect("one tensor uploaded");
        let grad = be.alloc_as(c, Storage::Compute)?;
        Ok(ValueHead { weight, master, grad, m: be.alloc(c)?, v: be.alloc(c)?, norm_sq: be.alloc(1)?, guard: be.alloc(1)?, step: 0 })
    }

    /// The gradient accumulated since the last `zero_grad`.
    pub fn grad(&self) -> &B::Buf {
        &self.grad
    }

    /// Enqueues a clipped AdamW step (no weight decay) through the same fused path as
    /// [`AdamW::enqueue_step_guarded`], skipped on the device when `loss[0]` is not finite.
    fn enqueue_step_guarded(&mut self, be: &B, lr: f32, optim: &AdamWConfig, loss: &B::Buf) -> Result<()> {
        let t = AdamWTensors {
            params: ParamsMut { weights: std::slice::from_mut(&mut self.weight), master: &mut self.master },
            grads: std::slice::from_ref(&self.grad),
            m: std::slice::from_mut(&mut self.m),
            v: std::slice::from_mut(&mut self.v),
            decay: &[false],
            skip: &[],
        };
        enqueue_guarded_adamw_step(be, optim, (&mut self.norm_sq, &mut self.guard), &mut self.step, t, lr, loss)
    }

    fn save_state<'a>(&'a self, be: &'a B, w: &mut StateWriter<'a>) -> Result<()> {
        let f32_weight = if self.master.is_empty() { std::slice::from_ref(&self.weight) } else { &self.master[..] };
        w.bufs(be, "value_head", f32_weight)?;
        w.bufs(be, "value_head.m", std::slice::from_ref(&self.m))?;
        w.bufs(be, "value_head.v", std::slice::from_ref(&self.v))?;
        w.value("value_head.step", &self.step)
    }

    fn restore_state(&mut self, be: &B, ck: &Checkpoint) -> Result<()> {
        if self.master.is_empty() {
            ck.restore_bufs(be, "value_head", std::slice::from_mut(&mut self.weight))?;
        } else {
            ck.restore_bufs(be, "value_head", &mut self.master)?;
            refresh_compute_weights(be, std::slice::from_mut(&mut self.weight), &self.master)?;
        }
        ck.restore_bufs(be, "value_head.m", std::slice::from_mut(&mut self.m))?;
        ck.restore_bufs(be, "value_head.v", std::slice::from_mut(&mut self.v))?;
        self.step = ck.value("value_head.step")?;
        Ok(())
    }
}

/// PPO's update of a policy (and optionally a value model) on micro-batches of up to
/// `max_seqs` x `max_len` tokens.
pub struct PpoUpdate<B: Backend> {
    policy: Trainee<B>,
    value: Option<Trainee<B>>,
    /// the value head on the policy's trunk, when there is no separate value model
    pub value_head: Option<ValueHead<B>>,
    optim: AdamWConfig,
    max_tokens: usize,
    max_seqs: usize,
    rows: B::Ids,
    // per-token device buffers
    logp: B::Buf,
    entropy: B::Buf,
    lse: B::Buf,
    dlogp: B::Buf,
    dentropy: B::Buf,
    old_logp: B::Buf,
    advantages: B::Buf,
    mask: B::Buf,
    ref_logp: B::Buf,
    values: B::Buf,
    old_values: B::Buf,
    returns: B::Buf,
    dvalues: B::Buf,
    /// `dvalues` in the compute type, for the value head's backward matmuls
    dvalues_c: B::Buf,
    stats: B::Buf,
    ptx_loss: B::Buf,
    /// `stats[TOTAL_LOSS]` gathered for the optimisers' guard, and the id that gathers it
    total_loss: B::Buf,
    total_loss_id: B::Ids,
    /// the readout of [`Self::step`] (an optimiser step on its own)
    own_readout: Option<StepReadout<B>>,
    ptx_coef: f32,
    /// temperature the rollouts were sampled at (the log-probs are those of that distribution)
    pub temperature: f32,
}

impl<B: Backend> PpoUpdate<B> {
    pub fn new(be: &B, policy: &Model<B>, value: Option<&Model<B>>, max_seqs: usize, max_len: usize, optim: AdamWConfig) -> Result<Self> {
        if let Some(v) = value {
            if v.layout().score.is_none() {
                return Err(Error::invalid("the value model needs a score head (load it as a reward model)"));
            }
        }
        let n = max_seqs * max_len;
        Ok(PpoUpdate {
            policy: Trainee::new(be, policy, max_seqs, n, optim)?,
            value: value.map(|v| Trainee::new(be, v, max_seqs, n, optim)).transpose()?,
            value_head: None,
            optim,
            max_tokens: n,
            max_seqs,
            rows: be.alloc_ids(max_seqs)?,
            logp: be.alloc(n)?,
            entropy: be.alloc(n)?,
            lse: be.alloc(n)?,
            dlogp: be.alloc(n)?,
            dentropy: be.alloc(n)?,
            old_logp: be.alloc(n)?,
            advantages: be.alloc(n)?,
            mask: be.alloc(n)?,
            ref_logp: be.alloc(n)?,
            values: be.alloc(n)?,
            old_values: be.alloc(n)?,
            returns: be.alloc(n)?,
            dvalues: be.alloc(n)?,
            dvalues_c: be.alloc_as(n, Storage::Compute)?,
            stats: be.alloc(ppo_stat::COUNT)?,
            ptx_loss: be.alloc(1)?,
            total_loss: be.alloc(1)?,
            total_loss_id: be.upload_ids(&[ppo_stat::TOTAL_LOSS as i32])?,
            own_readout: Some(StepReadout::new(be, STEP_SLOTS)?),
            ptx_coef: 0.0,
            temperature: 1.0,
        })
    }

    /// Clears gradients and statistics before the micro-batches of an optimiser step.
    pub fn zero_grad(&mut self, be: &B) -> Result<()> {
        self.policy.zero_grad(be)?;
        if let Some(v) = self.value.as_mut() {
            v.zero_grad(be)?;
        }
        if let Some(h) = self.value_head.as_mut() {
            let n = be.len(&h.grad);
            be.fill(&mut h.grad, 0.0, ElementwiseParams::new(n)?)?;
        }
        be.fill(&mut self.ptx_loss, 0.0, ElementwiseParams::new(1)?)?;
        be.fill(&mut self.stats, 0.0, ElementwiseParams::new(ppo_stat::COUNT)?)
    }

    /// Forward, loss and backward of one micro-batch given on the host; `p.denom` should carry the
    /// step's token count (or sequence count) when an optimiser step spans several micro-batches.
    pub fn accumulate(&mut self, be: &B, policy: &Model<B>, value: Option<&Model<B>>, batch: &PpoBatch, p: PpoParams) -> Result<()> {
        batch.check()?;
        self.check_shape(batch.b, batch.t, value)?;
        be.write(&mut self.old_logp, &batch.old_logp)?;
        be.write(&mut self.advantages, &batch.advantages)?;
        if let Some(r) = &batch.ref_logp {
            be.write(&mut self.ref_logp, r)?;
        }
        be.write(&mut self.returns, &batch.returns)?;
        be.write(&mut self.old_values, &batch.old_values)?;
        self.compute(be, policy, value, batch.b, batch.t, &batch.inputs, &batch.targets, batch.ref_logp.is_some(), p)
    }

    /// As [`Self::accumulate`], with the per-token arrays gathered on the device: the micro-batch
    /// is the rows `rows` of the step's `[B, t]` buffers in `step` (nothing is read back).
    #[allow(clippy::too_many_arguments)]
    pub fn accumulate_rows(
        &mut self,
        be: &B,
        policy: &Model<B>,
        value: Option<&Model<B>>,
        step: &StepTensors<B>,
        rows: &[usize],
        inputs: &[i32],
        targets: &[i32],
        p: PpoParams,
    ) -> Result<()> {
        let (b, t) = (rows.len(), step.t);
        self.check_shape(b, t, value)?;
        if inputs.len() != b * t || targets.len() != b * t || rows.iter().any(|&r| r >= step.b) {
            return Err(Error::invalid("PPO micro-batch rows or token arrays do not match the step"));
        }
        let ids: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
        be.write_ids(&mut self.rows, &ids)?;
        let g = EmbeddingParams { n: b as u32, c: t as u32, accumulate: 0, vocab: step.b as u32 };
        be.embedding_fwd(&mut self.old_logp, &self.rows, &step.old_logp, g)?;
        be.embedding_fwd(&mut self.advantages, &self.rows, &step.advantages, g)?;
        be.embedding_fwd(&mut self.returns, &self.rows, &step.returns, g)?;
        be.embedding_fwd(&mut self.old_values, &self.rows, &step.values, g)?;
        if step.kl_in_loss {
            be.embedding_fwd(&mut self.ref_logp, &self.rows, &step.ref_logp, g)?;
        }
        self.compute(be, policy, value, b, t, inputs, targets, step.kl_in_loss, p)
    }

    fn check_shape(&self, b: usize, t: usize, value: Option<&Model<B>>) -> Result<()> {
        let n = b * t;
        if n > self.max_tokens || b > self.max_seqs {
            return Err(Error::invalid(format!("a PPO micro-batch of {b} x {t} tokens exceeds the {} allocated", self.max_tokens)));
        }
        if value.is_some() != self.value.is_some() {
            return Err(Error::invalid("give the value model to both PpoUpdate::new and accumulate, or to neither"));
        }
        if value.is_some() && self.value_head.is_some() {
            return Err(Error::invalid("a separate value model and a value head on the policy exclude each other"));
        }
        Ok(())
    }

    /// Forward, loss and backward once the per-token inputs are in place.
    #[allow(clippy::too_many_arguments)]
    fn compute(
        &mut self,
        be: &B,
        policy: &Model<B>,
        value: Option<&Model<B>>,
        b: usize,
        t: usize,
        inputs: &[i32],
        targets: &[i32],
        use_ref: bool,
        mut p: PpoParams,
    ) -> Result<()> {
        let shape = Shape { b, t };
        let n = shape.n();
        p.n = n as u32;
        p.t = t as u32;
        let mask: Vec<f32> = targets.iter().map(|&x| if x >= 0 { 1.0 } else { 0.0 }).collect();
        be.write(&mut self.mask, &mask)?;
        let batch = SeqIds { inputs, targets };

        // policy forward: log-probs and entropy of the response tokens
        let c = policy.cfg().hidden_size;
        let head = policy.lm_head();
        let pt = &mut self.policy;
        let logprob_bufs = [&mut self.logp, &mut self.entropy, &mut self.lse];
        let lp = policy.logprobs_into(be, &mut pt.acts, shape, batch.inputs, batch.targets, self.temperature, logprob_bufs)?;

        // value forward: one value per position
        if let (Some(vm), Some(vt)) = (value, self.value.as_mut()) {
            vm.decoder.set_inputs(be, &mut vt.acts, shape, batch.inputs, None)?;
            vm.decoder.forward_hidden(be, &vm.weights, &mut vt.acts, shape)?;
            let score = vm.layout().score.expect("checked in new");
            be.matmul(&mut self.values, &vt.acts.lnf, &vm.weights[score], MatmulParams::new(n, 1, vm.cfg().hidden_size, false, true))?;
        }
        if let Some(h) = self.value_head.as_ref() {
            be.matmul(&mut self.values, &self.policy.acts.lnf, &h.weight, MatmulParams::new(n, 1, c, false, true))?;
        }

        let has_value = value.is_some() || self.value_head.is_some();
        // the entropy goes in even without a bonus (ent_coef 0: no gradient), so that the logged
        // entropy is the policy's, never a 0 that reads as a collapsed policy
        be.ppo_loss_fwd_bwd(
            &mut self.dlogp,
            if has_value { Some(&mut self.dvalues) } else { None },
            Some(&mut self.dentropy),
            &mut self.stats,
            &self.logp,
            &self.old_logp,
            &self.advantages,
            &self.mask,
            has_value.then_some(&self.values),
            has_value.then_some(&self.old_values),
            has_value.then_some(&self.returns),
            Some(&self.entropy),
            use_ref.then_some(&self.ref_logp),
            p,
        )?;
        if has_value {
            be.copy(&mut self.dvalues_c, &self.dvalues, ElementwiseParams::new(n)?)?;
        }

        // policy backward
        let pt = &mut self.policy;
        be.logprob_gather_bwd(
            &mut pt.scratch.d_ln,
            &mut pt.grads[head],
            &self.dlogp,
            &self.dentropy,
            &pt.acts.lnf,
            &pt.acts.targets,
            &self.lse,
            &self.entropy,
            &policy.weights[head],
            lp,
        )?;
        // a value head on the trunk: d_h += dvalues w, dw += dvalues^T h
        if let Some(h) = self.value_head.as_mut() {
            be.matmul(&mut pt.scratch.d_ln, &self.dvalues_c, &h.weight, MatmulParams::new(n, c, 1, false, false).accumulate(true))?;
            be.matmul(&mut h.grad, &self.dvalues_c, &pt.acts.lnf, MatmulParams::new(1, c, n, true, false).accumulate(true))?;
        }
        policy.decoder.backward_hidden(be, &policy.weights, &mut pt.grads, &pt.acts, &mut pt.scratch, shape)?;

        // value backward: values = h @ w^T, so d_h = dvalues w and dw += dvalues^T h
        if let (Some(vm), Some(vt)) = (value, self.value.as_mut()) {
            let score = vm.layout().score.expect("checked in new");
            let vc = vm.cfg().hidden_size;
            be.matmul(&mut vt.scratch.d_ln, &self.dvalues_c, &vm.weights[score], MatmulParams::new(n, vc, 1, false, false))?;
            be.matmul(&mut vt.grads[score], &self.dvalues_c, &vt.acts.lnf, MatmulParams::new(1, vc, n, true, false).accumulate(true))?;
            vm.decoder.backward_hidden(be, &vm.weights, &mut vt.grads, &vt.acts, &mut vt.scratch, shape)?;
        }
        Ok(())
    }

    /// PPO-ptx (InstructGPT): adds `coef` times the mean language-modelling loss of a
    /// pretraining/SFT batch to the policy's gradient (`loss = ppo + coef * lm`). The loss is
    /// accumulated on the device and read by [`Self::ptx_loss`].
    pub fn accumulate_ptx(&mut self, be: &B, policy: &Model<B>, batch: &Batch, coef: f32) -> Result<()> {
        let shape = Shape { b: batch.b, t: batch.t };
        let n = shape.n();
        if n > self.max_tokens {
            return Err(Error::invalid(format!("a ptx batch of {n} tokens exceeds the {} allocated", self.max_tokens)));
        }
        if batch.n_supervised == 0 {
            return Ok(());
        }
        let w = coef / batch.n_supervised as f32;
        let pt = &mut self.policy;
        // the PPO passes need no logits; the language-modelling loss does
        let v = policy.cfg().vocab_size;
        pt.acts.ensure_logit_rows(be, n, v)?;
        pt.scratch.ensure_logit_rows(be, n, v)?;
        policy.decoder.set_inputs(be, &mut pt.acts, shape, &batch.inputs, Some(&batch.targets))?;
        let weights: Vec<f32> = batch.targets.iter().map(|&t| if t >= 0 { w } else { 0.0 }).collect();
        be.write(&mut pt.acts.loss_weights, &weights)?;
        policy.decoder.forward(be, &policy.weights, &mut pt.acts, shape)?;
        // ptx_loss += losses . weights / coef (the plain LM loss, for logging)
        be.matmul(&mut self.ptx_loss, &pt.acts.losses, &pt.acts.loss_weights, MatmulParams::new(1, 1, n, false, false).accumulate(true))?;
        self.ptx_coef = coef;
        policy.decoder.backward(be, &policy.weights, &mut pt.grads, &pt.acts, &mut pt.scratch, shape)
    }

    /// The language-modelling loss accumulated by [`Self::accumulate_ptx`] since `zero_grad`.
    pub fn ptx_loss(&self, be: &B) -> Result<f32> {
        Ok(self.stats_from(&[0.0; ppo_stat::COUNT], be.download(&self.ptx_loss)?[0]).ptx_loss)
    }

    /// Reads the accumulated statistics without stepping (two read-backs: for inspection; a
    /// training step reads them through its readout).
    pub fn stats(&self, be: &B) -> Result<PpoStats> {
        Ok(self.stats_from(&be.download(&self.stats)?, be.download(&self.ptx_loss)?[0]))
    }

    /// The statistics from the loss op's sums `s` (`ppo_stat` slots) and the accumulated ptx loss.
    fn stats_from(&self, s: &[f32], ptx_loss: f32) -> PpoStats {
        let w = s[ppo_stat::WEIGHT].max(1e-12);
        PpoStats {
            policy_loss: s[ppo_stat::POLICY_LOSS] / w,
            value_loss: s[ppo_stat::VALUE_LOSS] / w,
            entropy: s[ppo_stat::ENTROPY] / w,
            clipfrac: s[ppo_stat::CLIPFRAC] / w,
            approx_kl: s[ppo_stat::APPROX_KL] / w,
            kl: s[ppo_stat::KL] / w,
            total_loss: s[ppo_stat::TOTAL_LOSS] / w,
            value_clipfrac: s[ppo_stat::VALUE_CLIPFRAC] / w,
            policy_grad_norm: 0.0,
            value_grad_norm: 0.0,
            ptx_loss: if self.ptx_coef > 0.0 { ptx_loss / self.ptx_coef } else { 0.0 },
            weight: s[ppo_stat::WEIGHT],
        }
    }

    /// The policy's (and value model's) parameter gradients accumulated so far.
    pub fn grads(&self) -> (&[B::Buf], Option<&[B::Buf]>) {
        (&self.policy.grads, self.value.as_ref().map(|v| v.grads.as_slice()))
    }

    /// Adds the optimiser state (policy and value moments, the value head) to a checkpoint;
    /// the models' weights are saved by the caller.
    pub fn save_state<'a>(&'a self, be: &'a B, w: &mut StateWriter<'a>) -> Result<()> {
        self.policy.opt.save_state(be, w, "policy_adamw")?;
        if let Some(v) = &self.value {
            v.opt.save_state(be, w, "value_adamw")?;
        }
        match &self.value_head {
            Some(h) => h.save_state(be, w),
            None => Ok(()),
        }
    }

    /// Restores what [`Self::save_state`] saved.
    pub fn restore_state(&mut self, be: &B, ck: &Checkpoint) -> Result<()> {
        self.policy.opt.restore_state(be, ck, "policy_adamw")?;
        if let Some(v) = self.value.as_mut() {
            v.opt.restore_state(be, ck, "value_adamw")?;
        }
        match self.value_head.as_mut() {
            Some(h) => h.restore_state(be, ck),
            None => Ok(()),
        }
    }

    /// Clips and applies the accumulated gradients; returns the step's statistics. A step
    /// whose loss is not finite updates nothing and reports non-finite gradient norms (the
    /// divergence guard skips it); each optimiser also skips a non-finite gradient of its own.
    /// One read-back ([`Self::enqueue_step`] then [`Self::finish_step`] on a readout of its own).
    pub fn step(&mut self, be: &B, policy: &mut Model<B>, value: Option<&mut Model<B>>, lr: f32, value_lr: f32) -> Result<PpoStats> {
        let mut readout = self.own_readout.take().ok_or_else(|| Error::invalid("PpoUpdate::step re-entered"))?;
        let run = || -> Result<PpoStats> {
            readout.begin(be)?;
            let slots = self.enqueue_step(be, policy, value, lr, value_lr, &mut readout)?;
            let values = readout.read(be)?;
            self.finish_step(&values, slots)
        };
        let stats = run();
        self.own_readout = Some(readout);
        stats
    }

    /// Enqueues an optimiser step of every model trained (policy, value model or head) and puts
    /// its statistics into `readout` (nothing is read back). Every update is guarded on the
    /// device by the step's total loss (skipped when it is not finite, as by its own non-finite
    /// gradient norm). [`Self::finish_step`] turns the read-back values into the statistics.
    pub fn enqueue_step(&mut self, be: &B, policy: &mut Model<B>, value: Option<&mut Model<B>>, lr: f32, value_lr: f32, readout: &mut StepReadout<B>) -> Result<StepSlots> {
        let stats = readout.push_prefix(be, &self.stats, ppo_stat::COUNT)?;
        let ptx = readout.push_prefix(be, &self.ptx_loss, 1)?;
        let one = EmbeddingParams { n: 1, c: 1, accumulate: 0, vocab: ppo_stat::COUNT as u32 };
        be.embedding_fwd(&mut self.total_loss, &self.total_loss_id, &self.stats, one)?;
        self.policy.opt.enqueue_step_guarded(be, policy.params_mut(), &self.policy.grads, lr, &self.total_loss)?;
        let policy_guard = readout.push_prefix(be, self.policy.opt.guard(), 1)?;
        let mut value_guard = None;
        if let (Some(vm), Some(vt)) = (value, self.value.as_mut()) {
            vt.opt.enqueue_step_guarded(be, vm.params_mut(), &vt.grads, value_lr, &self.total_loss)?;
            value_guard = Some(readout.push_prefix(be, vt.opt.guard(), 1)?);
        }
        if let Some(h) = self.value_head.as_mut() {
            h.enqueue_step_guarded(be, value_lr, &self.optim, &self.total_loss)?;
            value_guard = Some(readout.push_prefix(be, &h.guard, 1)?);
        }
        Ok(StepSlots { stats, ptx, policy_guard, value_guard })
    }

    /// The statistics of a step [`Self::enqueue_step`] enqueued, from the readout's `values`;
    /// takes back the optimisers' step counts of a skipped update. A step whose loss is not
    /// finite reports non-finite gradient norms (the divergence guard skips it).
    pub fn finish_step(&mut self, values: &[f32], slots: StepSlots) -> Result<PpoStats> {
        let short = || Error::invalid(format!("a PPO step's readout holds {} values, fewer than its slots {slots:?}", values.len()));
        let s = values.get(slots.stats..slots.stats + ppo_stat::COUNT).ok_or_else(short)?;
        let at = |i: usize| values.get(i).copied().ok_or_else(short);
        let mut stats = self.stats_from(s, at(slots.ptx)?);
        let policy_guard = at(slots.policy_guard)?;
        settle_guarded_step(policy_guard, &mut self.policy.opt.step);
        stats.policy_grad_norm = policy_guard.sqrt();
        if let Some(i) = slots.value_guard {
            let g = at(i)?;
            if let Some(vt) = self.value.as_mut() {
                settle_guarded_step(g, &mut vt.opt.step);
            }
            if let Some(h) = self.value_head.as_mut() {
                settle_guarded_step(g, &mut h.step);
            }
            stats.value_grad_norm = g.sqrt();
        }
        if !stats.total_loss.is_finite() {
            stats.policy_grad_norm = f32::NAN;
            stats.value_grad_norm = f32::NAN;
        }
        Ok(stats)
    }
}

/// Readout slots of one optimiser step: the loss op's sums, the ptx loss, and each optimiser's
/// guard (its squared gradient norm, NaN for a skipped step).
pub const STEP_SLOTS: usize = ppo_stat::COUNT + 3;

/// Where [`PpoUpdate::enqueue_step`] put an optimiser step's statistics in the readout.
#[derive(Clone, Copy, Debug)]
pub struct StepSlots {
    stats: usize,
    ptx: usize,
    policy_guard: usize,
    value_guard: Option<usize>,
}

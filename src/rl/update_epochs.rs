//! The update of one rollout batch, shared by PPO and GRPO: `epochs` passes over the batch's
//! sequences, each in a fresh random order cut into minibatches (one optimiser step each), and
//! each minibatch into micro-batches whose gradients accumulate (`micro_batch_tokens` bounds
//! the tokens of one; 0 = the whole minibatch at once). The loss of a minibatch is normalised
//! by its response tokens (the denominator its micro-batches share); how exactly is the
//! caller's (`minibatch_params`). Nothing is read back: each optimiser step's statistics go into
//! the RL step's readout, and [`finish_epochs`] turns the read-back values into statistics.

use crate::backend::ops::{Backend, PpoParams};
use crate::data::rng::Rng;
use crate::error::Result;
use crate::model::Model;
use crate::rl::policy_update::{PpoStats, PpoUpdate, StepSlots, StepTensors, STEP_SLOTS};
use crate::rl::step_readout::StepReadout;

/// The packed rollout batch the update trains on: `b` rows of `t` tokens.
pub struct RolloutRows<'a> {
    pub inputs: &'a [i32],
    pub targets: &'a [i32],
    /// 1 on response tokens, 0 elsewhere
    pub mask: &'a [f32],
    pub b: usize,
    pub t: usize,
}

/// How a rollout batch is trained on.
#[derive(Clone, Copy, Debug)]
pub struct EpochPlan {
    pub epochs: usize,
    /// sequences per optimiser step
    pub mini_batch: usize,
    /// tokens per micro-batch (0: the whole minibatch)
    pub micro_batch_tokens: usize,
    pub lr: f32,
    /// the value model's (or value head's) learning rate
    pub value_lr: f32,
}

impl EpochPlan {
    /// The readout slots the optimiser steps of `plan` over `b` sequences take.
    pub fn readout_slots(&self, b: usize) -> usize {
        self.epochs * b.div_ceil(self.mini_batch.max(1)) * STEP_SLOTS
    }
}

/// Enqueues `plan` over `rows` and returns where each minibatch's statistics lie in `readout`
/// (nothing is read back). `minibatch_params(seqs, response_tokens)` gives a minibatch's loss
/// parameters; `before_step` may add gradients (PPO-ptx) before each optimiser step.
#[allow(clippy::too_many_arguments)]
pub fn update_epochs<B: Backend>(
    be: &B,
    update: &mut PpoUpdate<B>,
    policy: &mut Model<B>,
    mut value: Option<&mut Model<B>>,
    step_t: &StepTensors<B>,
    rows: &RolloutRows<'_>,
    plan: EpochPlan,
    rng: &mut Rng,
    minibatch_params: impl Fn(usize, usize) -> PpoParams,
    mut before_step: impl FnMut(&B, &mut PpoUpdate<B>, &Model<B>) -> Result<()>,
    readout: &mut StepReadout<B>,
) -> Result<Vec<StepSlots>> {
    let t = rows.t;
    let mut stats = Vec::new();
    let mut seq_order: Vec<usize> = (0..rows.b).collect();
    for _ in 0..plan.epochs {
        rng.shuffle(&mut seq_order);
        for mb in seq_order.chunks(plan.mini_batch) {
            let tokens_in_mb: usize = mb.iter().map(|&s| rows.mask[s * t..(s + 1) * t].iter().filter(|&&m| m > 0.0).count()).sum();
            let p = minibatch_params(mb.len(), tokens_in_mb);
            let per_micro = if plan.micro_batch_tokens == 0 { mb.len() } else { (plan.micro_batch_tokens / t).clamp(1, mb.len()) };
            update.zero_grad(be)?;
            for micro in mb.chunks(per_micro) {
                let rows_i = |src: &[i32]| micro.iter().flat_map(|&s| src[s * t..(s + 1) * t].iter().copied()).collect::<Vec<i32>>();
                update.accumulate_rows(be, policy, value.as_deref(), step_t, micro, &rows_i(rows.inputs), &rows_i(rows.targets), p)?;
            }
            before_step(be, update, policy)?;
            stats.push(update.enqueue_step(be, policy, value.as_deref_mut(), plan.lr, plan.value_lr, readout)?);
        }
    }
    Ok(stats)
}

/// Every minibatch's statistics from the step's read-back `values`, in order; `after_step` sees
/// each (the divergence guard: it runs after the whole step was enqueued, the device having
/// skipped any update whose loss or gradient was not finite on its own).
pub fn finish_epochs<B: Backend>(
    update: &mut PpoUpdate<B>,
    values: &[f32],
    slots: &[StepSlots],
    mut after_step: impl FnMut(&PpoStats) -> Result<()>,
) -> Result<Vec<PpoStats>> {
    let mut stats = Vec::with_capacity(slots.len());
    for &s in slots {
        let st = update.finish_step(values, s)?;
        after_step(&st)?;
        stats.push(st);
    }
    Ok(stats)
}

//! Causal language-modelling steps on the device: forward and backward of a batch with per-token
//! loss weights, gradient accumulation over micro-batches, and the optimiser step. Buffers
//! (activations, activation gradients, parameter gradients, optimiser moments) are allocated once
//! for the largest batch and reused.

use crate::backend::ops::{Backend, ElementwiseParams, MatmulParams};
use crate::data::batch::Batch;
use crate::error::Result;
use crate::model::{Activations, GradScratch, Model, Shape};
use crate::train::collective::{sum_buffers, Collective};
use crate::train::optimizer::{AdamW, AdamWConfig};

pub struct LmTrainer<B: Backend> {
    pub acts: Activations<B>,
    pub scratch: GradScratch<B>,
    pub grads: Vec<B::Buf>,
    pub opt: AdamW<B>,
    loss_acc: B::Buf,
}

/// What one optimiser step reports.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// mean loss over the supervised tokens of all micro-batches
    pub loss: f32,
    /// global L2 norm of the gradient before clipping
    pub grad_norm: f32,
}

impl<B: Backend> LmTrainer<B> {
    pub fn new(be: &B, model: &Model<B>, max_batch: usize, max_tokens: usize, opt: AdamWConfig) -> Result<Self> {
        Ok(LmTrainer {
            acts: Activations::new(be, model.cfg(), max_batch, max_tokens)?,
            scratch: GradScratch::new(be, model.cfg(), max_tokens)?,
            grads: model.grads_like(be)?,
            opt: AdamW::new(be, model.layout(), opt)?,
            loss_acc: be.alloc(1)?,
        })
    }

    /// Clears the parameter gradients and the loss accumulator.
    pub fn zero_grad(&mut self, be: &B) -> Result<()> {
        for g in self.grads.iter_mut() {
            let n = be.len(g);
            be.fill(g, 0.0, ElementwiseParams::new(n)?)?;
        }
        be.fill(&mut self.loss_acc, 0.0, ElementwiseParams::new(1)?)
    }

    /// Forward and backward of one micro-batch; every supervised token's loss is weighted by
    /// `token_weight` (1 / supervised tokens of the whole optimiser step gives the mean).
    pub fn accumulate(&mut self, be: &B, model: &Model<B>, batch: &Batch, token_weight: f32) -> Result<()> {
        let shape = Shape { b: batch.b, t: batch.t };
        let n = shape.n();
        let dec = &model.decoder;
        dec.set_inputs(be, &mut self.acts, shape, &batch.inputs, Some(&batch.targets))?;
        let weights: Vec<f32> = batch.targets.iter().map(|&t| if t >= 0 { token_weight } else { 0.0 }).collect();
        be.write(&mut self.acts.loss_weights, &weights)?;
        dec.forward(be, &model.weights, &mut self.acts, shape)?;
        // loss_acc += losses . weights, a [1, n] x [n, 1] product on the device
        be.matmul(&mut self.loss_acc, &self.acts.losses, &self.acts.loss_weights, MatmulParams::new(1, 1, n, false, false).accumulate(true))?;
        dec.backward(be, &model.weights, &mut self.grads, &self.acts, &mut self.scratch, shape)
    }

    /// Sums the accumulated gradients and loss over the ranks of `comm` (nothing for a single
    /// process): one message, staged through the host, after the step's last micro-batch.
    pub fn sum_over_ranks(&mut self, be: &B, comm: &dyn Collective) -> Result<()> {
        let mut bufs: Vec<&mut B::Buf> = self.grads.iter_mut().collect();
        bufs.push(&mut self.loss_acc);
        sum_buffers(be, comm, &mut bufs)
    }

    /// Clips, updates the weights, and reads back the step's loss and gradient norm. A step
    /// whose loss or gradient norm is not finite updates nothing (decided on the device, see
    /// [`AdamW::step_guarded_by_loss`]: nothing is read back before the update is enqueued).
    pub fn step(&mut self, be: &B, model: &mut Model<B>, lr: f32) -> Result<StepStats> {
        let grad_norm = self.opt.step_guarded_by_loss(be, model.params_mut(), &self.grads, lr, &self.loss_acc)?;
        let loss = be.download(&self.loss_acc)?[0];
        Ok(StepStats { loss, grad_norm })
    }

    /// The loss and gradient norm of the accumulated gradients without updating (for checks).
    pub fn peek(&mut self, be: &B) -> Result<StepStats> {
        self.opt.enqueue_grad_norm(be, &self.grads)?;
        let loss = be.download(&self.loss_acc)?[0];
        let grad_norm = self.opt.grad_norm_sq(be)?.sqrt();
        Ok(StepStats { loss, grad_norm })
    }
}

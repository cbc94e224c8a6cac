//! AdamW over a parameter list, on the device: the global gradient norm is accumulated on the
//! device (`sum_squares`), gradients are clipped there (`clip_grad`) and updated with decoupled
//! weight decay (`adamw`) skipped for tensors the layout marks as norms or biases. The one value
//! read back per step is the squared norm, for logging.

use crate::backend::ops::{AdamWParams, Backend, ClipParams, ElementwiseParams};
use crate::error::Result;
use crate::model::ParamLayout;
use crate::train::resume::{Checkpoint, StateWriter};

#[derive(Clone, Copy, Debug)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// global-norm clipping threshold; 0 disables clipping
    pub max_grad_norm: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, max_grad_norm: 1.0 }
    }
}

pub struct AdamW<B: Backend> {
    pub cfg: AdamWConfig,
    pub m: Vec<B::Buf>,
    pub v: Vec<B::Buf>,
    pub step: usize,
    decay: Vec<bool>,
    norm_sq: B::Buf,
}

impl<B: Backend> AdamW<B> {
    pub fn new(be: &B, layout: &ParamLayout, cfg: AdamWConfig) -> Result<Self> {
        let alloc = || layout.specs.iter().map(|s| be.alloc(s.numel())).collect::<Result<Vec<_>>>();
        Ok(AdamW { cfg, m: alloc()?, v: alloc()?, step: 0, decay: layout.specs.iter().map(|s| s.decay).collect(), norm_sq: be.alloc(1)? })
    }

    /// Enqueues the global norm of `grads` on the device (no read-back).
    pub fn enqueue_grad_norm(&mut self, be: &B, grads: &[B::Buf]) -> Result<()> {
        be.fill(&mut self.norm_sq, 0.0, ElementwiseParams::new(1))?;
        for g in grads {
            be.sum_squares(&mut self.norm_sq, g, ElementwiseParams::new(be.len(g)))?;
        }
        Ok(())
    }

    /// Clips and applies one update with learning rate `lr`; returns the global gradient norm
    /// before clipping (the step's one read-back). When that norm is not finite (a NaN or an
    /// infinity anywhere in the gradients) nothing is updated — weights, moments and the step
    /// count stay as they were — and the non-finite norm is returned: the divergence guard
    /// ([`crate::train::DivergenceGuard`]) counts the step as skipped.
    pub fn step(&mut self, be: &B, weights: &mut [B::Buf], grads: &mut [B::Buf], lr: f32) -> Result<f32> {
        self.enqueue_grad_norm(be, grads)?;
        let norm = self.grad_norm_sq(be)?.sqrt();
        if !norm.is_finite() {
            return Ok(norm);
        }
        if self.cfg.max_grad_norm > 0.0 {
            for g in grads.iter_mut() {
                let n = be.len(g) as u32;
                be.clip_grad(g, &self.norm_sq, ClipParams { n, max_norm: self.cfg.max_grad_norm })?;
            }
        }
        self.step += 1;
        let t = self.step as i32;
        for (i, ((w, g), (m, v))) in weights.iter_mut().zip(grads.iter()).zip(self.m.iter_mut().zip(self.v.iter_mut())).enumerate() {
            let p = AdamWParams {
                n: be.len(w) as u32,
                lr,
                beta1: self.cfg.beta1,
                beta2: self.cfg.beta2,
                eps: self.cfg.eps,
                weight_decay: if self.decay[i] { self.cfg.weight_decay } else { 0.0 },
                bias_correction1: 1.0 - self.cfg.beta1.powi(t),
                bias_correction2: 1.0 - self.cfg.beta2.powi(t),
            };
            be.adamw(w, m, v, g, p)?;
        }
        Ok(norm)
    }
}

impl<B: Backend> AdamW<B> {
    /// [`Self::step`] for a step whose `loss` the caller has read back: a non-finite loss
    /// updates nothing either (the gradient norm is still measured and returned, for logging).
    pub fn step_unless_loss_nan(&mut self, be: &B, weights: &mut [B::Buf], grads: &mut [B::Buf], lr: f32, loss: f32) -> Result<f32> {
        if loss.is_finite() {
            return self.step(be, weights, grads, lr);
        }
        self.enqueue_grad_norm(be, grads)?;
        Ok(self.grad_norm_sq(be)?.sqrt())
    }

    /// Adds the moments (`<prefix>.m.i`, `<prefix>.v.i`) and the step count to a checkpoint.
    pub fn save_state(&self, be: &B, w: &mut StateWriter, prefix: &str) -> Result<()> {
        w.bufs(be, &format!("{prefix}.m"), &self.m)?;
        w.bufs(be, &format!("{prefix}.v"), &self.v)?;
        w.value(&format!("{prefix}.step"), &self.step)
    }

    /// Restores what [`Self::save_state`] saved.
    pub fn restore_state(&mut self, be: &B, ck: &Checkpoint, prefix: &str) -> Result<()> {
        ck.restore_bufs(be, &format!("{prefix}.m"), &mut self.m)?;
        ck.restore_bufs(be, &format!("{prefix}.v"), &mut self.v)?;
        self.step = ck.value(&format!("{prefix}.step"))?;
        Ok(())
    }

    /// Reads back the squared norm computed by the last `enqueue_grad_norm`.
    pub fn grad_norm_sq(&self, be: &B) -> Result<f32> {
        Ok(be.download(&self.norm_sq)?[0])
    }
}

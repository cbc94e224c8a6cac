//! AdamW over a parameter list, on the device: the global gradient norm is accumulated on the
//! device (`sum_squares`), then `adamw` updates each tensor with the gradient clipped to
//! `max_grad_norm` on the fly (the gradients are only read) and decoupled weight decay, skipped
//! for tensors the layout marks as norms or biases. A non-finite norm makes `adamw` write nothing,
//! on the device, so the whole step is enqueued without waiting for the backward; the one value
//! read back, after the update is enqueued, is the squared norm (for logging, and for the host to
//! know whether the step counted). `enqueue_step` / `finish_step` split a step in those two halves
//! so that a caller training several models (PPO's policy and value) waits once for all of them.
//! In a reduced-precision mode (`--precision bf16`) the update goes to the f32 master weights,
//! whose rounded copy then replaces the compute weights; moments are f32 in every mode.

use crate::backend::ops::{AdamWParams, AdamWSlot, Backend, ElementwiseParams};
use crate::error::{Error, Result};
use crate::model::{ParamLayout, ParamsMut};
use crate::train::collective;
use crate::train::resume::{Checkpoint, StateWriter};
use crate::train::zero::{gather_owned, share_tensor, Shards};

/// AdamW's settings (the command line flattens them into `sft` and `dpo`'s flags; the field
/// comments are the flags' help).
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct AdamWConfig {
    /// Decoupled weight decay of the matrices and embeddings (not of norms and biases)
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub weight_decay: f32,
    /// Global gradient-norm clipping (0 = off)
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub max_grad_norm: f32,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.9)]
    pub beta1: f32,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.95)]
    pub beta2: f32,
    #[arg(skip = 1e-8)]
    pub eps: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, max_grad_norm: 1.0 }
    }
}

/// The tensors of one AdamW step: weights (and their f32 master copy in a reduced-precision
/// mode), their gradients and moments, and whether each decays.
pub struct AdamWTensors<'a, B: Backend> {
    pub params: ParamsMut<'a, B>,
    pub grads: &'a [B::Buf],
    pub m: &'a mut [B::Buf],
    pub v: &'a mut [B::Buf],
    pub decay: &'a [bool],
    /// tensors this rank leaves alone (another rank owns them under ZeRO-1); empty: none
    pub skip: &'a [bool],
}

/// Enqueues one AdamW step over `t` at optimiser step `step + 1`: the global norm into `norm_sq`
/// and the fused clip + update of every tensor, with no read-back; [`finish_adamw_step`] then
/// reads the norm back (and must come before the next step is enqueued).
pub fn enqueue_adamw_step<B: Backend>(be: &B, cfg: &AdamWConfig, norm_sq: &mut B::Buf, step: usize, t: AdamWTensors<'_, B>, lr: f32) -> Result<()> {
    enqueue_norm(be, norm_sq, t.grads)?;
    enqueue_update(be, cfg, norm_sq, step, t, lr)
}

/// The update half of [`enqueue_adamw_step`]: every tensor clipped by, and skipped on a
/// non-finite, `norm_sq[0]`.
fn enqueue_update<B: Backend>(be: &B, cfg: &AdamWConfig, norm_sq: &B::Buf, step: usize, t: AdamWTensors<'_, B>, lr: f32) -> Result<()> {
    let k = (step + 1) as i32;
    let p = AdamWParams {
        lr,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        bias_correction1: 1.0 - cfg.beta1.powi(k),
        bias_correction2: 1.0 - cfg.beta2.powi(k),
        max_grad_norm: cfg.max_grad_norm,
        ..Default::default()
    };
    let (weights, master) = (t.params.weights, t.params.master);
    // with master weights the update goes to them and their rounded copy into the weights
    let targets: Vec<(&mut B::Buf, Option<&mut B::Buf>)> = if master.is_empty() {
        weights.iter_mut().map(|w| (w, None)).collect()
    } else {
        master.iter_mut().zip(weights.iter_mut()).map(|(m, w)| (m, Some(w))).collect()
    };
    let skip = t.skip;
    let mut slots: Vec<AdamWSlot<'_, B::Buf>> = targets
        .into_iter()
        .zip(t.grads)
        .zip(t.m.iter_mut().zip(t.v.iter_mut()))
        .zip(t.decay)
        .enumerate()
        .filter(|(i, _)| !skip.get(*i).copied().unwrap_or(false))
        .map(|(_, x)| x)
        .map(|((((param, out), grad), (m, v)), &decay)| AdamWSlot { param, m, v, grad, out, weight_decay: if decay { cfg.weight_decay } else { 0.0 } })
        .collect();
    be.adamw_many(&mut slots, norm_sq, p)
}

/// Reads back the squared norm of the step [`enqueue_adamw_step`] enqueued. When it is not finite
/// the device updated nothing and `*step` stays; otherwise `*step` advances. Returns the gradient
/// norm before clipping.
pub fn finish_adamw_step<B: Backend>(be: &B, norm_sq: &B::Buf, step: &mut usize) -> Result<f32> {
    let nsq = be.download(norm_sq)?[0];
    if nsq.is_finite() {
        *step += 1;
    }
    Ok(nsq.sqrt())
}

/// [`enqueue_adamw_step`] guarded by a loss still on the device: `guard = norm_sq + 0 * loss[0]`
/// (the squared norm, or NaN exactly when the loss is not finite: a finite loss changes no bit)
/// clips the update, which the device skips when the guard is not finite. `*step` counts the step
/// as taken at once (the bias correction of a following step enqueued before any read-back
/// assumes it was); [`settle_guarded_step`] takes it back once the guard is read.
pub fn enqueue_guarded_adamw_step<B: Backend>(
    be: &B,
    cfg: &AdamWConfig,
    (norm_sq, guard): (&mut B::Buf, &mut B::Buf),
    step: &mut usize,
    t: AdamWTensors<'_, B>,
    lr: f32,
    loss: &B::Buf,
) -> Result<()> {
    enqueue_norm(be, norm_sq, t.grads)?;
    let one = ElementwiseParams::new(1)?;
    be.copy(guard, loss, one)?;
    be.scale_inplace(guard, 0.0, one)?;
    be.add_inplace(guard, norm_sq, one)?;
    enqueue_update(be, cfg, guard, *step, t, lr)?;
    *step += 1;
    Ok(())
}

/// The host's side of a guarded step once its guard's value is read: a non-finite guard means
/// the device updated nothing, so the step [`enqueue_guarded_adamw_step`] counted is taken back.
pub fn settle_guarded_step(guard: f32, step: &mut usize) {
    if !guard.is_finite() {
        *step = step.saturating_sub(1);
    }
}

/// Enqueues `norm_sq[0] = sum of the squares of every gradient` (no read-back).
fn enqueue_norm<B: Backend>(be: &B, norm_sq: &mut B::Buf, grads: &[B::Buf]) -> Result<()> {
    be.fill(norm_sq, 0.0, ElementwiseParams::new(1)?)?;
    be.sum_squares_many(norm_sq, grads)
}

pub struct AdamW<B: Backend> {
    pub cfg: AdamWConfig,
    /// the moments; under ZeRO-1 a tensor another rank owns has a one-value placeholder
    pub m: Vec<B::Buf>,
    pub v: Vec<B::Buf>,
    pub step: usize,
    decay: Vec<bool>,
    /// values of each tensor
    numels: Vec<usize>,
    /// the owners of the tensors under ZeRO-1 (`--zero 1` in a job of several ranks)
    shards: Option<Shards>,
    /// `shards`' tensors this rank does not own (empty when not sharded)
    skip: Vec<bool>,
    norm_sq: B::Buf,
    /// `norm_sq + 0 * loss` of a guarded step: the squared norm, or NaN when the loss is not finite
    guard: B::Buf,
}

impl<B: Backend> AdamW<B> {
    /// Moments for `layout`'s tensors: all of them, or under ZeRO-1 (the installed collective's
    /// [`collective::zero_stage`] is 1 in a job of several ranks) those this rank owns.
    pub fn new(be: &B, layout: &ParamLayout, cfg: AdamWConfig) -> Result<Self> {
        let numels: Vec<usize> = layout.specs.iter().map(|s| s.numel()).collect();
        let world = collective::current().world().clone();
        let shards = (collective::zero_stage() == 1 && world.size > 1).then(|| Shards::assign(&numels, world.rank, world.size));
        let skip: Vec<bool> = shards.as_ref().map_or(Vec::new(), |s| (0..numels.len()).map(|i| !s.owns(i)).collect());
        let alloc = || numels.iter().enumerate().map(|(i, &n)| be.alloc(if skip.get(i) == Some(&true) { 1 } else { n })).collect::<Result<Vec<_>>>();
        let (m, v) = (alloc()?, alloc()?);
        let decay = layout.specs.iter().map(|s| s.decay).collect();
        Ok(AdamW { cfg, m, v, step: 0, decay, numels, shards, skip, norm_sq: be.alloc(1)?, guard: be.alloc(1)? })
    }

    /// The tensor owners when the moments are sharded (ZeRO-1).
    pub fn shards(&self) -> Option<&Shards> {
        self.shards.as_ref()
    }

    /// Under ZeRO-1: refuses reduced-precision master weights (not sharded), and after an update
    /// gives every rank the owners' new weights.
    fn check_sharding(&self, params: &ParamsMut<'_, B>) -> Result<()> {
        if self.shards.is_some() && !params.master.is_empty() {
            return Err(Error::invalid("--zero 1 shards the AdamW moments of f32 training; with --precision bf16 (f32 master weights) use --zero 0"));
        }
        Ok(())
    }

    fn gather_weights(&self, be: &B, weights: &mut [B::Buf]) -> Result<()> {
        match &self.shards {
            Some(s) => gather_owned(be, &*collective::current(), s, weights),
            None => Ok(()),
        }
    }

    /// Enqueues the global norm of `grads` on the device (no read-back).
    pub fn enqueue_grad_norm(&mut self, be: &B, grads: &[B::Buf]) -> Result<()> {
        enqueue_norm(be, &mut self.norm_sq, grads)
    }

    /// Clips and applies one update with learning rate `lr`; returns the global gradient norm
    /// before clipping (the step's one read-back, after the update is enqueued). When that norm is
    /// not finite (a NaN or an infinity anywhere in the gradients) the device updates nothing —
    /// weights, moments and the step count stay as they were — and the non-finite norm is
    /// returned: the divergence guard ([`crate::train::DivergenceGuard`]) counts the step as
    /// skipped. The gradients are not modified (clipping is applied inside the update).
    pub fn step(&mut self, be: &B, params: ParamsMut<'_, B>, grads: &[B::Buf], lr: f32) -> Result<f32> {
        self.enqueue_step(be, params, grads, lr)?;
        self.finish_step(be)
    }

    /// The first half of [`Self::step`]: enqueues the norm and the update, reads nothing back (to
    /// enqueue the steps of several models before one wait).
    pub fn enqueue_step(&mut self, be: &B, params: ParamsMut<'_, B>, grads: &[B::Buf], lr: f32) -> Result<()> {
        self.check_sharding(&params)?;
        let ParamsMut { weights, master } = params;
        let t = AdamWTensors { params: ParamsMut { weights: &mut *weights, master }, grads, m: &mut self.m, v: &mut self.v, decay: &self.decay, skip: &self.skip };
        enqueue_adamw_step(be, &self.cfg, &mut self.norm_sq, self.step, t, lr)?;
        self.gather_weights(be, weights)
    }

    /// The second half of [`Self::step`]: reads the norm back, counts the step if it is finite and
    /// returns the norm.
    pub fn finish_step(&mut self, be: &B) -> Result<f32> {
        finish_adamw_step(be, &self.norm_sq, &mut self.step)
    }
}

impl<B: Backend> AdamW<B> {
    /// [`Self::step`] that also updates nothing when the loss `loss[0]` (still on the device, not
    /// read first) is not finite: the update is clipped by the global norm and skipped on the device when the norm or
    /// the loss is not finite (`0 * loss` added to the norm is NaN exactly then, and 0 otherwise, so
    /// a finite loss changes no bit of the step). The read-back comes after the update is
    /// enqueued (one, or two for a skipped step); returns the gradient norm (finite even when the
    /// loss made the step skip).
    pub fn step_guarded_by_loss(&mut self, be: &B, params: ParamsMut<'_, B>, grads: &[B::Buf], lr: f32, loss: &B::Buf) -> Result<f32> {
        self.enqueue_step_guarded(be, params, grads, lr, loss)?;
        // a finite guard is the squared norm itself (plus 0): one read-back; the norm is read on
        // its own only for a skipped step
        let guard = be.download(&self.guard)?[0];
        settle_guarded_step(guard, &mut self.step);
        if guard.is_finite() {
            return Ok(guard.sqrt());
        }
        Ok(self.grad_norm_sq(be)?.sqrt())
    }

    /// The first half of [`Self::step_guarded_by_loss`]: enqueues the norm, the guard
    /// (`norm_sq + 0 * loss`, left in [`Self::guard`]) and the update it guards, and counts the
    /// step as taken; nothing is read back. The caller reads the guard later and passes it to
    /// [`settle_guarded_step`] with this optimiser's step count (`self.step`), which takes a
    /// skipped step back.
    pub fn enqueue_step_guarded(&mut self, be: &B, params: ParamsMut<'_, B>, grads: &[B::Buf], lr: f32, loss: &B::Buf) -> Result<()> {
        self.check_sharding(&params)?;
        let ParamsMut { weights, master } = params;
        let t = AdamWTensors { params: ParamsMut { weights: &mut *weights, master }, grads, m: &mut self.m, v: &mut self.v, decay: &self.decay, skip: &self.skip };
        enqueue_guarded_adamw_step(be, &self.cfg, (&mut self.norm_sq, &mut self.guard), &mut self.step, t, lr, loss)?;
        self.gather_weights(be, weights)
    }

    /// The guard of the last [`Self::enqueue_step_guarded`]: the squared gradient norm, or NaN
    /// when the loss was not finite.
    pub fn guard(&self) -> &B::Buf {
        &self.guard
    }

    /// Adds the moments (`<prefix>.m.i`, `<prefix>.v.i`) and the step count to a checkpoint.
    /// Under ZeRO-1 every rank must call it (each tensor's moments come from its owner); the
    /// checkpoint holds the whole state under the same names either way.
    pub fn save_state<'a>(&'a self, be: &'a B, w: &mut StateWriter<'a>, prefix: &str) -> Result<()> {
        match &self.shards {
            None => {
                w.bufs(be, &format!("{prefix}.m"), &self.m)?;
                w.bufs(be, &format!("{prefix}.v"), &self.v)?;
            }
            Some(s) => {
                let comm = collective::current();
                for (name, moments) in [("m", &self.m), ("v", &self.v)] {
                    for (i, buf) in moments.iter().enumerate() {
                        let data = share_tensor(be, &*comm, s, i, buf, self.numels[i])?;
                        w.tensor(&format!("{prefix}.{name}.{i}"), data);
                    }
                }
            }
        }
        w.value(&format!("{prefix}.step"), &self.step)
    }

    /// Restores what [`Self::save_state`] saved (under ZeRO-1, the tensors this rank owns: a
    /// checkpoint of any world size, sharded or not).
    pub fn restore_state(&mut self, be: &B, ck: &Checkpoint, prefix: &str) -> Result<()> {
        if self.shards.is_none() {
            ck.restore_bufs(be, &format!("{prefix}.m"), &mut self.m)?;
            ck.restore_bufs(be, &format!("{prefix}.v"), &mut self.v)?;
        } else {
            for (name, moments) in [("m", &mut self.m), ("v", &mut self.v)] {
                let prefix = format!("{prefix}.{name}");
                ck.check_count(&prefix, moments.len())?;
                for (i, buf) in moments.iter_mut().enumerate() {
                    if !self.skip[i] {
                        ck.restore_buf(be, &format!("{prefix}.{i}"), buf)?;
                    }
                }
            }
        }
        self.step = ck.value(&format!("{prefix}.step"))?;
        Ok(())
    }

    /// Reads back the squared norm computed by the last `enqueue_grad_norm`.
    pub fn grad_norm_sq(&self, be: &B) -> Result<f32> {
        Ok(be.download(&self.norm_sq)?[0])
    }
}

//! Forward-only scoring of given sequences on the device: the log-prob of each target token
//! straight from the final hidden states and the LM head (`logprob_gather_fwd`: no logits
//! are materialised), and values from a `[1, hidden]` score head. PPO and GRPO score their
//! rollouts with it (policy and reference log-probs, values).

use crate::backend::ops::{Backend, LogprobParams, MatmulParams};
use crate::error::{Error, Result};
use crate::model::{Activations, Model, Shape};

/// The one LM-head log-prob path: forward-only passes used in scoring, per-position log-probs of given targets, and values.
pub struct SequenceScorer<B: Backend> {
    acts: Activations<B>,
    entropy: B::Buf,
    lse: B::Buf,
}

impl<B: Backend> SequenceScorer<B> {
    pub fn new(be: &B, model: &Model<B>, max_seqs: usize, max_len: usize) -> Result<Self> {
        let n = max_seqs * max_len;
        Ok(SequenceScorer { acts: Activations::with_logit_rows(be, model.cfg(), max_seqs, n, 0)?, entropy: be.alloc(n)?, lse: be.alloc(n)? })
    }

    /// Log-probs of `targets` (per position) into `out` on the device.
    #[allow(clippy::too_many_arguments)]
    pub fn logprobs_into(
        &mut self,
        be: &B,
        model: &Model<B>,
        shape: Shape,
        inputs: &[i32],
        targets: &[i32],
        temperature: f32,
        out: &mut B::Buf,
    ) -> Result<()> {
        model.logprobs_into(be, &mut self.acts, shape, inputs, targets, temperature, [out, &mut self.entropy, &mut self.lse])?;
        Ok(())
    }

    /// Values (per position) into `out` on the device from the score head of value model `model`.
    pub fn values_into(&mut self, be: &B, model: &Model<B>, shape: Shape, inputs: &[i32], out: &mut B::Buf) -> Result<()> {
        model.decoder.set_inputs(be, &mut self.acts, shape, inputs, None)?;
        model.decoder.forward_hidden(be, &model.weights, &mut self.acts, shape)?;
        let w = &model.weights[model.layout().score.ok_or_else(|| Error::invalid("the value model has no score head"))?];
        self.head_values_into(be, w, shape, model.cfg().hidden_size, out)
    }

    /// Values (per position) into `out`: the `[1, hidden]` head `w` applied to the final hidden
    /// states of the last forward pass (a value head on the policy reuses its log-prob pass).
    pub fn head_values_into(&self, be: &B, w: &B::Buf, shape: Shape, hidden: usize, out: &mut B::Buf) -> Result<()> {
        be.matmul(out, &self.acts.lnf, w, MatmulParams::new(shape.n(), 1, hidden, false, true))
    }
}

impl<B: Backend> Model<B> {
    /// The index of the LM head's weight (the tied embedding when the model has no own head).
    pub fn lm_head(&self) -> usize {
        self.layout().lm_head.unwrap_or(self.layout().wte)
    }

    /// The log-prob (at `temperature`) of each of `targets` after `inputs`: the forward to the
    /// final hidden states, then the fused gather through the LM head (`logprob_gather_fwd`,
    /// no logits materialised) into `[log-probs, entropies, log-sum-exps]` (the last two are
    /// what the backward needs). Every trainer's log-prob pass is this one.
    #[allow(clippy::too_many_arguments)]
    pub fn logprobs_into(
        &self,
        be: &B,
        acts: &mut Activations<B>,
        shape: Shape,
        inputs: &[i32],
        targets: &[i32],
        temperature: f32,
        [logp, entropy, lse]: [&mut B::Buf; 3],
    ) -> Result<LogprobParams> {
        self.decoder.set_inputs(be, acts, shape, inputs, Some(targets))?;
        self.decoder.forward_hidden(be, &self.weights, acts, shape)?;
        let head = self.lm_head();
        let p = LogprobParams::new(shape.n(), self.cfg().hidden_size, self.cfg().vocab_size).temperature(temperature);
        be.logprob_gather_fwd(logp, entropy, lse, &acts.lnf, &acts.targets, &self.weights[head], p)?;
        Ok(p)
    }
}

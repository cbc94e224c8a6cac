//! The settings of `rlhf dpo`: the loss of the DPO family (`--loss`), its coefficients, and
//! the parameters they give the `preference_loss` op.

use crate::backend::ops::{preference_loss, PreferenceParams};
use crate::error::{Error, Result};
use crate::train::optimizer::AdamWConfig;
use crate::train::resume::RunControl;
use std::path::PathBuf;

/// The loss of `rlhf dpo --loss`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DpoLoss {
    /// `-log sigmoid(beta h)` on summed log-probs (DPO)
    Sigmoid,
    /// `(h - 1/(2 beta))^2` on per-token mean log-probs (IPO, as TRL computes it)
    Ipo,
    /// DPO with label smoothing eps: `-(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h)`
    Cdpo,
    /// reference-free, length-normalised: `-log sigmoid(beta (a_c - a_r) - gamma)`
    Simpo,
}

impl DpoLoss {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "sigmoid" | "dpo" => Ok(DpoLoss::Sigmoid),
            "ipo" => Ok(DpoLoss::Ipo),
            "cdpo" => Ok(DpoLoss::Cdpo),
            "simpo" => Ok(DpoLoss::Simpo),
            _ => Err(Error::invalid(format!("--loss {s}: expected sigmoid, ipo, cdpo or simpo"))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DpoLoss::Sigmoid => "sigmoid",
            DpoLoss::Ipo => "ipo",
            DpoLoss::Cdpo => "cdpo",
            DpoLoss::Simpo => "simpo",
        }
    }
    /// The op's loss type and whether log-probs are per-token means.
    fn op_type(self) -> (u32, bool) {
        match self {
            DpoLoss::Sigmoid | DpoLoss::Cdpo => (preference_loss::SIGMOID, false),
            DpoLoss::Ipo => (preference_loss::IPO, true),
            DpoLoss::Simpo => (preference_loss::SIMPO, true),
        }
    }
    pub fn uses_reference(self) -> bool {
        self != DpoLoss::Simpo
    }
}

#[derive(Clone, Debug)]
pub struct DpoConfig {
    pub out: PathBuf,
    pub steps: usize,
    pub lr: f32,
    pub min_lr_ratio: f32,
    pub warmup: usize,
    /// pairs per micro-batch
    pub batch_size: usize,
    /// micro-batches per optimiser step
    pub grad_accum: usize,
    pub seq_len: usize,
    pub seed: u64,
    pub optim: AdamWConfig,
    pub loss: DpoLoss,
    pub beta: f32,
    pub label_smoothing: f32,
    pub simpo_gamma: f32,
    /// fraction of the prompts held out to measure the implicit reward accuracy
    pub eval_fraction: f32,
    pub log_every: usize,
    /// checkpoints, resume and the divergence guard
    pub control: RunControl,
}

impl DpoConfig {
    /// TRL's defaults (beta 0.1, sigmoid loss) with `steps` steps of `batch_size` pairs.
    pub fn new(out: PathBuf, steps: usize, batch_size: usize) -> Self {
        DpoConfig {
            out,
            steps,
            lr: 1e-4,
            min_lr_ratio: 0.1,
            warmup: 0,
            batch_size,
            grad_accum: 1,
            seq_len: 512,
            seed: 1234,
            optim: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
            loss: DpoLoss::Sigmoid,
            beta: 0.1,
            label_smoothing: 0.0,
            simpo_gamma: 0.5,
            eval_fraction: 0.0,
            log_every: 10,
            control: RunControl::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.batch_size == 0 || self.grad_accum == 0 {
            return Err(Error::invalid("--steps, --batch-size and --grad-accum must be at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::invalid(format!("--lr must be a positive number, got {}", self.lr)));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(Error::invalid(format!("--min-lr-ratio must be in [0, 1], got {}", self.min_lr_ratio)));
        }
        if self.seq_len < 2 {
            return Err(Error::invalid("--seq-len must be at least 2"));
        }
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            return Err(Error::invalid(format!("--beta must be a positive number, got {}", self.beta)));
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return Err(Error::invalid(format!("--label-smoothing must be in [0, 0.5), got {}", self.label_smoothing)));
        }
        if self.loss == DpoLoss::Ipo && self.label_smoothing > 0.0 {
            return Err(Error::invalid("--label-smoothing applies to the sigmoid, cdpo and simpo losses, not ipo"));
        }
        if self.loss == DpoLoss::Cdpo && self.label_smoothing == 0.0 {
            return Err(Error::invalid("--loss cdpo needs --label-smoothing > 0 (the probability that a label is flipped)"));
        }
        if !self.simpo_gamma.is_finite() {
            return Err(Error::invalid("--simpo-gamma must be a number"));
        }
        if !(0.0..1.0).contains(&self.eval_fraction) {
            return Err(Error::invalid(format!("--eval-fraction must be in [0, 1), got {}", self.eval_fraction)));
        }
        let o = &self.optim;
        if !(o.weight_decay >= 0.0 && o.weight_decay.is_finite() && o.max_grad_norm >= 0.0 && o.max_grad_norm.is_finite()) {
            return Err(Error::invalid("--weight-decay and --max-grad-norm must be non-negative numbers"));
        }
        if self.out.exists() && !self.out.is_dir() {
            return Err(Error::file(&self.out, "--out must be a folder, and this is a file"));
        }
        Ok(())
    }

    /// The loss op's params for `pairs` pairs of `t` tokens, gradient weight `scale`.
    pub fn op_params(&self, pairs: usize, t: usize, scale: f32) -> PreferenceParams {
        let (loss_type, norm) = self.loss.op_type();
        PreferenceParams {
            pairs: pairs as u32,
            t: t as u32,
            loss_type,
            length_norm: norm as u32,
            beta: self.beta,
            label_smoothing: self.label_smoothing,
            simpo_gamma: if self.loss == DpoLoss::Simpo { self.simpo_gamma } else { 0.0 },
            scale,
        }
    }
}

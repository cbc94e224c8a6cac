//! The settings of `rlhf dpo`: the loss of the DPO family (`--loss`), its coefficients, and
//! the parameters they give the `preference_loss` op.

use crate::backend::ops::{preference_loss, PreferenceParams};
use crate::error::{Error, Result};
use crate::train::optimizer::AdamWConfig;
use crate::train::resume::RunControl;
use crate::train::training_config::TrainingConfig;
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
    /// the output folder, schedule, batch (`batch_size` pairs per micro-batch), AdamW, logging
    /// and checkpoints
    pub train: TrainingConfig,
    pub loss: DpoLoss,
    pub beta: f32,
    pub label_smoothing: f32,
    pub simpo_gamma: f32,
    /// fraction of the prompts held out to measure the implicit reward accuracy
    pub eval_fraction: f32,
}

impl DpoConfig {
    /// TRL's defaults (beta 0.1, sigmoid loss) with `steps` steps of `batch_size` pairs.
    pub fn new(out: PathBuf, steps: usize, batch_size: usize) -> Self {
        let train = TrainingConfig {
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
            log_every: 10,
            control: RunControl::default(),
        };
        DpoConfig { train, loss: DpoLoss::Sigmoid, beta: 0.1, label_smoothing: 0.0, simpo_gamma: 0.5, eval_fraction: 0.0 }
    }

    /// Checks every setting: the shared training settings, then the loss's.
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
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

//! The settings the supervised-style training commands share (`sft`, and `dpo` around its
//! loss): the output folder, the step count and learning-rate schedule, the batch, the seed,
//! AdamW, logging, and checkpoints and resume. The command line flattens them into those
//! commands' flags, so the field comments are the flags' help.

use crate::error::{Error, Result};
use crate::train::optimizer::AdamWConfig;
use crate::train::resume::RunControl;
use crate::train::run::RunSpec;
use crate::train::schedule::LrSchedule;
use std::path::PathBuf;

#[derive(Clone, Debug, clap::Args)]
pub struct TrainingConfig {
    /// Output folder: the trained model (Hugging Face layout + tokenizer), metrics.jsonl,
    /// run.toml and checkpoints
    #[arg(long)]
    pub out: PathBuf,
    /// Optimiser steps
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Peak learning rate
    #[arg(long, allow_negative_numbers = true, default_value_t = 1e-4)]
    pub lr: f32,
    /// Final learning rate of the cosine decay, as a fraction of --lr
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub min_lr_ratio: f32,
    /// Linear warm-up steps
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Examples per micro-batch (sequences; preference pairs for dpo)
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Micro-batches per optimiser step
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Maximum tokens per sequence (longer examples are truncated)
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    #[command(flatten)]
    pub optim: AdamWConfig,
    /// Print a progress line every N steps when stderr is not a terminal (0 = never)
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    #[command(flatten)]
    pub control: RunControl,
}

impl TrainingConfig {
    /// Checks every setting (a clear error naming the flag), before anything is loaded or written.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::invalid("--steps must be at least 1"));
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return Err(Error::invalid("--batch-size and --grad-accum must be at least 1"));
        }
        if self.seq_len < 2 {
            return Err(Error::invalid("--seq-len must be at least 2"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::invalid(format!("--lr must be a positive number, got {}", self.lr)));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(Error::invalid(format!("--min-lr-ratio must be in [0, 1], got {}", self.min_lr_ratio)));
        }
        let o = &self.optim;
        if !(o.weight_decay >= 0.0 && o.weight_decay.is_finite()) {
            return Err(Error::invalid(format!("--weight-decay must be >= 0, got {}", o.weight_decay)));
        }
        if !(o.max_grad_norm >= 0.0 && o.max_grad_norm.is_finite()) {
            return Err(Error::invalid(format!("--max-grad-norm must be >= 0 (0 = off), got {}", o.max_grad_norm)));
        }
        for (flag, beta) in [("--beta1", o.beta1), ("--beta2", o.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(Error::invalid(format!("{flag} must be in [0, 1), got {beta}")));
            }
        }
        if self.batch_size.checked_mul(self.seq_len).and_then(|n| n.checked_mul(self.grad_accum)).is_none() {
            return Err(Error::invalid(format!(
                "--batch-size {} x --seq-len {} x --grad-accum {} is too large",
                self.batch_size, self.seq_len, self.grad_accum
            )));
        }
        if self.out.exists() && !self.out.is_dir() {
            return Err(Error::file(&self.out, "--out must be a folder, and this is a file"));
        }
        Ok(())
    }

    /// The learning-rate schedule: warm-up, then cosine decay to `min_lr_ratio * lr`.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule { lr: self.lr, warmup: self.warmup, total: self.steps, min_lr_ratio: self.min_lr_ratio }
    }

    /// The run of `command` these settings describe, with the trainer's own `fingerprint`.
    pub fn run_spec(&self, command: &'static str, fingerprint: serde_json::Value) -> RunSpec<'_> {
        RunSpec { command, out: &self.out, steps: self.steps, log_every: self.log_every, control: &self.control, fingerprint, schedule: Some(self.schedule()) }
    }
}

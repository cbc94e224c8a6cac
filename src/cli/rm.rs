//! `rlhf rm`: a reward model trained on preference pairs or rankings.

use anyhow::{bail, Result};
use clap::Args;
use rlhf::train::resume::RunControl;
use rlhf::backend::Backend;
use rlhf::train::AdamWConfig;
use std::path::PathBuf;
use super::common::*;

#[derive(Args, Debug)]
pub struct RmArgs {
    /// The starting point: an SFT model folder (a score head is added), a reward model, or a preset
    #[command(flatten)]
    pub source: ModelSource,
    /// Continue a reward model (as `rlhf rm` saves it: its trunk and score head) on new data, e.g.
    /// old + new comparisons of the next round of labelling
    #[arg(long, value_name = "RM_DIR", conflicts_with_all = ["model", "init"])]
    pub init_from: Option<PathBuf>,
    /// JSONL with {"prompt", "chosen", "rejected"} or {"prompt", "ranked": [best, ..., worst]} lines
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder: reward model (HF *ForSequenceClassification layout + tokenizer) and metrics.jsonl
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    #[arg(long, default_value_t = 1e-5, allow_negative_numbers = true)]
    pub lr: f32,
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub min_lr_ratio: f32,
    /// Prompts per optimiser step (each with all of its completions)
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Longest sequence (prompt + completion); longer completions are cut
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// Extra score gap required of every pair
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub margin: f32,
    /// Fraction of prompts held out to measure pairwise accuracy
    #[arg(long, default_value_t = 0.1)]
    pub eval_fraction: f32,
    /// Evaluate every N steps (0 = at the end only)
    #[arg(long, default_value_t = 50)]
    pub eval_every: usize,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub weight_decay: f32,
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub max_grad_norm: f32,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    #[command(flatten)]
    pub run: RunControl,
    #[command(flatten)]
    pub common: Common,
}

pub fn cmd_rm<B: Backend>(be: &B, a: &RmArgs) -> Result<()> {
    let cfg = rlhf::rl::reward::RmConfig {
        out: a.out.clone(),
        steps: a.steps,
        lr: a.lr,
        min_lr_ratio: a.min_lr_ratio,
        warmup: a.warmup,
        batch_size: a.batch_size,
        seq_len: a.seq_len,
        seed: a.seed,
        optim: AdamWConfig { weight_decay: a.weight_decay, max_grad_norm: a.max_grad_norm, ..AdamWConfig::default() },
        margin: a.margin,
        eval_fraction: a.eval_fraction,
        eval_every: a.eval_every,
        log_every: a.log_every,
        control: a.run.clone(),
    };
    cfg.validate()?;
    if !(a.weight_decay >= 0.0 && a.weight_decay.is_finite() && a.max_grad_norm >= 0.0 && a.max_grad_norm.is_finite()) {
        bail!("--weight-decay and --max-grad-norm must be non-negative numbers");
    }
    let (mut model, tok) = match &a.init_from {
        Some(dir) => {
            if !rlhf::model::ModelConfig::load(dir)?.score_head {
                bail!(
                    "--init-from {}: config.json does not describe a reward model (architectures *ForSequenceClassification); \
                     to start a reward model from a language model use --model",
                    dir.display()
                );
            }
            let source = ModelSource { model: Some(dir.clone()), init: None, tokenizer: None };
            load_source(be, &source, a.seed, true)?
        }
        None => load_source(be, &a.source, a.seed, true)?,
    };
    let seq_len = a.seq_len.min(model.cfg().max_positions);
    let groups = rlhf::data::preference::load_preference_jsonl(&a.data, &tok, seq_len)?;
    let pairs: usize = groups.iter().map(|g| g.n_pairs()).sum();
    eprintln!(
        "rm: {} prompts ({pairs} pairs) from {}, model {} ({:.2}M parameters), backend {}",
        groups.len(),
        a.data.display(),
        model.cfg().model_type,
        model.cfg().num_params() as f64 / 1e6,
        be.name()
    );
    let s = rlhf::rl::reward::run_rm(be, &mut model, &tok, groups, &cfg)?;
    if !rlhf::train::collective::current().world().is_main() {
        return Ok(()); // rank 0 speaks for a data-parallel job
    }
    let acc = |e: &Option<rlhf::rl::reward::RankingStats>| e.map_or("-".to_string(), |e| format!("{:.3} ({} pairs)", e.accuracy, e.pairs));
    println!(
        "rm done: loss {:.4} -> {:.4}; held-out pairwise accuracy {} before, {} after; {} train / {} held-out prompts; {:.0} tokens/s; reward model and metrics.jsonl in {}",
        s.first_loss,
        s.last_loss,
        acc(&s.eval_before),
        acc(&s.eval),
        s.train_groups,
        s.eval_groups,
        s.tokens_per_sec,
        a.out.display()
    );
    Ok(())
}

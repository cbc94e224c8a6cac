//! `rlhf dpo`: the DPO family (DPO, cDPO, IPO, SimPO) on preference pairs.

use anyhow::{bail, Result};
use clap::Args;
use rlhf::train::training_config::TrainingConfig;
use rlhf::backend::Backend;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::model::Model;
use std::path::PathBuf;
use super::common::*;

#[derive(Args, Debug)]
pub struct DpoArgs {
    /// The policy to train (an SFT model folder)
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL with {"prompt", "chosen", "rejected"} lines (or {"prompt", "ranked": [...]}: best vs each other)
    #[arg(long)]
    pub data: PathBuf,
    /// The frozen reference model (default: --model); scored once, before training
    #[arg(long)]
    pub ref_model: Option<PathBuf>,
    /// sigmoid (DPO), ipo, cdpo (DPO with --label-smoothing) or simpo (reference-free)
    #[arg(long, default_value = "sigmoid")]
    pub loss: String,
    /// Strength of the KL regularisation (sigmoid/cdpo/ipo); SimPO's reward scale
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub beta: f32,
    /// Probability that a label is flipped (cdpo; also allowed with sigmoid and simpo), in [0, 0.5)
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub label_smoothing: f32,
    /// SimPO's target reward margin gamma (--loss simpo only)
    #[arg(long, allow_negative_numbers = true)]
    pub simpo_gamma: Option<f32>,
    /// Fraction of prompts held out to measure the implicit reward accuracy
    #[arg(long, default_value_t = 0.0)]
    pub eval_fraction: f32,
    #[command(flatten)]
    pub train: TrainingConfig,
    #[command(flatten)]
    pub common: Common,
}

pub fn cmd_dpo<B: Backend>(be: &B, a: &DpoArgs) -> Result<()> {
    use rlhf::rl::dpo::{run_dpo, DpoConfig, DpoLoss};
    let loss = DpoLoss::parse(&a.loss)?;
    if a.simpo_gamma.is_some() && loss != DpoLoss::Simpo {
        bail!("--simpo-gamma applies to --loss simpo only");
    }
    let cfg = DpoConfig {
        train: a.train.clone(),
        loss,
        beta: a.beta,
        label_smoothing: a.label_smoothing,
        simpo_gamma: a.simpo_gamma.unwrap_or(0.5),
        eval_fraction: a.eval_fraction,
    };
    cfg.validate()?;
    let tok = Tokenizer::load(&a.model)?;
    let mut model = Model::load(be, &a.model)?;
    let reference = match &a.ref_model {
        Some(dir) if loss == DpoLoss::Simpo => bail!("--ref-model {}: SimPO uses no reference model", dir.display()),
        Some(dir) => {
            let ref_tok = Tokenizer::load(dir)?;
            if ref_tok.vocab_size() != tok.vocab_size() || ref_tok.eos_id() != tok.eos_id() {
                bail!("--ref-model {}: its tokenizer differs from the policy's", dir.display());
            }
            Some(Model::load(be, dir)?)
        }
        None => None,
    };
    let seq_len = cfg.train.seq_len.min(model.cfg().max_positions);
    let groups = rlhf::data::preference::load_preference_jsonl(&a.data, &tok, seq_len)?;
    eprintln!(
        "dpo: {} prompts from {}, loss {} (beta {}), policy {} ({:.2}M parameters), backend {}",
        groups.len(),
        a.data.display(),
        loss.name(),
        cfg.beta,
        model.cfg().model_type,
        model.cfg().num_params() as f64 / 1e6,
        be.name()
    );
    let s = run_dpo(be, &mut model, reference, &tok, groups, &cfg)?;
    if !rlhf::train::collective::current().world().is_main() {
        return Ok(()); // rank 0 speaks for a data-parallel job
    }
    let eval = |e: &Option<rlhf::rl::dpo::DpoStats>| e.map_or("-".to_string(), |e| format!("{:.3}", e.reward_accuracy));
    println!(
        "dpo done: loss {:.4} -> {:.4}, reward accuracy {:.3} -> {:.3}, margin {:.3}; held-out accuracy {} before, {} after; {} train / {} held-out pairs, {} epochs; {:.0} tokens/s; policy and metrics.jsonl in {}",
        s.first.loss,
        s.last.loss,
        s.first.reward_accuracy,
        s.last.reward_accuracy,
        s.last.margin,
        eval(&s.eval_before),
        eval(&s.eval_after),
        s.train_pairs,
        s.eval_pairs,
        s.epochs,
        s.tokens_per_sec,
        cfg.train.out.display()
    );
    Ok(())
}

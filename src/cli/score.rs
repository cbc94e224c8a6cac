//! `rlhf score` (a reward model's score of each input line) and `rlhf logprobs` (the
//! log-probability of every token after the first).

use anyhow::{bail, Result};
use clap::Args;
use rlhf::backend::Backend;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::model::{Model, ModelConfig};
use std::path::PathBuf;
use super::common::*;

#[derive(Args, Debug)]
pub struct LogprobsArgs {
    /// Model folder (for `score`, a reward model as `rlhf rm` saves it)
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL with `input_ids` or `text` per line (for `score`, prompt and completion together)
    #[arg(long)]
    pub input: PathBuf,
    /// Sequences per forward
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[command(flatten)]
    pub common: Common,
}

pub fn cmd_score<B: Backend>(be: &B, a: &LogprobsArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let cfg = ModelConfig::load(&a.model)?;
    if !cfg.score_head {
        bail!("{}: config.json does not describe a reward model (architectures *ForSequenceClassification); train one with `rlhf rm`", a.model.display());
    }
    let model = Model::load_reward(be, &a.model, 0)?.into_frozen();
    let tok = Tokenizer::load(&a.model).ok();
    let seqs = rlhf::data::score_input::read_score_inputs(&a.input, tok.as_ref(), model.cfg().vocab_size, model.cfg().max_positions)?;
    let longest = seqs.iter().map(Vec::len).max().unwrap_or(2);
    // no batch larger than the input: the flag is an upper bound, not a size to allocate
    let mut scorer = rlhf::rl::reward::RewardTrainer::scorer(be, &model, a.batch_size.min(seqs.len().max(1)), longest)?;
    let pad = tok.as_ref().map_or(0, |t| t.pad_or_default());
    let scores = scorer.score(be, &model, &seqs, pad)?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    for (ids, score) in seqs.iter().zip(scores) {
        writeln!(out, "{}", serde_json::json!({ "input_ids": ids, "score": score }))?;
    }
    Ok(())
}

pub fn cmd_logprobs<B: Backend>(be: &B, a: &LogprobsArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let model = Model::load(be, &a.model)?.into_frozen();
    // `input_ids` lines need no tokenizer; a tokenizer that is there but broken is an error
    let has_tokenizer = a.model.join("tokenizer.json").is_file() || a.model.join(rlhf::data::tokenizer::BYTE_TOKENIZER_FILE).is_file();
    let tok = if has_tokenizer { Some(Tokenizer::load(&a.model)?) } else { None };
    let seqs = rlhf::data::score_input::read_score_inputs(&a.input, tok.as_ref(), model.cfg().vocab_size, model.cfg().max_positions)?;
    let logprobs = rlhf::model::scoring::token_logprobs(be, &model, &seqs, a.batch_size.min(seqs.len().max(1)))?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    for (ids, lp) in seqs.iter().zip(logprobs) {
        let sum: f64 = lp.iter().map(|&x| x as f64).sum();
        let line = serde_json::json!({ "input_ids": ids, "logprobs": lp, "sum_logprob": sum });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

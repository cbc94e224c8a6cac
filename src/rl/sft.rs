//! Supervised fine-tuning: next-token cross-entropy on the supervised tokens of JSONL examples
//! (all tokens of `text`/`input_ids`, the completion of `prompt`/`completion`, assistant turns of
//! `messages`). The loss of an optimiser step is the mean over every supervised token of its
//! micro-batches, as `transformers` computes it. Writes `<out>/metrics.jsonl` every step and a
//! Hugging Face checkpoint (config, weights, tokenizer) at the end.
//!
//! Data-parallel ([`crate::train::collective`], N ranks): `--batch-size` is per rank. Every rank
//! draws the same global micro-batch of N x batch-size examples and trains on its own rows of it
//! (rank r: rows r B .. (r + 1) B); the token weights are 1 / the global batch's supervised
//! tokens, and the ranks' gradients and loss sums are summed before the optimiser step, so the
//! run is the one-rank run with batch N x B (to f32 summation order).

use crate::backend::ops::Backend;
use crate::data::batch::Batcher;
use crate::data::jsonl::Example;
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::train::collective;
use crate::train::lm::LmTrainer;
use crate::train::TrainRun;
use serde_json::json;
use std::time::Instant;

/// SFT's settings are exactly the shared training settings.
pub use crate::train::training_config::TrainingConfig as SftConfig;

/// One line of the run's summary.
#[derive(Clone, Debug)]
pub struct SftSummary {
    pub first_loss: f32,
    pub last_loss: f32,
    pub tokens: usize,
    pub tokens_per_sec: f64,
    pub elapsed_s: f64,
}

/// The host state of an SFT run that a checkpoint keeps (besides weights and AdamW moments).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct SftRunState {
    /// optimiser steps done
    step: usize,
    /// examples consumed ([`Batcher::position`])
    data_position: u64,
    tokens: usize,
    first_loss: Option<f32>,
    last_loss: Option<f32>,
}

/// The settings a resumed run must share with the one it continues to be the same run.
fn fingerprint(cfg: &SftConfig) -> serde_json::Value {
    json!({ "seed": cfg.seed, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "seq_len": cfg.seq_len })
}

/// Trains `model` on `examples` and saves it with `tokenizer` into `cfg.out`.
pub fn run_sft<B: Backend>(be: &B, model: &mut Model<B>, tokenizer: &Tokenizer, examples: Vec<Example>, cfg: &SftConfig) -> Result<SftSummary> {
    cfg.validate()?;
    if examples.is_empty() {
        return Err(Error::invalid("the dataset has no examples"));
    }
    if tokenizer.vocab_size() > model.cfg().vocab_size {
        return Err(Error::invalid(format!("the tokenizer has {} tokens but the model's vocabulary is {}", tokenizer.vocab_size(), model.cfg().vocab_size)));
    }
    let seq_len = cfg.seq_len.min(model.cfg().max_positions);
    if seq_len < cfg.seq_len {
        eprintln!("sft: --seq-len {} is longer than the model's context; using {seq_len}", cfg.seq_len);
    }
    // An example whose supervised tokens all lie beyond `seq_len` would be truncated to nothing
    // to train on; drop it now rather than fail on an empty batch in the middle of the run.
    let n_examples = examples.len();
    let examples: Vec<Example> = examples.into_iter().filter(|ex| ex.loss_mask.iter().take(seq_len + 1).skip(1).any(|&m| m)).collect();
    if examples.is_empty() {
        return Err(Error::invalid(format!(
            "no example has a supervised token within the first {seq_len} tokens (--seq-len {}, model context {}); raise --seq-len or shorten the prompts",
            cfg.seq_len,
            model.cfg().max_positions
        )));
    }
    if examples.len() < n_examples {
        eprintln!("sft: skipping {} of {n_examples} examples whose supervised tokens all lie beyond the first {seq_len} tokens", n_examples - examples.len());
    }
    let pad = tokenizer.pad_or_default();
    let comm = collective::current();
    let ranks = comm.world().size;
    let mut batcher = Batcher::new(examples, cfg.seed, pad)?;
    let mut trainer = LmTrainer::new(be, model, cfg.batch_size, cfg.batch_size.saturating_mul(seq_len), cfg.optim)
        .map_err(Error::sized_by(format!("--batch-size {} x --seq-len {seq_len}", cfg.batch_size)))?;
    let (mut run, ck) = TrainRun::start(cfg.run_spec("sft", fingerprint(cfg)))?;
    let mut state = SftRunState { step: 0, data_position: 0, tokens: 0, first_loss: None, last_loss: None };
    if let Some(ck) = ck {
        state = ck.value("run")?;
        model.restore_state(be, &ck, "weights")?;
        trainer.opt.restore_state(be, &ck, "adamw")?;
        batcher.seek(state.data_position);
    }
    let tokens_at_start = state.tokens;
    for step in run.steps() {
        let step_start = Instant::now();
        let mut batches = Vec::new();
        batches.try_reserve_exact(cfg.grad_accum).map_err(|_| Error::invalid(format!("--grad-accum {} is too large", cfg.grad_accum)))?;
        // the global micro-batches (every rank draws the same); each rank trains on its rows
        batches.extend((0..cfg.grad_accum).map(|_| batcher.next_batch(cfg.batch_size * ranks, seq_len)));
        let supervised: usize = batches.iter().map(|b| b.n_supervised).sum();
        let step_tokens: usize = batches.iter().map(|b| b.inputs.len()).sum();
        if supervised == 0 {
            return Err(Error::invalid(format!(
                "step {step}: the batch has no supervised tokens (are completions empty or truncated away by --seq-len {seq_len}?)"
            )));
        }
        trainer.zero_grad(be)?;
        for batch in &batches {
            let mine = if ranks == 1 { None } else { Some(batch.rows(collective::my_rows(batch.b, comm.world()))) };
            trainer.accumulate(be, model, mine.as_ref().unwrap_or(batch), 1.0 / supervised as f32)?;
        }
        trainer.sum_over_ranks(be, &*comm)?;
        let lr = run.lr(step);
        let stats = trainer.step(be, model, lr)?;
        let skipped = run.skip_update(step, stats.loss, stats.grad_norm)?;
        state.tokens += step_tokens;
        let elapsed = run.elapsed_s();
        let step_secs = step_start.elapsed().as_secs_f64();
        if step == 1 {
            state.first_loss = Some(stats.loss).filter(|l| l.is_finite());
        }
        state.last_loss = Some(stats.loss).filter(|l| l.is_finite());
        let record = json!({
            "step": step,
            "loss": stats.loss,
            "grad_norm": stats.grad_norm,
            "lr": lr,
            "tokens": state.tokens,
            "supervised_tokens": supervised,
            "tokens_per_sec": step_tokens as f64 / step_secs.max(1e-9),
            "elapsed_s": elapsed,
            "skipped": skipped,
        });
        let tokens = state.tokens;
        run.record(step, &record, &format!("loss {:.4}", stats.loss), || {
            format!("loss {:.4} grad_norm {:.3} lr {:.2e} {:.0} tok/s", stats.loss, stats.grad_norm, lr, tokens as f64 / elapsed.max(1e-9))
        })?;
        state.step = step;
        state.data_position = batcher.position();
        run.save_if_due(step, !skipped, || &state, |w| {
            model.save_state(be, w, "weights")?;
            trainer.opt.save_state(be, w, "adamw")
        })?;
    }
    let elapsed_s = run.finish(be, model, tokenizer)?;
    let (first_loss, last_loss, tokens) = (state.first_loss.unwrap_or(f32::NAN), state.last_loss.unwrap_or(f32::NAN), state.tokens);
    Ok(SftSummary { first_loss, last_loss, tokens, tokens_per_sec: (tokens - tokens_at_start) as f64 / elapsed_s.max(1e-9), elapsed_s })
}

//! Sampling with a KV cache: one prefill of the prompt, then one cached forward per new token.
//! The sampled ids are written by the `sample` op straight into the next step's input buffer;
//! the host reads them back only to stop at an end token and to return them.

use crate::backend::ops::{Backend, SampleParams};
use crate::error::{Error, Result};
use crate::model::{Activations, KvCache, Model};

pub mod chunk_key;
pub mod rollout;
pub use rollout::{default_sync_every, rollout, FinishReason, Rollout, RolloutConfig, RolloutEngine, RolloutOutput, RolloutStats};

#[derive(Clone, Debug)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    /// 0 = greedy
    pub temperature: f32,
    /// 0 = no top-k cut
    pub top_k: usize,
    /// 1 = no nucleus cut
    pub top_p: f32,
    pub seed: u64,
    /// generation stops after any of these ids (kept in the output)
    pub stop_ids: Vec<u32>,
    /// sample only ids below this: the tokenizer's vocabulary, when the model's embedding rows
    /// are padded past it (Qwen2: 151936 rows, 151665 tokens); `None` samples every id
    pub vocab_limit: Option<usize>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig { max_new_tokens: 64, temperature: 1.0, top_k: 0, top_p: 1.0, seed: 0, stop_ids: Vec::new(), vocab_limit: None }
    }
}

impl GenerateConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::invalid(format!("--temperature must be >= 0, got {}", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid(format!("--top-p must be in (0, 1], got {}", self.top_p)));
        }
        if self.vocab_limit == Some(0) {
            return Err(Error::invalid("the sampling vocabulary is empty (a tokenizer of no tokens?)"));
        }
        Ok(())
    }

    /// The ids sampling may pick from a model of `vocab` ids: below [`Self::vocab_limit`].
    pub fn sampled_vocab(&self, vocab: usize) -> usize {
        self.vocab_limit.map_or(vocab, |l| l.min(vocab))
    }
}

/// The additive logit mask of a vocabulary of `vocab` ids of which the first `allowed` may be
/// sampled: 0 for those, a large negative number (finite, so every backend's softmax and argmax
/// stay well defined) for the rest.
pub fn vocab_mask(vocab: usize, allowed: usize) -> Vec<f32> {
    (0..vocab).map(|i| if i < allowed { 0.0 } else { MASKED_LOGIT }).collect()
}

/// What [`vocab_mask`] adds to the logit of an id that may not be sampled.
pub const MASKED_LOGIT: f32 = -1e30;

/// Continues `prompt` by up to `max_new_tokens` tokens; returns the new tokens.
pub fn generate<B: Backend>(be: &B, model: &Model<B>, prompt: &[u32], cfg: &GenerateConfig) -> Result<Vec<u32>> {
    cfg.validate()?;
    if prompt.is_empty() {
        return Err(Error::invalid("the prompt is empty"));
    }
    let max_pos = model.cfg().max_positions;
    if prompt.len() >= max_pos {
        return Err(Error::invalid(format!("the prompt has {} tokens; the model's context is {max_pos}", prompt.len())));
    }
    let t_max = prompt.len().saturating_add(cfg.max_new_tokens).min(max_pos);
    let dec = &model.decoder;
    let mut acts = Activations::with_logit_rows(be, model.cfg(), 1, prompt.len(), 1)?;
    let mut cache = KvCache::new(be, model.cfg(), 1, t_max)?;
    let ids: Vec<i32> = prompt.iter().map(|&t| t as i32).collect();
    dec.forward_cached(be, &model.weights, &mut acts, &mut cache, Some(&ids), 1, prompt.len())?;
    let vocab = model.cfg().vocab_size;
    let mask = if cfg.sampled_vocab(vocab) < vocab { Some(be.upload(&vocab_mask(vocab, cfg.sampled_vocab(vocab)))?) } else { None };
    let mut out = Vec::new();
    // the sampling step key, read by `sample` on the device
    let mut steps = be.upload_ids(&[0])?;
    let params = SampleParams {
        n: 1,
        v: model.cfg().vocab_size as u32,
        temperature: cfg.temperature,
        top_k: cfg.top_k as u32,
        top_p: cfg.top_p,
        seed_lo: cfg.seed as u32,
        seed_hi: (cfg.seed >> 32) as u32,
        step_at: 0,
    };
    for step in 0..cfg.max_new_tokens {
        be.write_ids(&mut steps, &[step as i32])?;
        if let Some(mask) = &mask {
            be.bias_add(&mut acts.logits, mask, crate::backend::ops::BiasParams { n: 1, c: vocab as u32 })?;
        }
        be.sample(&mut acts.tokens, &acts.logits, &steps, params)?;
        let id = be.download_ids(&acts.tokens)?[0] as u32;
        out.push(id);
        if cfg.stop_ids.contains(&id) || cache.len >= t_max {
            break;
        }
        dec.forward_cached(be, &model.weights, &mut acts, &mut cache, None, 1, 1)?;
    }
    Ok(out)
}

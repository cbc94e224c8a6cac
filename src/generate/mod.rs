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
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig { max_new_tokens: 64, temperature: 1.0, top_k: 0, top_p: 1.0, seed: 0, stop_ids: Vec::new() }
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
        Ok(())
    }
}

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

//! `rlhf generate`: a sampled continuation of a prompt, with a KV cache.

use anyhow::{bail, Result};
use clap::Args;
use rlhf::backend::Backend;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::generate::{rollout, GenerateConfig, RolloutConfig};
use rlhf::model::Model;
use std::path::PathBuf;
use super::common::*;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user turn with the tokenizer's chat template
    #[arg(long)]
    pub chat: bool,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 = greedy
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub temperature: f32,
    /// 0 = off
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep going past the end-of-sequence token
    #[arg(long)]
    pub ignore_eos: bool,
    #[command(flatten)]
    pub sync: SyncEveryArg,
    #[command(flatten)]
    pub common: Common,
}

pub fn cmd_generate<B: Backend>(be: &B, a: &GenerateArgs) -> Result<()> {
    let model = Model::load(be, &a.model)?.into_frozen();
    let tok = Tokenizer::load(&a.model)?;
    let prompt_ids = if a.chat {
        let messages = vec![rlhf::data::chat::Message { role: "user".into(), content: a.prompt.clone() }];
        let text = rlhf::data::chat::render_chat(&tok, &messages, true)?;
        tok.encode(&text, false)?
    } else {
        tok.encode(&a.prompt, true)?
    };
    if prompt_ids.is_empty() {
        bail!("--prompt {:?} encodes to no tokens; give some text to continue", a.prompt);
    }
    // the ids a saved folder's generation_config.json lists, so transformers stops where we do
    let stop_ids = if a.ignore_eos { Vec::new() } else { rlhf::model::hf_folder::stop_ids(model.cfg(), &tok) };
    let cfg = GenerateConfig { max_new_tokens: a.max_new_tokens, temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed, stop_ids, vocab_limit: Some(tok.vocab_size()) };
    // the rollout engine with one slot: the same draws as `generate`, read back every K steps
    let rcfg = RolloutConfig { slots: 1, gen: cfg, sync_every: a.sync.get(be.name()) };
    let new = rollout(be, &model, &[prompt_ids], &rcfg)?.outputs.into_iter().next().map(|o| o.response).unwrap_or_default();
    let text = tok.decode_with(&new, true)?;
    println!("{}{}", if a.chat { "" } else { a.prompt.as_str() }, text);
    Ok(())
}

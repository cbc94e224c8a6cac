//! A complete Hugging Face model folder: what every command's output folder holds, so that
//! `transformers` (and `tokenizers`) load it and behave as `rlhf` does.
//!
//! - `model.safetensors` and `config.json` ([`checkpoint::save_weights`]), the config carrying
//!   the tokenizer's special-token ids, every dropout probability at 0 (`rlhf` trains without
//!   dropout) and floats as they were written;
//! - `generation_config.json`: bos, pad, and as `eos_token_id` every id `rlhf generate` stops at
//!   (eos and the chat format's end-of-turn marker), so `generate` ends where `rlhf` ends;
//! - the tokenizer as `tokenizer.json` + `tokenizer_config.json` ([`Tokenizer::save`]).
//!
//! Each file is written atomically.

use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::io::fs as fsutil;
use crate::io::safetensors_out::ReadRange;
use crate::model::checkpoint;
use crate::model::config::ModelConfig;
use crate::model::params::ParamLayout;
use serde_json::{json, Value};
use std::path::Path;

/// The generation settings file name.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

/// Writes the weights `readers` give (layout order, see [`checkpoint::save_weights_from`]) as a
/// complete model folder in `dir` for `tok`.
pub fn save_model_folder(dir: &Path, cfg: &ModelConfig, layout: &ParamLayout, readers: Vec<ReadRange<'_>>, tok: &Tokenizer, dtype: safetensors::Dtype) -> Result<()> {
    let cfg = cfg.with_tokenizer(tok);
    checkpoint::save_weights_from(dir, &cfg, layout, readers, dtype)?;
    let path = dir.join(GENERATION_CONFIG_FILE);
    let mut text = serde_json::to_string_pretty(&generation_config(&cfg, tok)).map_err(|e| Error::file(&path, format!("cannot serialize: {e}")))?;
    text.push('\n');
    fsutil::atomic_write(&path, text.as_bytes())?;
    tok.save(dir, Some(cfg.max_positions))
}

/// The ids generation stops at: the tokenizer's stop ids and the model's eos, each once, inside
/// the vocabulary (what `rlhf generate` uses).
pub fn stop_ids(cfg: &ModelConfig, tok: &Tokenizer) -> Vec<u32> {
    let mut ids = Vec::new();
    for id in tok.stop_ids().into_iter().chain(cfg.eos_token_id) {
        if (id as usize) < cfg.vocab_size && !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// `generation_config.json` for `cfg` (already given the tokenizer's ids).
pub fn generation_config(cfg: &ModelConfig, tok: &Tokenizer) -> Value {
    let stops = stop_ids(cfg, tok);
    let eos = match stops.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    let pad = cfg.raw.get("pad_token_id").cloned().filter(|v| !v.is_null()).or_else(|| cfg.eos_token_id.map(|e| json!(e)));
    json!({
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": pad,
    })
}

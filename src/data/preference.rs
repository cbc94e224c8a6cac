//! Preference data for reward models: `{"prompt", "chosen", "rejected"}` pairs (with an optional
//! per-pair `"margin"`) and InstructGPT's rankings `{"prompt", "ranked": [best, ..., worst]}`.
//! Each line becomes one group of K >= 2 token sequences (prompt + completion + end token), best
//! first. A completion that does not fit `seq_len` is cut at the end; a prompt that leaves no room
//! for a completion is an error naming the line.

use crate::data::jsonl::read_jsonl_objects;
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// One prompt's completions as full token sequences, best first.
#[derive(Clone, Debug, PartialEq)]
pub struct PreferenceGroup {
    /// 1-based line of the JSONL file
    pub line: usize,
    pub sequences: Vec<Vec<u32>>,
    /// tokens of the prompt at the start of every sequence (the completions follow it)
    pub prompt_len: usize,
    /// added to the required score gap of every pair of the group
    pub margin: f32,
}

impl PreferenceGroup {
    pub fn n_pairs(&self) -> usize {
        let k = self.sequences.len();
        k * (k - 1) / 2
    }
}

/// The first two equal entries (by position), if any.
fn first_duplicate(items: &[&str]) -> Option<(usize, usize)> {
    (0..items.len()).find_map(|j| (0..j).find(|&i| items[i] == items[j]).map(|i| (i, j)))
}

/// Reads a preference JSONL file. `seq_len` is the longest sequence kept (at most the context).
pub fn load_preference_jsonl(path: &Path, tok: &Tokenizer, seq_len: usize) -> Result<Vec<PreferenceGroup>> {
    let rows = read_jsonl_objects(path)?;
    let mut groups = Vec::with_capacity(rows.len());
    let mut truncated = 0usize;
    for (line, obj) in rows {
        let err = |msg: String| Error::line(path, line, msg);
        let prompt = obj.get("prompt").and_then(Value::as_str).ok_or_else(|| err("expected a string `prompt`".into()))?;
        let completions: Vec<&str> = if let Some(ranked) = obj.get("ranked") {
            let arr = ranked.as_array().ok_or_else(|| err("`ranked` must be an array of strings, best first".into()))?;
            if arr.len() < 2 {
                return Err(err(format!("`ranked` has {} completion(s); a ranking needs at least 2", arr.len())));
            }
            arr.iter().map(|v| v.as_str().ok_or_else(|| err("`ranked` must hold strings".into()))).collect::<Result<_>>()?
        } else {
            let get = |key: &str| obj.get(key).and_then(Value::as_str).ok_or_else(|| err(format!("expected a string `{key}` (or a `ranked` list)")));
            vec![get("chosen")?, get("rejected")?]
        };
        if let Some((i, j)) = first_duplicate(&completions) {
            return Err(err(if obj.get("ranked").is_some() {
                format!("`ranked` holds the same completion at positions {} and {}: a ranking orders different completions", i + 1, j + 1)
            } else {
                "`chosen` and `rejected` are the same text: a pair prefers one completion over a different one".to_string()
            }));
        }
        let margin = match obj.get("margin") {
            None | Some(Value::Null) => 0.0,
            Some(v) => v.as_f64().filter(|m| m.is_finite()).ok_or_else(|| err("`margin` must be a number".into()))? as f32,
        };
        let prompt_ids = tok.encode(prompt, true).map_err(|e| err(e.to_string()))?;
        if prompt_ids.len() + 1 >= seq_len {
            return Err(err(format!(
                "the prompt has {} tokens, leaving no room for a completion within {seq_len} tokens (--seq-len or the model's context)",
                prompt_ids.len()
            )));
        }
        let mut sequences = Vec::with_capacity(completions.len());
        for c in completions {
            let mut ids = prompt_ids.clone();
            ids.extend(tok.encode(c, false).map_err(|e| err(e.to_string()))?);
            if let Some(eos) = tok.eos_id() {
                ids.push(eos);
            }
            if ids.len() > seq_len {
                ids.truncate(seq_len);
                truncated += 1;
            }
            sequences.push(ids);
        }
        groups.push(PreferenceGroup { line, sequences, prompt_len: prompt_ids.len(), margin });
    }
    if groups.is_empty() {
        return Err(Error::file(path, "no preference examples"));
    }
    if truncated > 0 {
        eprintln!("{}: {truncated} completion(s) cut to {seq_len} tokens", path.display());
    }
    Ok(groups)
}

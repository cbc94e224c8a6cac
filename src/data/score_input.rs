//! Inputs of `rlhf logprobs`: JSONL lines with `input_ids` (used as they are) or `text`
//! (tokenised with the model's tokenizer, special tokens as its post-processor adds them).

use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// One token sequence per non-blank line, in file order.
pub fn read_score_inputs(path: &Path, tok: Option<&Tokenizer>, vocab_size: usize) -> Result<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| Error::line(path, line_no, format!("invalid JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| Error::line(path, line_no, "expected a JSON object"))?;
        let ids: Vec<u32> = if let Some(ids) = obj.get("input_ids") {
            let arr = ids.as_array().ok_or_else(|| Error::line(path, line_no, "`input_ids` must be an array of integers"))?;
            arr.iter()
                .map(|v| {
                    v.as_u64()
                        .filter(|&x| (x as usize) < vocab_size)
                        .map(|x| x as u32)
                        .ok_or_else(|| Error::line(path, line_no, format!("`input_ids` holds {v}, not a token id below the vocabulary size {vocab_size}")))
                })
                .collect::<Result<_>>()?
        } else if let Some(t) = obj.get("text") {
            let t = t.as_str().ok_or_else(|| Error::line(path, line_no, "`text` must be a string"))?;
            let tok = tok.ok_or_else(|| Error::line(path, line_no, "`text` needs a tokenizer, and the model folder has none"))?;
            tok.encode(t, true).map_err(|e| Error::line(path, line_no, e.to_string()))?
        } else {
            return Err(Error::line(path, line_no, "expected `input_ids` or `text`"));
        };
        if ids.len() < 2 {
            return Err(Error::line(path, line_no, "a sequence needs at least 2 tokens to score"));
        }
        out.push(ids);
    }
    if out.is_empty() {
        return Err(Error::file(path, "no input lines"));
    }
    Ok(out)
}

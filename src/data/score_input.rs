//! Inputs of `rlhf logprobs`: JSONL lines with `input_ids` (used as they are) or `text`
//! (tokenised with the model's tokenizer, special tokens as its post-processor adds them).

use crate::data::jsonl::read_jsonl_objects;
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use std::path::Path;

/// One token sequence per non-blank line, in file order. Every id must be below `vocab_size`
/// and every sequence at most `max_len` tokens long (the model's context).
pub fn read_score_inputs(path: &Path, tok: Option<&Tokenizer>, vocab_size: usize, max_len: usize) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::new();
    for (line_no, obj) in read_jsonl_objects(path)? {
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
            let ids = tok.encode(t, true).map_err(|e| Error::line(path, line_no, e.to_string()))?;
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
                return Err(Error::line(path, line_no, format!("`text` encodes to token id {bad}, beyond the model's vocabulary size {vocab_size}")));
            }
            ids
        } else {
            return Err(Error::line(path, line_no, "expected `input_ids` or `text`"));
        };
        if ids.len() < 2 {
            return Err(Error::line(path, line_no, "a sequence needs at least 2 tokens to score"));
        }
        if ids.len() > max_len {
            return Err(Error::line(path, line_no, format!("the sequence has {} tokens; the model's context is {max_len}", ids.len())));
        }
        out.push(ids);
    }
    if out.is_empty() {
        return Err(Error::file(path, "no input lines"));
    }
    Ok(out)
}

//! JSONL datasets. One JSON object per line; blank lines are skipped. Every error names the
//! file and the 1-based line.
//!
//! Supervised fine-tuning lines take one of these shapes:
//! - `{"text": "..."}`: loss on every token. Encoded with the tokenizer's special tokens
//!   (`<|bos|>` for the byte tokenizer, the post-processor's for Hugging Face ones), then eos
//!   appended when the tokenizer has one.
//! - `{"input_ids": [1, 2, ...]}`: used as is, loss on every token; an optional
//!   `"loss_mask": [0, 1, ...]` (0/1 or booleans, same length) restricts it.
//! - `{"prompt": "...", "completion": "..."}`: the prompt encoded with special tokens, the
//!   completion without, then eos; loss on the completion tokens (and the eos) only.
//! - `{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}`:
//!   rendered with the chat template, loss on the assistant turns (see
//!   [`encode_chat`](crate::data::encode_chat)).
//!
//! Other keys (ids, metadata) are ignored.

use crate::data::chat::{ChatTemplate, Message};
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// One training sequence. `loss_mask[i]` says whether token `i` is a supervised target, i.e.
/// whether the model is trained to predict it from `ids[..i]`; `loss_mask[0]` is never used
/// (nothing predicts the first token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub loss_mask: Vec<bool>,
}

impl Example {
    /// An example from ids and mask of the same length.
    pub fn new(ids: Vec<u32>, loss_mask: Vec<bool>) -> Result<Example> {
        if ids.len() != loss_mask.len() {
            return Err(Error::invalid(format!("example has {} ids but a loss mask of {}", ids.len(), loss_mask.len())));
        }
        Ok(Example { ids, loss_mask })
    }

    /// An example with loss on every token.
    pub fn all_supervised(ids: Vec<u32>) -> Example {
        let loss_mask = vec![true; ids.len()];
        Example { ids, loss_mask }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of tokens trained on (`loss_mask[1..]` that are true).
    pub fn n_targets(&self) -> usize {
        self.loss_mask.iter().skip(1).filter(|&&m| m).count()
    }
}

/// A plain-text example: encoded with special tokens, eos appended, loss everywhere.
pub fn text_example(tok: &Tokenizer, text: &str) -> Result<Example> {
    let mut ids = tok.encode(text, true)?;
    if let Some(eos) = tok.eos_id() {
        if ids.last() != Some(&eos) {
            ids.push(eos);
        }
    }
    Ok(Example::all_supervised(ids))
}

/// A prompt/completion example: loss on the completion and the eos after it.
pub fn prompt_completion_example(tok: &Tokenizer, prompt: &str, completion: &str) -> Result<Example> {
    let mut ids = tok.encode(prompt, true)?;
    let n_prompt = ids.len();
    ids.extend(tok.encode(completion, false)?);
    if let Some(eos) = tok.eos_id() {
        ids.push(eos);
    }
    let mut loss_mask = vec![false; n_prompt];
    loss_mask.resize(ids.len(), true);
    Ok(Example { ids, loss_mask })
}

/// The JSON type of a value, for messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a JSONL file into `(line number, object)` pairs (1-based line numbers, blank lines
/// skipped). Lines that are not valid JSON or not objects are errors naming the line.
pub fn read_jsonl_objects(path: &Path) -> Result<Vec<(usize, Map<String, Value>)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let line = std::str::from_utf8(raw).map_err(|e| Error::line(path, line_no, format!("not valid UTF-8: {e}")))?;
        let line = if line_no == 1 { line.trim_start_matches('\u{feff}') } else { line };
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| Error::line(path, line_no, format!("invalid JSON: {e}")))?;
        match v {
            Value::Object(o) => out.push((line_no, o)),
            other => return Err(Error::line(path, line_no, format!("expected a JSON object, found {}", json_kind(&other)))),
        }
    }
    Ok(out)
}

fn get_str<'a>(obj: &'a Map<String, Value>, key: &str) -> std::result::Result<&'a str, String> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("`{key}` must be a string, found {}", json_kind(other))),
        None => Err(format!("missing `{key}`")),
    }
}

/// Parses `{"role", "content"}` messages (roles system, user, assistant).
pub fn parse_messages(v: &Value) -> std::result::Result<Vec<Message>, String> {
    let list = match v {
        Value::Array(a) => a,
        other => return Err(format!("`messages` must be an array, found {}", json_kind(other))),
    };
    if list.is_empty() {
        return Err("`messages` is empty".into());
    }
    let mut out = Vec::with_capacity(list.len());
    for (k, m) in list.iter().enumerate() {
        let obj = match m {
            Value::Object(o) => o,
            other => return Err(format!("messages[{k}] must be an object, found {}", json_kind(other))),
        };
        let role = get_str(obj, "role").map_err(|e| format!("messages[{k}]: {e}"))?;
        if !matches!(role, "system" | "user" | "assistant") {
            return Err(format!("messages[{k}]: unknown role `{role}` (expected \"system\", \"user\" or \"assistant\")"));
        }
        let content = get_str(obj, "content").map_err(|e| format!("messages[{k}]: {e}"))?;
        out.push(Message::new(role, content));
    }
    Ok(out)
}

const SFT_KEYS: &str = "`text`, `input_ids`, `prompt` + `completion`, `messages`";

/// One SFT line; errors are messages the caller attaches the file and line to.
fn sft_line(obj: &Map<String, Value>, tok: &Tokenizer, template: &mut Option<ChatTemplate>) -> std::result::Result<Example, String> {
    let has = |k: &str| obj.contains_key(k);
    let kinds = [has("text"), has("input_ids"), has("prompt") || has("completion"), has("messages")];
    match kinds.iter().filter(|&&k| k).count() {
        0 => {
            let mut found: Vec<&str> = obj.keys().map(String::as_str).collect();
            found.sort_unstable();
            let found = if found.is_empty() { "none".to_string() } else { found.join(", ") };
            return Err(format!("expected one of the keys {SFT_KEYS}; found keys: {found}"));
        }
        1 => {}
        _ => return Err(format!("more than one of the keys {SFT_KEYS}; use one per line")),
    }
    let tok_err = |e: Error| e.to_string();
    let ex = if kinds[0] {
        let text = get_str(obj, "text")?;
        if text.is_empty() {
            return Err("`text` is empty".into());
        }
        text_example(tok, text).map_err(tok_err)?
    } else if kinds[1] {
        let list = match &obj["input_ids"] {
            Value::Array(a) => a,
            other => return Err(format!("`input_ids` must be an array of integers, found {}", json_kind(other))),
        };
        if list.is_empty() {
            return Err("`input_ids` is empty".into());
        }
        let vocab = tok.vocab_size() as u64;
        let mut ids = Vec::with_capacity(list.len());
        for (k, v) in list.iter().enumerate() {
            match v.as_u64() {
                Some(id) if id < vocab => ids.push(id as u32),
                Some(id) => return Err(format!("input_ids[{k}] = {id} is outside the vocabulary (size {vocab})")),
                None => return Err(format!("input_ids[{k}] must be a non-negative integer, found {v}")),
            }
        }
        let mask = match obj.get("loss_mask") {
            None => vec![true; ids.len()],
            Some(Value::Array(m)) if m.len() == ids.len() => {
                let mut mask = Vec::with_capacity(m.len());
                for (k, v) in m.iter().enumerate() {
                    mask.push(match v {
                        Value::Bool(b) => *b,
                        Value::Number(n) if n.as_u64() == Some(0) => false,
                        Value::Number(n) if n.as_u64() == Some(1) => true,
                        other => return Err(format!("loss_mask[{k}] must be 0, 1 or a boolean, found {other}")),
                    });
                }
                mask
            }
            Some(Value::Array(m)) => return Err(format!("`loss_mask` has {} entries but `input_ids` has {}", m.len(), ids.len())),
            Some(other) => return Err(format!("`loss_mask` must be an array, found {}", json_kind(other))),
        };
        Example { ids, loss_mask: mask }
    } else if kinds[2] {
        let prompt = get_str(obj, "prompt")?;
        let completion = get_str(obj, "completion")?;
        if completion.is_empty() {
            return Err("`completion` is empty".into());
        }
        prompt_completion_example(tok, prompt, completion).map_err(tok_err)?
    } else {
        let messages = parse_messages(&obj["messages"])?;
        if !messages.iter().any(|m| m.role == "assistant" && !m.content.is_empty()) {
            return Err("`messages` has no non-empty assistant message to train on".into());
        }
        if template.is_none() {
            *template = Some(ChatTemplate::new(tok).map_err(tok_err)?);
        }
        let t = template.as_ref().expect("template was just set");
        let (ids, mask) = t.encode(tok, &messages).map_err(tok_err)?;
        Example { ids, loss_mask: mask }
    };
    if ex.len() < 2 {
        return Err(format!("only {} token(s); an example needs at least 2 to train on", ex.len()));
    }
    if ex.n_targets() == 0 {
        return Err("no supervised tokens after the first".into());
    }
    Ok(ex)
}

/// Loads an SFT dataset (see the module docs for the accepted line shapes).
pub fn load_sft_jsonl(path: &Path, tok: &Tokenizer) -> Result<Vec<Example>> {
    let mut template = None;
    let mut out = Vec::new();
    for (line_no, obj) in read_jsonl_objects(path)? {
        let ex = sft_line(&obj, tok, &mut template).map_err(|msg| Error::line(path, line_no, msg))?;
        out.push(ex);
    }
    if out.is_empty() {
        return Err(Error::file(path, "no examples: the file is empty or has only blank lines"));
    }
    Ok(out)
}

/// Prompts for RL: `{"prompt": "..."}` lines (tokenised with the tokenizer's special tokens) or
/// `{"messages": [...]}` lines (rendered with the chat template and its generation prompt). A
/// prompt of `context` tokens or more (no room for a response) is an error naming its line.
pub fn load_prompts_jsonl(path: &Path, tok: &Tokenizer, context: usize) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::new();
    for (line, obj) in read_jsonl_objects(path)? {
        let ids = if let Some(p) = obj.get("prompt") {
            let p = p.as_str().ok_or_else(|| Error::line(path, line, "`prompt` must be a string"))?;
            tok.encode(p, true).map_err(|e| Error::line(path, line, e.to_string()))?
        } else if let Some(m) = obj.get("messages") {
            let messages = parse_messages(m).map_err(|e| Error::line(path, line, e))?;
            crate::data::chat::encode_chat_prompt(tok, &messages).map_err(|e| Error::line(path, line, e.to_string()))?
        } else {
            return Err(Error::line(path, line, "expected `prompt` or `messages`"));
        };
        if ids.is_empty() {
            return Err(Error::line(path, line, "the prompt is empty"));
        }
        if ids.len() + 1 >= context {
            return Err(Error::line(
                path,
                line,
                format!("the prompt has {} tokens, leaving no room for a response in the model's context of {context}", ids.len()),
            ));
        }
        out.push(ids);
    }
    if out.is_empty() {
        return Err(Error::file(path, "no prompts"));
    }
    Ok(out)
}

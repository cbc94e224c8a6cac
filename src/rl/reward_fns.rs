//! Built-in reward functions of `rlhf grpo --reward-fn` (verifiable rewards, no reward model):
//!
//! - `oracle`: the demo task's oracle ([`oracle_score`], in [-1, 1]) of the
//!   decoded response.
//! - `exact-match`: 1 when the response's answer equals the prompt line's `answer`, else 0. Both
//!   sides are normalised by [`normalize_answer`]: the text after the last `####` if there is one
//!   (GSM8K's convention), else the last number in the text (commas inside it dropped), else the
//!   whole text; then trimmed, a trailing `.` dropped, lower-cased. Two normalised answers that both
//!   parse as numbers are compared as numbers (`42.0` matches `42`).

use crate::data::jsonl::read_jsonl_objects;
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The words the oracle counts (the demo task draws its answers from these lists).
pub const KIND: &[&str] = &["kind", "warm", "calm", "glad", "nice", "fair", "good", "wise"];
pub const RUDE: &[&str] = &["rude", "cold", "mean", "dull", "sour", "grim", "bad", "vain"];
pub const NEUTRAL: &[&str] = &["blue", "tall", "round", "late", "new", "far", "loud", "soft"];
/// The oracle: (kind words - rude words) / words of the answer, in [-1, 1]; 0 for no words.
pub fn oracle_score(answer: &str) -> f32 {
    let words: Vec<&str> = answer.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()).collect();
    if words.is_empty() {
        return 0.0;
    }
    let kind = words.iter().filter(|w| KIND.contains(w)).count() as f32;
    let rude = words.iter().filter(|w| RUDE.contains(w)).count() as f32;
    (kind - rude) / words.len() as f32
}

/// A known true score of (prompt, response), for reporting only (the demo task's oracle).
pub type OracleFn<'a> = dyn Fn(&[u32], &[u32]) -> f32 + 'a;

/// A built-in reward function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewardFnKind {
    Oracle,
    ExactMatch,
}

impl RewardFnKind {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "oracle" => Ok(RewardFnKind::Oracle),
            "exact-match" => Ok(RewardFnKind::ExactMatch),
            _ => Err(Error::invalid(format!("--reward-fn {name:?}: expected oracle or exact-match"))),
        }
    }
}

/// The last number in `s` (an optional `-`, digits with optional `,` separators and one optional
/// decimal part), commas removed.
fn last_number(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut found = None;
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = if i > 0 && b[i - 1] == b'-' { i - 1 } else { i };
            let mut j = i;
            let mut seen_dot = false;
            while j < b.len() {
                let c = b[j];
                let next_digit = j + 1 < b.len() && b[j + 1].is_ascii_digit();
                if c.is_ascii_digit() || (c == b',' && next_digit) || (c == b'.' && !seen_dot && next_digit) {
                    seen_dot |= c == b'.';
                    j += 1;
                } else {
                    break;
                }
            }
            found = Some(s[start..j].replace(',', ""));
            i = j;
        } else {
            i += 1;
        }
    }
    found
}

/// The normalised answer of a completion or of a reference answer (see the module comment).
pub fn normalize_answer(text: &str) -> String {
    let picked = match text.rfind("####") {
        Some(at) => text[at + 4..].to_string(),
        None => last_number(text).unwrap_or_else(|| text.to_string()),
    };
    let t = picked.trim();
    let t = t.strip_suffix('.').unwrap_or(t).trim();
    t.to_lowercase()
}

/// 1.0 when `completion`'s normalised answer equals `answer`'s, else 0.0.
pub fn exact_match(completion: &str, answer: &str) -> f32 {
    let (a, b) = (normalize_answer(completion), normalize_answer(answer));
    let same = match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    };
    if same {
        1.0
    } else {
        0.0
    }
}

/// The `answer` of every line of a prompts file (a string or a number), in line order; a line
/// without one is an error naming it.
pub fn load_answers(path: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (line, obj) in read_jsonl_objects(path)? {
        let a = match obj.get("answer") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(Error::line(path, line, "`answer` must be a string or a number")),
            None => return Err(Error::line(path, line, "--reward-fn exact-match needs an `answer` field on every prompt line")),
        };
        out.push(a);
    }
    Ok(out)
}

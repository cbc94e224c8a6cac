//! Chat templates: Hugging Face Jinja templates rendered with minijinja, and the loss mask
//! that supervises exactly the assistant turns.
//!
//! Rendering follows `transformers`' `apply_chat_template`: variables `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token`, `pad_token`, `tools` (none),
//! `documents` (none); `trim_blocks` and `lstrip_blocks` on; the function `raise_exception`;
//! a Python-style `tojson` filter; the common Python string and dict methods (`strip`,
//! `startswith`, `split`, `items`, `get`, ...). `{% generation %}` markers are accepted and
//! ignored. Rendered text is tokenized without the post-processor's special tokens (the
//! template writes them itself), as `transformers` does.

use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use minijinja::value::{from_args, Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind, State};
use serde::{Deserialize, Serialize};

/// One chat turn. `role` is "system", "user" or "assistant" in the datasets this crate reads;
/// templates may accept others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message { role: role.into(), content: content.into() }
    }
    pub fn system(content: impl Into<String>) -> Message {
        Message::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Message {
        Message::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new("assistant", content)
    }
}

/// The template used for a Hugging Face tokenizer that ships none: `role:\ncontent\n` per turn,
/// eos closing each assistant turn, bos (if any) first.
pub const FALLBACK_CHAT_TEMPLATE: &str = concat!(
    "{{ bos_token }}",
    "{% for message in messages %}",
    "{{ message['role'] }}:\n{{ message['content'] }}",
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}",
    "{% endfor %}",
    "{% if add_generation_prompt %}assistant:\n{% endif %}"
);

/// A compiled chat template with the tokenizer's special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: Option<String>,
    eos: Option<String>,
    pad: Option<String>,
}

const TEMPLATE_NAME: &str = "chat_template";

fn jinja_err(e: minijinja::Error) -> Error {
    let mut msg = format!("chat template: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::Tokenizer(msg)
}

impl ChatTemplate {
    /// The tokenizer's template ([`Tokenizer::chat_template`]), or
    /// [`FALLBACK_CHAT_TEMPLATE`] when it has none.
    pub fn new(tok: &Tokenizer) -> Result<ChatTemplate> {
        let source = tok.chat_template().unwrap_or(FALLBACK_CHAT_TEMPLATE);
        ChatTemplate::from_source(source, tok.bos_token(), tok.eos_token(), tok.pad_token())
    }

    /// Compiles a template from its Jinja source.
    pub fn from_source(source: &str, bos: Option<&str>, eos: Option<&str>, pad: Option<&str>) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.add_function("raise_exception", |msg: String| -> Result<Value, minijinja::Error> { Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg)) });
        env.add_filter("tojson", tojson);
        env.set_unknown_method_callback(pycompat);
        env.add_template_owned(TEMPLATE_NAME, strip_generation_tags(source)).map_err(jinja_err)?;
        Ok(ChatTemplate { env, bos: bos.map(str::to_owned), eos: eos.map(str::to_owned), pad: pad.map(str::to_owned) })
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends with what opens an
    /// assistant turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self.env.get_template(TEMPLATE_NAME).map_err(jinja_err)?;
        let none = Value::from(());
        let opt = |s: &Option<String>| s.as_deref().map_or(Value::UNDEFINED, Value::from);
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => opt(&self.bos),
            eos_token => opt(&self.eos),
            pad_token => opt(&self.pad),
            tools => none.clone(),
            documents => none,
        };
        tmpl.render(ctx).map_err(jinja_err)
    }

    /// Token ids and loss mask of a conversation; see [`encode_chat`].
    pub fn encode(&self, tok: &Tokenizer, messages: &[Message]) -> Result<(Vec<u32>, Vec<bool>)> {
        let full = self.render(messages, false)?;
        let mut spans = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let before = self.render(&messages[..i], true)?;
            let through = self.render(&messages[..=i], false)?;
            let start = common_prefix(&before, &full);
            let mut end = common_prefix(&through, &full);
            // Whitespace after the turn's last character (the newline after an end marker)
            // separates turns; it is not part of what the assistant says.
            while end > start {
                let c = full[..end].chars().next_back().unwrap_or('x');
                if !c.is_whitespace() {
                    break;
                }
                end -= c.len_utf8();
            }
            if end > start {
                spans.push((start, end));
            }
        }
        let (ids, offsets) = tok.encode_with_offsets(&full, false)?;
        let mask = offsets.iter().map(|&(s, e)| s < e && spans.iter().any(|&(a, b)| s < b && e > a)).collect();
        Ok((ids, mask))
    }
}

/// Length in bytes of the longest common prefix of `a` and `b`, on a char boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    let mut n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !b.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// Renders a conversation with the tokenizer's chat template (or the fallback).
pub fn render_chat(tok: &Tokenizer, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
    ChatTemplate::new(tok)?.render(messages, add_generation_prompt)
}

/// Token ids of a conversation and a mask that is true exactly on the tokens of assistant
/// turns: for each assistant message `i`, the text between
/// `render(messages[..i], add_generation_prompt = true)` and `render(messages[..=i])`
/// (taken as common prefixes with the full rendering, so templates that render earlier turns
/// differently still work), without trailing whitespace. The full rendering is tokenized once
/// and a token is supervised when its text overlaps such a span, so token boundaries are the
/// tokenizer's own.
pub fn encode_chat(tok: &Tokenizer, messages: &[Message]) -> Result<(Vec<u32>, Vec<bool>)> {
    ChatTemplate::new(tok)?.encode(tok, messages)
}

/// Token ids of a prompt for generation: the conversation rendered with the generation prompt.
pub fn encode_chat_prompt(tok: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>> {
    let text = render_chat(tok, messages, true)?;
    tok.encode(&text, false)
}

/// Removes `{% generation %}` / `{% endgeneration %}` tags (a `transformers` extension that
/// marks assistant text; the mask here is computed from prefixes instead).
fn strip_generation_tags(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(pos) = rest.find("{%") {
        out.push_str(&rest[..pos]);
        let tag = &rest[pos..];
        let inner = tag[2..].trim_start_matches(['-', '+']).trim_start();
        let word_len = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
        let word = &inner[..word_len];
        let after = inner[word_len..].trim_start().trim_start_matches(['-', '+']);
        if (word == "generation" || word == "endgeneration") && after.starts_with("%}") {
            let consumed = tag.len() - after.len() + 2;
            rest = &tag[consumed..];
        } else {
            out.push_str("{%");
            rest = &tag[2..];
        }
    }
    out.push_str(rest);
    out
}

/// `tojson` as Python's `json.dumps(value, ensure_ascii=False, indent=indent)`: `", "` and
/// `": "` separators without indent. Keys come out sorted.
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let _: Option<Value> = kwargs.get("sort_keys")?;
    let _: Option<Value> = kwargs.get("ensure_ascii")?;
    let _: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(v.as_usize().ok_or_else(|| minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an integer"))?),
    };
    let json = serde_json::to_value(value).map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: cannot serialize").with_source(e))?;
    let mut out = String::new();
    py_json(&json, indent, 0, &mut out);
    Ok(Value::from(out))
}

fn py_json(v: &serde_json::Value, indent: Option<usize>, level: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                py_json(x, indent, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, x)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                out.push_str(&J::String(k.clone()).to_string());
                out.push_str(": ");
                py_json(x, indent, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn unknown_method() -> minijinja::Error {
    minijinja::Error::from(ErrorKind::UnknownMethod)
}

fn py_strip<'a>(s: &'a str, chars: Option<&str>, left: bool, right: bool) -> &'a str {
    let pred = |c: char| match chars {
        Some(set) => set.contains(c),
        None => c.is_whitespace(),
    };
    let s = if left { s.trim_start_matches(pred) } else { s };
    if right {
        s.trim_end_matches(pred)
    } else {
        s
    }
}

fn affix_match(arg: &Value, f: impl Fn(&str) -> bool) -> Result<bool, minijinja::Error> {
    if let Some(p) = arg.as_str() {
        return Ok(f(p));
    }
    for item in arg.try_iter()? {
        if item.as_str().is_some_and(&f) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Python methods on strings and dicts that chat templates use.
fn pycompat(state: &State, value: &Value, method: &str, args: &[Value]) -> Result<Value, minijinja::Error> {
    if let Some(s) = value.as_str() {
        return match method {
            "strip" | "lstrip" | "rstrip" => {
                let (chars,): (Option<&str>,) = from_args(args)?;
                Ok(Value::from(py_strip(s, chars, method != "rstrip", method != "lstrip")))
            }
            "startswith" | "endswith" => {
                let (arg,): (Value,) = from_args(args)?;
                let ok = if method == "startswith" { affix_match(&arg, |p| s.starts_with(p))? } else { affix_match(&arg, |p| s.ends_with(p))? };
                Ok(Value::from(ok))
            }
            "split" | "rsplit" => {
                let (sep, maxsplit): (Option<Value>, Option<i64>) = from_args(args)?;
                let sep = sep.as_ref().and_then(|v| v.as_str());
                let max = maxsplit.filter(|&m| m >= 0).map(|m| m as usize);
                let parts: Vec<String> = match (sep, max) {
                    (Some(""), _) => return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "empty separator")),
                    (Some(p), None) => s.split(p).map(str::to_owned).collect(),
                    (Some(p), Some(m)) if method == "split" => s.splitn(m + 1, p).map(str::to_owned).collect(),
                    (Some(p), Some(m)) => {
                        let mut v: Vec<String> = s.rsplitn(m + 1, p).map(str::to_owned).collect();
                        v.reverse();
                        v
                    }
                    (None, max) => {
                        let words: Vec<&str> = s.split_whitespace().collect();
                        match max {
                            Some(m) if m < words.len() && method == "split" => {
                                // Python keeps the remainder (left-stripped) as the last item.
                                let mut rest = s.trim_start();
                                let mut v = Vec::new();
                                for _ in 0..m {
                                    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                                    v.push(rest[..end].to_owned());
                                    rest = rest[end..].trim_start();
                                }
                                v.push(rest.to_owned());
                                v
                            }
                            _ => words.into_iter().map(str::to_owned).collect(),
                        }
                    }
                };
                Ok(Value::from(parts))
            }
            "upper" => Ok(Value::from(s.to_uppercase())),
            "lower" => Ok(Value::from(s.to_lowercase())),
            "title" => state.apply_filter("title", std::slice::from_ref(value)),
            "capitalize" => state.apply_filter("capitalize", std::slice::from_ref(value)),
            "replace" => {
                let (old, new, count): (&str, &str, Option<i64>) = from_args(args)?;
                Ok(Value::from(match count {
                    Some(n) if n >= 0 => s.replacen(old, new, n as usize),
                    _ => s.replace(old, new),
                }))
            }
            "find" => {
                let (sub,): (&str,) = from_args(args)?;
                Ok(Value::from(s.find(sub).map_or(-1, |b| s[..b].chars().count() as i64)))
            }
            "count" => {
                let (sub,): (&str,) = from_args(args)?;
                Ok(Value::from(if sub.is_empty() { s.chars().count() + 1 } else { s.matches(sub).count() }))
            }
            "join" => {
                let (items,): (Value,) = from_args(args)?;
                let parts: Vec<String> = items.try_iter()?.map(|v| v.to_string()).collect();
                Ok(Value::from(parts.join(s)))
            }
            "isdigit" => Ok(Value::from(!s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))),
            "isalpha" => Ok(Value::from(!s.is_empty() && s.chars().all(char::is_alphabetic))),
            "isalnum" => Ok(Value::from(!s.is_empty() && s.chars().all(char::is_alphanumeric))),
            "isspace" => Ok(Value::from(!s.is_empty() && s.chars().all(char::is_whitespace))),
            "islower" => Ok(Value::from(s.chars().any(char::is_lowercase) && !s.chars().any(char::is_uppercase))),
            "isupper" => Ok(Value::from(s.chars().any(char::is_uppercase) && !s.chars().any(char::is_lowercase))),
            _ => Err(unknown_method()),
        };
    }
    if value.kind() == ValueKind::Map {
        return match method {
            "items" => state.apply_filter("items", std::slice::from_ref(value)),
            "keys" => {
                let _: () = from_args(args)?;
                Ok(Value::from(value.try_iter()?.collect::<Vec<_>>()))
            }
            "values" => {
                let _: () = from_args(args)?;
                let mut out = Vec::new();
                for k in value.try_iter()? {
                    out.push(value.get_item(&k)?);
                }
                Ok(Value::from(out))
            }
            "get" => {
                let (key, default): (Value, Option<Value>) = from_args(args)?;
                let v = value.get_item(&key)?;
                Ok(if v.is_undefined() { default.unwrap_or(Value::from(())) } else { v })
            }
            _ => Err(unknown_method()),
        };
    }
    Err(unknown_method())
}

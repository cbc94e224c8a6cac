//! Tokenizers: Hugging Face `tokenizer.json` folders (through the `tokenizers` crate) and a
//! built-in byte-level tokenizer that needs no files.
//!
//! A tokenizer folder holds either
//! - `tokenizer.json` (Hugging Face), with optional `tokenizer_config.json` (chat template,
//!   bos/eos/pad tokens), `chat_template.jinja` / `chat_template.json` and
//!   `special_tokens_map.json`; or
//! - `rlhf_tokenizer.json` containing `{"type": "byte-level"}`: the built-in byte tokenizer. A
//!   folder `rlhf` saves has it beside a `tokenizer.json` + `tokenizer_config.json` that express
//!   the same tokenizer for Hugging Face (see [`super::byte_tokenizer_hf`]); `rlhf` reads the
//!   marker, other tools the standard files.

use crate::error::{Error, Result};
use crate::io::fs::atomic_write;
use std::path::Path;

/// A token's byte range `(start, end)` in the encoded text.
pub type Span = (usize, usize);

/// Built-in tokenizer: ids 0..=255 are the bytes, then the special tokens below, padded to a
/// vocabulary of [`ByteTokenizer::VOCAB_SIZE`] (a multiple of 8; unused ids decode to nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    pub const BOS: u32 = 256;
    pub const EOS: u32 = 257;
    pub const PAD: u32 = 258;
    pub const SYSTEM: u32 = 259;
    pub const USER: u32 = 260;
    pub const ASSISTANT: u32 = 261;
    pub const END: u32 = 262;
    /// 263 special-or-byte ids rounded up to a multiple of 8.
    pub const VOCAB_SIZE: usize = 264;
    /// The special tokens, in id order starting at 256.
    pub const SPECIALS: [&'static str; 7] = ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"];

    /// The chat template of the byte tokenizer (Jinja, Hugging Face semantics).
    pub const CHAT_TEMPLATE: &'static str = concat!(
        "{{ bos_token }}",
        "{% for message in messages %}",
        "{% if message['role'] not in ['system', 'user', 'assistant'] %}",
        "{{ raise_exception('unknown role: ' ~ message['role']) }}",
        "{% endif %}",
        "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n",
        "{% endfor %}",
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    );

    /// Encodes text: every byte is one id, except the special-token strings, which become their
    /// single ids. `add_special` prepends `<|bos|>`.
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        self.encode_with_offsets(text, add_special).0
    }

    /// As [`encode`](Self::encode), with the byte span of each token in `text` (the bos added
    /// by `add_special` gets the empty span `(0, 0)`).
    pub fn encode_with_offsets(&self, text: &str, add_special: bool) -> (Vec<u32>, Vec<Span>) {
        let bytes = text.as_bytes();
        let mut ids = Vec::with_capacity(bytes.len() + 1);
        let mut offsets = Vec::with_capacity(bytes.len() + 1);
        if add_special {
            ids.push(Self::BOS);
            offsets.push((0, 0));
        }
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'<' && bytes.get(i + 1) == Some(&b'|') {
                if let Some(k) = Self::SPECIALS.iter().position(|s| bytes[i..].starts_with(s.as_bytes())) {
                    let len = Self::SPECIALS[k].len();
                    ids.push(256 + k as u32);
                    offsets.push((i, i + len));
                    i += len;
                    continue;
                }
            }
            ids.push(bytes[i] as u32);
            offsets.push((i, i + 1));
            i += 1;
        }
        (ids, offsets)
    }

    /// Decodes ids to text; special ids become their strings unless `skip_special`, invalid
    /// UTF-8 (e.g. a cut multi-byte character) becomes U+FFFD. Ids beyond the vocabulary are an
    /// error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut bytes = Vec::with_capacity(ids.len());
        for &id in ids {
            match id {
                0..=255 => bytes.push(id as u8),
                256..=262 => {
                    if !skip_special {
                        bytes.extend_from_slice(Self::SPECIALS[(id - 256) as usize].as_bytes())
                    }
                }
                _ if (id as usize) < Self::VOCAB_SIZE => {}
                _ => return Err(Error::Tokenizer(format!("token id {id} is outside the byte-level vocabulary of {}", Self::VOCAB_SIZE))),
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The id of a special-token string, or of a one-byte string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        if let Some(k) = Self::SPECIALS.iter().position(|s| *s == token) {
            return Some(256 + k as u32);
        }
        match token.as_bytes() {
            [b] => Some(*b as u32),
            _ => None,
        }
    }
}

/// A Hugging Face tokenizer with the settings from `tokenizer_config.json`.
#[derive(Clone)]
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    /// The `tokenizer.json` text as read, written back verbatim by `save`.
    json: String,
    /// `tokenizer_config.json` as read, if there was one.
    config: Option<serde_json::Value>,
    chat_template: Option<String>,
    bos: Option<String>,
    eos: Option<String>,
    pad: Option<String>,
    vocab_size: usize,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

/// A tokenizer: a Hugging Face one or the built-in byte-level one.
#[derive(Debug, Clone)]
pub enum Tokenizer {
    Hf(Box<HfTokenizer>),
    Bytes(ByteTokenizer),
}

/// The file that marks a folder as using the built-in byte tokenizer.
pub const BYTE_TOKENIZER_FILE: &str = "rlhf_tokenizer.json";

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid JSON: {e}")))
}

/// A special token in `tokenizer_config.json`: a string, `{"content": ...}` or null.
fn special_token(cfg: &serde_json::Value, key: &str) -> Option<String> {
    match cfg.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_owned),
        _ => None,
    }
}

/// `chat_template` as a string, or a list of `{name, template}` (the one named "default", else
/// the first).
fn template_from(value: &serde_json::Value, path: &Path) -> Result<Option<String>> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Array(list) => {
            let named = |name: &str| list.iter().find(|e| e.get("name").and_then(|n| n.as_str()) == Some(name));
            let entry = named("default").or_else(|| list.first());
            match entry.map(|e| e.get("template")) {
                None => Ok(None),
                Some(Some(serde_json::Value::String(s))) => Ok(Some(s.clone())),
                Some(_) => Err(Error::file(path, "`chat_template` entry has no string `template`")),
            }
        }
        _ => Err(Error::file(path, "`chat_template` must be a string or a list of {name, template}")),
    }
}

impl HfTokenizer {
    fn load(dir: &Path, tokenizer_json: &Path) -> Result<HfTokenizer> {
        let json = std::fs::read_to_string(tokenizer_json).map_err(|e| Error::io(tokenizer_json, e))?;
        let inner = tokenizers::Tokenizer::from_bytes(json.as_bytes()).map_err(|e| Error::file(tokenizer_json, format!("cannot load tokenizer: {e}")))?;

        let cfg_path = dir.join("tokenizer_config.json");
        let config = if cfg_path.is_file() { Some(read_json(&cfg_path)?) } else { None };
        let mut chat_template = None;
        let mut bos = None;
        let mut eos = None;
        let mut pad = None;
        if let Some(cfg) = &config {
            if !cfg.is_object() {
                return Err(Error::file(&cfg_path, "expected a JSON object"));
            }
            if let Some(t) = cfg.get("chat_template") {
                chat_template = template_from(t, &cfg_path)?;
            }
            bos = special_token(cfg, "bos_token");
            eos = special_token(cfg, "eos_token");
            pad = special_token(cfg, "pad_token");
        }
        // Newer transformers keep the template in its own file, which then takes precedence.
        let jinja = dir.join("chat_template.jinja");
        let tjson = dir.join("chat_template.json");
        if jinja.is_file() {
            chat_template = Some(std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?);
        } else if tjson.is_file() {
            let v = read_json(&tjson)?;
            if let Some(t) = v.get("chat_template") {
                if let Some(t) = template_from(t, &tjson)? {
                    chat_template = Some(t);
                }
            }
        }
        let stm = dir.join("special_tokens_map.json");
        if (bos.is_none() || eos.is_none() || pad.is_none()) && stm.is_file() {
            let v = read_json(&stm)?;
            bos = bos.or_else(|| special_token(&v, "bos_token"));
            eos = eos.or_else(|| special_token(&v, "eos_token"));
            pad = pad.or_else(|| special_token(&v, "pad_token"));
        }
        if eos.is_none() {
            eos = ["<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"].iter().find(|t| inner.token_to_id(t).is_some()).map(|t| t.to_string());
        }
        // Special tokens that are not in the vocabulary are useless; drop them.
        for t in [&mut bos, &mut eos, &mut pad] {
            if t.as_deref().is_some_and(|s| inner.token_to_id(s).is_none()) {
                *t = None;
            }
        }
        let max_id = inner.get_vocab(true).values().copied().max().map_or(0, |m| m as usize + 1);
        let vocab_size = inner.get_vocab_size(true).max(max_id);
        Ok(HfTokenizer { inner, json, config, chat_template, bos, eos, pad, vocab_size })
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

impl Tokenizer {
    /// Loads the tokenizer of a folder: `tokenizer.json` (+ `tokenizer_config.json`), or the
    /// byte tokenizer if the folder has `rlhf_tokenizer.json`. `dir` may also be the path of a
    /// `tokenizer.json` file itself.
    pub fn load(dir: &Path) -> Result<Tokenizer> {
        if dir.is_file() {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if dir.file_name().is_some_and(|n| n == BYTE_TOKENIZER_FILE) {
                return Self::load_marker(dir);
            }
            return Ok(Tokenizer::Hf(Box::new(HfTokenizer::load(parent, dir)?)));
        }
        if !dir.is_dir() {
            return Err(Error::file(dir, "tokenizer folder does not exist"));
        }
        let marker = dir.join(BYTE_TOKENIZER_FILE);
        if marker.is_file() {
            return Self::load_marker(&marker);
        }
        let tj = dir.join("tokenizer.json");
        if tj.is_file() {
            return Ok(Tokenizer::Hf(Box::new(HfTokenizer::load(dir, &tj)?)));
        }
        Err(Error::file(dir, format!("no tokenizer here: expected tokenizer.json or {BYTE_TOKENIZER_FILE}")))
    }

    fn load_marker(path: &Path) -> Result<Tokenizer> {
        let v = read_json(path)?;
        match v.get("type").and_then(|t| t.as_str()) {
            Some("byte-level") => Ok(Tokenizer::Bytes(ByteTokenizer)),
            Some(other) => Err(Error::file(path, format!("unknown tokenizer type `{other}` (expected \"byte-level\")"))),
            None => Err(Error::file(path, "expected {\"type\": \"byte-level\"}")),
        }
    }

    /// The built-in byte-level tokenizer.
    pub fn byte_level() -> Tokenizer {
        Tokenizer::Bytes(ByteTokenizer)
    }

    /// Wraps an in-memory Hugging Face tokenizer (no chat template; eos guessed from common
    /// names).
    pub fn from_hf(inner: tokenizers::Tokenizer) -> Result<Tokenizer> {
        let json = inner.to_string(false).map_err(tok_err)?;
        let eos = ["<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"].iter().find(|t| inner.token_to_id(t).is_some()).map(|t| t.to_string());
        let max_id = inner.get_vocab(true).values().copied().max().map_or(0, |m| m as usize + 1);
        let vocab_size = inner.get_vocab_size(true).max(max_id);
        Ok(Tokenizer::Hf(Box::new(HfTokenizer { inner, json, config: None, chat_template: None, bos: None, eos, pad: None, vocab_size })))
    }

    /// Whether this is the built-in byte tokenizer.
    pub fn is_byte_level(&self) -> bool {
        matches!(self, Tokenizer::Bytes(_))
    }

    /// Encodes text. Special-token strings in the text become their ids. `add_special` runs the
    /// Hugging Face post-processor (e.g. Llama's bos); for the byte tokenizer it prepends
    /// `<|bos|>`.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Bytes(b) => Ok(b.encode(text, add_special)),
            Tokenizer::Hf(h) => Ok(h.inner.encode_fast(text, add_special).map_err(tok_err)?.get_ids().to_vec()),
        }
    }

    /// As [`encode`](Self::encode), with each token's byte span `(start, end)` in `text`.
    /// Tokens added by the post-processor have empty spans; Hugging Face byte-level
    /// tokenizers may leave a token's leading space out of its span.
    pub fn encode_with_offsets(&self, text: &str, add_special: bool) -> Result<(Vec<u32>, Vec<Span>)> {
        match self {
            Tokenizer::Bytes(b) => Ok(b.encode_with_offsets(text, add_special)),
            Tokenizer::Hf(h) => {
                let enc = h.inner.encode(text, add_special).map_err(tok_err)?;
                Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
            }
        }
    }

    /// Decodes ids to text, special tokens included (lossy for partial UTF-8).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_with(ids, false)
    }

    /// Decodes ids to text, leaving special tokens out when `skip_special`.
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match self {
            Tokenizer::Bytes(b) => b.decode(ids, skip_special),
            Tokenizer::Hf(h) => {
                if let Some(&bad) = ids.iter().find(|&&id| id as usize >= h.vocab_size) {
                    return Err(Error::Tokenizer(format!("token id {bad} is outside the vocabulary of {}", h.vocab_size)));
                }
                h.inner.decode(ids, skip_special).map_err(tok_err)
            }
        }
    }

    /// Number of token ids (the embedding table needs at least this many rows).
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Bytes(_) => ByteTokenizer::VOCAB_SIZE,
            Tokenizer::Hf(h) => h.vocab_size,
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            Tokenizer::Bytes(b) => b.token_to_id(token),
            Tokenizer::Hf(h) => h.inner.token_to_id(token),
        }
    }

    /// The token string of an id (for the byte tokenizer: special tokens and ASCII bytes).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match self {
            Tokenizer::Bytes(_) => match id {
                0..=127 => Some((id as u8 as char).to_string()),
                256..=262 => Some(ByteTokenizer::SPECIALS[(id - 256) as usize].to_string()),
                _ => None,
            },
            Tokenizer::Hf(h) => h.inner.id_to_token(id),
        }
    }

    /// The beginning-of-sequence token string, if any.
    pub fn bos_token(&self) -> Option<&str> {
        match self {
            Tokenizer::Bytes(_) => Some(ByteTokenizer::SPECIALS[0]),
            Tokenizer::Hf(h) => h.bos.as_deref(),
        }
    }

    /// The end-of-sequence token string, if any.
    pub fn eos_token(&self) -> Option<&str> {
        match self {
            Tokenizer::Bytes(_) => Some(ByteTokenizer::SPECIALS[1]),
            Tokenizer::Hf(h) => h.eos.as_deref(),
        }
    }

    /// The padding token string, if any.
    pub fn pad_token(&self) -> Option<&str> {
        match self {
            Tokenizer::Bytes(_) => Some(ByteTokenizer::SPECIALS[2]),
            Tokenizer::Hf(h) => h.pad.as_deref(),
        }
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_token().and_then(|t| self.token_to_id(t))
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_token().and_then(|t| self.token_to_id(t))
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad_token().and_then(|t| self.token_to_id(t))
    }

    /// The id to pad batches with: the pad token, else eos, else 0. Padded positions never
    /// carry a loss, so the choice only matters for what the model sees there.
    pub fn pad_or_default(&self) -> u32 {
        self.pad_id().or_else(|| self.eos_id()).unwrap_or(0)
    }

    /// Ids that end a generation: eos plus the end-of-turn markers of common chat formats
    /// (`<|end|>`, `<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`) present in the vocabulary.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eos_id().into_iter().collect();
        let markers: &[&str] = match self {
            Tokenizer::Bytes(_) => &["<|end|>"],
            Tokenizer::Hf(_) => &["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"],
        };
        for m in markers {
            if let Some(id) = self.token_to_id(m) {
                // Only special tokens: a plain vocabulary entry "<|end|>" is not a marker.
                let special = match self {
                    Tokenizer::Bytes(_) => true,
                    Tokenizer::Hf(h) => h.inner.get_added_tokens_decoder().get(&id).is_some_and(|t| t.special),
                };
                if special && !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// The Jinja chat template: the folder's, or the built-in one for the byte tokenizer.
    /// `None` for a Hugging Face tokenizer without a template (see
    /// [`render_chat`](crate::data::render_chat) for the fallback).
    pub fn chat_template(&self) -> Option<&str> {
        match self {
            Tokenizer::Bytes(_) => Some(ByteTokenizer::CHAT_TEMPLATE),
            Tokenizer::Hf(h) => h.chat_template.as_deref(),
        }
    }

    /// Sets (or clears) the chat template.
    pub fn set_chat_template(&mut self, template: Option<String>) -> Result<()> {
        match self {
            Tokenizer::Bytes(_) => Err(Error::Unsupported("the byte-level tokenizer's chat template is fixed".into())),
            Tokenizer::Hf(h) => {
                h.chat_template = template;
                Ok(())
            }
        }
    }

    /// Writes the tokenizer into `dir` (created if needed), atomically per file, as
    /// `tokenizer.json` + `tokenizer_config.json`; the byte tokenizer also writes its marker
    /// `rlhf_tokenizer.json`. `model_max_length` (the model's context) goes into a byte
    /// tokenizer's config; a Hugging Face tokenizer keeps its own.
    pub fn save(&self, dir: &Path, model_max_length: Option<usize>) -> Result<()> {
        crate::io::fs::create_dir_all(dir)?;
        let write_json = |name: &str, v: &serde_json::Value| {
            let mut text = serde_json::to_string_pretty(v).map_err(tok_err)?;
            text.push('\n');
            atomic_write(&dir.join(name), text.as_bytes())
        };
        match self {
            Tokenizer::Bytes(_) => {
                write_json("tokenizer.json", &super::byte_tokenizer_hf::tokenizer_json())?;
                write_json("tokenizer_config.json", &super::byte_tokenizer_hf::tokenizer_config_json(model_max_length))?;
                write_json(BYTE_TOKENIZER_FILE, &serde_json::json!({"type": "byte-level", "vocab_size": ByteTokenizer::VOCAB_SIZE}))
            }
            Tokenizer::Hf(h) => {
                atomic_write(&dir.join("tokenizer.json"), h.json.as_bytes())?;
                let mut cfg = match &h.config {
                    Some(serde_json::Value::Object(o)) => o.clone(),
                    _ => serde_json::Map::new(),
                };
                let mut set = |key: &str, v: &Option<String>| {
                    if let Some(v) = v {
                        if !cfg.contains_key(key) {
                            cfg.insert(key.to_string(), serde_json::Value::String(v.clone()));
                        }
                    }
                };
                set("bos_token", &h.bos);
                set("eos_token", &h.eos);
                set("pad_token", &h.pad);
                // The template in use wins over whatever the old config had (it may have come
                // from chat_template.jinja or set_chat_template).
                let unchanged = cfg.get("chat_template").and_then(|v| template_from(v, dir).ok()).is_some_and(|t| t == h.chat_template);
                match &h.chat_template {
                    _ if unchanged => {}
                    Some(t) => {
                        cfg.insert("chat_template".into(), serde_json::Value::String(t.clone()));
                    }
                    None => {
                        cfg.remove("chat_template");
                    }
                }
                cfg.entry("tokenizer_class").or_insert_with(|| "PreTrainedTokenizerFast".into());
                write_json("tokenizer_config.json", &serde_json::Value::Object(cfg))
            }
        }
    }
}

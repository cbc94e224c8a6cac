//! `ModelConfig`: the decoder's dimensions and family, read from a Hugging Face `config.json`
//! (GPT-2, Llama, Qwen2) or built from a named preset for training from scratch, and written back
//! in the same Hugging Face form.

use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::path::Path;

/// The two decoder families `rlhf` implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// LayerNorm, learned positions, GELU-tanh, biases everywhere, tied embeddings, Conv1D weights
    /// stored `[in, out]`.
    Gpt2,
    /// RMSNorm, RoPE, SwiGLU, grouped-query attention, Linear weights stored `[out, in]`.
    /// Covers `LlamaForCausalLM` and `Qwen2ForCausalLM` (which adds a bias to q, k and v).
    Llama,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    /// `model_type` as written in config.json (`gpt2`, `llama`, `qwen2`).
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub max_positions: usize,
    pub norm_eps: f32,
    pub rope_theta: f32,
    pub tie_embeddings: bool,
    /// bias on the q, k, v projections (Qwen2, Llama with attention_bias)
    pub qkv_bias: bool,
    /// bias on the attention output projection (Llama with attention_bias)
    pub o_bias: bool,
    /// bias on the MLP projections (Llama with mlp_bias)
    pub mlp_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// a scalar `score` head (`*ForSequenceClassification` with one label, a reward model) in
    /// place of the LM head
    pub score_head: bool,
    /// the original config.json, so that keys we do not interpret survive a save
    pub raw: Value,
}

fn get_usize(obj: &Map<String, Value>, key: &str) -> Option<usize> {
    obj.get(key).and_then(Value::as_u64).map(|v| v as usize)
}

fn get_f32(obj: &Map<String, Value>, key: &str) -> Option<f32> {
    obj.get(key).and_then(Value::as_f64).map(|v| v as f32)
}

/// Whether `architectures` names a sequence-classification model (a reward model).
fn has_score_head(obj: &Map<String, Value>) -> bool {
    obj.get("architectures").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v.as_str().is_some_and(|s| s.ends_with("ForSequenceClassification"))))
}

fn first_token_id(v: Option<&Value>) -> Option<u32> {
    match v? {
        Value::Number(n) => n.as_u64().map(|x| x as u32),
        Value::Array(a) => a.first().and_then(Value::as_u64).map(|x| x as u32),
        _ => None,
    }
}

impl ModelConfig {
    /// How `other`'s architecture differs from this one's: `field this vs other` for each of
    /// the family, the sizes and the heads that decide the shapes of the activations.
    pub fn architecture_differences(&self, other: &ModelConfig) -> Vec<String> {
        let mut out = Vec::new();
        if self.model_type != other.model_type {
            out.push(format!("model_type {} vs {}", self.model_type, other.model_type));
        }
        let sizes = [
            ("vocab_size", self.vocab_size, other.vocab_size),
            ("hidden size", self.hidden_size, other.hidden_size),
            ("layers", self.n_layers, other.n_layers),
            ("attention heads", self.n_heads, other.n_heads),
            ("key/value heads", self.n_kv_heads, other.n_kv_heads),
            ("head_dim", self.head_dim, other.head_dim),
            ("MLP width", self.intermediate_size, other.intermediate_size),
        ];
        out.extend(sizes.iter().filter(|(_, a, b)| a != b).map(|(name, a, b)| format!("{name} {a} vs {b}")));
        out
    }

    /// Refuses a model (`what`) that is run in the buffers of the policy (`self`) but has another
    /// architecture, saying how the two differ.
    pub fn check_runs_in_policy_buffers(&self, what: &str, other: &ModelConfig) -> crate::error::Result<()> {
        let diff = self.architecture_differences(other);
        if diff.is_empty() {
            return Ok(());
        }
        Err(crate::error::Error::invalid(format!(
            "the {what} and the policy are different architectures (policy vs {what}: {}); the {what} is run in the policy's buffers, so it must share the policy's architecture",
            diff.join(", ")
        )))
    }

    /// Reads `<dir>/config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            let what = if dir.exists() { "is not a folder" } else { "no such folder" };
            return Err(Error::file(dir, format!("cannot load a model: {what}")));
        }
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("invalid JSON: {e}")))?;
        Self::from_hf_json(&value).map_err(|msg| Error::file(&path, msg))
    }

    /// Interprets a Hugging Face config object; the error string names the offending key.
    pub fn from_hf_json(value: &Value) -> std::result::Result<Self, String> {
        let obj = value.as_object().ok_or("expected a JSON object")?;
        let model_type = obj.get("model_type").and_then(Value::as_str).ok_or("missing `model_type`")?.to_string();
        let need = |key: &str| get_usize(obj, key).ok_or_else(|| format!("missing or invalid `{key}`"));
        let cfg = match model_type.as_str() {
            "gpt2" => {
                let act = obj.get("activation_function").and_then(Value::as_str).unwrap_or("gelu_new");
                if !matches!(act, "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") {
                    return Err(format!("unsupported activation_function `{act}` (rlhf implements GELU-tanh: gelu_new)"));
                }
                let hidden = need("n_embd")?;
                let heads = need("n_head")?;
                if heads == 0 || hidden % heads != 0 {
                    return Err(format!("n_embd {hidden} is not divisible by n_head {heads}"));
                }
                ModelConfig {
                    family: Family::Gpt2,
                    model_type,
                    vocab_size: need("vocab_size")?,
                    hidden_size: hidden,
                    n_layers: need("n_layer")?,
                    n_heads: heads,
                    n_kv_heads: heads,
                    head_dim: hidden / heads,
                    intermediate_size: get_usize(obj, "n_inner").unwrap_or(4 * hidden),
                    max_positions: need("n_positions")?,
                    norm_eps: get_f32(obj, "layer_norm_epsilon").unwrap_or(1e-5),
                    rope_theta: 0.0,
                    tie_embeddings: obj.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(true),
                    qkv_bias: true,
                    o_bias: true,
                    mlp_bias: true,
                    bos_token_id: first_token_id(obj.get("bos_token_id")),
                    eos_token_id: first_token_id(obj.get("eos_token_id")),
                    score_head: has_score_head(obj),
                    raw: value.clone(),
                }
            }
            "llama" | "qwen2" => {
                let act = obj.get("hidden_act").and_then(Value::as_str).unwrap_or("silu");
                if act != "silu" {
                    return Err(format!("unsupported hidden_act `{act}` (rlhf implements SwiGLU with silu)"));
                }
                if let Some(scaling) = obj.get("rope_scaling") {
                    if !scaling.is_null() {
                        return Err(format!("unsupported rope_scaling {scaling} (rlhf implements plain RoPE)"));
                    }
                }
                // transformers 5 writes the RoPE settings as `rope_parameters`
                let rope_params = obj.get("rope_parameters").and_then(Value::as_object);
                if let Some(rp) = rope_params {
                    let ty = rp.get("rope_type").and_then(Value::as_str).unwrap_or("default");
                    if ty != "default" {
                        return Err(format!("unsupported rope_parameters.rope_type `{ty}` (rlhf implements plain RoPE)"));
                    }
                }
                let rope_theta = rope_params.and_then(|rp| get_f32(rp, "rope_theta")).or_else(|| get_f32(obj, "rope_theta")).unwrap_or(10000.0);
                let hidden = need("hidden_size")?;
                let heads = need("num_attention_heads")?;
                let kv_heads = get_usize(obj, "num_key_value_heads").unwrap_or(heads);
                if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
                    return Err(format!("num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"));
                }
                let head_dim = get_usize(obj, "head_dim").unwrap_or(hidden / heads);
                if head_dim % 2 != 0 {
                    return Err(format!("head_dim {head_dim} must be even for RoPE"));
                }
                let is_qwen = model_type == "qwen2";
                let attention_bias = obj.get("attention_bias").and_then(Value::as_bool).unwrap_or(false);
                ModelConfig {
                    family: Family::Llama,
                    vocab_size: need("vocab_size")?,
                    hidden_size: hidden,
                    n_layers: need("num_hidden_layers")?,
                    n_heads: heads,
                    n_kv_heads: kv_heads,
                    head_dim,
                    intermediate_size: need("intermediate_size")?,
                    max_positions: get_usize(obj, "max_position_embeddings").unwrap_or(2048),
                    norm_eps: get_f32(obj, "rms_norm_eps").unwrap_or(1e-6),
                    rope_theta,
                    tie_embeddings: obj.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
                    qkv_bias: is_qwen || attention_bias,
                    o_bias: !is_qwen && attention_bias,
                    mlp_bias: !is_qwen && obj.get("mlp_bias").and_then(Value::as_bool).unwrap_or(false),
                    bos_token_id: first_token_id(obj.get("bos_token_id")),
                    eos_token_id: first_token_id(obj.get("eos_token_id")),
                    score_head: has_score_head(obj),
                    model_type,
                    raw: value.clone(),
                }
            }
            other => return Err(format!("unsupported model_type `{other}` (rlhf supports gpt2, llama and qwen2)")),
        };
        // each size that must be positive, under the key this family's config.json spells it with
        let gpt2 = cfg.family == Family::Gpt2;
        let positive = [
            ("vocab_size", cfg.vocab_size),
            (if gpt2 { "n_embd" } else { "hidden_size" }, cfg.hidden_size),
            (if gpt2 { "n_layer" } else { "num_hidden_layers" }, cfg.n_layers),
            (if gpt2 { "n_embd / n_head" } else { "head_dim" }, cfg.head_dim),
            (if gpt2 { "n_inner" } else { "intermediate_size" }, cfg.intermediate_size),
            (if gpt2 { "n_positions" } else { "max_position_embeddings" }, cfg.max_positions),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("`{key}` is 0; it must be positive"));
        }
        if !(cfg.norm_eps.is_finite() && cfg.norm_eps > 0.0) {
            return Err(format!("the norm epsilon must be a positive number, got {}", cfg.norm_eps));
        }
        if cfg.family == Family::Llama && !(cfg.rope_theta.is_finite() && cfg.rope_theta > 1.0) {
            return Err(format!("rope_theta must be a number above 1, got {}", cfg.rope_theta));
        }
        // Kernels take sizes as u32; a number beyond these is a typo, not a model.
        let limits = [
            ("vocab_size", cfg.vocab_size, u32::MAX as usize),
            ("hidden size", cfg.hidden_size, u32::MAX as usize),
            ("intermediate size", cfg.intermediate_size, u32::MAX as usize),
            ("number of attention heads", cfg.n_heads, u32::MAX as usize),
            ("head_dim", cfg.head_dim, u32::MAX as usize),
            ("maximum positions", cfg.max_positions, u32::MAX as usize),
            ("number of layers", cfg.n_layers, MAX_LAYERS),
        ];
        for (what, value, max) in limits {
            if value > max {
                return Err(format!("{what} {value} is larger than rlhf supports (at most {max})"));
            }
        }
        Ok(cfg)
    }

    /// The config.json to save next to the weights: the original keys, with ours on top.
    pub fn to_hf_json(&self) -> Value {
        let mut obj = self.raw.as_object().cloned().unwrap_or_default();
        let has_rope_parameters = obj.contains_key("rope_parameters");
        let mut set = |k: &str, v: Value| {
            obj.insert(k.to_string(), v);
        };
        set("model_type", json!(self.model_type));
        set("vocab_size", json!(self.vocab_size));
        set("tie_word_embeddings", json!(self.tie_embeddings));
        set("torch_dtype", json!("float32"));
        set("dtype", json!("float32"));
        // null rather than absent: an absent key means the config class's default (50256 for GPT-2)
        set("bos_token_id", json!(self.bos_token_id));
        set("eos_token_id", json!(self.eos_token_id));
        match self.family {
            Family::Gpt2 => {
                set("architectures", json!([if self.score_head { "GPT2ForSequenceClassification" } else { "GPT2LMHeadModel" }]));
                set("n_embd", json!(self.hidden_size));
                set("n_layer", json!(self.n_layers));
                set("n_head", json!(self.n_heads));
                set("n_positions", json!(self.max_positions));
                set("n_inner", json!(self.intermediate_size));
                set("layer_norm_epsilon", f32_json(self.norm_eps));
                set("activation_function", json!("gelu_new"));
                // rlhf trains without dropout; GPT2Config's defaults are 0.1
                for key in ["resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"] {
                    set(key, json!(0.0));
                }
            }
            Family::Llama => {
                let family = if self.model_type == "qwen2" { "Qwen2" } else { "Llama" };
                let arch = format!("{family}{}", if self.score_head { "ForSequenceClassification" } else { "ForCausalLM" });
                set("architectures", json!([arch]));
                set("hidden_size", json!(self.hidden_size));
                set("num_hidden_layers", json!(self.n_layers));
                set("num_attention_heads", json!(self.n_heads));
                set("num_key_value_heads", json!(self.n_kv_heads));
                set("head_dim", json!(self.head_dim));
                set("intermediate_size", json!(self.intermediate_size));
                set("max_position_embeddings", json!(self.max_positions));
                set("rms_norm_eps", f32_json(self.norm_eps));
                set("rope_theta", f32_json(self.rope_theta));
                if has_rope_parameters {
                    set("rope_parameters", json!({"rope_theta": f32_json(self.rope_theta), "rope_type": "default"}));
                }
                set("hidden_act", json!("silu"));
                set("attention_dropout", json!(0.0));
                if self.model_type == "llama" {
                    set("attention_bias", json!(self.qkv_bias));
                    set("mlp_bias", json!(self.mlp_bias));
                }
            }
        }
        if self.score_head {
            // one label: a scalar score read at the last non-padding token (`pad_token_id`)
            obj.insert("num_labels".into(), json!(1));
            obj.insert("id2label".into(), json!({"0": "LABEL_0"}));
            obj.insert("label2id".into(), json!({"LABEL_0": 0}));
            if obj.get("pad_token_id").is_none_or(Value::is_null) {
                if let Some(e) = self.eos_token_id {
                    obj.insert("pad_token_id".into(), json!(e));
                }
            }
        } else {
            for key in ["num_labels", "id2label", "label2id"] {
                obj.remove(key);
            }
        }
        Value::Object(obj)
    }

    /// A fresh configuration by name, for `--init`. GPT-2 sizes follow the released models;
    /// `*-tiny` presets are for tests and the built-in demo. `vocab_size` comes from the tokenizer.
    pub fn preset(name: &str, vocab_size: usize) -> Result<Self> {
        let gpt2 = |layers: usize, hidden: usize, heads: usize, positions: usize| {
            json!({
                "model_type": "gpt2", "vocab_size": vocab_size, "n_embd": hidden, "n_layer": layers,
                "n_head": heads, "n_positions": positions, "layer_norm_epsilon": 1e-5,
                "activation_function": "gelu_new", "tie_word_embeddings": true,
            })
        };
        let llama = |ty: &str, layers: usize, hidden: usize, heads: usize, kv: usize, inter: usize, positions: usize, tie: bool| {
            json!({
                "model_type": ty, "vocab_size": vocab_size, "hidden_size": hidden, "num_hidden_layers": layers,
                "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": inter,
                "max_position_embeddings": positions, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                "hidden_act": "silu", "tie_word_embeddings": tie,
            })
        };
        let value = match name {
            "gpt2-tiny" => gpt2(2, 64, 4, 256),
            "gpt2-small" | "gpt2-mini" => gpt2(4, 256, 4, 512),
            "gpt2-124m" => gpt2(12, 768, 12, 1024),
            "gpt2-350m" => gpt2(24, 1024, 16, 1024),
            "gpt2-774m" => gpt2(36, 1280, 20, 1024),
            "gpt2-1558m" => gpt2(48, 1600, 25, 1024),
            "llama-tiny" => llama("llama", 2, 64, 4, 2, 176, 256, false),
            "llama-small" => llama("llama", 4, 256, 8, 4, 688, 512, false),
            "qwen2-tiny" => llama("qwen2", 2, 64, 4, 2, 176, 256, true),
            "qwen2-0.5b" => llama("qwen2", 24, 896, 14, 2, 4864, 4096, true),
            other => return Err(Error::invalid(format!("unknown preset `{other}`; presets: {}", PRESETS.join(", ")))),
        };
        let mut cfg = Self::from_hf_json(&value).map_err(Error::invalid)?;
        if cfg.family == Family::Llama && cfg.model_type == "qwen2" {
            cfg.raw["tie_word_embeddings"] = json!(cfg.tie_embeddings);
        }
        Ok(cfg)
    }

    /// This configuration with the special-token ids of `tok` (the ids `rlhf` encodes and stops
    /// with), as `transformers` needs them: `bos_token_id` the tokenizer's bos (else the
    /// configuration's, else eos), `eos_token_id` its eos, `pad_token_id` its pad. An id outside
    /// the vocabulary (GPT-2's 50256 over a small tokenizer) is dropped.
    pub fn with_tokenizer(&self, tok: &crate::data::Tokenizer) -> ModelConfig {
        let inside = |id: Option<u32>| id.filter(|&id| (id as usize) < self.vocab_size);
        let mut cfg = self.clone();
        cfg.eos_token_id = inside(tok.eos_id()).or(inside(self.eos_token_id));
        cfg.bos_token_id = inside(tok.bos_id()).or(inside(self.bos_token_id)).or(cfg.eos_token_id);
        if let Some(obj) = cfg.raw.as_object_mut() {
            match inside(tok.pad_id()).or(inside(first_token_id(obj.get("pad_token_id")))) {
                Some(pad) => obj.insert("pad_token_id".into(), json!(pad)),
                None => obj.remove("pad_token_id"),
            };
            for key in ["bos_token_id", "eos_token_id"] {
                obj.remove(key);
            }
        }
        cfg
    }

    /// The padding id `transformers` uses to find a sequence's last real token in a
    /// sequence-classification model: `pad_token_id`, else `eos_token_id`.
    pub fn pad_token_id(&self) -> Option<u32> {
        // an id outside the vocabulary (GPT-2's 50256 over a small tokenizer) is no token at all
        first_token_id(self.raw.get("pad_token_id")).or(self.eos_token_id).filter(|&id| (id as usize) < self.vocab_size)
    }

    /// Total number of parameters (tied embeddings counted once).
    pub fn num_params(&self) -> usize {
        crate::model::params::ParamLayout::new(self).num_params()
    }
}

/// An f32 setting as the decimal it was written as (its shortest round-trip form), not the
/// f64 widening of it: 1e-5, not 9.999999747378752e-6.
pub fn f32_json(x: f32) -> Value {
    x.to_string().parse::<f64>().map_or_else(|_| json!(x), |v| json!(v))
}

/// The most transformer blocks a configuration may declare.
pub const MAX_LAYERS: usize = 65536;

/// Names accepted by [`ModelConfig::preset`].
pub const PRESETS: &[&str] =
    &["gpt2-tiny", "gpt2-small", "gpt2-124m", "gpt2-350m", "gpt2-774m", "gpt2-1558m", "llama-tiny", "llama-small", "qwen2-tiny", "qwen2-0.5b"];

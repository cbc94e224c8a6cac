//! `ParamLayout`: the ordered list of the decoder's parameter tensors, their shapes, whether they
//! take weight decay, and how each maps onto Hugging Face tensor names. Weights, gradients and the
//! optimiser's moments are parallel `Vec`s indexed by this layout.
//!
//! Internal layout choices (reversed on save, so the HF files stay the HF files):
//! - Llama/Qwen2 q, k and v projections are one fused `[(NH + 2 NKV) HD, C]` tensor (rows
//!   concatenated), so one matmul produces the fused projection attention reads;
//! - GPT-2 Conv1D weights keep their `[in, out]` storage (`Family::Gpt2` matmuls use no transpose),
//!   Linear weights keep `[out, in]`.

use crate::model::config::{Family, ModelConfig};

/// Where a parameter comes from in a Hugging Face checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum HfSource {
    /// one tensor of the same shape
    Single(String),
    /// several tensors whose rows are concatenated, each with its number of rows
    ConcatRows(Vec<(String, usize)>),
}

impl HfSource {
    pub fn names(&self) -> Vec<&str> {
        match self {
            HfSource::Single(n) => vec![n.as_str()],
            HfSource::ConcatRows(parts) => parts.iter().map(|(n, _)| n.as_str()).collect(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ParamSpec {
    /// the (first) Hugging Face name, used in messages
    pub name: String,
    pub shape: Vec<usize>,
    /// AdamW weight decay applies to matrices, not to norms and biases
    pub decay: bool,
    pub hf: HfSource,
    /// may be missing from a checkpoint (the score head of a reward model started from a causal
    /// LM); the loader then returns it empty and the caller initialises it
    pub optional: bool,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Indices into the layout for one transformer block. `fc` is GPT-2's c_fc or Llama's gate_proj.
#[derive(Clone, Debug)]
pub struct LayerParams {
    pub ln1_w: usize,
    pub ln1_b: Option<usize>,
    pub qkv_w: usize,
    pub qkv_b: Option<usize>,
    pub o_w: usize,
    pub o_b: Option<usize>,
    pub ln2_w: usize,
    pub ln2_b: Option<usize>,
    pub fc_w: usize,
    pub fc_b: Option<usize>,
    pub up_w: Option<usize>,
    pub up_b: Option<usize>,
    pub proj_w: usize,
    pub proj_b: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct ParamLayout {
    pub specs: Vec<ParamSpec>,
    pub wte: usize,
    pub wpe: Option<usize>,
    pub layers: Vec<LayerParams>,
    pub lnf_w: usize,
    pub lnf_b: Option<usize>,
    /// `None` when the LM head is tied to `wte`, or for a reward model
    pub lm_head: Option<usize>,
    /// the reward model's `score` head `[1, C]` (`cfg.score_head`)
    pub score: Option<usize>,
    /// true for GPT-2's Conv1D `[in, out]` storage, false for Linear `[out, in]`
    pub weights_in_out: bool,
}

struct Builder {
    specs: Vec<ParamSpec>,
}

impl Builder {
    fn push(&mut self, name: String, shape: Vec<usize>, decay: bool) -> usize {
        self.specs.push(ParamSpec { hf: HfSource::Single(name.clone()), name, shape, decay, optional: false });
        self.specs.len() - 1
    }
    fn push_concat(&mut self, parts: Vec<(String, usize)>, cols: Option<usize>, decay: bool) -> usize {
        let rows: usize = parts.iter().map(|(_, r)| r).sum();
        let shape = match cols {
            Some(c) => vec![rows, c],
            None => vec![rows],
        };
        self.specs.push(ParamSpec { name: parts[0].0.clone(), shape, decay, hf: HfSource::ConcatRows(parts), optional: false });
        self.specs.len() - 1
    }
}

impl Builder {
    /// The untied LM head, or the reward model's score head.
    fn head(&mut self, cfg: &ModelConfig) -> (Option<usize>, Option<usize>) {
        if cfg.score_head {
            let i = self.push("score.weight".into(), vec![1, cfg.hidden_size], true);
            self.specs[i].optional = true;
            (None, Some(i))
        } else {
            ((!cfg.tie_embeddings).then(|| self.push("lm_head.weight".into(), vec![cfg.vocab_size, cfg.hidden_size], true)), None)
        }
    }
}

impl ParamLayout {
    pub fn new(cfg: &ModelConfig) -> Self {
        let mut b = Builder { specs: Vec::new() };
        let (c, v, i_size) = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size);
        match cfg.family {
            Family::Gpt2 => {
                let p = "transformer.";
                let wte = b.push(format!("{p}wte.weight"), vec![v, c], true);
                let wpe = b.push(format!("{p}wpe.weight"), vec![cfg.max_positions, c], true);
                let mut layers = Vec::with_capacity(cfg.n_layers);
                for l in 0..cfg.n_layers {
                    let h = format!("{p}h.{l}.");
                    layers.push(LayerParams {
                        ln1_w: b.push(format!("{h}ln_1.weight"), vec![c], false),
                        ln1_b: Some(b.push(format!("{h}ln_1.bias"), vec![c], false)),
                        qkv_w: b.push(format!("{h}attn.c_attn.weight"), vec![c, 3 * c], true),
                        qkv_b: Some(b.push(format!("{h}attn.c_attn.bias"), vec![3 * c], false)),
                        o_w: b.push(format!("{h}attn.c_proj.weight"), vec![c, c], true),
                        o_b: Some(b.push(format!("{h}attn.c_proj.bias"), vec![c], false)),
                        ln2_w: b.push(format!("{h}ln_2.weight"), vec![c], false),
                        ln2_b: Some(b.push(format!("{h}ln_2.bias"), vec![c], false)),
                        fc_w: b.push(format!("{h}mlp.c_fc.weight"), vec![c, i_size], true),
                        fc_b: Some(b.push(format!("{h}mlp.c_fc.bias"), vec![i_size], false)),
                        up_w: None,
                        up_b: None,
                        proj_w: b.push(format!("{h}mlp.c_proj.weight"), vec![i_size, c], true),
                        proj_b: Some(b.push(format!("{h}mlp.c_proj.bias"), vec![c], false)),
                    });
                }
                let lnf_w = b.push(format!("{p}ln_f.weight"), vec![c], false);
                let lnf_b = Some(b.push(format!("{p}ln_f.bias"), vec![c], false));
                let (lm_head, score) = b.head(cfg);
                ParamLayout { specs: b.specs, wte, wpe: Some(wpe), layers, lnf_w, lnf_b, lm_head, score, weights_in_out: true }
            }
            Family::Llama => {
                let (nh, nkv, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
                let wte = b.push("model.embed_tokens.weight".into(), vec![v, c], true);
                let mut layers = Vec::with_capacity(cfg.n_layers);
                for l in 0..cfg.n_layers {
                    let h = format!("model.layers.{l}.");
                    let qkv = |suffix: &str| {
                        vec![
                            (format!("{h}self_attn.q_proj.{suffix}"), nh * hd),
                            (format!("{h}self_attn.k_proj.{suffix}"), nkv * hd),
                            (format!("{h}self_attn.v_proj.{suffix}"), nkv * hd),
                        ]
                    };
                    let ln1_w = b.push(format!("{h}input_layernorm.weight"), vec![c], false);
                    let qkv_w = b.push_concat(qkv("weight"), Some(c), true);
                    let qkv_b = cfg.qkv_bias.then(|| b.push_concat(qkv("bias"), None, false));
                    let o_w = b.push(format!("{h}self_attn.o_proj.weight"), vec![c, nh * hd], true);
                    let o_b = cfg.o_bias.then(|| b.push(format!("{h}self_attn.o_proj.bias"), vec![c], false));
                    let ln2_w = b.push(format!("{h}post_attention_layernorm.weight"), vec![c], false);
                    let fc_w = b.push(format!("{h}mlp.gate_proj.weight"), vec![i_size, c], true);
                    let fc_b = cfg.mlp_bias.then(|| b.push(format!("{h}mlp.gate_proj.bias"), vec![i_size], false));
                    let up_w = b.push(format!("{h}mlp.up_proj.weight"), vec![i_size, c], true);
                    let up_b = cfg.mlp_bias.then(|| b.push(format!("{h}mlp.up_proj.bias"), vec![i_size], false));
                    let proj_w = b.push(format!("{h}mlp.down_proj.weight"), vec![c, i_size], true);
                    let proj_b = cfg.mlp_bias.then(|| b.push(format!("{h}mlp.down_proj.bias"), vec![c], false));
                    layers.push(LayerParams {
                        ln1_w,
                        ln1_b: None,
                        qkv_w,
                        qkv_b,
                        o_w,
                        o_b,
                        ln2_w,
                        ln2_b: None,
                        fc_w,
                        fc_b,
                        up_w: Some(up_w),
                        up_b,
                        proj_w,
                        proj_b,
                    });
                }
                let lnf_w = b.push("model.norm.weight".into(), vec![c], false);
                let (lm_head, score) = b.head(cfg);
                ParamLayout { specs: b.specs, wte, wpe: None, layers, lnf_w, lnf_b: None, lm_head, score, weights_in_out: false }
            }
        }
    }

    pub fn num_params(&self) -> usize {
        self.specs.iter().map(ParamSpec::numel).sum()
    }

    /// Matrices that take the residual stream's output (attention out and MLP down projections),
    /// initialised with the GPT-2 `1/sqrt(2 L)` scaling.
    pub fn residual_projections(&self) -> Vec<usize> {
        self.layers.iter().flat_map(|l| [l.o_w, l.proj_w]).collect()
    }

    /// Norm weights, initialised to one.
    pub fn norm_weights(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.layers.iter().flat_map(|l| [l.ln1_w, l.ln2_w]).collect();
        v.push(self.lnf_w);
        v
    }
}

//! The buffers a forward and backward work in: the shape of a forward, the activations it
//! saves for the backward, the backward's reusable gradient scratch, and the two KV caches
//! (per sequence for `generate`, per slot for the rollout engine).

use crate::backend::ops::*;
use crate::error::Result;
use crate::model::config::{Family, ModelConfig};

/// Shape of one forward: `b` sequences of `t` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub b: usize,
    pub t: usize,
}

impl Shape {
    pub fn n(&self) -> usize {
        self.b * self.t
    }
}

/// Per-layer saved activations.
pub struct LayerActs<Buf> {
    pub ln1: Buf,
    pub ln1_mean: Buf,
    pub ln1_rstd: Buf,
    pub qkv: Buf,
    pub att: Buf,
    pub att_lse: Buf,
    pub res_mid: Buf,
    pub ln2: Buf,
    pub ln2_mean: Buf,
    pub ln2_rstd: Buf,
    /// GPT-2: pre-GELU; Llama: gate projection
    pub fc: Buf,
    /// Llama: up projection (empty for GPT-2)
    pub up: Buf,
    /// GELU(fc) or silu(gate) * up
    pub act: Buf,
}

/// Everything a forward stores, sized for a maximum number of tokens and reused across steps.
pub struct Activations<B: Backend> {
    pub capacity_tokens: usize,
    pub capacity_batch: usize,
    pub tokens: B::Ids,
    pub positions: B::Ids,
    pub targets: B::Ids,
    /// residual stream entering each block; `res[L]` leaves the last one
    pub res: Vec<B::Buf>,
    pub layers: Vec<LayerActs<B::Buf>>,
    pub lnf: B::Buf,
    pub lnf_mean: B::Buf,
    pub lnf_rstd: B::Buf,
    pub logits: B::Buf,
    pub lse: B::Buf,
    pub losses: B::Buf,
    /// per-token loss weights (the gradient of the aggregated loss with respect to each token loss)
    pub loss_weights: B::Buf,
    /// generation: the final hidden state of the last token of each sequence `[batch, C]`
    pub last_hidden: B::Buf,
    /// generation: the row index of each sequence's last token
    pub last_rows: B::Ids,
}

/// Activation-gradient scratch, shared by all layers.
pub struct GradScratch<B: Backend> {
    pub d_res: B::Buf,
    pub d_tmp: B::Buf,
    pub d_ln: B::Buf,
    pub d_qkv: B::Buf,
    pub d_att: B::Buf,
    pub d_fc: B::Buf,
    pub d_up: B::Buf,
    pub d_act: B::Buf,
    pub d_logits: B::Buf,
}

/// Widths derived from the config.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub c: usize,
    pub v: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hd: usize,
    pub qkv: usize,
    pub att: usize,
    pub inter: usize,
    pub layers: usize,
}

impl Dims {
    pub fn new(cfg: &ModelConfig) -> Self {
        Dims {
            c: cfg.hidden_size,
            v: cfg.vocab_size,
            nh: cfg.n_heads,
            nkv: cfg.n_kv_heads,
            hd: cfg.head_dim,
            qkv: (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim,
            att: cfg.n_heads * cfg.head_dim,
            inter: cfg.intermediate_size,
            layers: cfg.n_layers,
        }
    }
}

/// Errors when buffers for `n` tokens would not even have an addressable size.
pub(crate) fn check_token_capacity(d: &Dims, n: usize) -> Result<()> {
    let widest = d.v.max(d.inter).max(d.qkv).max(d.c);
    if n.checked_mul(widest).and_then(|x| x.checked_mul(4)).is_none() {
        return Err(crate::Error::invalid(format!("{n} tokens per batch are too many for a model {widest} wide (lower the batch size or sequence length)")));
    }
    Ok(())
}

impl<B: Backend> Activations<B> {
    /// Activations for `max_tokens` tokens with logits for all of them (`[max_tokens, V]`).
    pub fn new(be: &B, cfg: &ModelConfig, max_batch: usize, max_tokens: usize) -> Result<Self> {
        Self::with_logit_rows(be, cfg, max_batch, max_tokens, max_tokens)
    }

    /// As [`Activations::new`], with room for `logit_rows` rows of logits only: 0 for passes that
    /// stop at the final hidden states (reward models, values, the streamed log-prob gather),
    /// the number of sequences for generation, which needs the last token's logits.
    pub fn with_logit_rows(be: &B, cfg: &ModelConfig, max_batch: usize, max_tokens: usize, logit_rows: usize) -> Result<Self> {
        let d = Dims::new(cfg);
        let n = max_tokens;
        check_token_capacity(&d, n)?;
        let llama = cfg.family == Family::Llama;
        let mut layers = Vec::with_capacity(d.layers);
        for _ in 0..d.layers {
            layers.push(LayerActs {
                ln1: be.alloc_as(n * d.c, Storage::Compute)?,
                ln1_mean: be.alloc(n)?,
                ln1_rstd: be.alloc(n)?,
                qkv: be.alloc_as(n * d.qkv, Storage::Compute)?,
                att: be.alloc_as(n * d.att, Storage::Compute)?,
                att_lse: be.alloc(n * d.nh)?,
                res_mid: be.alloc_as(n * d.c, Storage::Compute)?,
                ln2: be.alloc_as(n * d.c, Storage::Compute)?,
                ln2_mean: be.alloc(n)?,
                ln2_rstd: be.alloc(n)?,
                fc: be.alloc_as(n * d.inter, Storage::Compute)?,
                up: be.alloc_as(if llama { n * d.inter } else { 0 }, Storage::Compute)?,
                act: be.alloc_as(n * d.inter, Storage::Compute)?,
            });
        }
        Ok(Activations {
            capacity_tokens: n,
            capacity_batch: max_batch,
            tokens: be.alloc_ids(n)?,
            positions: be.alloc_ids(n)?,
            targets: be.alloc_ids(n)?,
            res: (0..=d.layers).map(|_| be.alloc_as(n * d.c, Storage::Compute)).collect::<Result<_>>()?,
            layers,
            lnf: be.alloc_as(n * d.c, Storage::Compute)?,
            lnf_mean: be.alloc(n)?,
            lnf_rstd: be.alloc(n)?,
            logits: be.alloc_as(logit_rows.min(n) * d.v, Storage::Compute)?,
            lse: be.alloc(n)?,
            losses: be.alloc(n)?,
            loss_weights: be.alloc(n)?,
            last_hidden: be.alloc_as(max_batch * d.c, Storage::Compute)?,
            last_rows: be.alloc_ids(max_batch)?,
        })
    }

    /// Grows the logits buffer to `rows` rows if it is smaller (PPO-ptx on a buffer set built
    /// without logits).
    pub fn ensure_logit_rows(&mut self, be: &B, rows: usize, vocab: usize) -> Result<()> {
        if be.len(&self.logits) < rows * vocab {
            self.logits = be.alloc_as(rows * vocab, Storage::Compute)?;
        }
        Ok(())
    }
}

impl<B: Backend> GradScratch<B> {
    /// Activation gradients for `max_tokens` tokens, with logits gradients for all of them.
    pub fn new(be: &B, cfg: &ModelConfig, max_tokens: usize) -> Result<Self> {
        Self::with_logit_rows(be, cfg, max_tokens, max_tokens)
    }

    /// As [`GradScratch::new`] with `logit_rows` rows of logits gradients (0 for backward passes
    /// that start at the final hidden states).
    pub fn with_logit_rows(be: &B, cfg: &ModelConfig, max_tokens: usize, logit_rows: usize) -> Result<Self> {
        let d = Dims::new(cfg);
        let n = max_tokens;
        check_token_capacity(&d, n)?;
        Ok(GradScratch {
            d_res: be.alloc_as(n * d.c, Storage::Compute)?,
            d_tmp: be.alloc_as(n * d.c, Storage::Compute)?,
            d_ln: be.alloc_as(n * d.c, Storage::Compute)?,
            d_qkv: be.alloc_as(n * d.qkv, Storage::Compute)?,
            d_att: be.alloc_as(n * d.att, Storage::Compute)?,
            d_fc: be.alloc_as(n * d.inter, Storage::Compute)?,
            d_up: be.alloc_as(n * d.inter, Storage::Compute)?,
            d_act: be.alloc_as(n * d.inter, Storage::Compute)?,
            d_logits: be.alloc_as(logit_rows.min(n) * d.v, Storage::Compute)?,
        })
    }

    /// Grows the logits-gradient buffer to `rows` rows if it is smaller.
    pub fn ensure_logit_rows(&mut self, be: &B, rows: usize, vocab: usize) -> Result<()> {
        if be.len(&self.d_logits) < rows * vocab {
            self.d_logits = be.alloc_as(rows * vocab, Storage::Compute)?;
        }
        Ok(())
    }
}

/// The rollout engine's KV cache: per layer `[slots, t_max, 2 NKV HD]`, each slot its own region.
pub struct SlotCache<B: Backend> {
    pub layers: Vec<B::Buf>,
    pub slots: usize,
    pub t_max: usize,
}

impl<B: Backend> SlotCache<B> {
    pub fn new(be: &B, cfg: &ModelConfig, slots: usize, t_max: usize) -> Result<Self> {
        let per = slots
            .checked_mul(t_max)
            .and_then(|x| x.checked_mul(2 * cfg.n_kv_heads * cfg.head_dim))
            .ok_or_else(|| crate::Error::invalid(format!("a KV cache of {slots} slots x {t_max} positions is too large")))?;
        Ok(SlotCache { layers: (0..cfg.n_layers).map(|_| be.alloc_as(per, Storage::Compute)).collect::<Result<_>>()?, slots, t_max })
    }
}

/// A per-layer key/value cache `[B, t_max, 2 NKV HD]` (keys then values of each position).
pub struct KvCache<B: Backend> {
    pub layers: Vec<B::Buf>,
    pub t_max: usize,
    pub len: usize,
}

impl<B: Backend> KvCache<B> {
    pub fn new(be: &B, cfg: &ModelConfig, b: usize, t_max: usize) -> Result<Self> {
        let per = b * t_max * 2 * cfg.n_kv_heads * cfg.head_dim;
        Ok(KvCache { layers: (0..cfg.n_layers).map(|_| be.alloc_as(per, Storage::Compute)).collect::<Result<_>>()?, t_max, len: 0 })
    }
}

//! The decoder's forward and backward, orchestrated op by op on any [`Backend`]: no tape, the
//! backward calls each layer's backward in reverse order. The forward stores in [`Activations`]
//! what the backward needs; gradients go into a parameter-shaped `Vec` (accumulated, so that
//! micro-batches add up) and a few reusable activation-gradient buffers.
//!
//! Per block (pre-norm): `h = x + Attn(Norm1(x))`, `y = h + Mlp(Norm2(h))`; GPT-2 uses LayerNorm,
//! GELU and learned positions, Llama/Qwen2 RMSNorm, SwiGLU and RoPE. Logits are `Norm_f(x) @ E^T`
//! with `E` the token embedding (tied) or the LM head.

use crate::backend::ops::*;
use crate::error::Result;
use crate::model::config::{Family, ModelConfig};
use crate::model::params::{LayerParams, ParamLayout};

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
fn check_token_capacity(d: &Dims, n: usize) -> Result<()> {
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

/// How a weight matrix is stored: `[in, out]` (GPT-2 Conv1D) or `[out, in]` (Linear).
#[derive(Clone, Copy)]
struct Linear {
    in_out: bool,
}

impl Linear {
    /// `y (+)= x @ W` with x `[n, k_in]`, y `[n, k_out]`.
    #[allow(clippy::too_many_arguments)]
    fn fwd<B: Backend>(
        self,
        be: &B,
        y: &mut B::Buf,
        x: &B::Buf,
        w: &B::Buf,
        bias: Option<&B::Buf>,
        n: usize,
        k_in: usize,
        k_out: usize,
        accumulate: bool,
    ) -> Result<()> {
        let p = MatmulParams::new(n, k_out, k_in, false, !self.in_out).accumulate(accumulate);
        match bias {
            Some(b) => be.matmul_bias(y, x, w, b, p),
            None => be.matmul(y, x, w, p),
        }
    }

    /// `pre = x @ W (+ bias)` and `y = gelu(pre)`, x `[n, k_in]`, `pre` and y `[n, k_out]`.
    #[allow(clippy::too_many_arguments)]
    fn fwd_gelu<B: Backend>(
        self,
        be: &B,
        y: &mut B::Buf,
        pre: &mut B::Buf,
        x: &B::Buf,
        w: &B::Buf,
        bias: Option<&B::Buf>,
        n: usize,
        k_in: usize,
        k_out: usize,
    ) -> Result<()> {
        be.matmul_bias_gelu(y, pre, x, w, bias, MatmulParams::new(n, k_out, k_in, false, !self.in_out))
    }

    /// The input gradient of a layer fed by `gelu(pre)`, taken through the GELU:
    /// `dpre = gelu'(pre) * (dy @ W^T)` (`dact` is scratch of `[n, k_in]`).
    #[allow(clippy::too_many_arguments)]
    fn bwd_input_through_gelu<B: Backend>(
        self,
        be: &B,
        dpre: &mut B::Buf,
        dact: &mut B::Buf,
        dy: &B::Buf,
        w: &B::Buf,
        pre: &B::Buf,
        n: usize,
        k_in: usize,
        k_out: usize,
    ) -> Result<()> {
        be.matmul_gelu_bwd(dpre, dact, dy, w, pre, MatmulParams::new(n, k_in, k_out, false, self.in_out))
    }

    /// `dx (+)= dy @ W^T`, `dW += x^T dy` (in W's storage), `db += colsum(dy)`.
    #[allow(clippy::too_many_arguments)]
    fn bwd<B: Backend>(
        self,
        be: &B,
        dx: Option<(&mut B::Buf, bool)>,
        dw: &mut B::Buf,
        db: Option<&mut B::Buf>,
        dy: &B::Buf,
        x: &B::Buf,
        w: &B::Buf,
        n: usize,
        k_in: usize,
        k_out: usize,
    ) -> Result<()> {
        if let Some((dx, acc)) = dx {
            be.matmul(dx, dy, w, MatmulParams::new(n, k_in, k_out, false, self.in_out).accumulate(acc))?;
        }
        if self.in_out {
            be.matmul(dw, x, dy, MatmulParams::new(k_in, k_out, n, true, false).accumulate(true))?;
        } else {
            be.matmul(dw, dy, x, MatmulParams::new(k_out, k_in, n, true, false).accumulate(true))?;
        }
        if let Some(db) = db {
            be.bias_bwd(db, dy, BiasParams { n: n as u32, c: k_out as u32 })?;
        }
        Ok(())
    }
}

/// Two disjoint mutable references into a parameter-shaped Vec (gradient of weight and bias).
fn pair_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (lo, hi) = v.split_at_mut(b);
        (&mut lo[a], &mut hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(a);
        (&mut hi[0], &mut lo[b])
    }
}

fn opt<T>(v: &[T], i: Option<usize>) -> Option<&T> {
    i.map(|i| &v[i])
}

/// The decoder graph for one config: forward, backward and the cached-decode forward.
pub struct Decoder {
    pub cfg: ModelConfig,
    pub layout: ParamLayout,
    pub dims: Dims,
}

impl Decoder {
    pub fn new(cfg: ModelConfig) -> Self {
        let layout = ParamLayout::new(&cfg);
        let dims = Dims::new(&cfg);
        Decoder { cfg, layout, dims }
    }

    fn linear(&self) -> Linear {
        Linear { in_out: self.layout.weights_in_out }
    }

    fn norm_params(&self, n: usize) -> NormParams {
        NormParams { n: n as u32, c: self.dims.c as u32, eps: self.cfg.norm_eps, _pad: 0 }
    }

    fn lm_head(&self) -> usize {
        self.layout.lm_head.unwrap_or(self.layout.wte)
    }

    #[allow(clippy::too_many_arguments)]
    fn norm_fwd<B: Backend>(
        &self,
        be: &B,
        out: &mut B::Buf,
        mean: &mut B::Buf,
        rstd: &mut B::Buf,
        x: &B::Buf,
        w: &[B::Buf],
        wi: usize,
        bi: Option<usize>,
        n: usize,
    ) -> Result<()> {
        match self.cfg.family {
            Family::Gpt2 => be.layernorm_fwd(out, mean, rstd, x, &w[wi], &w[bi.expect("layernorm bias")], self.norm_params(n)),
            Family::Llama => be.rmsnorm_fwd(out, rstd, x, &w[wi], self.norm_params(n)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn norm_bwd<B: Backend>(
        &self,
        be: &B,
        dx: &mut B::Buf,
        grads: &mut [B::Buf],
        dy: &B::Buf,
        x: &B::Buf,
        mean: &B::Buf,
        rstd: &B::Buf,
        w: &[B::Buf],
        wi: usize,
        bi: Option<usize>,
        n: usize,
    ) -> Result<()> {
        match self.cfg.family {
            Family::Gpt2 => {
                let (dw, db) = pair_mut(grads, wi, bi.expect("layernorm bias"));
                be.layernorm_bwd(dx, dw, db, dy, x, mean, rstd, &w[wi], self.norm_params(n))
            }
            Family::Llama => be.rmsnorm_bwd(dx, &mut grads[wi], dy, x, rstd, &w[wi], self.norm_params(n)),
        }
    }

    fn rope_params(&self, n: usize) -> RopeParams {
        RopeParams {
            n_tokens: n as u32,
            row: self.dims.qkv as u32,
            n_rot_heads: (self.dims.nh + self.dims.nkv) as u32,
            head_dim: self.dims.hd as u32,
            theta: self.cfg.rope_theta,
            _pad: 0,
        }
    }

    /// Uploads tokens, positions (0..t per sequence) and targets (-1 = no loss) into `acts`.
    pub fn set_inputs<B: Backend>(&self, be: &B, acts: &mut Activations<B>, shape: Shape, tokens: &[i32], targets: Option<&[i32]>) -> Result<()> {
        let n = shape.n();
        if n > acts.capacity_tokens {
            return Err(crate::Error::invalid(format!("{n} tokens exceed the activation capacity {}", acts.capacity_tokens)));
        }
        if let Some(&bad) = tokens.iter().find(|&&id| id < 0 || id as usize >= self.dims.v) {
            return Err(crate::Error::invalid(format!("token id {bad} is outside the model's vocabulary of {}", self.dims.v)));
        }
        if shape.t > self.cfg.max_positions {
            return Err(crate::Error::invalid(format!("sequence length {} exceeds the model's maximum of {} positions", shape.t, self.cfg.max_positions)));
        }
        be.write_ids(&mut acts.tokens, tokens)?;
        let positions: Vec<i32> = (0..n).map(|i| (i % shape.t) as i32).collect();
        be.write_ids(&mut acts.positions, &positions)?;
        if let Some(t) = targets {
            // negative targets are ignored positions; every other one is a token the kernels index
            if let Some(&bad) = t.iter().find(|&&id| id >= 0 && id as usize >= self.dims.v) {
                return Err(crate::Error::invalid(format!("target token id {bad} is outside the model's vocabulary of {}", self.dims.v)));
            }
            be.write_ids(&mut acts.targets, t)?;
        }
        Ok(())
    }

    /// The embedding of the tokens (and learned positions) into `res[0]`.
    fn embed<B: Backend>(&self, be: &B, w: &[B::Buf], res0: &mut B::Buf, tokens: &B::Ids, positions: &B::Ids, n: usize) -> Result<()> {
        let c = self.dims.c as u32;
        be.embedding_fwd(res0, tokens, &w[self.layout.wte], EmbeddingParams { n: n as u32, c, accumulate: 0, vocab: self.dims.v as u32 })?;
        if let Some(wpe) = self.layout.wpe {
            be.embedding_fwd(res0, positions, &w[wpe], EmbeddingParams { n: n as u32, c, accumulate: 1, vocab: self.cfg.max_positions as u32 })?;
        }
        Ok(())
    }

    /// One block's forward from `x` (the residual stream entering it) into `y`; attention reads
    /// keys and values from `qkv` itself (training) or from a KV cache (decode), as `attn` says.
    #[allow(clippy::too_many_arguments)]
    fn block_fwd<B: Backend>(
        &self,
        be: &B,
        w: &[B::Buf],
        lp: &LayerParams,
        a: &mut LayerActs<B::Buf>,
        x: &B::Buf,
        y: &mut B::Buf,
        positions: &B::Ids,
        n: usize,
        attn: AttnSource<'_, B>,
    ) -> Result<()> {
        let d = self.dims;
        let lin = self.linear();
        let el = |k: usize| ElementwiseParams::new(k);
        self.norm_fwd(be, &mut a.ln1, &mut a.ln1_mean, &mut a.ln1_rstd, x, w, lp.ln1_w, lp.ln1_b, n)?;
        lin.fwd(be, &mut a.qkv, &a.ln1, &w[lp.qkv_w], opt(w, lp.qkv_b), n, d.c, d.qkv, false)?;
        if self.cfg.family == Family::Llama {
            be.rope_fwd(&mut a.qkv, positions, self.rope_params(n))?;
        }
        match attn {
            AttnSource::Fused(shape) => {
                let p = AttentionParams::fused(shape.b, shape.t, d.nh, d.nkv, d.hd);
                be.attention_fwd(&mut a.att, &mut a.att_lse, &a.qkv, &a.qkv, &a.qkv, p)?;
            }
            AttnSource::Prefill { shape, cache, rows, cache_rows } => {
                be.scatter_rows(cache, &a.qkv, rows, ScatterParams::kv(n, d.nh, d.nkv, d.hd, cache_rows))?;
                let p = AttentionParams::fused(shape.b, shape.t, d.nh, d.nkv, d.hd);
                be.attention_fwd(&mut a.att, &mut a.att_lse, &a.qkv, &a.qkv, &a.qkv, p)?;
            }
            AttnSource::Decode { cache, rows, slots, t_max } => {
                be.scatter_rows(cache, &a.qkv, rows, ScatterParams::kv(n, d.nh, d.nkv, d.hd, slots * t_max))?;
                let p = AttentionDecodeParams {
                    n: n as u32,
                    t_max: t_max as u32,
                    slots: slots as u32,
                    nh: d.nh as u32,
                    nkv: d.nkv as u32,
                    hd: d.hd as u32,
                    scale: 1.0 / (d.hd as f32).sqrt(),
                    q_row: d.qkv as u32,
                    q_off: 0,
                    _pad: 0,
                };
                be.attention_decode_fwd(&mut a.att, &mut a.att_lse, &a.qkv, cache, rows, p)?;
            }
            AttnSource::Cache { cache, b, t, pos0, t_max } => {
                be.kv_cache_write(
                    cache,
                    &a.qkv,
                    KvCacheParams {
                        b: b as u32,
                        t: t as u32,
                        pos0: pos0 as u32,
                        t_max: t_max as u32,
                        nh: d.nh as u32,
                        nkv: d.nkv as u32,
                        hd: d.hd as u32,
                        _pad: 0,
                    },
                )?;
                let p = AttentionParams::cached(b, t, pos0, t_max, d.nh, d.nkv, d.hd);
                be.attention_fwd(&mut a.att, &mut a.att_lse, &a.qkv, cache, cache, p)?;
            }
        }
        be.copy(&mut a.res_mid, x, el(n * d.c)?)?;
        lin.fwd(be, &mut a.res_mid, &a.att, &w[lp.o_w], opt(w, lp.o_b), n, d.att, d.c, true)?;
        self.norm_fwd(be, &mut a.ln2, &mut a.ln2_mean, &mut a.ln2_rstd, &a.res_mid, w, lp.ln2_w, lp.ln2_b, n)?;
        match lp.up_w {
            None => lin.fwd_gelu(be, &mut a.act, &mut a.fc, &a.ln2, &w[lp.fc_w], opt(w, lp.fc_b), n, d.c, d.inter)?,
            Some(up_w) => {
                lin.fwd(be, &mut a.fc, &a.ln2, &w[lp.fc_w], opt(w, lp.fc_b), n, d.c, d.inter, false)?;
                lin.fwd(be, &mut a.up, &a.ln2, &w[up_w], opt(w, lp.up_b), n, d.c, d.inter, false)?;
                be.swiglu_fwd(&mut a.act, &a.fc, &a.up, el(n * d.inter)?)?;
            }
        }
        be.copy(y, &a.res_mid, el(n * d.c)?)?;
        lin.fwd(be, y, &a.act, &w[lp.proj_w], opt(w, lp.proj_b), n, d.inter, d.c, true)
    }

    /// The trunk's forward over `shape` tokens already set with [`Decoder::set_inputs`]:
    /// embeddings, blocks and the final norm, leaving the final hidden states in `acts.lnf`.
    pub fn forward_hidden<B: Backend>(&self, be: &B, w: &[B::Buf], acts: &mut Activations<B>, shape: Shape) -> Result<()> {
        let n = shape.n();
        let d = self.dims;
        {
            let (res0, _) = acts.res.split_at_mut(1);
            self.embed(be, w, &mut res0[0], &acts.tokens, &acts.positions, n)?;
        }
        for (l, lp) in self.layout.layers.iter().enumerate() {
            let (lo, hi) = acts.res.split_at_mut(l + 1);
            self.block_fwd(be, w, lp, &mut acts.layers[l], &lo[l], &mut hi[0], &acts.positions, n, AttnSource::Fused(shape))?;
        }
        self.norm_fwd(be, &mut acts.lnf, &mut acts.lnf_mean, &mut acts.lnf_rstd, &acts.res[d.layers], w, self.layout.lnf_w, self.layout.lnf_b, n)
    }

    /// Full forward: [`Decoder::forward_hidden`], the logits and, where targets are set, the
    /// per-token losses (`-log p(target | prefix)`).
    pub fn forward<B: Backend>(&self, be: &B, w: &[B::Buf], acts: &mut Activations<B>, shape: Shape) -> Result<()> {
        let n = shape.n();
        let d = self.dims;
        if be.len(&acts.logits) < n * d.v {
            return Err(crate::Error::invalid("these activations were built without room for the logits of every token"));
        }
        self.forward_hidden(be, w, acts, shape)?;
        be.matmul(&mut acts.logits, &acts.lnf, &w[self.lm_head()], MatmulParams::new(n, d.v, d.c, false, true))?;
        be.cross_entropy_fwd(&mut acts.losses, &mut acts.lse, &acts.logits, &acts.targets, CrossEntropyParams { n: n as u32, v: d.v as u32 })
    }

    /// Backward of the last [`Decoder::forward`] for the loss `sum_i loss_weights[i] * losses[i]`
    /// (`acts.loss_weights` must be set). Parameter gradients accumulate into `grads`.
    pub fn backward<B: Backend>(&self, be: &B, w: &[B::Buf], grads: &mut [B::Buf], acts: &Activations<B>, s: &mut GradScratch<B>, shape: Shape) -> Result<()> {
        let n = shape.n();
        let d = self.dims;
        if be.len(&s.d_logits) < n * d.v {
            return Err(crate::Error::invalid("this gradient scratch was built without room for the logits of every token"));
        }
        be.cross_entropy_bwd(&mut s.d_logits, &acts.loss_weights, &acts.logits, &acts.lse, &acts.targets, CrossEntropyParams { n: n as u32, v: d.v as u32 })?;
        // logits = lnf @ E^T: d_lnf = d_logits @ E, dE += d_logits^T @ lnf
        let head = self.lm_head();
        be.matmul(&mut s.d_ln, &s.d_logits, &w[head], MatmulParams::new(n, d.c, d.v, false, false))?;
        be.matmul(&mut grads[head], &s.d_logits, &acts.lnf, MatmulParams::new(d.v, d.c, n, true, false).accumulate(true))?;
        self.backward_hidden(be, w, grads, acts, s, shape)
    }

    /// Backward of [`Decoder::forward_hidden`] from the gradient with respect to the final
    /// hidden states, which the caller leaves in `s.d_ln` (overwritten on the way).
    pub fn backward_hidden<B: Backend>(
        &self,
        be: &B,
        w: &[B::Buf],
        grads: &mut [B::Buf],
        acts: &Activations<B>,
        s: &mut GradScratch<B>,
        shape: Shape,
    ) -> Result<()> {
        let n = shape.n();
        let d = self.dims;
        let lin = self.linear();
        let el = |k: usize| ElementwiseParams::new(k);
        self.norm_bwd(be, &mut s.d_res, grads, &s.d_ln, &acts.res[d.layers], &acts.lnf_mean, &acts.lnf_rstd, w, self.layout.lnf_w, self.layout.lnf_b, n)?;

        for (l, lp) in self.layout.layers.iter().enumerate().rev() {
            let a = &acts.layers[l];
            let x = &acts.res[l];
            // MLP: y = res_mid + act @ Wproj
            let (dw, db) = split_wb(grads, lp.proj_w, lp.proj_b);
            match lp.up_w {
                None => {
                    lin.bwd_input_through_gelu(be, &mut s.d_fc, &mut s.d_act, &s.d_res, &w[lp.proj_w], &a.fc, n, d.inter, d.c)?;
                    lin.bwd(be, None, dw, db, &s.d_res, &a.act, &w[lp.proj_w], n, d.inter, d.c)?;
                }
                Some(up_w) => {
                    lin.bwd(be, Some((&mut s.d_act, false)), dw, db, &s.d_res, &a.act, &w[lp.proj_w], n, d.inter, d.c)?;
                    be.swiglu_bwd(&mut s.d_fc, &mut s.d_up, &s.d_act, &a.fc, &a.up, el(n * d.inter)?)?;
                    let (dw, db) = split_wb(grads, up_w, lp.up_b);
                    lin.bwd(be, Some((&mut s.d_ln, false)), dw, db, &s.d_up, &a.ln2, &w[up_w], n, d.c, d.inter)?;
                }
            }
            let (dw, db) = split_wb(grads, lp.fc_w, lp.fc_b);
            let fc_acc = lp.up_w.is_some();
            lin.bwd(be, Some((&mut s.d_ln, fc_acc)), dw, db, &s.d_fc, &a.ln2, &w[lp.fc_w], n, d.c, d.inter)?;
            self.norm_bwd(be, &mut s.d_tmp, grads, &s.d_ln, &a.res_mid, &a.ln2_mean, &a.ln2_rstd, w, lp.ln2_w, lp.ln2_b, n)?;
            be.add_inplace(&mut s.d_res, &s.d_tmp, el(n * d.c)?)?;
            // attention: res_mid = x + att @ Wo
            let (dw, db) = split_wb(grads, lp.o_w, lp.o_b);
            lin.bwd(be, Some((&mut s.d_att, false)), dw, db, &s.d_res, &a.att, &w[lp.o_w], n, d.att, d.c)?;
            let p = AttentionParams::fused(shape.b, shape.t, d.nh, d.nkv, d.hd);
            be.attention_bwd(&mut s.d_qkv, &s.d_att, &a.att, &a.att_lse, &a.qkv, p)?;
            if self.cfg.family == Family::Llama {
                be.rope_bwd(&mut s.d_qkv, &acts.positions, self.rope_params(n))?;
            }
            let (dw, db) = split_wb(grads, lp.qkv_w, lp.qkv_b);
            lin.bwd(be, Some((&mut s.d_ln, false)), dw, db, &s.d_qkv, &a.ln1, &w[lp.qkv_w], n, d.c, d.qkv)?;
            self.norm_bwd(be, &mut s.d_tmp, grads, &s.d_ln, x, &a.ln1_mean, &a.ln1_rstd, w, lp.ln1_w, lp.ln1_b, n)?;
            be.add_inplace(&mut s.d_res, &s.d_tmp, el(n * d.c)?)?;
        }
        let c = d.c as u32;
        be.embedding_bwd(&mut grads[self.layout.wte], &s.d_res, &acts.tokens, EmbeddingParams { n: n as u32, c, accumulate: 0, vocab: d.v as u32 })?;
        if let Some(wpe) = self.layout.wpe {
            be.embedding_bwd(
                &mut grads[wpe],
                &s.d_res,
                &acts.positions,
                EmbeddingParams { n: n as u32, c, accumulate: 0, vocab: self.cfg.max_positions as u32 },
            )?;
        }
        Ok(())
    }

    /// Cached forward for generation: `t` new tokens per sequence (`b * t` ids already in
    /// `acts.tokens` when `tokens` is `None`, e.g. written there by the `sample` op) at positions
    /// `cache.len ..`, keys/values appended to `cache`. Leaves in `acts.logits` the logits of the
    /// last new token of each sequence (`[b, V]`).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_cached<B: Backend>(
        &self,
        be: &B,
        w: &[B::Buf],
        acts: &mut Activations<B>,
        cache: &mut KvCache<B>,
        tokens: Option<&[i32]>,
        b: usize,
        t: usize,
    ) -> Result<()> {
        let n = b * t;
        let d = self.dims;
        let pos0 = cache.len;
        if pos0 + t > cache.t_max {
            return Err(crate::Error::invalid(format!("the KV cache holds {} positions; {} requested", cache.t_max, pos0 + t)));
        }
        if pos0 + t > self.cfg.max_positions {
            return Err(crate::Error::invalid(format!("{} positions exceed the model's maximum of {}", pos0 + t, self.cfg.max_positions)));
        }
        if n > acts.capacity_tokens || b > acts.capacity_batch {
            return Err(crate::Error::invalid(format!("{b} x {t} tokens exceed the activation capacity")));
        }
        if let Some(tokens) = tokens {
            if let Some(&bad) = tokens.iter().find(|&&id| id < 0 || id as usize >= d.v) {
                return Err(crate::Error::invalid(format!("token id {bad} is outside the model's vocabulary of {}", d.v)));
            }
            be.write_ids(&mut acts.tokens, tokens)?;
        }
        let positions: Vec<i32> = (0..n).map(|i| (pos0 + i % t) as i32).collect();
        be.write_ids(&mut acts.positions, &positions)?;
        {
            let (res0, _) = acts.res.split_at_mut(1);
            self.embed(be, w, &mut res0[0], &acts.tokens, &acts.positions, n)?;
        }
        for (l, lp) in self.layout.layers.iter().enumerate() {
            let (lo, hi) = acts.res.split_at_mut(l + 1);
            let src = AttnSource::Cache { cache: &mut cache.layers[l], b, t, pos0, t_max: cache.t_max };
            self.block_fwd(be, w, lp, &mut acts.layers[l], &lo[l], &mut hi[0], &acts.positions, n, src)?;
        }
        cache.len += t;
        self.norm_fwd(be, &mut acts.lnf, &mut acts.lnf_mean, &mut acts.lnf_rstd, &acts.res[d.layers], w, self.layout.lnf_w, self.layout.lnf_b, n)?;
        let last: Vec<i32> = (0..b).map(|i| (i * t + t - 1) as i32).collect();
        be.write_ids(&mut acts.last_rows, &last)?;
        be.embedding_fwd(&mut acts.last_hidden, &acts.last_rows, &acts.lnf, EmbeddingParams { n: b as u32, c: d.c as u32, accumulate: 0, vocab: n as u32 })?;
        be.matmul(&mut acts.logits, &acts.last_hidden, &w[self.lm_head()], MatmulParams::new(b, d.v, d.c, false, true))
    }
}

impl Decoder {
    /// Rollout prefill: the training forward over `shape` prompts (padded on the right, set with
    /// [`Decoder::set_inputs`]) that also writes the keys and values of token i to cache row
    /// `rows[i]` of `cache`, then the logits of row `last[j]` (the last real token of prompt j)
    /// into `acts.logits` (`[b, V]`). Rows of padding must point at cache rows that are written
    /// again before they are read (e.g. their slot's later positions).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_prefill<B: Backend>(
        &self,
        be: &B,
        w: &[B::Buf],
        acts: &mut Activations<B>,
        cache: &mut SlotCache<B>,
        rows: &B::Ids,
        shape: Shape,
        last: &[i32],
    ) -> Result<()> {
        let n = shape.n();
        let d = self.dims;
        if last.len() > acts.capacity_batch || last.iter().any(|&r| r < 0 || r as usize >= n) {
            return Err(crate::Error::invalid(format!("prefill: {} last rows for {n} tokens and a batch capacity of {}", last.len(), acts.capacity_batch)));
        }
        let cache_rows = cache.slots * cache.t_max;
        {
            let (res0, _) = acts.res.split_at_mut(1);
            self.embed(be, w, &mut res0[0], &acts.tokens, &acts.positions, n)?;
        }
        for (l, lp) in self.layout.layers.iter().enumerate() {
            let (lo, hi) = acts.res.split_at_mut(l + 1);
            let src = AttnSource::Prefill { shape, cache: &mut cache.layers[l], rows, cache_rows };
            self.block_fwd(be, w, lp, &mut acts.layers[l], &lo[l], &mut hi[0], &acts.positions, n, src)?;
        }
        self.norm_fwd(be, &mut acts.lnf, &mut acts.lnf_mean, &mut acts.lnf_rstd, &acts.res[d.layers], w, self.layout.lnf_w, self.layout.lnf_b, n)?;
        let b = last.len();
        be.write_ids(&mut acts.last_rows, last)?;
        be.embedding_fwd(&mut acts.last_hidden, &acts.last_rows, &acts.lnf, EmbeddingParams { n: b as u32, c: d.c as u32, accumulate: 0, vocab: n as u32 })?;
        be.matmul(&mut acts.logits, &acts.last_hidden, &w[self.lm_head()], MatmulParams::new(b, d.v, d.c, false, true))
    }

    /// Rollout decode step: `n` tokens, one per active slot, already in `acts.tokens` with their
    /// positions in `acts.positions`; token i's keys/values go to cache row `rows[i]`
    /// (`slot * t_max + position`) and it attends to its slot's rows up to there. Leaves the
    /// logits `[n, V]` in `acts.logits`.
    pub fn forward_decode<B: Backend>(&self, be: &B, w: &[B::Buf], acts: &mut Activations<B>, cache: &mut SlotCache<B>, rows: &B::Ids, n: usize) -> Result<()> {
        let d = self.dims;
        if n > acts.capacity_tokens || n > cache.slots {
            return Err(crate::Error::invalid(format!("decode: {n} rows exceed the activation capacity or the {} slots", cache.slots)));
        }
        {
            let (res0, _) = acts.res.split_at_mut(1);
            self.embed(be, w, &mut res0[0], &acts.tokens, &acts.positions, n)?;
        }
        for (l, lp) in self.layout.layers.iter().enumerate() {
            let (lo, hi) = acts.res.split_at_mut(l + 1);
            let src = AttnSource::Decode { cache: &mut cache.layers[l], rows, slots: cache.slots, t_max: cache.t_max };
            self.block_fwd(be, w, lp, &mut acts.layers[l], &lo[l], &mut hi[0], &acts.positions, n, src)?;
        }
        self.norm_fwd(be, &mut acts.lnf, &mut acts.lnf_mean, &mut acts.lnf_rstd, &acts.res[d.layers], w, self.layout.lnf_w, self.layout.lnf_b, n)?;
        be.matmul(&mut acts.logits, &acts.lnf, &w[self.lm_head()], MatmulParams::new(n, d.v, d.c, false, true))
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

enum AttnSource<'a, B: Backend> {
    Fused(Shape),
    /// training layout, and the keys/values of token i also written to cache row `rows[i]`
    Prefill {
        shape: Shape,
        cache: &'a mut B::Buf,
        rows: &'a B::Ids,
        cache_rows: usize,
    },
    /// one token per row, its keys/values written to cache row `rows[i]`, attending to its slot
    Decode {
        cache: &'a mut B::Buf,
        rows: &'a B::Ids,
        slots: usize,
        t_max: usize,
    },
    Cache {
        cache: &'a mut B::Buf,
        b: usize,
        t: usize,
        pos0: usize,
        t_max: usize,
    },
}

fn split_wb<T>(grads: &mut [T], w: usize, b: Option<usize>) -> (&mut T, Option<&mut T>) {
    match b {
        None => (&mut grads[w], None),
        Some(b) => {
            let (dw, db) = pair_mut(grads, w, b);
            (dw, Some(db))
        }
    }
}

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
use crate::model::activations::{Activations, Dims, GradScratch, LayerActs, Shape};
use crate::model::params::{LayerParams, ParamLayout};
pub use crate::model::activations::KvCache;


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

    pub(crate) fn lm_head(&self) -> usize {
        self.layout.lm_head.unwrap_or(self.layout.wte)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn norm_fwd<B: Backend>(
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
    pub(crate) fn embed<B: Backend>(&self, be: &B, w: &[B::Buf], res0: &mut B::Buf, tokens: &B::Ids, positions: &B::Ids, n: usize) -> Result<()> {
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
    pub(crate) fn block_fwd<B: Backend>(
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
}

pub(crate) enum AttnSource<'a, B: Backend> {
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

//! The decoder's cached forwards for generation: one or a few new tokens per sequence against
//! a KV cache, and the rollout engine's prefill that fills slot caches while it runs the
//! training forward over the prompts.

use crate::backend::ops::*;
use crate::error::Result;
use crate::model::activations::{Activations, KvCache, Shape, SlotCache};
use crate::model::decoder::{AttnSource, Decoder};

impl Decoder {
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

//! The batched rollout engine: `S` slots share one forward per decode step (continuous batching).
//!
//! Each slot owns a region `[t_max, 2 NKV HD]` of every layer's KV cache ([`SlotCache`]) and its
//! own length. Prompts wait in a queue; whenever slots are free, the next prompts are prefilled
//! together (the training forward over the padded prompts, keys and values scattered into their
//! slots' rows) and their first tokens sampled. Then every decode step runs one forward over all
//! active slots, one token each at its own position, and samples one token per slot. A slot whose
//! sequence ends (a stop id, `max_new_tokens`, or the end of the model's context) takes the next
//! prompt instead of waiting for the longest sequence of a batch.
//!
//! For each sampled token the engine records its log-probability under the policy at temperature
//! 1 (`cross_entropy_fwd` of the step's logits with the sampled ids as targets), filed on the
//! device under its slot (`scatter_rows`) and read back once when the sequence ends. On the same
//! backend these equal, bit for bit, what [`crate::model::scoring::token_logprobs`] computes for
//! prompt + response with the training forward (the CPU ops are batch-invariant per row).
//!
//! Grouped mode ([`RolloutEngine::run_grouped`], GRPO/RLOO): `n` samples per prompt that share
//! the prompt's prefill. A group enters `n` free slots at once; its prompt is prefilled once (into
//! the first slot's rows), the keys and values the prefill left in each layer's fused projection
//! are scattered into the other `n - 1` slots' rows, the prefill's last hidden row is read `n`
//! times so the logits have `n` equal rows, and the `n` first tokens are drawn from them with
//! distinct uniforms (one per row). Decoding then goes on per slot as usual.
//!
//! Host traffic per step: the sampled ids of the active slots (to detect stop ids and manage
//! slots) and the next step's tokens, positions and cache rows, a few integers per slot.
//! Draws: the uniform of a row is keyed by (seed, sampling call, row), so a rollout is
//! reproducible for the same prompts, slots and seed.

use std::time::Instant;

use crate::backend::ops::{Backend, CrossEntropyParams, SampleParams, ScatterParams};
use crate::error::{Error, Result};
use crate::generate::GenerateConfig;
use crate::model::{Activations, Model, Shape, SlotCache};

/// Options of [`rollout`].
#[derive(Clone, Debug)]
pub struct RolloutConfig {
    /// sequences decoded together (`S`)
    pub slots: usize,
    /// sampling, `max_new_tokens` and stop ids
    pub gen: GenerateConfig,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig { slots: 8, gen: GenerateConfig::default() }
    }
}

/// Why a response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// its last token is one of the stop ids
    Stop,
    /// it reached `max_new_tokens`
    MaxNewTokens,
    /// prompt + response fill the model's context
    ContextEnd,
}

/// One prompt's rollout.
#[derive(Clone, Debug)]
pub struct RolloutOutput {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
    /// log-probability of each response token under the policy at temperature 1
    pub logprobs: Vec<f32>,
    pub finish: FinishReason,
}

/// Token counts and wall-clock seconds of the two phases.
#[derive(Clone, Debug, Default)]
pub struct RolloutStats {
    /// prompt tokens prefilled (padding not counted)
    pub prefill_tokens: usize,
    pub prefill_secs: f64,
    /// tokens fed through decode steps
    pub decode_tokens: usize,
    pub decode_secs: f64,
    pub decode_steps: usize,
    /// prompts that entered a slot another sequence had used before
    pub slot_reuses: usize,
}

impl RolloutStats {
    pub fn prefill_tokens_per_sec(&self) -> f64 {
        self.prefill_tokens as f64 / self.prefill_secs.max(1e-12)
    }
    pub fn decode_tokens_per_sec(&self) -> f64 {
        self.decode_tokens as f64 / self.decode_secs.max(1e-12)
    }
}

/// Outputs in prompt order, and the phase statistics.
#[derive(Clone, Debug)]
pub struct Rollout {
    pub outputs: Vec<RolloutOutput>,
    pub stats: RolloutStats,
}

/// A sequence in a slot.
struct Seq {
    /// the index of its output (prompt index x group size + sample index)
    out: usize,
    prompt: usize,
    /// positions written to the slot's cache (prompt + fed response tokens)
    len: usize,
    response: Vec<u32>,
}

/// Samples up to `cfg.gen.max_new_tokens` tokens after each prompt with `cfg.slots` slots
/// (a one-off [`RolloutEngine`]).
pub fn rollout<B: Backend>(be: &B, model: &Model<B>, prompts: &[Vec<u32>], cfg: &RolloutConfig) -> Result<Rollout> {
    RolloutEngine::new().run(be, model, prompts, cfg)
}

/// The engine's device buffers: activations for a prefill of `slots` prompts of up to
/// `cap / slots` tokens, the per-slot KV cache laid out with `t_max` positions per slot, and the
/// recorded log-probs with `max_new` rows per slot.
struct EngineBuffers<B: Backend> {
    model_dims: (usize, usize, usize, usize),
    slots: usize,
    cap: usize,
    t_max: usize,
    max_new: usize,
    acts: Activations<B>,
    cache: SlotCache<B>,
    rows: B::Ids,
    store_rows: B::Ids,
    sampled: B::Ids,
    store: B::Buf,
    /// cache rows of the `k`-th copy of a grouped prefill (`cap` each), grown on demand
    copy_rows: Vec<B::Ids>,
}

/// A rollout engine that keeps its buffers (activations, KV cache, recorded log-probs) from one
/// call to the next — PPO calls it every step — and grows them only when a call needs more.
pub struct RolloutEngine<B: Backend> {
    bufs: Option<EngineBuffers<B>>,
}

impl<B: Backend> Default for RolloutEngine<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> RolloutEngine<B> {
    pub fn new() -> Self {
        RolloutEngine { bufs: None }
    }

    /// Buffers for `slots` x `cap` prefill tokens, `t_max` cache positions and `max_new` recorded
    /// tokens per slot, reused when the current ones are large enough.
    fn buffers(&mut self, be: &B, model: &Model<B>, slots: usize, cap: usize, t_max: usize, max_new: usize) -> Result<&mut EngineBuffers<B>> {
        let mcfg = model.cfg();
        let dims = (mcfg.n_layers, mcfg.hidden_size, mcfg.vocab_size, mcfg.n_kv_heads * mcfg.head_dim);
        let fits = self.bufs.as_ref().is_some_and(|b| b.model_dims == dims && b.slots >= slots && b.cap >= cap && b.t_max >= t_max && b.max_new >= max_new);
        if !fits {
            let old = self.bufs.take();
            let keep = |f: fn(&EngineBuffers<B>) -> usize, want: usize| old.as_ref().filter(|b| b.model_dims == dims).map_or(want, |b| f(b).max(want));
            let (slots, cap, t_max, max_new) = (keep(|b| b.slots, slots), keep(|b| b.cap, cap), keep(|b| b.t_max, t_max), keep(|b| b.max_new, max_new));
            drop(old);
            self.bufs = Some(EngineBuffers {
                model_dims: dims,
                slots,
                cap,
                t_max,
                max_new,
                acts: Activations::with_logit_rows(be, mcfg, slots, cap, slots)?,
                cache: SlotCache::new(be, mcfg, slots, t_max)?,
                rows: be.alloc_ids(cap)?,
                store_rows: be.alloc_ids(slots)?,
                sampled: be.alloc_ids(slots)?,
                store: be.alloc(slots * max_new)?,
                copy_rows: Vec::new(),
            });
        }
        Ok(self.bufs.as_mut().expect("allocated above"))
    }

    /// Samples up to `cfg.gen.max_new_tokens` tokens after each prompt with `cfg.slots` slots.
    pub fn run(&mut self, be: &B, model: &Model<B>, prompts: &[Vec<u32>], cfg: &RolloutConfig) -> Result<Rollout> {
        run_engine(self, be, model, prompts, 1, cfg)
    }

    /// `group` samples per prompt sharing the prompt's prefill (see the module comment); outputs
    /// are prompt-major: output `p * group + k` is prompt `p`'s `k`-th sample. Needs
    /// `cfg.slots >= group`.
    pub fn run_grouped(&mut self, be: &B, model: &Model<B>, prompts: &[Vec<u32>], group: usize, cfg: &RolloutConfig) -> Result<Rollout> {
        run_engine(self, be, model, prompts, group, cfg)
    }
}

fn run_engine<B: Backend>(engine: &mut RolloutEngine<B>, be: &B, model: &Model<B>, prompts: &[Vec<u32>], group: usize, cfg: &RolloutConfig) -> Result<Rollout> {
    let g = &cfg.gen;
    g.validate()?;
    if cfg.slots == 0 {
        return Err(Error::invalid("the rollout needs at least one slot"));
    }
    if group == 0 || cfg.slots < group {
        return Err(Error::invalid(format!("a grouped rollout of {group} samples per prompt needs at least that many slots (got {})", cfg.slots)));
    }
    let total = prompts.len() * group;
    let mcfg = model.cfg();
    let max_pos = mcfg.max_positions;
    let vocab = mcfg.vocab_size;
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(Error::invalid(format!("prompt {} is empty", i + 1)));
        }
        if p.len() >= max_pos {
            return Err(Error::invalid(format!(
                "prompt {} has {} tokens; the model's context is {max_pos}, which leaves no room for a response",
                i + 1,
                p.len()
            )));
        }
        if let Some(&bad) = p.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::invalid(format!("prompt {}: token id {bad} is outside the model's vocabulary of {vocab}", i + 1)));
        }
    }
    let mut stats = RolloutStats::default();
    let max_new = g.max_new_tokens;
    if max_new == 0 || prompts.is_empty() {
        let outputs = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p, group))
            .map(|p| RolloutOutput { prompt: p.clone(), response: Vec::new(), logprobs: Vec::new(), finish: FinishReason::MaxNewTokens })
            .collect();
        return Ok(Rollout { outputs, stats });
    }
    let s = cfg.slots.min(total);
    let max_prompt = prompts.iter().map(|p| p.len()).max().unwrap_or(1);
    // the last sampled token is never fed, so positions stay below prompt + max_new - 1
    let t_max = (max_prompt + max_new).min(max_pos);
    let dec = &model.decoder;
    let w = &model.weights;
    let cap = (s * max_prompt).max(s);
    let bufs = engine.buffers(be, model, s, cap, t_max, max_new)?;
    // the buffers may be larger than this call needs: the cache keeps `bufs.t_max` positions per
    // slot, the record `bufs.max_new` rows per slot
    let (t_max, stride) = (bufs.t_max, bufs.max_new);
    while bufs.copy_rows.len() + 1 < group {
        bufs.copy_rows.push(be.alloc_ids(bufs.cap)?);
    }
    let EngineBuffers { acts, cache, rows, store_rows, sampled, store, copy_rows, .. } = bufs;
    // -log p of response token k of the sequence in slot i at row i * stride + k
    let mut step = 0u32;
    let sample_params = |n: usize, step: u32| SampleParams {
        n: n as u32,
        v: vocab as u32,
        temperature: g.temperature,
        top_k: g.top_k as u32,
        top_p: g.top_p,
        seed_lo: g.seed as u32,
        seed_hi: (g.seed >> 32) as u32,
        step,
    };

    let mut outputs: Vec<Option<RolloutOutput>> = vec![None; total];
    let mut slots: Vec<Option<Seq>> = (0..s).map(|_| None).collect();
    let mut used = vec![false; s];
    let mut next = 0usize;
    let mut done = 0usize;
    while done < total {
        // ---- admit queued prompts (whole groups) into free slots: one batched prefill -----------
        let free: Vec<usize> = (0..s).filter(|&i| slots[i].is_none()).collect();
        // (first slot of the group, prompt); the group's slots are `free[bi * group..][..group]`
        let admit: Vec<(usize, usize)> = free.chunks_exact(group).map(|c| c[0]).zip(next..prompts.len()).collect();
        let group_slots = |bi: usize| &free[bi * group..(bi + 1) * group];
        next += admit.len();
        // (slot, row of its newly sampled token in this call's `sampled`)
        let mut fresh: Vec<(usize, usize)> = Vec::new();
        if !admit.is_empty() {
            let t0 = Instant::now();
            let b = admit.len();
            let t = admit.iter().map(|&(_, p)| prompts[p].len()).max().unwrap_or(1);
            let mut tokens = vec![0i32; b * t];
            let mut cache_rows = vec![0i32; b * t];
            let mut last = Vec::with_capacity(b * group);
            for (bi, &(slot, p)) in admit.iter().enumerate() {
                let pr = &prompts[p];
                for i in 0..t {
                    tokens[bi * t + i] = pr.get(i).copied().unwrap_or(0) as i32;
                    // padding writes the slot's later rows, which decode overwrites before reading
                    cache_rows[bi * t + i] = (slot * t_max + i) as i32;
                }
                stats.prefill_tokens += pr.len();
                for (k, &gs) in group_slots(bi).iter().enumerate() {
                    // every sample of the group reads the prompt's last hidden row
                    last.push((bi * t + pr.len() - 1) as i32);
                    if used[gs] {
                        stats.slot_reuses += 1;
                    }
                    used[gs] = true;
                    slots[gs] = Some(Seq { out: p * group + k, prompt: p, len: pr.len(), response: Vec::new() });
                    fresh.push((gs, bi * group + k));
                }
            }
            let shape = Shape { b, t };
            dec.set_inputs(be, acts, shape, &tokens, None)?;
            be.write_ids(rows, &cache_rows)?;
            dec.forward_prefill(be, w, acts, cache, rows, shape, &last)?;
            copy_group_kv(be, mcfg, acts, cache, copy_rows, shape, t_max, &(0..b).map(group_slots).collect::<Vec<_>>())?;
            let srows: Vec<i32> = fresh.iter().map(|&(slot, _)| (slot * stride) as i32).collect();
            sample_and_record(be, acts, sampled, store, store_rows, &srows, sample_params(b * group, step), vocab)?;
            step += 1;
            let ids = be.download_ids(sampled)?;
            for &(slot, bi) in &fresh {
                if let Some(seq) = slots[slot].as_mut() {
                    seq.response.push(ids[bi] as u32);
                }
            }
            stats.prefill_secs += t0.elapsed().as_secs_f64();
        }
        // ---- retire finished sequences ---------------------------------------------------------
        let finished: Vec<(usize, FinishReason)> = (0..s)
            .filter_map(|i| {
                let seq = slots[i].as_ref()?;
                finish_reason(seq, prompts[seq.prompt].len(), g, max_pos).map(|r| (i, r))
            })
            .collect();
        if !finished.is_empty() {
            let neg = be.download(store)?;
            for (slot, reason) in finished {
                if let Some(seq) = slots[slot].take() {
                    let k = seq.response.len();
                    let logprobs = neg[slot * stride..slot * stride + k].iter().map(|l| -l).collect();
                    outputs[seq.out] = Some(RolloutOutput { prompt: prompts[seq.prompt].clone(), response: seq.response, logprobs, finish: reason });
                    done += 1;
                }
            }
            if next < prompts.len() {
                continue; // refill the freed slots before the next decode step
            }
        }
        // ---- one decode step over the active slots ---------------------------------------------
        let active: Vec<usize> = (0..s).filter(|&i| slots[i].is_some()).collect();
        if active.is_empty() {
            continue;
        }
        let t0 = Instant::now();
        let n = active.len();
        let mut tokens = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut crow = Vec::with_capacity(n);
        let mut srows = Vec::with_capacity(n);
        for &i in &active {
            let seq = slots[i].as_ref().expect("active slot");
            tokens.push(*seq.response.last().expect("a sampled token") as i32);
            positions.push(seq.len as i32);
            crow.push((i * t_max + seq.len) as i32);
            srows.push((i * stride + seq.response.len()) as i32);
        }
        be.write_ids(&mut acts.tokens, &tokens)?;
        be.write_ids(&mut acts.positions, &positions)?;
        be.write_ids(rows, &crow)?;
        dec.forward_decode(be, w, acts, cache, rows, n)?;
        sample_and_record(be, acts, sampled, store, store_rows, &srows, sample_params(n, step), vocab)?;
        step += 1;
        let ids = be.download_ids(sampled)?;
        for (r, &i) in active.iter().enumerate() {
            if let Some(seq) = slots[i].as_mut() {
                seq.len += 1;
                seq.response.push(ids[r] as u32);
            }
        }
        stats.decode_tokens += n;
        stats.decode_steps += 1;
        stats.decode_secs += t0.elapsed().as_secs_f64();
    }
    let outputs = outputs.into_iter().map(|o| o.ok_or_else(|| Error::invalid("rollout ended with an unfinished prompt"))).collect::<Result<_>>()?;
    Ok(Rollout { outputs, stats })
}

/// Grouped prefill: copies the keys and values of the `shape.b` prefilled prompts (still in each
/// layer's fused projection `qkv`, rows `[b, t]`) from their first slot into the other slots of
/// their group (`groups[bi]`, the first of which the prefill wrote), one scatter per copy and layer.
#[allow(clippy::too_many_arguments)]
fn copy_group_kv<B: Backend>(
    be: &B,
    mcfg: &crate::model::ModelConfig,
    acts: &Activations<B>,
    cache: &mut SlotCache<B>,
    copy_rows: &mut [B::Ids],
    shape: Shape,
    t_max: usize,
    groups: &[&[usize]],
) -> Result<()> {
    let group = groups.first().map_or(1, |g| g.len());
    let p = ScatterParams::kv(shape.n(), mcfg.n_heads, mcfg.n_kv_heads, mcfg.head_dim, cache.slots * cache.t_max);
    for (k, ids) in copy_rows.iter_mut().enumerate().take(group.saturating_sub(1)) {
        let rows: Vec<i32> = groups.iter().flat_map(|g| (0..shape.t).map(move |i| (g[k + 1] * t_max + i) as i32)).collect();
        be.write_ids(ids, &rows)?;
        for (l, layer) in cache.layers.iter_mut().enumerate() {
            be.scatter_rows(layer, &acts.layers[l].qkv, ids, p)?;
        }
    }
    Ok(())
}

/// Samples one token per row of `acts.logits` into `sampled`, and files `-log p` of each (at
/// temperature 1) into `store` at the rows `srows`.
#[allow(clippy::too_many_arguments)]
fn sample_and_record<B: Backend>(
    be: &B,
    acts: &mut Activations<B>,
    sampled: &mut B::Ids,
    store: &mut B::Buf,
    store_rows: &mut B::Ids,
    srows: &[i32],
    p: SampleParams,
    vocab: usize,
) -> Result<()> {
    let n = p.n as usize;
    be.sample(sampled, &acts.logits, p)?;
    be.cross_entropy_fwd(&mut acts.losses, &mut acts.lse, &acts.logits, sampled, CrossEntropyParams { n: n as u32, v: vocab as u32 })?;
    be.write_ids(store_rows, srows)?;
    let store_len = be.len(store);
    be.scatter_rows(store, &acts.losses, store_rows, ScatterParams { n: n as u32, width: 1, src_row: 1, src_off: 0, dst_row: 1, dst_rows: store_len as u32 })
}

fn finish_reason(seq: &Seq, prompt_len: usize, g: &GenerateConfig, max_pos: usize) -> Option<FinishReason> {
    let last = *seq.response.last()?;
    if g.stop_ids.contains(&last) {
        Some(FinishReason::Stop)
    } else if seq.response.len() >= g.max_new_tokens {
        Some(FinishReason::MaxNewTokens)
    } else if prompt_len + seq.response.len() >= max_pos {
        Some(FinishReason::ContextEnd)
    } else {
        None
    }
}

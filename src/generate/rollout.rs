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
//! Multi-step decoding: the bookkeeping of a step runs on the device too. After sampling, the
//! `decode_advance` op appends each row's token to its slot's history (`[slots, max_new]` ids),
//! updates the slot's state (`[len, resp_len, finish, last]`: a stop id, `max_new_tokens` or the
//! context end sets `finish`) and writes the next step's tokens, positions, cache rows and record
//! rows, so `sync_every` (`K`) decode steps run back to back with no host traffic: forward ->
//! sample -> record -log p -> advance -> the next forward reads what the device wrote. A finished
//! slot's row keeps its frozen inputs (its last token at its last position, written into its own
//! cache row past the sequence) and files its -log p into a dump row, so the rest of the chunk
//! changes none of its recorded tokens or log-probs; it idles for up to K - 1 steps
//! (`RolloutStats::idle_slot_steps`), and a chunk is cut short when no slot can run longer.
//!
//! Host traffic: per chunk of K decode steps one read-back of the slot state (4 integers per
//! slot), plus the histories and the recorded -log p when a sequence finished; the decode inputs
//! are written by the host only when the batch changed (a slot retired or a prompt came in).
//! A prefill (the first token too goes through `decode_advance`) reads the state back once.
//! K = 1 (the CPU's default, where a read-back is free) runs exactly the schedule of one read-back
//! per step.
//!
//! Graphs: a K-step chunk is a fixed sequence of launches on fixed buffers (even the sampling step
//! key is a counter in the slot state that `decode_advance` moves on), so the engine runs it
//! through [`Backend::replay`] under a key of everything it depends on ([`super::chunk_key`]):
//! on CUDA the chunk is captured as a graph once and then launched as one graph per chunk
//! (`RolloutStats::graph_replays`); the CPU and wgpu backends just run it.
//! Draws: the uniform of a row is keyed by (seed, sampling call, row), so a rollout is
//! reproducible for the same prompts, slots, seed and K.

use std::time::Instant;

use crate::backend::ops::decode_finish::{self, STATE};
use crate::backend::ops::{Backend, CrossEntropyParams, DecodeAdvanceParams, SampleParams, ScatterParams};
use crate::error::{Error, Result};
use crate::generate::{chunk_key, GenerateConfig};
use crate::model::{Activations, Model, Shape, SlotCache};

/// Options of [`rollout`].
#[derive(Clone, Debug)]
pub struct RolloutConfig {
    /// sequences decoded together (`S`)
    pub slots: usize,
    /// sampling, `max_new_tokens` and stop ids
    pub gen: GenerateConfig,
    /// decode steps run back to back on the device between two read-backs of the slot state (`K`,
    /// at least 1); a slot that finishes inside such a chunk idles until its end
    pub sync_every: usize,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig { slots: 8, gen: GenerateConfig::default(), sync_every: 1 }
    }
}

/// Decode steps between read-backs on a GPU backend (`--sync-every`'s default there; see
/// docs/benchmarks.md for the measurement behind it).
pub const GPU_SYNC_EVERY: usize = 8;

/// The default `sync_every` of a backend: 1 on the CPU (its read-back is free, and a finished slot
/// would idle for nothing), [`GPU_SYNC_EVERY`] on the GPU backends.
pub fn default_sync_every(backend: &str) -> usize {
    if backend == "cpu" {
        1
    } else {
        GPU_SYNC_EVERY
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
    /// tokens sampled by decode steps for running sequences
    pub decode_tokens: usize,
    pub decode_secs: f64,
    pub decode_steps: usize,
    /// read-backs of the slot state after a chunk of up to `sync_every` decode steps
    pub decode_syncs: usize,
    /// rows of decode steps spent on a slot whose sequence had already finished in its chunk
    /// (wasted compute of `sync_every > 1`)
    pub idle_slot_steps: usize,
    /// prompts that entered a slot another sequence had used before
    pub slot_reuses: usize,
    /// decode chunks that ran as a replayed recording of their launches (a CUDA graph)
    pub graph_replays: usize,
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

/// A sequence in a slot (its length, tokens and state live on the device, see `decode_advance`).
struct Seq {
    /// the index of its output (prompt index x group size + sample index)
    out: usize,
    prompt: usize,
}

/// Samples up to `cfg.gen.max_new_tokens` tokens after each prompt with `cfg.slots` slots
/// (a one-off [`RolloutEngine`]).
pub fn rollout<B: Backend>(be: &B, model: &Model<B>, prompts: &[Vec<u32>], cfg: &RolloutConfig) -> Result<Rollout> {
    RolloutEngine::new().run(be, model, prompts, cfg)
}

/// The engine's device buffers: activations for a prefill of `slots` prompts of up to
/// `cap / slots` tokens, the per-slot KV cache laid out with `t_max` positions per slot, the
/// recorded log-probs and sampled ids with `max_new` rows per slot (the log-probs with one more,
/// the dump row of finished slots), and the slot state of `decode_advance`.
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
    history: B::Ids,
    state: B::Ids,
    /// the stop ids of the current call (`stop_cap` of room)
    stop: B::Ids,
    /// the additive logit mask of ids that may not be sampled ([`super::vocab_mask`]), once a
    /// call needed one: from then on every sampling step adds it (zeros when nothing is masked),
    /// so a recorded decode chunk is the same sequence of launches for every call
    logit_mask: Option<(usize, B::Buf)>,
    stop_cap: usize,
    /// cache rows of the `k`-th copy of a grouped prefill (`cap` each), grown on demand
    copy_rows: Vec<B::Ids>,
    /// unique in the process, renewed whenever a buffer of a decode chunk is reallocated (part of
    /// the chunk's replay key)
    generation: u64,
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
                store: be.alloc(slots * max_new + 1)?,
                history: be.alloc_ids(slots * max_new)?,
                state: be.alloc_ids(decode_finish::state_len(slots))?,
                stop: be.alloc_ids(1)?,
                stop_cap: 1,
                logit_mask: None,
                copy_rows: Vec::new(),
                generation: chunk_key::next_generation(),
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
    if cfg.sync_every == 0 {
        return Err(Error::invalid("--sync-every must be at least 1 (decode steps between two read-backs)"));
    }
    if group == 0 || cfg.slots < group {
        return Err(Error::invalid(format!("a grouped rollout of {group} samples per prompt needs at least that many slots (got {})", cfg.slots)));
    }
    let total = prompts.len() * group;
    let mcfg = model.cfg();
    let max_pos = mcfg.max_positions;
    let vocab = mcfg.vocab_size;
    check_prompts(prompts, max_pos, vocab)?;
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
    let min_prompt = prompts.iter().map(|p| p.len()).min().unwrap_or(1);
    // a response never reaches max_pos tokens (the context ends first), so this changes no finish
    // reason; `longest` is the longest response possible (the history and record rows per slot)
    let max_new = max_new.min(max_pos);
    let longest = max_new.min(max_pos - min_prompt);
    // the last sampled token is never fed, so positions stay below prompt + max_new - 1
    let t_max = (max_prompt + max_new).min(max_pos);
    let dec = &model.decoder;
    let w = &model.weights;
    let cap = (s * max_prompt).max(s);
    let bufs = engine.buffers(be, model, s, cap, t_max, longest)?;
    // the buffers may be larger than this call needs: the cache keeps `bufs.t_max` positions per
    // slot, the record and the history `bufs.max_new` rows per slot (plus the dump row)
    let (t_max, stride, all_slots) = (bufs.t_max, bufs.max_new, bufs.slots);
    while bufs.copy_rows.len() + 1 < group {
        bufs.copy_rows.push(be.alloc_ids(bufs.cap)?);
    }
    let stop = bufs.set_stops_and_mask(be, &g.stop_ids, g.sampled_vocab(vocab), vocab)?;
    let generation = bufs.generation;
    let EngineBuffers { acts, cache, rows, store_rows, sampled, store, copy_rows, state, history, stop: stop_buf, logit_mask, .. } = bufs;
    let mask = logit_mask.as_ref().map(|(_, m)| m);
    let stop_buf = &*stop_buf;
    let advance = |n: usize| DecodeAdvanceParams {
        n: n as u32,
        slots: all_slots as u32,
        t_max: t_max as u32,
        stride: stride as u32,
        max_new: max_new as u32,
        max_len: max_pos as u32,
        n_stop: stop.len() as u32,
        dump_row: (all_slots * stride) as u32,
    };
    let sample_params = |n: usize| SampleParams {
        n: n as u32,
        v: vocab as u32,
        temperature: g.temperature,
        top_k: g.top_k as u32,
        top_p: g.top_p,
        seed_lo: g.seed as u32,
        seed_hi: (g.seed >> 32) as u32,
        // the step counter after the slots' state, counted up by every decode_advance
        step_at: (decode_finish::state_len(all_slots) - 1) as u32,
    };

    let mut outputs: Vec<Option<RolloutOutput>> = vec![None; total];
    let mut slots: Vec<Option<Seq>> = (0..s).map(|_| None).collect();
    // the device's slot state as of the last read-back (nothing changes it between a read-back
    // and the next decode_advance): `[len, resp_len, finish, last]` per slot
    // (and the sampling step counter, 0 at the start of a call)
    let mut host_state = vec![0i32; decode_finish::state_len(all_slots)];
    // the slots that the device's per-row decode inputs (tokens, positions, cache and record rows)
    // belong to, when the last decode_advance wrote them for a decode batch
    let mut device_batch: Option<Vec<usize>> = None;
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
        if !admit.is_empty() {
            let t0 = Instant::now();
            let b = admit.len();
            let t = admit.iter().map(|&(_, p)| prompts[p].len()).max().unwrap_or(1);
            let mut tokens = vec![0i32; b * t];
            let mut cache_rows = vec![0i32; b * t];
            let mut last = Vec::with_capacity(b * group);
            // per sampled row of the prefill: its slot (row order: prompt-major, then sample)
            let mut fresh: Vec<usize> = Vec::with_capacity(b * group);
            // the cache row of each prompt's last token in each of its slots (decode_advance finds the
            // slot from it and moves it one position on)
            let mut fresh_rows: Vec<i32> = Vec::with_capacity(b * group);
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
                    slots[gs] = Some(Seq { out: p * group + k, prompt: p });
                    // before its first token: the prompt minus its last token fed, nothing sampled
                    host_state[gs * STATE..][..STATE].copy_from_slice(&[pr.len() as i32 - 1, 0, decode_finish::RUNNING, 0]);
                    fresh.push(gs);
                    fresh_rows.push((gs * t_max + pr.len() - 1) as i32);
                }
            }
            let shape = Shape { b, t };
            dec.set_inputs(be, acts, shape, &tokens, None)?;
            be.write_ids(rows, &cache_rows)?;
            dec.forward_prefill(be, w, acts, cache, rows, shape, &last)?;
            copy_group_kv(be, mcfg, acts, cache, copy_rows, shape, t_max, &(0..b).map(group_slots).collect::<Vec<_>>())?;
            let srows: Vec<i32> = fresh.iter().map(|&slot| (slot * stride) as i32).collect();
            be.write_ids(store_rows, &srows)?;
            // the state before the sampling: it holds the step key the draws read
            be.write_ids(state, &host_state)?;
            sample_and_record(be, acts, sampled, store, store_rows, state, sample_params(b * group), vocab, mask)?;
            // the first tokens go through the same bookkeeping as every decode step
            be.write_ids(rows, &fresh_rows)?;
            be.decode_advance(state, history, &mut acts.tokens, &mut acts.positions, rows, store_rows, sampled, stop_buf, advance(fresh.len()))?;
            host_state = be.download_ids(state)?;
            device_batch = None;
            stats.prefill_secs += t0.elapsed().as_secs_f64();
        }
        // ---- retire finished sequences ---------------------------------------------------------
        let finished: Vec<usize> = (0..s).filter(|&i| slots[i].is_some() && host_state[i * STATE + 2] != decode_finish::RUNNING).collect();
        if !finished.is_empty() {
            let neg = be.download(store)?;
            let ids = be.download_ids(history)?;
            for slot in finished {
                if let Some(seq) = slots[slot].take() {
                    let st = &host_state[slot * STATE..][..STATE];
                    let (k, r0) = (st[1] as usize, slot * stride);
                    let response = ids[r0..r0 + k].iter().map(|&t| t as u32).collect();
                    let logprobs = neg[r0..r0 + k].iter().map(|l| -l).collect();
                    let finish = finish_reason(st[2])?;
                    outputs[seq.out] = Some(RolloutOutput { prompt: prompts[seq.prompt].clone(), response, logprobs, finish });
                    done += 1;
                }
            }
            if next < prompts.len() {
                continue; // refill the freed slots before the next decode steps
            }
        }
        // ---- up to `sync_every` decode steps over the active slots, without a read-back --------
        let active: Vec<usize> = (0..s).filter(|&i| slots[i].is_some()).collect();
        if active.is_empty() {
            continue;
        }
        let t0 = Instant::now();
        let n = active.len();
        let st = |i: usize| &host_state[i * STATE..][..STATE];
        if device_batch.as_deref() != Some(&active[..]) {
            // the batch changed since the last decode step: its inputs from the slot state
            let tokens: Vec<i32> = active.iter().map(|&i| st(i)[3]).collect();
            let positions: Vec<i32> = active.iter().map(|&i| st(i)[0]).collect();
            let crow: Vec<i32> = active.iter().map(|&i| (i * t_max) as i32 + st(i)[0]).collect();
            let srows: Vec<i32> = active.iter().map(|&i| (i * stride) as i32 + st(i)[1]).collect();
            be.write_ids(&mut acts.tokens, &tokens)?;
            be.write_ids(&mut acts.positions, &positions)?;
            be.write_ids(rows, &crow)?;
            be.write_ids(store_rows, &srows)?;
        }
        // no more steps than the longest-running slot can still take (max_new_tokens, context)
        let left = |i: usize| (max_new.saturating_sub(st(i)[1] as usize)).min((max_pos - 1).saturating_sub(st(i)[0] as usize));
        let steps = active.iter().map(|&i| left(i)).max().unwrap_or(1).clamp(1, cfg.sync_every);
        let before: Vec<i32> = active.iter().map(|&i| st(i)[1]).collect();
        // the chunk: the same launches on the same buffers whenever n and steps repeat
        let (sp, ap) = (sample_params(n), advance(n));
        let key = chunk_key::chunk_key(be, generation, w, n, steps, &sp, &ap);
        let mut chunk = || -> Result<()> {
            for _ in 0..steps {
                dec.forward_decode(be, w, acts, cache, rows, n)?;
                sample_and_record(be, acts, sampled, store, store_rows, state, sp, vocab, mask)?;
                be.decode_advance(state, history, &mut acts.tokens, &mut acts.positions, rows, store_rows, sampled, stop_buf, ap)?;
            }
            Ok(())
        };
        if be.replay(key, &mut chunk)? {
            stats.graph_replays += 1;
        }
        host_state = be.download_ids(state)?;
        device_batch = Some(active.clone());
        for (&i, &b0) in active.iter().zip(&before) {
            let grew = (host_state[i * STATE + 1] - b0).max(0) as usize;
            stats.decode_tokens += grew;
            stats.idle_slot_steps += steps - grew.min(steps);
        }
        stats.decode_steps += steps;
        stats.decode_syncs += 1;
        stats.decode_secs += t0.elapsed().as_secs_f64();
    }
    let outputs = outputs.into_iter().map(|o| o.ok_or_else(|| Error::invalid("rollout ended with an unfinished prompt"))).collect::<Result<_>>()?;
    Ok(Rollout { outputs, stats })
}

impl<B: Backend> EngineBuffers<B> {
    /// Uploads this call's stop ids (growing their buffer, a new graph generation) and sets the
    /// sampling mask to the ids below `allowed` (created on first need); returns the stop ids as
    /// the device reads them.
    fn set_stops_and_mask(&mut self, be: &B, stop_ids: &[u32], allowed: usize, vocab: usize) -> Result<Vec<i32>> {
        // stop ids above i32::MAX cannot be sampled (they are outside any vocabulary): they wrap to
        // negative values, which no sampled id matches
        let stop: Vec<i32> = stop_ids.iter().map(|&t| t as i32).collect();
        if stop.len() > self.stop_cap {
            self.stop = be.alloc_ids(stop.len())?;
            self.stop_cap = stop.len();
            self.generation = chunk_key::next_generation();
        }
        if !stop.is_empty() {
            be.write_ids(&mut self.stop, &stop)?;
        }
        if allowed < vocab || self.logit_mask.is_some() {
            if self.logit_mask.is_none() {
                self.logit_mask = Some((vocab, be.upload(&super::vocab_mask(vocab, vocab))?));
                self.generation = chunk_key::next_generation();
            }
            let (masked_from, mask) = self.logit_mask.as_mut().expect("set above");
            if *masked_from != allowed {
                be.write(mask, &super::vocab_mask(vocab, allowed))?;
                *masked_from = allowed;
            }
        }
        Ok(stop)
    }
}

/// Every prompt has a token, leaves room for a response in the context, and uses only ids of the
/// vocabulary.
fn check_prompts(prompts: &[Vec<u32>], max_pos: usize, vocab: usize) -> Result<()> {
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
    Ok(())
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

/// Samples one token per row of `acts.logits` into `sampled` (the step key from the slot state
/// `state`), and files `-log p` of each (at temperature 1) into `store` at the rows `store_rows`
/// (written by the host for a prefill, by `decode_advance` between decode steps). With a `mask`
/// ([`super::vocab_mask`]) the ids it excludes are never sampled, and the recorded log-probs
/// are those of the distribution sampled (the masked one).
#[allow(clippy::too_many_arguments)]
fn sample_and_record<B: Backend>(
    be: &B,
    acts: &mut Activations<B>,
    sampled: &mut B::Ids,
    store: &mut B::Buf,
    store_rows: &B::Ids,
    state: &B::Ids,
    p: SampleParams,
    vocab: usize,
    mask: Option<&B::Buf>,
) -> Result<()> {
    let n = p.n as usize;
    if let Some(mask) = mask {
        be.bias_add(&mut acts.logits, mask, crate::backend::ops::BiasParams { n: n as u32, c: vocab as u32 })?;
    }
    be.sample(sampled, &acts.logits, state, p)?;
    be.cross_entropy_fwd(&mut acts.losses, &mut acts.lse, &acts.logits, sampled, CrossEntropyParams { n: n as u32, v: vocab as u32 })?;
    let store_len = be.len(store);
    be.scatter_rows(store, &acts.losses, store_rows, ScatterParams { n: n as u32, width: 1, src_row: 1, src_off: 0, dst_row: 1, dst_rows: store_len as u32 })
}

/// The reason of a `decode_advance` finish code.
fn finish_reason(code: i32) -> Result<FinishReason> {
    match code {
        decode_finish::STOP => Ok(FinishReason::Stop),
        decode_finish::MAX_NEW => Ok(FinishReason::MaxNewTokens),
        decode_finish::CONTEXT => Ok(FinishReason::ContextEnd),
        other => Err(Error::invalid(format!("rollout: a finished slot has the unknown finish code {other}"))),
    }
}

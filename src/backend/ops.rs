//! THE op list. Every kernel op of `rlhf` is named once here, forward and backward, as a method of
//! the [`Backend`] trait; every backend (`cpu`, later `cuda` and `wgpu`) implements all of them,
//! so a missing op is a build error, never a failure at run time.
//!
//! Conventions (the same in Rust, CUDA C and WGSL):
//! - argument order: outputs, what is saved for backward, inputs, weights, then one params struct
//!   with the dimensions;
//! - parameter gradients accumulate (`+=`), activation gradients overwrite (`=`);
//! - buffers are owned by the backend and stay on its device; ops may run asynchronously, and the
//!   only way back to the host is [`Backend::download`] (used for a few logging scalars per step);
//! - every params struct is `#[repr(C)]` plain data so that GPU backends can pass it as a uniform;
//! - matrices are row-major; `[B, T, C]` means B sequences of T tokens of C channels.

pub use super::precision::MatmulPrecision;
pub use super::storage::{Dtype, Storage};
use crate::error::Result;
use bytemuck::{Pod, Zeroable};

/// `table` rows gathered by `ids`: `out[i, :] (+)= table[ids[i], :]`, i < n.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct EmbeddingParams {
    pub n: u32,
    pub c: u32,
    /// 1: add into `out` (learned positions on top of tokens), 0: overwrite.
    pub accumulate: u32,
    pub vocab: u32,
}

/// LayerNorm / RMSNorm over the last dimension of an `[n, c]` matrix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct NormParams {
    pub n: u32,
    pub c: u32,
    pub eps: f32,
    pub _pad: u32,
}

/// `out[b] (+)= alpha * op(a[b]) @ op(b[b])` for b < batch, with `op(a)` of shape `[m, k]`
/// (stored `[k, m]` when `trans_a`) and `op(b)` of shape `[k, n]` (stored `[n, k]` when `trans_b`).
/// Strides are in elements between consecutive batch matrices (0 broadcasts one matrix).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub batch: u32,
    pub trans_a: u32,
    pub trans_b: u32,
    pub accumulate: u32,
    pub alpha: f32,
    pub stride_a: u32,
    pub stride_b: u32,
    pub stride_out: u32,
    pub _pad: u32,
}

impl MatmulParams {
    /// A single `[m, k] @ [k, n]` product with the given storage transposes.
    pub fn new(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Self {
        MatmulParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            batch: 1,
            trans_a: trans_a as u32,
            trans_b: trans_b as u32,
            accumulate: 0,
            alpha: 1.0,
            stride_a: 0,
            stride_b: 0,
            stride_out: 0,
            _pad: 0,
        }
    }
    pub fn accumulate(mut self, yes: bool) -> Self {
        self.accumulate = yes as u32;
        self
    }
    pub fn batched(mut self, batch: usize, stride_a: usize, stride_b: usize, stride_out: usize) -> Self {
        self.batch = batch as u32;
        self.stride_a = stride_a as u32;
        self.stride_b = stride_b as u32;
        self.stride_out = stride_out as u32;
        self
    }
}

/// Row-broadcast bias over an `[n, c]` matrix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct BiasParams {
    pub n: u32,
    pub c: u32,
}

/// Element-wise ops over `n` elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ElementwiseParams {
    pub n: u32,
    pub _pad: u32,
}

impl ElementwiseParams {
    /// The params of an op over `n` elements; kernels count elements in 32 bits, so a larger `n`
    /// (a 64k-token x 152k-vocabulary tensor, say) is an error, never a count that wraps.
    pub fn new(n: usize) -> crate::error::Result<Self> {
        let n = u32::try_from(n).map_err(|_| {
            crate::error::Error::invalid(format!("an element-wise op over {n} values: more than the 2^32 - 1 a kernel counts (use smaller batches or sequences)"))
        })?;
        Ok(ElementwiseParams { n, _pad: 0 })
    }
}

/// Rotary position embedding (rotate-half convention of Llama/Qwen2 in `transformers`) applied in
/// place to the first `n_rot_heads` heads of every row of an `[n_tokens, row]` matrix; the
/// position of token i is `positions[i]`; frequency j is `theta^(-2j/head_dim)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RopeParams {
    pub n_tokens: u32,
    pub row: u32,
    pub n_rot_heads: u32,
    pub head_dim: u32,
    pub theta: f32,
    pub _pad: u32,
}

/// Causal scaled-dot-product attention with grouped-query heads, reading queries, keys and values
/// out of strided buffers (the fused `[B, T, (NH + 2 NKV) HD]` projection during training, the
/// KV cache during generation). Query i of a sequence sits at position `q_pos0 + i` and sees
/// keys `0 ..= q_pos0 + i` (< tk). Query head h reads key/value head `h / (nh / nkv)`.
/// Output `[B, tq, NH * HD]`; saved for backward: the log-sum-exp of every score row `[B, NH, tq]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AttentionParams {
    pub b: u32,
    pub tq: u32,
    pub tk: u32,
    pub nh: u32,
    pub nkv: u32,
    pub hd: u32,
    pub q_pos0: u32,
    pub scale: f32,
    /// elements between consecutive query rows, and between sequences, and the offset of head 0
    pub q_row: u32,
    pub q_batch: u32,
    pub q_off: u32,
    /// the same for keys and values (which share a row layout)
    pub kv_row: u32,
    pub kv_batch: u32,
    pub k_off: u32,
    pub v_off: u32,
    pub _pad: u32,
}

impl AttentionParams {
    /// Training layout: q, k, v all read from one fused `[B, T, (nh + 2 nkv) hd]` buffer.
    pub fn fused(b: usize, t: usize, nh: usize, nkv: usize, hd: usize) -> Self {
        let row = (nh + 2 * nkv) * hd;
        AttentionParams {
            b: b as u32,
            tq: t as u32,
            tk: t as u32,
            nh: nh as u32,
            nkv: nkv as u32,
            hd: hd as u32,
            q_pos0: 0,
            scale: 1.0 / (hd as f32).sqrt(),
            q_row: row as u32,
            q_batch: (t * row) as u32,
            q_off: 0,
            kv_row: row as u32,
            kv_batch: (t * row) as u32,
            k_off: (nh * hd) as u32,
            v_off: ((nh + nkv) * hd) as u32,
            _pad: 0,
        }
    }

    /// Cached layout: `t` new queries at positions `pos0 ..` read from the fused projection
    /// `[B, t, (nh + 2 nkv) hd]`, keys and values from a cache `[B, t_max, 2 nkv hd]` (see
    /// [`KvCacheParams`]) holding positions `0 .. pos0 + t`.
    pub fn cached(b: usize, t: usize, pos0: usize, t_max: usize, nh: usize, nkv: usize, hd: usize) -> Self {
        let kv_row = 2 * nkv * hd;
        AttentionParams {
            tk: (pos0 + t) as u32,
            q_pos0: pos0 as u32,
            kv_row: kv_row as u32,
            kv_batch: (t_max * kv_row) as u32,
            k_off: 0,
            v_off: (nkv * hd) as u32,
            ..AttentionParams::fused(b, t, nh, nkv, hd)
        }
    }
}

/// Copies the key and value heads of `t` new tokens from the fused projection
/// `[B, t, (nh + 2 nkv) hd]` into a cache `[B, t_max, 2 nkv hd]` at positions `pos0 .. pos0 + t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct KvCacheParams {
    pub b: u32,
    pub t: u32,
    pub pos0: u32,
    pub t_max: u32,
    pub nh: u32,
    pub nkv: u32,
    pub hd: u32,
    pub _pad: u32,
}

/// Row scatter: `out[rows[i] * dst_row + j] = inp[i * src_row + src_off + j]` for `i < n`,
/// `j < width`. The rollout engine writes the keys and values of new tokens into their slots'
/// cache rows with it (`src_off` skips the query heads of the fused projection) and files each
/// step's per-token values (e.g. log-probs) under their sequences.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ScatterParams {
    pub n: u32,
    pub width: u32,
    pub src_row: u32,
    pub src_off: u32,
    pub dst_row: u32,
    /// rows of `out` (every `rows[i]` must be below it)
    pub dst_rows: u32,
}

impl ScatterParams {
    /// The key/value heads of `n` fused-projection rows `[n, (nh + 2 nkv) hd]` into cache rows
    /// `[_, 2 nkv hd]` (a slot cache `[S, t_max, 2 nkv hd]` has `S * t_max` rows).
    pub fn kv(n: usize, nh: usize, nkv: usize, hd: usize, cache_rows: usize) -> Self {
        ScatterParams {
            n: n as u32,
            width: (2 * nkv * hd) as u32,
            src_row: ((nh + 2 * nkv) * hd) as u32,
            src_off: (nh * hd) as u32,
            dst_row: (2 * nkv * hd) as u32,
            dst_rows: cache_rows as u32,
        }
    }
}

/// Decode attention over a slot cache `[S, t_max, 2 nkv hd]` (keys then values of each
/// position): query i (row i of `q`, heads from `q_off`, `q_row` elements per row) belongs to the
/// token in cache row `rows[i]`, of slot `s = rows[i] / t_max` at position `pos = rows[i] % t_max`,
/// and attends to that slot's keys `0 ..= pos`. Output `[n, nh hd]`, saved `lse [n, nh]`.
/// On the CPU the scores, softmax and value sums of a row use the same arithmetic, in the same
/// order, as the row of `attention_fwd` at that position, so decode and training agree bit for bit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AttentionDecodeParams {
    pub n: u32,
    pub t_max: u32,
    pub slots: u32,
    pub nh: u32,
    pub nkv: u32,
    pub hd: u32,
    pub scale: f32,
    pub q_row: u32,
    pub q_off: u32,
    pub _pad: u32,
}

/// Softmax cross-entropy over `[n, v]` logits. A negative target marks a row without loss.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct CrossEntropyParams {
    pub n: u32,
    pub v: u32,
}

/// Next-token sampling from `[n, v]` logits. temperature 0 is greedy (argmax, lowest index on
/// ties); otherwise softmax(logits / temperature) restricted to the top_k most likely tokens
/// (0 = all) and then to the smallest set whose mass reaches top_p (1 = all). The uniform draw of
/// row i is a counter-based hash of (seed, step, i), so every backend draws the same numbers. The
/// step is read on the device, `step = steps[step_at]` (as u32), so that a sequence of decode steps
/// is the same launches every time: the rollout engine keeps it in its slot state, where
/// [`Backend::decode_advance`] counts it up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SampleParams {
    pub n: u32,
    pub v: u32,
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    /// index of the sampling step in the `steps` buffer of [`Backend::sample`]
    pub step_at: u32,
}

/// One step of the rollout engine's bookkeeping on the device, so that decode steps can follow
/// one another without a read-back. Row r < n of the step belongs to slot `s = cache_rows[r] / t_max`
/// (the cache row its token was written to, as in [`AttentionDecodeParams`]); the slot's state is
/// `state[4 s ..][..4] = [len, resp_len, finish, last]`: positions in its cache (prompt + fed
/// response tokens), response tokens sampled, [`decode_finish`] code, last sampled token.
/// For a running slot (`finish == 0`) with `id = sampled[r]`:
/// `history[s * stride + resp_len] = id`, `resp_len += 1`, `len += 1`, `last = id`, then
/// `finish` = STOP if `id` is in `stop_ids[..n_stop]`, else MAX_NEW if `resp_len >= max_new`,
/// else CONTEXT if `len + 1 >= max_len` (prompt + response fill the context), else 0; and the next
/// step's inputs of row r: `tokens[r] = id`, `positions[r] = len`, `cache_rows[r] = s * t_max + len`,
/// `record_rows[r] = s * stride + resp_len`, or `dump_row` once the slot has finished.
/// A finished slot (`finish != 0` on entry) is left alone (state, history, tokens, positions and
/// cache row frozen) except that `record_rows[r] = dump_row`: its row keeps decoding its last
/// token at the frozen position into its own (dead) cache row, and its `-log p` lands in the
/// dump row. Rows whose slot lies outside `slots` or whose history is full are skipped.
/// After the slots' state comes the sampling step counter `state[4 slots]` (the `step` of
/// [`SampleParams`]): every call with `n > 0` adds 1 to it, so the step key moves on without the host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct DecodeAdvanceParams {
    /// rows of this step
    pub n: u32,
    /// slots in `state` (4 values each) and `history` (`stride` each)
    pub slots: u32,
    /// cache positions per slot
    pub t_max: u32,
    /// history entries (and recorded log-prob rows) per slot: the longest response possible
    pub stride: u32,
    /// `max_new_tokens`
    pub max_new: u32,
    /// the model's context (max positions)
    pub max_len: u32,
    /// stop ids in `stop_ids`
    pub n_stop: u32,
    /// the record row of finished slots (outside every slot's rows)
    pub dump_row: u32,
}

impl DecodeAdvanceParams {
    /// The least length of each buffer of [`Backend::decode_advance`], in its argument order.
    pub fn min_lens(&self) -> [(&'static str, usize); 8] {
        let (n, slots) = (self.n as usize, self.slots as usize);
        [
            ("state", decode_finish::state_len(slots)),
            ("history", slots * self.stride as usize),
            ("tokens", n),
            ("positions", n),
            ("cache_rows", n),
            ("record_rows", n),
            ("sampled", n),
            ("stop_ids", self.n_stop as usize),
        ]
    }
}

/// The `finish` codes of [`DecodeAdvanceParams`]'s slot state, and the state's layout.
pub mod decode_finish {
    /// still decoding
    pub const RUNNING: i32 = 0;
    /// the last token is a stop id
    pub const STOP: i32 = 1;
    /// the response reached `max_new_tokens`
    pub const MAX_NEW: i32 = 2;
    /// prompt + response fill the model's context
    pub const CONTEXT: i32 = 3;
    /// values per slot in the state buffer: `[len, resp_len, finish, last]`
    pub const STATE: usize = 4;
    /// values in the state buffer of `slots` slots: [`STATE`] per slot, then the sampling step counter
    pub const fn state_len(slots: usize) -> usize {
        slots * STATE + 1
    }
}

/// One AdamW step with decoupled weight decay and global-norm clipping, reading the squared
/// global gradient norm `norm_sq[0]` (accumulated by `sum_squares`) on the device:
/// - `norm_sq[0]` not finite (NaN or an infinity): nothing is written (the step is skipped);
/// - otherwise the gradient used is `g * s` with `s = min(1, max_grad_norm / (sqrt(norm_sq[0]) + 1e-6))`
///   when `max_grad_norm > 0`, else `s = 1`; the gradient buffer itself is not modified;
/// - `m = b1 m + (1-b1) g s`, `v = b2 v + (1-b2) (g s)^2`,
///   `p -= lr * (m / bc1 / (sqrt(v / bc2) + eps) + weight_decay * p)` with `bc = 1 - beta^step`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AdamWParams {
    pub n: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bias_correction1: f32,
    pub bias_correction2: f32,
    /// global-norm clipping threshold; 0 (or less) disables clipping
    pub max_grad_norm: f32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// Pairwise ranking loss of reward-model scores (InstructGPT): group g holds the scores
/// `scores[starts[g] .. starts[g + 1]]` of K >= 2 completions of one prompt, best first; each of
/// its K(K-1)/2 pairs (i better than j) costs `-log sigmoid(s_i - s_j - margins[g])`, the group's
/// loss is the mean over its pairs, and every group's loss is weighted by `scale` (1 / groups of
/// the optimiser step gives the mean).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RankingParams {
    pub n_groups: u32,
    pub scale: f32,
}

/// Generalised advantage estimation (Schulman et al. 2016) over `[b, t]` rows of per-token
/// `rewards`, `values` and a 0/1 `mask` (1 on response tokens, which are contiguous per row).
/// Per row, scanning backwards: `delta_t = r_t + gamma V_{t+1} - V_t`,
/// `A_t = delta_t + gamma lambda A_{t+1}`, where `V_{t+1}` and `A_{t+1}` are 0 after the last
/// response token (the episode ends there: no bootstrap); `returns_t = A_t + V_t`. Where
/// `mask == 0` both outputs are 0 and the inputs are never read (padding may be garbage). A row
/// with several runs of response tokens treats each run as its own episode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct GaeParams {
    /// rows (sequences)
    pub b: u32,
    /// tokens per row
    pub t: u32,
    /// discount
    pub gamma: f32,
    /// GAE's bias/variance trade-off (1: Monte-Carlo returns minus values, 0: one-step TD error)
    pub lambda: f32,
}

impl GaeParams {
    pub fn new(b: usize, t: usize, gamma: f32, lambda: f32) -> Self {
        GaeParams { b: b as u32, t: t as u32, gamma, lambda }
    }
}

/// Slots of the `stats` buffer of [`Backend::masked_whiten`] (overwritten, not accumulated).
pub mod whiten_stat {
    /// mean of the masked entries before whitening
    pub const MEAN: usize = 0;
    /// their standard deviation, `sqrt(var)` (without `eps`)
    pub const STD: usize = 1;
    /// number of masked entries
    pub const COUNT: usize = 2;
    /// number of slots
    pub const LEN: usize = 3;
    /// slot names, for logging
    pub const NAMES: [&str; LEN] = ["mean", "std", "count"];
}

/// Whitening of the masked entries of `x [n]` in place (advantage whitening in PPO):
/// with `m` the entries where `mask != 0`, `mean = sum_m x / |m|`,
/// `var = sum_m (x - mean)^2 / (|m| - 1)` (`unbiased` 1, as `torch.var` and TRL's `masked_var`)
/// or `/ |m|` (`unbiased` 0), and `x = (x - mean) / sqrt(var + eps)`, plus `mean` again when
/// `shift_mean` is 0 (TRL's `masked_whiten(shift_mean=False)`: rescale but keep the mean).
/// Entries with `mask == 0` are set to 0. The sums run in f64 in a fixed order, independent of
/// the thread count. Fewer than 2 (unbiased) or 1 masked entries give `var = 0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct WhitenParams {
    pub n: u32,
    /// 1: subtract the mean (zero-mean output); 0: keep it
    pub shift_mean: u32,
    /// 1: Bessel-corrected variance (divide by count - 1); 0: divide by count
    pub unbiased: u32,
    pub eps: f32,
}

impl WhitenParams {
    /// TRL's defaults: shift the mean, unbiased variance, eps 1e-8.
    pub fn new(n: usize) -> Self {
        WhitenParams { n: n as u32, shift_mean: 1, unbiased: 1, eps: 1e-8 }
    }
    pub fn shift_mean(mut self, yes: bool) -> Self {
        self.shift_mean = yes as u32;
        self
    }
    pub fn unbiased(mut self, yes: bool) -> Self {
        self.unbiased = yes as u32;
        self
    }
}

/// Default number of vocabulary rows of the LM head streamed per chunk by `logprob_gather_*`.
pub const LOGPROB_CHUNK: usize = 4096;

/// Log-probability of a chosen token and entropy of the next-token distribution, straight from
/// the final hidden states `h [n, c]` and the LM head (or tied embedding) `w [v, c]`, with
/// `z = (h @ w^T) / temperature` and `p = softmax(z)`:
/// `logp[i] = z[i, targets[i]] - lse[i]`, `entropy[i] = -sum_j p_ij log p_ij`, `lse[i] = logsumexp_j z_ij`.
/// The vocabulary is streamed `chunk` rows of `w` at a time (online log-sum-exp), so the `[n, v]`
/// logits never exist; a row whose target is negative has no outputs (all three are 0) and no
/// gradient. `temperature` must be positive (the sampling temperature, so that the log-probs are
/// those of the distribution that was sampled).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct LogprobParams {
    pub n: u32,
    pub c: u32,
    pub v: u32,
    /// vocabulary rows of `w` per streamed chunk (e.g. [`LOGPROB_CHUNK`]); sets the scratch size
    pub chunk: u32,
    pub temperature: f32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

impl LogprobParams {
    /// `n` rows of `c` channels, a vocabulary of `v`, temperature 1, chunks of [`LOGPROB_CHUNK`].
    pub fn new(n: usize, c: usize, v: usize) -> Self {
        LogprobParams { n: n as u32, c: c as u32, v: v as u32, chunk: LOGPROB_CHUNK as u32, temperature: 1.0, ..Default::default() }
    }
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = t;
        self
    }
    pub fn chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk as u32;
        self
    }
}

/// Per-token KL between the policy and a frozen reference at the sampled tokens, from their
/// log-probs: `r = logp - ref_logp`, and with `estimator` 1: `k1 = r`, 2: `k2 = r^2 / 2`,
/// 3: `k3 = exp(-r) - 1 + r` (unbiased for KL(policy || reference) and never negative).
/// `kl[i] = mask[i] * k(r_i)`; where `mask[i] == 0` the output and the gradient are 0 whatever
/// the log-probs hold (padding may be garbage).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct KlParams {
    pub n: u32,
    /// 1, 2 or 3 (k1, k2, k3)
    pub estimator: u32,
}

/// Slots of the `stats` buffer of [`Backend::ppo_loss_fwd_bwd`], each a weighted sum over the
/// masked tokens with the same aggregation weights as the loss (token mean: each masked token
/// weighs 1 / masked tokens; sequence mean: 1 / (sequences * that sequence's masked tokens)).
pub mod ppo_stat {
    /// the clipped surrogate (dual clip included)
    pub const POLICY_LOSS: usize = 0;
    /// the (clipped) value loss, before `vf_coef`
    pub const VALUE_LOSS: usize = 1;
    /// the mean entropy (the `entropy` input), before `ent_coef`
    pub const ENTROPY: usize = 2;
    /// fraction of tokens where the clipped surrogate is the larger (its gradient is zero)
    pub const CLIPFRAC: usize = 3;
    /// `k3` estimate of KL(old || new): `(ratio - 1) - log(ratio)`
    pub const APPROX_KL: usize = 4;
    /// the KL-to-reference term (chosen estimator), before `kl_coef`
    pub const KL: usize = 5;
    /// `policy + vf_coef * value - ent_coef * entropy + kl_coef * kl`: the loss whose gradient the op writes
    pub const TOTAL_LOSS: usize = 6;
    /// fraction of tokens where the clipped value loss is the larger
    pub const VALUE_CLIPFRAC: usize = 7;
    /// fraction of tokens where the dual clip bounds the loss (A < 0)
    pub const DUAL_CLIPFRAC: usize = 8;
    /// the sum of the aggregation weights: 1 for a whole batch with any masked token, 0 for none
    pub const WEIGHT: usize = 9;
    /// number of slots
    pub const COUNT: usize = 10;
    /// slot names, for logging
    pub const NAMES: [&str; COUNT] =
        ["policy_loss", "value_loss", "entropy", "clipfrac", "approx_kl", "kl", "total_loss", "value_clipfrac", "dual_clipfrac", "weight"];
}

/// PPO's clipped losses over `n` tokens, forward and backward in one op. Per token, with
/// `ratio = exp(logp - old_logp)` and advantage `A`:
/// `pg = max(-A ratio, -A clip(ratio, 1 - clip_low, 1 + clip_high))`, and with the dual clip
/// (`dual_clip = c > 1`) `pg = min(pg, -c A)` where `A < 0`;
/// value loss (when values are given) `vl = 0.5 max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2)`
/// (`value_clip = eps_v`; 0 turns the clipping off: `vl = 0.5 (V - R)^2`);
/// KL in the loss (when `ref_logp` is given) `kl = k(logp - ref_logp)` with `kl_estimator` 1/2/3
/// as in [`KlParams`];
/// `loss_i = pg + vf_coef vl - ent_coef entropy + kl_coef kl`.
/// Aggregation: `loss = sum_i w_i loss_i` with `mask` weights `m_i` (0/1):
/// 0 (token mean) `w_i = m_i / sum_j m_j`; 1 (sequence mean of token means, rows `[b, t]`)
/// `w_i = m_i / (S * sum_{j in seq(i)} m_j)` with S the number of sequences with a masked token.
/// `denom > 0` replaces `sum_j m_j` (mode 0) or S (mode 1), so that micro-batches of one
/// minibatch can share its denominator. All-masked input gives zero loss and zero gradients.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PpoParams {
    pub n: u32,
    /// tokens per sequence (rows `[n / t, t]`); used by aggregation 1
    pub t: u32,
    /// 0: token mean over the batch, 1: mean over sequences of per-sequence token means
    pub aggregation: u32,
    /// 1, 2 or 3: the estimator of the KL-in-loss term
    pub kl_estimator: u32,
    pub clip_low: f32,
    pub clip_high: f32,
    /// dual-clip constant c (> 1 on; 0 off)
    pub dual_clip: f32,
    /// eps_v of the value clipping (0 off)
    pub value_clip: f32,
    pub vf_coef: f32,
    pub ent_coef: f32,
    pub kl_coef: f32,
    /// 0: this call's denominator; > 0: use this one (see above)
    pub denom: f32,
}

impl PpoParams {
    /// Token-mean PPO with clip 0.2 on both sides, no dual clip, value clip 0.2, vf_coef 0.5,
    /// no entropy bonus, no KL in the loss (k3 if one is set).
    pub fn new(n: usize) -> Self {
        PpoParams {
            n: n as u32,
            t: n as u32,
            aggregation: 0,
            kl_estimator: 3,
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: 0.0,
            value_clip: 0.2,
            vf_coef: 0.5,
            ent_coef: 0.0,
            kl_coef: 0.0,
            denom: 0.0,
        }
    }
}

/// Loss types of [`PreferenceParams`].
pub mod preference_loss {
    /// DPO: `-(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h)` (eps = label smoothing;
    /// eps > 0 is conservative DPO)
    pub const SIGMOID: u32 = 0;
    /// IPO: `(h - 1 / (2 beta))^2`
    pub const IPO: u32 = 1;
    /// SimPO: `-(1-eps) log sigmoid(z) - eps log sigmoid(-z)`, `z = beta (a_c - a_r) - gamma`,
    /// no reference
    pub const SIMPO: u32 = 2;
    /// names, indexed by the constants
    pub const NAMES: [&str; 3] = ["sigmoid", "ipo", "simpo"];
}

/// Slots of the `stats` buffer of [`Backend::preference_loss_fwd_bwd`] (accumulated, unscaled sums
/// over pairs).
pub mod preference_stat {
    /// the per-pair loss
    pub const LOSS: usize = 0;
    /// pairs whose chosen implicit reward is above the rejected one
    pub const CORRECT: usize = 1;
    /// chosen implicit rewards
    pub const CHOSEN_REWARD: usize = 2;
    /// rejected implicit rewards
    pub const REJECTED_REWARD: usize = 3;
    /// chosen minus rejected reward
    pub const MARGIN: usize = 4;
    /// pairs seen
    pub const PAIRS: usize = 5;
    /// number of slots
    pub const COUNT: usize = 6;
    /// slot names, for logging
    pub const NAMES: [&str; COUNT] = ["loss", "correct", "chosen_reward", "rejected_reward", "margin", "pairs"];
}

/// The DPO family of preference losses (DPO, conservative DPO, IPO, SimPO) over `pairs` pairs of
/// sequences whose per-token policy log-probs are the rows of `logp [2 pairs, t]`: rows
/// `0 .. pairs` are the chosen completions, rows `pairs .. 2 pairs` the rejected ones (pair i is
/// rows i and pairs + i). `mask [2 pairs, t]` is 1 on completion tokens (the end token included,
/// never the prompt) and 0 elsewhere; `ref_sums [2 pairs]` holds the reference model's summed
/// completion log-probs, computed once per example (ignored by SimPO).
///
/// Per row, `s = sum_t mask logp`, `n = sum_t mask` and `a = s / max(n, 1)` when `length_norm` is 1
/// (then the reference term is `ref_sums / max(n, 1)` too), else `a = s`. With `a_c, a_r` the
/// chosen and rejected rows and `ra_c, ra_r` their reference terms, `h = (a_c - ra_c) - (a_r - ra_r)`:
/// - [`preference_loss::SIGMOID`]: `L = -(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h)`;
/// - [`preference_loss::IPO`]: `L = (h - 1 / (2 beta))^2` (use `length_norm` 1, as the IPO paper
///   and TRL do);
/// - [`preference_loss::SIMPO`]: `L = -(1-eps) log sigmoid(z) - eps log sigmoid(-z)`,
///   `z = beta (a_c - a_r) - gamma` (use `length_norm` 1).
///
/// Outputs: `dlogp [2 pairs, t]` (overwritten) is `scale dL/dlogp`, i.e.
/// `+-scale dL/dh mask / (n or 1)` (plus on chosen rows, minus on rejected); `scale` is 1 / pairs
/// of the optimiser step for the mean (micro-batches accumulate). `stats [preference_stat::COUNT]`
/// accumulates the unscaled [`preference_stat`] sums, with implicit rewards `beta (a_c - ra_c)`
/// and `beta (a_r - ra_r)` (SimPO: `beta a_c`, `beta a_r`). `log sigmoid` is computed stably.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PreferenceParams {
    pub pairs: u32,
    /// tokens per row
    pub t: u32,
    /// one of [`preference_loss`]
    pub loss_type: u32,
    /// 1: per-token mean log-probs (IPO, SimPO), 0: sums (DPO)
    pub length_norm: u32,
    pub beta: f32,
    /// eps of conservative DPO / SimPO, in [0, 0.5)
    pub label_smoothing: f32,
    /// SimPO's target margin gamma
    pub simpo_gamma: f32,
    /// gradient coefficient (1 / pairs of the optimiser step)
    pub scale: f32,
}

impl PreferenceParams {
    /// Plain DPO (sigmoid loss, sums, beta 0.1) over `pairs` pairs of `t` tokens, scale 1 / pairs.
    pub fn new(pairs: usize, t: usize) -> Self {
        PreferenceParams {
            pairs: pairs as u32,
            t: t as u32,
            loss_type: preference_loss::SIGMOID,
            length_norm: 0,
            beta: 0.1,
            label_smoothing: 0.0,
            simpo_gamma: 0.0,
            scale: 1.0 / pairs.max(1) as f32,
        }
    }

    /// The loss type, beta, label smoothing and flags are in range (every backend checks this).
    pub fn validate(&self) -> std::result::Result<(), &'static str> {
        if self.loss_type > preference_loss::SIMPO {
            return Err("loss_type must be 0 (sigmoid), 1 (ipo) or 2 (simpo)");
        }
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            return Err("beta must be positive");
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return Err("label_smoothing must be in [0, 0.5)");
        }
        if self.length_norm > 1 || !self.simpo_gamma.is_finite() || !self.scale.is_finite() {
            return Err("length_norm must be 0 or 1, simpo_gamma and scale finite");
        }
        Ok(())
    }
}

/// A compute backend: device-resident buffers and every op of the engine.
///
/// `Buf` holds f32 or bf16 values ([`Dtype`]), `Ids` holds i32 token ids and positions. Buffers
/// are created and read back only through the backend (as f32). Ops are enqueued in program
/// order; `synchronize` waits for them.
///
/// Buffer types (`--precision`, see storage.rs): in each op the buffers below marked f32 are f32
/// in every mode, and all its other buffers are compute-typed and share one type `T` (f32 or
/// bf16), which picks the kernel; values are read as f32, computed in f32 and rounded to `T` when
/// written. Exceptions: `copy` converts between any two types, `fill`, `scale_inplace`, `rope_*`
/// take a buffer of either type, `matmul` may write an f32 `out` from `T` operands, and
/// `sum_squares` and `adamw` read a `grad`/`x` of either type.
///
/// | op | f32 in every mode |
/// |----|-------------------|
/// | `layernorm_*`, `rmsnorm_*` | `mean`, `rstd` |
/// | `attention_fwd`, `attention_bwd`, `attention_decode_fwd` | `lse` |
/// | `cross_entropy_*` | `losses`, `dlosses`, `lse` |
/// | `logprob_gather_*` | `logp`, `entropy`, `lse`, `dlogp`, `dentropy` |
/// | `sum_squares` | `acc` |
/// | `adamw` | `param` (the master weights), `m`, `v`, `norm_sq` |
/// | `kl_penalty_*`, `ppo_loss_fwd_bwd`, `gae`, `masked_whiten`, `ranking_loss`, `preference_loss_fwd_bwd` | every buffer |
pub trait Backend: Send + Sync {
    type Buf: Send + Sync;
    type Ids: Send + Sync;

    /// Short name used on the command line (`cpu`, `cuda`, `wgpu`).
    fn name(&self) -> &'static str;
    /// A one-line description of the device.
    fn device_description(&self) -> String;
    /// The precision matmul operands are rounded to (`--matmul-precision`; f32 unless set).
    fn matmul_precision(&self) -> MatmulPrecision {
        MatmulPrecision::F32
    }
    /// Sets the precision of the matmul operands of every later `matmul` (accumulation stays
    /// f32); a precision this backend or device cannot compute is an error naming the flag.
    fn set_matmul_precision(&mut self, p: MatmulPrecision) -> Result<()> {
        super::precision::only_f32(self.name(), p)
    }

    // ---- storage precision (`--precision`, see storage.rs) ------------------------------------
    /// The element type of [`Storage::Compute`] buffers (f32 unless set).
    fn compute_dtype(&self) -> Dtype {
        Dtype::F32
    }
    /// The compute type `--precision auto` picks on this device.
    fn preferred_compute_dtype(&self) -> Dtype {
        Dtype::F32
    }
    /// Sets the type of later [`Storage::Compute`] allocations; a type this backend or device
    /// cannot store is an error naming the flag.
    fn set_compute_dtype(&mut self, d: Dtype) -> Result<()> {
        super::storage::only_f32(self.name(), d)
    }
    /// A zero-filled buffer of `len` values of the type `s` stands for.
    fn alloc_as(&self, len: usize, s: Storage) -> Result<Self::Buf> {
        let _ = s;
        self.alloc(len)
    }
    /// The element type of `buf`.
    fn dtype(&self, buf: &Self::Buf) -> Dtype {
        let _ = buf;
        Dtype::F32
    }

    // ---- memory ------------------------------------------------------------------------------
    /// A zero-filled buffer of `len` f32 values.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;
    /// Overwrites the first `data.len()` values of `buf` (rounded to bf16 in a bf16 buffer).
    fn write(&self, buf: &mut Self::Buf, data: &[f32]) -> Result<()>;
    /// Reads the whole buffer back as f32 (waits for pending ops).
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    fn len(&self, buf: &Self::Buf) -> usize;
    fn alloc_ids(&self, len: usize) -> Result<Self::Ids>;
    fn upload_ids(&self, data: &[i32]) -> Result<Self::Ids>;
    fn write_ids(&self, buf: &mut Self::Ids, data: &[i32]) -> Result<()>;
    fn download_ids(&self, buf: &Self::Ids) -> Result<Vec<i32>>;
    fn synchronize(&self) -> Result<()>;

    // ---- recorded launch sequences (CUDA graphs) ------------------------------------------------
    /// Runs the launches `f` makes, possibly as a recording: a backend that records (CUDA: a graph
    /// captured from its stream) keeps the recording under `key` and later replays it *instead of
    /// calling `f`*. So `f` must make the same launches on the same buffers with the same params
    /// every time it is called with a key, with no host sync, read-back, upload or allocation
    /// inside: `key` has to cover everything they depend on (buffer identities, shapes, params).
    /// Returns whether the launches ran as a replayed recording. The default just calls `f`.
    fn replay(&self, key: u64, f: &mut dyn FnMut() -> Result<()>) -> Result<bool> {
        let _ = key;
        f()?;
        Ok(false)
    }
    /// Runs `tasks`, independent phases of work, possibly overlapping on the device (CUDA: each
    /// on a stream of its own, forked from and joined back into the main stream without a host
    /// wait; `RLHF_CUDA_STREAMS=0` turns that off). The results are those of running the tasks in
    /// order, provided that no task writes a buffer another task reads or writes, and that no task
    /// drops a buffer made before the call (each task may allocate, use and drop its own).
    /// Regions do not nest, and `replay` inside a task runs plainly. Stops at the first task that
    /// fails. The default runs them in order.
    fn concurrently(&self, tasks: &mut [&mut dyn FnMut() -> Result<()>]) -> Result<()> {
        tasks.iter_mut().try_for_each(|t| t())
    }
    /// A value that tells the device memory of `buf` apart from that of every other live buffer
    /// (the device address on CUDA), for the keys of [`Backend::replay`]. Backends whose `replay`
    /// never records need none: the default is 0.
    fn buffer_key(&self, buf: &Self::Buf) -> u64 {
        let _ = buf;
        0
    }

    // ---- element-wise --------------------------------------------------------------------------
    /// `out[i] = value`
    fn fill(&self, out: &mut Self::Buf, value: f32, p: ElementwiseParams) -> Result<()>;
    /// `out[i] = inp[i]`
    fn copy(&self, out: &mut Self::Buf, inp: &Self::Buf, p: ElementwiseParams) -> Result<()>;
    /// `out[i] = a[i] + b[i]` (the residual stream)
    fn add(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, p: ElementwiseParams) -> Result<()>;
    /// `acc[i] += x[i]` (residual gradients, gradient accumulation)
    fn add_inplace(&self, acc: &mut Self::Buf, x: &Self::Buf, p: ElementwiseParams) -> Result<()>;
    /// `x[i] *= s`
    fn scale_inplace(&self, x: &mut Self::Buf, s: f32, p: ElementwiseParams) -> Result<()>;

    // ---- embedding ---------------------------------------------------------------------------
    fn embedding_fwd(&self, out: &mut Self::Buf, ids: &Self::Ids, table: &Self::Buf, p: EmbeddingParams) -> Result<()>;
    /// `dtable[ids[i], :] += dout[i, :]`
    fn embedding_bwd(&self, dtable: &mut Self::Buf, dout: &Self::Buf, ids: &Self::Ids, p: EmbeddingParams) -> Result<()>;

    // ---- normalisation -----------------------------------------------------------------------
    /// `out = (inp - mean) * rstd * weight + bias`; saves mean and rstd `[n]`.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_fwd(
        &self,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        weight: &Self::Buf,
        bias: &Self::Buf,
        p: NormParams,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn layernorm_bwd(
        &self,
        dinp: &mut Self::Buf,
        dweight: &mut Self::Buf,
        dbias: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        weight: &Self::Buf,
        p: NormParams,
    ) -> Result<()>;
    /// `out = inp * rstd * weight` with `rstd = 1 / sqrt(mean(inp^2) + eps)`; saves rstd `[n]`.
    fn rmsnorm_fwd(&self, out: &mut Self::Buf, rstd: &mut Self::Buf, inp: &Self::Buf, weight: &Self::Buf, p: NormParams) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_bwd(
        &self,
        dinp: &mut Self::Buf,
        dweight: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        rstd: &Self::Buf,
        weight: &Self::Buf,
        p: NormParams,
    ) -> Result<()>;

    // ---- matmul and bias -----------------------------------------------------------------------
    /// See [`MatmulParams`]. Backward is two more calls with transposes.
    fn matmul(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, p: MatmulParams) -> Result<()>;
    /// `out[i, j] += bias[j]`
    fn bias_add(&self, out: &mut Self::Buf, bias: &Self::Buf, p: BiasParams) -> Result<()>;
    /// `dbias[j] += sum_i dout[i, j]`
    fn bias_bwd(&self, dbias: &mut Self::Buf, dout: &Self::Buf, p: BiasParams) -> Result<()>;

    // ---- activations ---------------------------------------------------------------------------
    /// GELU with the tanh approximation (GPT-2's `gelu_new`).
    fn gelu_fwd(&self, out: &mut Self::Buf, inp: &Self::Buf, p: ElementwiseParams) -> Result<()>;
    fn gelu_bwd(&self, dinp: &mut Self::Buf, dout: &Self::Buf, inp: &Self::Buf, p: ElementwiseParams) -> Result<()>;
    /// `out = silu(gate) * up`
    fn swiglu_fwd(&self, out: &mut Self::Buf, gate: &Self::Buf, up: &Self::Buf, p: ElementwiseParams) -> Result<()>;
    fn swiglu_bwd(&self, dgate: &mut Self::Buf, dup: &mut Self::Buf, dout: &Self::Buf, gate: &Self::Buf, up: &Self::Buf, p: ElementwiseParams) -> Result<()>;

    // ---- positions and attention ---------------------------------------------------------------
    /// Rotates in place, see [`RopeParams`].
    fn rope_fwd(&self, x: &mut Self::Buf, positions: &Self::Ids, p: RopeParams) -> Result<()>;
    /// The transpose of `rope_fwd` (a rotation by the negative angle), in place on the gradient.
    fn rope_bwd(&self, dx: &mut Self::Buf, positions: &Self::Ids, p: RopeParams) -> Result<()>;
    /// See [`AttentionParams`].
    #[allow(clippy::too_many_arguments)]
    fn attention_fwd(&self, out: &mut Self::Buf, lse: &mut Self::Buf, q: &Self::Buf, k: &Self::Buf, v: &Self::Buf, p: AttentionParams) -> Result<()>;
    /// Gradient with respect to the fused projection (training layout, `q`, `k`, `v` all in
    /// `qkv`); `dqkv` is overwritten. Recomputes the probabilities from `lse`.
    #[allow(clippy::too_many_arguments)]
    fn attention_bwd(&self, dqkv: &mut Self::Buf, dout: &Self::Buf, out: &Self::Buf, lse: &Self::Buf, qkv: &Self::Buf, p: AttentionParams) -> Result<()>;
    /// See [`KvCacheParams`].
    fn kv_cache_write(&self, cache: &mut Self::Buf, qkv: &Self::Buf, p: KvCacheParams) -> Result<()>;
    /// See [`ScatterParams`]: `out[rows[i]] = inp[i]` row-wise.
    fn scatter_rows(&self, out: &mut Self::Buf, inp: &Self::Buf, rows: &Self::Ids, p: ScatterParams) -> Result<()>;
    /// See [`AttentionDecodeParams`]: one query per row against its slot's cached keys.
    #[allow(clippy::too_many_arguments)]
    fn attention_decode_fwd(
        &self,
        out: &mut Self::Buf,
        lse: &mut Self::Buf,
        q: &Self::Buf,
        cache: &Self::Buf,
        rows: &Self::Ids,
        p: AttentionDecodeParams,
    ) -> Result<()>;

    // ---- loss and sampling ---------------------------------------------------------------------
    /// `losses[i] = logsumexp(logits[i]) - logits[i, targets[i]]` (0 where targets[i] < 0);
    /// saves `lse[i]`. `-losses[i]` is the log-probability of the target.
    fn cross_entropy_fwd(&self, losses: &mut Self::Buf, lse: &mut Self::Buf, logits: &Self::Buf, targets: &Self::Ids, p: CrossEntropyParams) -> Result<()>;
    /// `dlogits[i] = dlosses[i] * (softmax(logits[i]) - onehot(targets[i]))`, 0 where targets[i] < 0.
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_bwd(
        &self,
        dlogits: &mut Self::Buf,
        dlosses: &Self::Buf,
        logits: &Self::Buf,
        lse: &Self::Buf,
        targets: &Self::Ids,
        p: CrossEntropyParams,
    ) -> Result<()>;
    /// See [`SampleParams`]; writes one token id per row, drawn with the step `steps[p.step_at]`.
    fn sample(&self, out: &mut Self::Ids, logits: &Self::Buf, steps: &Self::Ids, p: SampleParams) -> Result<()>;
    /// See [`DecodeAdvanceParams`]: appends `sampled` to the slots' histories, updates their
    /// state, counts the sampling step up and writes the next decode step's inputs, all on the device.
    #[allow(clippy::too_many_arguments)]
    fn decode_advance(
        &self,
        state: &mut Self::Ids,
        history: &mut Self::Ids,
        tokens: &mut Self::Ids,
        positions: &mut Self::Ids,
        cache_rows: &mut Self::Ids,
        record_rows: &mut Self::Ids,
        sampled: &Self::Ids,
        stop_ids: &Self::Ids,
        p: DecodeAdvanceParams,
    ) -> Result<()>;

    // ---- fused RL ops --------------------------------------------------------------------------
    /// See [`LogprobParams`]: `logp [n]`, `entropy [n]` and the saved `lse [n]` from
    /// `h [n, c]`, `targets [n]` and `w [v, c]`, streaming `w` in chunks.
    #[allow(clippy::too_many_arguments)]
    fn logprob_gather_fwd(
        &self,
        logp: &mut Self::Buf,
        entropy: &mut Self::Buf,
        lse: &mut Self::Buf,
        h: &Self::Buf,
        targets: &Self::Ids,
        w: &Self::Buf,
        p: LogprobParams,
    ) -> Result<()>;
    /// Backward of `logprob_gather_fwd` from upstream `dlogp [n]` and `dentropy [n]`, recomputing
    /// each chunk's logits: with `lp = z - lse`, `p = exp(lp)`, `H = entropy`,
    /// `dz_ij = dlogp_i (onehot_ij - p_ij) - dentropy_i p_ij (lp_ij + H_i)`, `dlogits = dz / temperature`;
    /// `dh = dlogits @ w` (overwritten), `dw += dlogits^T @ h` (accumulated).
    #[allow(clippy::too_many_arguments)]
    fn logprob_gather_bwd(
        &self,
        dh: &mut Self::Buf,
        dw: &mut Self::Buf,
        dlogp: &Self::Buf,
        dentropy: &Self::Buf,
        h: &Self::Buf,
        targets: &Self::Ids,
        lse: &Self::Buf,
        entropy: &Self::Buf,
        w: &Self::Buf,
        p: LogprobParams,
    ) -> Result<()>;
    /// See [`KlParams`]: `kl[i] = mask[i] * k(logp[i] - ref_logp[i])`.
    fn kl_penalty_fwd(&self, kl: &mut Self::Buf, logp: &Self::Buf, ref_logp: &Self::Buf, mask: &Self::Buf, p: KlParams) -> Result<()>;
    /// `dlogp[i] = dkl[i] * mask[i] * k'(r_i)` (overwritten) with `k1' = 1`, `k2' = r`,
    /// `k3' = 1 - exp(-r)`; the reference is frozen and gets no gradient.
    #[allow(clippy::too_many_arguments)]
    fn kl_penalty_bwd(&self, dlogp: &mut Self::Buf, dkl: &Self::Buf, logp: &Self::Buf, ref_logp: &Self::Buf, mask: &Self::Buf, p: KlParams) -> Result<()>;
    /// See [`PpoParams`]. Writes the gradients of the aggregated loss with respect to `logp`,
    /// the values and the entropy (`[n]` each, overwritten) and adds the [`ppo_stat`] sums to
    /// `stats [ppo_stat::COUNT]` (accumulated, so micro-batches sum into one buffer: fill it with
    /// 0 first). `values`, `old_values`, `returns` and `dvalues` come all together or not at all
    /// (no value loss); `entropy` with `dentropy` (no entropy bonus without them); `ref_logp`
    /// enables the KL-in-loss term.
    #[allow(clippy::too_many_arguments)]
    fn ppo_loss_fwd_bwd(
        &self,
        dlogp: &mut Self::Buf,
        dvalues: Option<&mut Self::Buf>,
        dentropy: Option<&mut Self::Buf>,
        stats: &mut Self::Buf,
        logp: &Self::Buf,
        old_logp: &Self::Buf,
        advantages: &Self::Buf,
        mask: &Self::Buf,
        values: Option<&Self::Buf>,
        old_values: Option<&Self::Buf>,
        returns: Option<&Self::Buf>,
        entropy: Option<&Self::Buf>,
        ref_logp: Option<&Self::Buf>,
        p: PpoParams,
    ) -> Result<()>;

    // ---- advantages --------------------------------------------------------------------------
    /// See [`GaeParams`]: `advantages [b, t]` and `returns [b, t]` (overwritten) from `rewards`,
    /// `values` and `mask` (`[b, t]` each).
    #[allow(clippy::too_many_arguments)]
    fn gae(&self, advantages: &mut Self::Buf, returns: &mut Self::Buf, rewards: &Self::Buf, values: &Self::Buf, mask: &Self::Buf, p: GaeParams) -> Result<()>;
    /// See [`WhitenParams`]: whitens `x [n]` in place over the entries where `mask [n]` is set and
    /// writes the mean, std and count before whitening to `stats [whiten_stat::LEN]` (overwritten).
    fn masked_whiten(&self, x: &mut Self::Buf, stats: &mut Self::Buf, mask: &Self::Buf, p: WhitenParams) -> Result<()>;

    // ---- optimiser -----------------------------------------------------------------------------
    /// `acc[0] += sum_i x[i]^2` (the global gradient norm, accumulated over tensors on the device)
    fn sum_squares(&self, acc: &mut Self::Buf, x: &Self::Buf, p: ElementwiseParams) -> Result<()>;
    // ---- reward model --------------------------------------------------------------------------
    /// See [`RankingParams`]. `dscores` (overwritten) is the gradient of the weighted loss;
    /// `stats` accumulates `[weighted loss, correctly ordered pairs, pairs, sum of s_i - s_j]`.
    #[allow(clippy::too_many_arguments)]
    fn ranking_loss(
        &self,
        dscores: &mut Self::Buf,
        stats: &mut Self::Buf,
        scores: &Self::Buf,
        starts: &Self::Ids,
        margins: &Self::Buf,
        p: RankingParams,
    ) -> Result<()>;

    // ---- preference optimisation ---------------------------------------------------------------
    /// See [`PreferenceParams`]: DPO / cDPO / IPO / SimPO loss of `pairs` pairs from per-token
    /// `logp [2 pairs, t]` (chosen rows, then rejected rows), `mask [2 pairs, t]` and the cached
    /// reference sums `ref_sums [2 pairs]`; writes `dlogp [2 pairs, t]` (overwritten) and adds the
    /// [`preference_stat`] sums to `stats` (accumulated: fill it with 0 first).
    #[allow(clippy::too_many_arguments)]
    fn preference_loss_fwd_bwd(
        &self,
        dlogp: &mut Self::Buf,
        stats: &mut Self::Buf,
        logp: &Self::Buf,
        mask: &Self::Buf,
        ref_sums: &Self::Buf,
        p: PreferenceParams,
    ) -> Result<()>;

    /// See [`AdamWParams`]: updates `param`, `m` and `v` (`[n]` each) from `grad [n]` (read only:
    /// the clipping factor is applied on the fly) and the squared global norm `norm_sq [1]`; a
    /// non-finite `norm_sq[0]` leaves everything untouched, so the host needs no read-back before it.
    fn adamw(&self, param: &mut Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf, grad: &Self::Buf, norm_sq: &Self::Buf, p: AdamWParams) -> Result<()>;

    // ---- multi-tensor optimiser forms (one launch for a whole model where the backend has one) --
    /// `acc[0] += sum over the tensors of sum_i x[i]^2`. The default is [`Backend::sum_squares`]
    /// per tensor (the reference); CUDA runs one launch over all of them (and one to add up).
    fn sum_squares_many(&self, acc: &mut Self::Buf, xs: &[Self::Buf]) -> Result<()> {
        sum_squares_each(self, acc, xs)
    }
    /// [`Backend::adamw`] over every slot (`p` with each slot's length and weight decay), and
    /// `out = param` (rounded to `out`'s type: the compute weights of f32 master weights) where a
    /// slot has an `out`. The default is `adamw` then `copy` per slot (the reference); CUDA runs
    /// one launch for all slots.
    fn adamw_many(&self, slots: &mut [AdamWSlot<'_, Self::Buf>], norm_sq: &Self::Buf, p: AdamWParams) -> Result<()> {
        adamw_each(self, slots, norm_sq, p)
    }

    // ---- matmuls with fused epilogues (one call where the backend fuses, else the ops in turn) --
    /// `out (+)= alpha op(a) op(b)`, then `out[i, j] += bias[j]`: [`Backend::matmul`] then
    /// [`Backend::bias_add`] (the default, the reference). CUDA folds the bias into the product's
    /// epilogue (cuBLASLt). `p.batch` is 1.
    fn matmul_bias(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, bias: &Self::Buf, p: MatmulParams) -> Result<()> {
        matmul_bias_unfused(self, out, a, b, bias, p)
    }
    /// `pre = alpha op(a) op(b) (+ bias[j])` and `out = gelu(pre)` (`pre` is what the GELU
    /// backward needs). The default is `matmul`, `bias_add`, `gelu_fwd` (the reference); CUDA
    /// writes both from the product's epilogue. `p` neither accumulates nor batches.
    fn matmul_bias_gelu(
        &self,
        out: &mut Self::Buf,
        pre: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        bias: Option<&Self::Buf>,
        p: MatmulParams,
    ) -> Result<()> {
        matmul_bias_gelu_unfused(self, out, pre, a, b, bias, p)
    }
    /// `dinp = gelu'(pre) * (alpha op(a) op(b))`: the GELU backward applied to the product that
    /// makes its incoming gradient. The default writes that product into `dact` (`[m, n]`), then
    /// runs `gelu_bwd` (the reference); CUDA applies the GELU gradient in the product's epilogue
    /// and leaves `dact` as it was. `p` neither accumulates nor batches.
    fn matmul_gelu_bwd(&self, dinp: &mut Self::Buf, dact: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, pre: &Self::Buf, p: MatmulParams) -> Result<()> {
        matmul_gelu_bwd_unfused(self, dinp, dact, a, b, pre, p)
    }
}

/// [`Backend::matmul_bias`] as `matmul` then `bias_add` (the default and reference).
pub fn matmul_bias_unfused<B: Backend + ?Sized>(be: &B, out: &mut B::Buf, a: &B::Buf, b: &B::Buf, bias: &B::Buf, p: MatmulParams) -> Result<()> {
    be.matmul(out, a, b, p)?;
    be.bias_add(out, bias, BiasParams { n: p.m * p.batch, c: p.n })
}

/// [`Backend::matmul_bias_gelu`] as `matmul`, `bias_add` and `gelu_fwd` (the default and reference).
pub fn matmul_bias_gelu_unfused<B: Backend + ?Sized>(
    be: &B,
    out: &mut B::Buf,
    pre: &mut B::Buf,
    a: &B::Buf,
    b: &B::Buf,
    bias: Option<&B::Buf>,
    p: MatmulParams,
) -> Result<()> {
    be.matmul(pre, a, b, p)?;
    if let Some(bias) = bias {
        be.bias_add(pre, bias, BiasParams { n: p.m * p.batch, c: p.n })?;
    }
    be.gelu_fwd(out, pre, ElementwiseParams::new(p.m as usize * p.n as usize * p.batch as usize)?)
}

/// [`Backend::matmul_gelu_bwd`] as `matmul` into `dact` then `gelu_bwd` (the default and reference).
pub fn matmul_gelu_bwd_unfused<B: Backend + ?Sized>(
    be: &B,
    dinp: &mut B::Buf,
    dact: &mut B::Buf,
    a: &B::Buf,
    b: &B::Buf,
    pre: &B::Buf,
    p: MatmulParams,
) -> Result<()> {
    be.matmul(dact, a, b, p)?;
    be.gelu_bwd(dinp, dact, pre, ElementwiseParams::new(p.m as usize * p.n as usize * p.batch as usize)?)
}

/// [`Backend::sum_squares_many`] as one `sum_squares` per tensor (the default and reference).
pub fn sum_squares_each<B: Backend + ?Sized>(be: &B, acc: &mut B::Buf, xs: &[B::Buf]) -> Result<()> {
    xs.iter().try_for_each(|x| be.sum_squares(acc, x, ElementwiseParams::new(be.len(x))?))
}

/// [`Backend::adamw_many`] as `adamw` then `copy` per slot (the default and reference).
pub fn adamw_each<B: Backend + ?Sized>(be: &B, slots: &mut [AdamWSlot<'_, B::Buf>], norm_sq: &B::Buf, p: AdamWParams) -> Result<()> {
    for s in slots.iter_mut() {
        let n = be.len(s.param);
        be.adamw(s.param, s.m, s.v, s.grad, norm_sq, AdamWParams { n: n as u32, weight_decay: s.weight_decay, ..p })?;
        if let Some(out) = s.out.as_deref_mut() {
            be.copy(out, s.param, ElementwiseParams::new(n)?)?;
        }
    }
    Ok(())
}

/// One tensor of [`Backend::adamw_many`]: the f32 weights it updates (the master weights in a
/// reduced-precision mode) with their moments, its gradient (read only), where the updated weights
/// go in the compute type (`None`: nowhere else), and its weight decay.
pub struct AdamWSlot<'a, Buf> {
    pub param: &'a mut Buf,
    pub m: &'a mut Buf,
    pub v: &'a mut Buf,
    pub grad: &'a Buf,
    pub out: Option<&'a mut Buf>,
    pub weight_decay: f32,
}

/// Every op of the list, by the name it has in all backends (CPU function, CUDA kernel, WGSL entry
/// point). Tests use this list to check that every op has a parity test and a gradient check.
pub const OP_NAMES: &[&str] = &[
    "fill",
    "copy",
    "add",
    "add_inplace",
    "scale_inplace",
    "embedding_fwd",
    "embedding_bwd",
    "layernorm_fwd",
    "layernorm_bwd",
    "rmsnorm_fwd",
    "rmsnorm_bwd",
    "matmul",
    "bias_add",
    "bias_bwd",
    "gelu_fwd",
    "gelu_bwd",
    "swiglu_fwd",
    "swiglu_bwd",
    "rope_fwd",
    "rope_bwd",
    "attention_fwd",
    "attention_bwd",
    "kv_cache_write",
    "scatter_rows",
    "attention_decode_fwd",
    "cross_entropy_fwd",
    "cross_entropy_bwd",
    "sample",
    "decode_advance",
    "logprob_gather_fwd",
    "logprob_gather_bwd",
    "kl_penalty_fwd",
    "kl_penalty_bwd",
    "ppo_loss_fwd_bwd",
    "gae",
    "masked_whiten",
    "sum_squares",
    "adamw",
    "ranking_loss",
    "preference_loss_fwd_bwd",
];

//! THE op list. Every kernel op of `rlhf` is declared once here, forward and backward, in the
//! [`op_list!`](crate::op_list) macro below: one block per op family (the `kernels/<family>.cu`,
//! `shaders/<family>.wgsl` and `src/backend/<backend>/<family>.rs` file names) with the ops'
//! signatures. Everything else that lists ops or families is generated from that block:
//! - the [`Backend`] trait (every op a method) that model, generation and training code calls;
//! - one trait per family in [`family`] (`family::Layernorm`, ...), and the blanket
//!   `impl Backend` that forwards to them (`declare.rs`). The CPU backend implements each in its
//!   `<family>.rs`; CUDA and wgpu get theirs generated from the launchers of the same names in
//!   their `<family>.rs` (`impl_families_by_functions`);
//! - [`OP_NAMES`] and [`FAMILIES`], which the test suites check their coverage against;
//! - the CUDA kernel sources embedded per family, the backends' family modules and the
//!   `DeviceRepr` impls of the params structs (through [`op_list!`](crate::op_list) callbacks).
//!
//! So a missing op, family file or kernel file is a build error, never a failure at run time.
//!
//! Conventions (the same in Rust, CUDA C and WGSL):
//! - argument order: outputs, what is saved for backward, inputs, weights, then one params struct
//!   with the dimensions;
//! - parameter gradients accumulate (`+=`), activation gradients overwrite (`=`);
//! - buffers are owned by the backend and stay on its device; ops may run asynchronously, and the
//!   only way back to the host is [`Backend::download`] (used for a few logging scalars per step);
//! - every params struct is `#[repr(C)]` plain data so that GPU backends can pass it as a uniform;
//! - matrices are row-major; `[B, T, C]` means B sequences of T tokens of C channels.
//!
//! The declaration's grammar, per family: `name: Trait [ParamsStructs] { ops }`, and per op a
//! method signature `fn op(&self, args) -> Result<()>`, then optionally `in f32` (the op has no
//! compute-typed buffer: every float buffer is f32 in every mode, or it has none; see the table in
//! [`Backend`]) and `= reference` (a composition of other ops, the default every backend gets
//! unless it has a fused form; such an op needs no kernel of its own), then `;`.

mod declare;
pub mod device;

pub(crate) use declare::{call_family_function, family_modules, impl_families_by_functions, impl_params_repr};

// the params structs of each family (the `activation` family's ops take `ElementwiseParams`);
// private modules, so that `use ops::*` brings the structs and no module names
mod advantage;
mod attention;
mod cross_entropy;
mod decode;
mod elementwise;
mod embedding;
mod layernorm;
mod logprob_gather;
mod matmul;
mod optimizer;
mod preference;
mod reward;
mod rl_losses;
mod rope;
mod sample;

pub use super::precision::MatmulPrecision;
pub use super::storage::{Dtype, Storage};
pub use advantage::{group_estimator, whiten_stat, GaeParams, GroupAdvantageParams, RewardNormParams, WhitenParams};
pub use attention::{AttentionDecodeParams, AttentionParams, KvCacheParams, ScatterParams};
pub use cross_entropy::CrossEntropyParams;
pub use decode::{decode_finish, DecodeAdvanceParams};
pub use device::{adamw_each, matmul_bias_gelu_unfused, matmul_bias_unfused, matmul_gelu_bwd_unfused, sum_squares_each, AdamWSlot};
// not glob-exported: their methods would clash with `Backend`'s in callers that import `ops::*`
use device::{Buffers, Device};
pub use elementwise::ElementwiseParams;
pub use embedding::EmbeddingParams;
pub use layernorm::NormParams;
pub use logprob_gather::{LogprobParams, LOGPROB_CHUNK};
pub use matmul::{BiasParams, MatmulParams};
pub use optimizer::AdamWParams;
pub use preference::{preference_loss, preference_stat, PreferenceParams};
pub use reward::RankingParams;
pub use rl_losses::{ppo_stat, KlParams, PpoParams};
pub use rope::RopeParams;
pub use sample::{SampleParams, MAX_TOP_P_VOCAB};

/// One op of the list, as declared in [`op_list!`](crate::op_list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// The name in every backend: CPU function, CUDA kernel, WGSL entry point, `Backend` method.
    pub name: &'static str,
    /// Whether the op has compute-typed buffers (bf16 under `--precision bf16`); `false` for an op
    /// declared `in f32`.
    pub compute: bool,
    /// The composition of other ops that is its default and reference (`None`: a kernel op).
    pub reference: Option<&'static str>,
}

/// One op family: its name (of `kernels/<name>.cu`, `shaders/<name>.wgsl` and every backend's
/// `<name>.rs`), its ops in declaration order and its params structs.
#[derive(Clone, Copy, Debug)]
pub struct OpFamily {
    pub name: &'static str,
    pub ops: &'static [Op],
    pub params: &'static [&'static str],
}

impl OpFamily {
    /// The ops with a kernel (or shader entry point) of their own, i.e. without a reference.
    pub fn kernel_ops(&self) -> impl Iterator<Item = &'static str> {
        self.ops.iter().filter(|o| o.reference.is_none()).map(|o| o.name)
    }
}

/// Every op name of all families, in declaration order (the default-method ops included).
pub const OP_NAMES: &[&str] = &op_names::<{ op_count() }>();

/// The op with this name, if it is declared.
pub fn op(name: &str) -> Option<&'static Op> {
    FAMILIES.iter().flat_map(|f| f.ops).find(|o| o.name == name)
}

const fn op_count() -> usize {
    let (mut n, mut i) = (0, 0);
    while i < FAMILIES.len() {
        n += FAMILIES[i].ops.len();
        i += 1;
    }
    n
}

const fn op_names<const N: usize>() -> [&'static str; N] {
    let mut out = [""; N];
    let (mut k, mut i) = (0, 0);
    while i < FAMILIES.len() {
        let mut j = 0;
        while j < FAMILIES[i].ops.len() {
            out[k] = FAMILIES[i].ops[j].name;
            k += 1;
            j += 1;
        }
        i += 1;
    }
    out
}

/// The op list. `op_list!(path::to::consumer)` expands to `consumer! { [] <the declaration> }`,
/// `op_list!(consumer [args])` to `consumer! { [args] <the declaration> }`: every list of ops or
/// families in the crate and its tests is a consumer of this one declaration.
#[macro_export]
macro_rules! op_list {
    ($($then:ident)::+ $([$($args:tt)*])?) => {
        $($then)::+! { [$($($args)*)?]
            /// GELU (tanh approximation) and SwiGLU.
            activation: Activation [] {
                /// GELU with the tanh approximation (GPT-2's `gelu_new`).
                fn gelu_fwd(&self, out: &mut Self::Buf, inp: &Self::Buf, p: ElementwiseParams) -> Result<()>;
                fn gelu_bwd(&self, dinp: &mut Self::Buf, dout: &Self::Buf, inp: &Self::Buf, p: ElementwiseParams) -> Result<()>;
                /// `out = silu(gate) * up`
                fn swiglu_fwd(&self, out: &mut Self::Buf, gate: &Self::Buf, up: &Self::Buf, p: ElementwiseParams) -> Result<()>;
                fn swiglu_bwd(&self, dgate: &mut Self::Buf, dup: &mut Self::Buf, dout: &Self::Buf, gate: &Self::Buf, up: &Self::Buf, p: ElementwiseParams) -> Result<()>;
            }
            /// PPO's advantage math.
            advantage: Advantage [GaeParams, WhitenParams, GroupAdvantageParams, RewardNormParams] {
                /// See [`GaeParams`]: `advantages [b, t]` and `returns [b, t]` (overwritten) from `rewards`,
                /// `values` and `mask` (`[b, t]` each).
                #[allow(clippy::too_many_arguments)]
                fn gae(&self, advantages: &mut Self::Buf, returns: &mut Self::Buf, rewards: &Self::Buf, values: &Self::Buf, mask: &Self::Buf, p: GaeParams) -> Result<()> in f32;
                /// See [`WhitenParams`]: whitens `x [n]` in place over the entries where `mask [n]` is set and
                /// writes the mean, std and count before whitening to `stats [whiten_stat::LEN]` (overwritten).
                fn masked_whiten(&self, x: &mut Self::Buf, stats: &mut Self::Buf, mask: &Self::Buf, p: WhitenParams) -> Result<()> in f32;
                /// See [`GroupAdvantageParams`]: `advantages [b, t]` (overwritten) from one reward and one
                /// summed KL per sequence (`rewards [b]`, `seq_kl [b]`) and `mask [b, t]`.
                fn group_advantages(&self, advantages: &mut Self::Buf, rewards: &Self::Buf, seq_kl: &Self::Buf, mask: &Self::Buf, p: GroupAdvantageParams) -> Result<()> in f32;
                /// See [`RewardNormParams`]: `out [n]` (overwritten) from `scores [n]`.
                fn normalize_rewards(&self, out: &mut Self::Buf, scores: &Self::Buf, p: RewardNormParams) -> Result<()> in f32;
            }
            /// Attention, the KV cache and decode attention.
            attention: Attention [AttentionParams, KvCacheParams, ScatterParams, AttentionDecodeParams] {
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
            }
            /// Softmax cross-entropy.
            cross_entropy: CrossEntropy [CrossEntropyParams] {
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
            }
            /// The rollout engine's bookkeeping between decode steps.
            decode: Decode [DecodeAdvanceParams] {
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
                ) -> Result<()> in f32;
            }
            /// Element-wise ops.
            elementwise: Elementwise [ElementwiseParams] {
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
            }
            /// Token (and learned position) embeddings.
            embedding: Embedding [EmbeddingParams] {
                fn embedding_fwd(&self, out: &mut Self::Buf, ids: &Self::Ids, table: &Self::Buf, p: EmbeddingParams) -> Result<()>;
                /// `dtable[ids[i], :] += dout[i, :]`
                fn embedding_bwd(&self, dtable: &mut Self::Buf, dout: &Self::Buf, ids: &Self::Ids, p: EmbeddingParams) -> Result<()>;
            }
            /// LayerNorm and RMSNorm.
            layernorm: Layernorm [NormParams] {
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
            }
            /// The LM head streamed over the vocabulary: log-probs and entropy of chosen tokens.
            logprob_gather: LogprobGather [LogprobParams] {
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
            }
            /// Matmuls, bias and the matmuls with fused epilogues (one call where the backend fuses,
            /// else the ops in turn).
            matmul: Matmul [MatmulParams, BiasParams] {
                /// See [`MatmulParams`]. Backward is two more calls with transposes.
                fn matmul(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, p: MatmulParams) -> Result<()>;
                /// `out[i, j] += bias[j]`
                fn bias_add(&self, out: &mut Self::Buf, bias: &Self::Buf, p: BiasParams) -> Result<()>;
                /// `dbias[j] += sum_i dout[i, j]`
                fn bias_bwd(&self, dbias: &mut Self::Buf, dout: &Self::Buf, p: BiasParams) -> Result<()>;
                /// `out (+)= alpha op(a) op(b)`, then `out[i, j] += bias[j]`: [`Backend::matmul`] then
                /// [`Backend::bias_add`] (the default, the reference). CUDA folds the bias into the product's
                /// epilogue (cuBLASLt). `p.batch` is 1.
                fn matmul_bias(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, bias: &Self::Buf, p: MatmulParams) -> Result<()> = matmul_bias_unfused;
                /// `pre = alpha op(a) op(b) (+ bias[j])` and `out = gelu(pre)` (`pre` is what the GELU
                /// backward needs). The default is `matmul`, `bias_add`, `gelu_fwd` (the reference); CUDA
                /// writes both from the product's epilogue. `p` neither accumulates nor batches.
                #[allow(clippy::too_many_arguments)]
                fn matmul_bias_gelu(
                    &self,
                    out: &mut Self::Buf,
                    pre: &mut Self::Buf,
                    a: &Self::Buf,
                    b: &Self::Buf,
                    bias: Option<&Self::Buf>,
                    p: MatmulParams,
                ) -> Result<()> = matmul_bias_gelu_unfused;
                /// `dinp = gelu'(pre) * (alpha op(a) op(b))`: the GELU backward applied to the product that
                /// makes its incoming gradient. The default writes that product into `dact` (`[m, n]`), then
                /// runs `gelu_bwd` (the reference); CUDA applies the GELU gradient in the product's epilogue
                /// and leaves `dact` as it was. `p` neither accumulates nor batches.
                #[allow(clippy::too_many_arguments)]
                fn matmul_gelu_bwd(&self, dinp: &mut Self::Buf, dact: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, pre: &Self::Buf, p: MatmulParams) -> Result<()> = matmul_gelu_bwd_unfused;
            }
            /// The optimiser: the global gradient norm and AdamW, per tensor and over many tensors
            /// (one launch for a whole model where the backend has one).
            optimizer: Optimizer [AdamWParams] {
                /// `acc[0] += sum_i x[i]^2` (the global gradient norm, accumulated over tensors on the device)
                fn sum_squares(&self, acc: &mut Self::Buf, x: &Self::Buf, p: ElementwiseParams) -> Result<()>;
                /// See [`AdamWParams`]: updates `param`, `m` and `v` (`[n]` each) from `grad [n]` (read only:
                /// the clipping factor is applied on the fly) and the squared global norm `norm_sq [1]`; a
                /// non-finite `norm_sq[0]` leaves everything untouched, so the host needs no read-back before it.
                #[allow(clippy::too_many_arguments)]
                fn adamw(&self, param: &mut Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf, grad: &Self::Buf, norm_sq: &Self::Buf, p: AdamWParams) -> Result<()>;
                /// `acc[0] += sum over the tensors of sum_i x[i]^2`. The default is [`Backend::sum_squares`]
                /// per tensor (the reference); CUDA runs one launch over all of them (and one to add up).
                fn sum_squares_many(&self, acc: &mut Self::Buf, xs: &[Self::Buf]) -> Result<()> = sum_squares_each;
                /// [`Backend::adamw`] over every slot (`p` with each slot's length and weight decay), and
                /// `out = param` (rounded to `out`'s type: the compute weights of f32 master weights) where a
                /// slot has an `out`. The default is `adamw` then `copy` per slot (the reference); CUDA runs
                /// one launch for all slots.
                fn adamw_many(&self, slots: &mut [AdamWSlot<'_, Self::Buf>], norm_sq: &Self::Buf, p: AdamWParams) -> Result<()> = adamw_each;
            }
            /// Preference optimisation (DPO, cDPO, IPO, SimPO).
            preference: Preference [PreferenceParams] {
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
                ) -> Result<()> in f32;
            }
            /// The reward model's ranking loss.
            reward: Reward [RankingParams] {
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
                ) -> Result<()> in f32;
            }
            /// The KL penalty to the reference and PPO's clipped losses.
            rl_losses: RlLosses [KlParams, PpoParams] {
                /// See [`KlParams`]: `kl[i] = mask[i] * k(logp[i] - ref_logp[i])`.
                fn kl_penalty_fwd(&self, kl: &mut Self::Buf, logp: &Self::Buf, ref_logp: &Self::Buf, mask: &Self::Buf, p: KlParams) -> Result<()> in f32;
                /// `dlogp[i] = dkl[i] * mask[i] * k'(r_i)` (overwritten) with `k1' = 1`, `k2' = r`,
                /// `k3' = 1 - exp(-r)`; the reference is frozen and gets no gradient.
                #[allow(clippy::too_many_arguments)]
                fn kl_penalty_bwd(&self, dlogp: &mut Self::Buf, dkl: &Self::Buf, logp: &Self::Buf, ref_logp: &Self::Buf, mask: &Self::Buf, p: KlParams) -> Result<()> in f32;
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
                ) -> Result<()> in f32;
            }
            /// Rotary position embedding.
            rope: Rope [RopeParams] {
                /// Rotates in place, see [`RopeParams`].
                fn rope_fwd(&self, x: &mut Self::Buf, positions: &Self::Ids, p: RopeParams) -> Result<()>;
                /// The transpose of `rope_fwd` (a rotation by the negative angle), in place on the gradient.
                fn rope_bwd(&self, dx: &mut Self::Buf, positions: &Self::Ids, p: RopeParams) -> Result<()>;
            }
            /// Next-token sampling.
            sample: Sample [SampleParams] {
                /// See [`SampleParams`]; writes one token id per row, drawn with the step `steps[p.step_at]`.
                fn sample(&self, out: &mut Self::Ids, logits: &Self::Buf, steps: &Self::Ids, p: SampleParams) -> Result<()>;
            }
        }
    };
}

crate::op_list!(crate::backend::ops::declare::declare_ops);

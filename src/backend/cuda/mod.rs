//! The CUDA backend: every op of the op list as a hand-written CUDA C kernel (`kernels/`), compiled
//! with NVRTC at first use for the device's architecture (PTX cached on disk), launched through
//! cudarc on the main stream (or a concurrent task's own, lanes.rs); matmuls through cuBLAS. Buffers are [`CudaBuf`]s (f32 or bf16
//! `CudaSlice`s, see buffer.rs) that stay on the device; only `download` and `synchronize` wait
//! for the stream. `--precision bf16` (sm_80 and newer) makes `Storage::Compute` buffers bf16;
//! every op with compute buffers then runs its `_bf16` kernel (see kernels/README.md). One launcher file per op family.
//!
//! Without libcuda or NVRTC the crate still builds and runs: [`availability`] says why CUDA is
//! unusable before anything touches cudarc's driver API (which panics without the library), and
//! [`CudaBackend::new`] returns that as an error.
//!
//! Tested against the CPU backend op by op in `tests/cuda_ops/` (skipped without a CUDA device);
//! `tests/cuda_compile.rs` compiles every kernel with NVRTC for compute_80 and compute_90 and
//! checks ptxas's register spills without a GPU.

pub mod activation;
pub mod advantage;
pub mod attention;
pub mod buffer;
pub mod context;
pub mod cross_entropy;
pub mod decode;
pub mod elementwise;
pub mod embedding;
pub mod epilogue;
pub mod graphs;
pub mod kernels;
pub mod lanes;
pub mod layernorm;
pub mod logprob_gather;
pub mod matmul;
pub mod optimizer;
pub mod preference;
pub mod reward;
pub mod rl_losses;
pub mod rope;
pub mod sample;
pub mod versions;

pub use buffer::CudaBuf;
pub use context::{availability, devices, Context};

use crate::backend::ops::*;
use crate::backend::storage::{from_bf16_bits, to_bf16_bits};
use crate::error::Result;
use cudarc::driver::{CudaSlice, DeviceRepr};
use kernels::err;

// SAFETY: the params structs are `#[repr(C)]` plain data with the field order of kernels/common.cuh.
unsafe impl DeviceRepr for EmbeddingParams {}
unsafe impl DeviceRepr for PreferenceParams {}
unsafe impl DeviceRepr for NormParams {}
unsafe impl DeviceRepr for MatmulParams {}
unsafe impl DeviceRepr for BiasParams {}
unsafe impl DeviceRepr for ElementwiseParams {}
unsafe impl DeviceRepr for RopeParams {}
unsafe impl DeviceRepr for AttentionParams {}
unsafe impl DeviceRepr for KvCacheParams {}
unsafe impl DeviceRepr for ScatterParams {}
unsafe impl DeviceRepr for AttentionDecodeParams {}
unsafe impl DeviceRepr for CrossEntropyParams {}
unsafe impl DeviceRepr for SampleParams {}
unsafe impl DeviceRepr for DecodeAdvanceParams {}
unsafe impl DeviceRepr for AdamWParams {}
unsafe impl DeviceRepr for RankingParams {}
unsafe impl DeviceRepr for GaeParams {}
unsafe impl DeviceRepr for WhitenParams {}
unsafe impl DeviceRepr for LogprobParams {}
unsafe impl DeviceRepr for KlParams {}
unsafe impl DeviceRepr for PpoParams {}

/// Checks `(name, have, need)` buffer lengths of op `op`: a clear error instead of an
/// out-of-bounds kernel.
pub(crate) fn need(op: &str, bufs: &[(&str, usize, usize)]) -> Result<()> {
    for &(name, have, want) in bufs {
        if have < want {
            return Err(err(format!("{op}: `{name}` holds {have} values, the params need {want}")));
        }
    }
    Ok(())
}

/// The CUDA backend on one device.
pub struct CudaBackend {
    pub(crate) ctx: Context,
}

impl CudaBackend {
    /// Opens device `RLHF_CUDA_DEVICE` (default 0) with the matmul `RLHF_CUDA_MATMUL` names
    /// (`cublas`, the default, or `simt`); a clear error without libcuda, NVRTC or a device.
    pub fn new() -> Result<Self> {
        let invalid = crate::error::Error::invalid;
        let ordinal = match std::env::var("RLHF_CUDA_DEVICE") {
            Ok(s) => s.trim().parse().map_err(|_| invalid(format!("RLHF_CUDA_DEVICE={s}: not a device number")))?,
            Err(_) => 0,
        };
        let simt = match std::env::var("RLHF_CUDA_MATMUL").as_deref() {
            Ok("simt") => true,
            Ok("cublas") | Err(_) => false,
            Ok(other) => return Err(invalid(format!("RLHF_CUDA_MATMUL={other}: expected `cublas` (the default) or `simt`"))),
        };
        Self::with_matmul(ordinal, simt)
    }

    /// Device `ordinal`, with the batch-invariant SIMT matmul when `simt` (else cuBLAS when it loads).
    pub fn with_matmul(ordinal: usize, simt: bool) -> Result<Self> {
        Ok(CudaBackend { ctx: Context::new(ordinal, simt)? })
    }

    /// Whether a usable CUDA device exists (what `--backend auto` looks for).
    pub fn device_present() -> bool {
        availability().is_ok() && devices().is_ok_and(|d| !d.is_empty())
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Turns the CUDA graphs of `Backend::replay` on or off (`RLHF_CUDA_GRAPHS` sets the start).
    pub fn set_graphs(&self, on: bool) {
        self.ctx.graphs.set_enabled(on);
    }

    /// Turns the lanes of `Backend::concurrently` on or off (`RLHF_CUDA_STREAMS` sets the start).
    pub fn set_streams(&self, on: bool) {
        self.ctx.streams_enabled.store(on, std::sync::atomic::Ordering::Relaxed);
    }
    /// Which of cuBLASLt's fused epilogues run (`RLHF_CUDA_EPILOGUES` sets the start). Graphs
    /// recorded before keep the calls they recorded, so this forgets them.
    pub fn set_epilogues(&self, level: epilogue::EpilogueLevel) {
        self.ctx.epilogues.set_level(level);
        self.ctx.graphs.forget();
    }
    /// The matmuls that ran with a fused epilogue so far, and those cuBLASLt refused (run
    /// unfused): see epilogue.rs.
    pub fn epilogue_report(&self) -> epilogue::EpilogueReport {
        self.ctx.epilogues.report()
    }
}

fn upload_slice<T: DeviceRepr>(ctx: &Context, data: &[T]) -> Result<CudaSlice<T>> {
    let r = if data.is_empty() { ctx.stream().null() } else { ctx.stream().clone_htod(data) };
    r.map_err(|e| err(format!("upload of {} values: {e:?}", data.len())))
}

fn write_slice<T: DeviceRepr>(ctx: &Context, buf: &mut CudaSlice<T>, data: &[T]) -> Result<()> {
    if data.len() > buf.len() {
        return Err(err(format!("write of {} values into a buffer of {}", data.len(), buf.len())));
    }
    if data.is_empty() {
        return Ok(());
    }
    ctx.stream().memcpy_htod(data, &mut buf.slice_mut(..data.len())).map_err(|e| err(format!("write of {} values: {e:?}", data.len())))
}

fn download_slice<T: DeviceRepr>(ctx: &Context, buf: &CudaSlice<T>) -> Result<Vec<T>> {
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    let v = ctx.stream().clone_dtoh(buf).map_err(|e| err(format!("download of {} values: {e:?}", buf.len())))?;
    ctx.stream().synchronize().map_err(|e| err(format!("synchronize: {e:?}")))?;
    Ok(v)
}

fn alloc_slice<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(ctx: &Context, len: usize) -> Result<CudaSlice<T>> {
    let r = if len == 0 { ctx.stream().null() } else { ctx.stream().alloc_zeros::<T>(len) };
    r.map_err(|e| err(format!("alloc of {len} values: {e:?}")))
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;
    type Ids = CudaSlice<i32>;

    fn name(&self) -> &'static str {
        "cuda"
    }
    fn device_description(&self) -> String {
        let mut d = self.ctx.description();
        if self.ctx.compute_dtype == Dtype::Bf16 {
            d.push_str(" [bf16 storage, f32 accumulation]");
        } else if self.ctx.matmul_precision != MatmulPrecision::F32 {
            d.push_str(&format!(" [matmul {}]", self.ctx.matmul_precision));
        }
        d
    }
    fn matmul_precision(&self) -> MatmulPrecision {
        self.ctx.matmul_precision
    }
    /// Any precision through cuBLAS (tf32 / bf16 / f16 operands with f32 accumulation); f32 only
    /// with the SIMT matmul.
    fn set_matmul_precision(&mut self, p: MatmulPrecision) -> Result<()> {
        self.ctx.set_matmul_precision(p)
    }

    fn compute_dtype(&self) -> Dtype {
        self.ctx.compute_dtype
    }
    /// bf16 on compute capability 8.0 and newer, else f32.
    fn preferred_compute_dtype(&self) -> Dtype {
        self.ctx.preferred_compute_dtype()
    }
    fn set_compute_dtype(&mut self, d: Dtype) -> Result<()> {
        self.ctx.set_compute_dtype(d)
    }
    fn alloc_as(&self, len: usize, s: Storage) -> Result<Self::Buf> {
        match s {
            Storage::F32 => self.alloc(len),
            Storage::Compute => match self.ctx.compute_dtype {
                Dtype::F32 => self.alloc(len),
                Dtype::Bf16 => alloc_slice(&self.ctx, len).map(CudaBuf::Bf16),
            },
        }
    }
    fn dtype(&self, buf: &Self::Buf) -> Dtype {
        buf.dtype()
    }

    fn alloc(&self, len: usize) -> Result<Self::Buf> {
        alloc_slice(&self.ctx, len).map(CudaBuf::F32)
    }
    fn upload(&self, data: &[f32]) -> Result<Self::Buf> {
        upload_slice(&self.ctx, data).map(CudaBuf::F32)
    }
    /// Rounds to nearest even on the host when `buf` is bf16.
    fn write(&self, buf: &mut Self::Buf, data: &[f32]) -> Result<()> {
        match buf {
            CudaBuf::F32(s) => write_slice(&self.ctx, s, data),
            CudaBuf::Bf16(s) => write_slice(&self.ctx, s, &to_bf16_bits(data)),
        }
    }
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>> {
        match buf {
            CudaBuf::F32(s) => download_slice(&self.ctx, s),
            CudaBuf::Bf16(s) => download_slice(&self.ctx, s).map(|bits| from_bf16_bits(&bits)),
        }
    }
    fn len(&self, buf: &Self::Buf) -> usize {
        buf.len()
    }
    fn alloc_ids(&self, len: usize) -> Result<Self::Ids> {
        alloc_slice(&self.ctx, len)
    }
    fn upload_ids(&self, data: &[i32]) -> Result<Self::Ids> {
        upload_slice(&self.ctx, data)
    }
    fn write_ids(&self, buf: &mut Self::Ids, data: &[i32]) -> Result<()> {
        write_slice(&self.ctx, buf, data)
    }
    fn download_ids(&self, buf: &Self::Ids) -> Result<Vec<i32>> {
        download_slice(&self.ctx, buf)
    }
    fn synchronize(&self) -> Result<()> {
        self.ctx.stream().synchronize().map_err(|e| err(format!("synchronize: {e:?}")))
    }
    /// A CUDA graph per key (graphs.rs): warm-up, capture, then one graph launch per call; plain
    /// launches inside a concurrent task (graphs belong to the main stream).
    fn replay(&self, key: u64, f: &mut dyn FnMut() -> Result<()>) -> Result<bool> {
        if self.ctx.in_region() {
            f()?;
            return Ok(false);
        }
        self.ctx.graphs.replay(self.ctx.main_stream(), key, f)
    }
    /// Each task on a lane of its own (lanes.rs): a stream, cuBLAS handle and scratch per lane.
    fn concurrently(&self, tasks: &mut [&mut dyn FnMut() -> Result<()>]) -> Result<()> {
        self.ctx.concurrently(tasks)
    }
    fn buffer_key(&self, buf: &Self::Buf) -> u64 {
        buf.ptr_at(self.ctx.stream(), 0)
    }

    fn fill(&self, out: &mut Self::Buf, value: f32, p: ElementwiseParams) -> Result<()> {
        elementwise::fill(&self.ctx, out, value, p)
    }
    fn copy(&self, out: &mut Self::Buf, inp: &Self::Buf, p: ElementwiseParams) -> Result<()> {
        elementwise::copy(&self.ctx, out, inp, p)
    }
    fn add(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, p: ElementwiseParams) -> Result<()> {
        elementwise::add(&self.ctx, out, a, b, p)
    }
    fn add_inplace(&self, acc: &mut Self::Buf, x: &Self::Buf, p: ElementwiseParams) -> Result<()> {
        elementwise::add_inplace(&self.ctx, acc, x, p)
    }
    fn scale_inplace(&self, x: &mut Self::Buf, s: f32, p: ElementwiseParams) -> Result<()> {
        elementwise::scale_inplace(&self.ctx, x, s, p)
    }

    fn embedding_fwd(&self, out: &mut Self::Buf, ids: &Self::Ids, table: &Self::Buf, p: EmbeddingParams) -> Result<()> {
        embedding::embedding_fwd(&self.ctx, out, ids, table, p)
    }
    fn embedding_bwd(&self, dtable: &mut Self::Buf, dout: &Self::Buf, ids: &Self::Ids, p: EmbeddingParams) -> Result<()> {
        embedding::embedding_bwd(&self.ctx, dtable, dout, ids, p)
    }

    fn layernorm_fwd(
        &self,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        weight: &Self::Buf,
        bias: &Self::Buf,
        p: NormParams,
    ) -> Result<()> {
        layernorm::layernorm_fwd(&self.ctx, out, mean, rstd, inp, weight, bias, p)
    }
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
    ) -> Result<()> {
        layernorm::layernorm_bwd(&self.ctx, dinp, dweight, dbias, dout, inp, mean, rstd, weight, p)
    }
    fn rmsnorm_fwd(&self, out: &mut Self::Buf, rstd: &mut Self::Buf, inp: &Self::Buf, weight: &Self::Buf, p: NormParams) -> Result<()> {
        layernorm::rmsnorm_fwd(&self.ctx, out, rstd, inp, weight, p)
    }
    fn rmsnorm_bwd(
        &self,
        dinp: &mut Self::Buf,
        dweight: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        rstd: &Self::Buf,
        weight: &Self::Buf,
        p: NormParams,
    ) -> Result<()> {
        layernorm::rmsnorm_bwd(&self.ctx, dinp, dweight, dout, inp, rstd, weight, p)
    }

    fn matmul(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, p: MatmulParams) -> Result<()> {
        matmul::matmul(&self.ctx, out, a, b, p)
    }
    fn bias_add(&self, out: &mut Self::Buf, bias: &Self::Buf, p: BiasParams) -> Result<()> {
        matmul::bias_add(&self.ctx, out, bias, p)
    }
    fn bias_bwd(&self, dbias: &mut Self::Buf, dout: &Self::Buf, p: BiasParams) -> Result<()> {
        matmul::bias_bwd(&self.ctx, dbias, dout, p)
    }

    fn gelu_fwd(&self, out: &mut Self::Buf, inp: &Self::Buf, p: ElementwiseParams) -> Result<()> {
        activation::gelu_fwd(&self.ctx, out, inp, p)
    }
    fn gelu_bwd(&self, dinp: &mut Self::Buf, dout: &Self::Buf, inp: &Self::Buf, p: ElementwiseParams) -> Result<()> {
        activation::gelu_bwd(&self.ctx, dinp, dout, inp, p)
    }
    fn swiglu_fwd(&self, out: &mut Self::Buf, gate: &Self::Buf, up: &Self::Buf, p: ElementwiseParams) -> Result<()> {
        activation::swiglu_fwd(&self.ctx, out, gate, up, p)
    }
    fn swiglu_bwd(&self, dgate: &mut Self::Buf, dup: &mut Self::Buf, dout: &Self::Buf, gate: &Self::Buf, up: &Self::Buf, p: ElementwiseParams) -> Result<()> {
        activation::swiglu_bwd(&self.ctx, dgate, dup, dout, gate, up, p)
    }

    fn rope_fwd(&self, x: &mut Self::Buf, positions: &Self::Ids, p: RopeParams) -> Result<()> {
        rope::rope_fwd(&self.ctx, x, positions, p)
    }
    fn rope_bwd(&self, dx: &mut Self::Buf, positions: &Self::Ids, p: RopeParams) -> Result<()> {
        rope::rope_bwd(&self.ctx, dx, positions, p)
    }
    fn attention_fwd(&self, out: &mut Self::Buf, lse: &mut Self::Buf, q: &Self::Buf, k: &Self::Buf, v: &Self::Buf, p: AttentionParams) -> Result<()> {
        attention::attention_fwd(&self.ctx, out, lse, q, k, v, p)
    }
    fn attention_bwd(&self, dqkv: &mut Self::Buf, dout: &Self::Buf, out: &Self::Buf, lse: &Self::Buf, qkv: &Self::Buf, p: AttentionParams) -> Result<()> {
        attention::attention_bwd(&self.ctx, dqkv, dout, out, lse, qkv, p)
    }
    fn kv_cache_write(&self, cache: &mut Self::Buf, qkv: &Self::Buf, p: KvCacheParams) -> Result<()> {
        attention::kv_cache_write(&self.ctx, cache, qkv, p)
    }
    fn scatter_rows(&self, out: &mut Self::Buf, inp: &Self::Buf, rows: &Self::Ids, p: ScatterParams) -> Result<()> {
        attention::scatter_rows(&self.ctx, out, inp, rows, p)
    }
    fn attention_decode_fwd(
        &self,
        out: &mut Self::Buf,
        lse: &mut Self::Buf,
        q: &Self::Buf,
        cache: &Self::Buf,
        rows: &Self::Ids,
        p: AttentionDecodeParams,
    ) -> Result<()> {
        attention::attention_decode_fwd(&self.ctx, out, lse, q, cache, rows, p)
    }

    fn cross_entropy_fwd(&self, losses: &mut Self::Buf, lse: &mut Self::Buf, logits: &Self::Buf, targets: &Self::Ids, p: CrossEntropyParams) -> Result<()> {
        cross_entropy::cross_entropy_fwd(&self.ctx, losses, lse, logits, targets, p)
    }
    fn cross_entropy_bwd(
        &self,
        dlogits: &mut Self::Buf,
        dlosses: &Self::Buf,
        logits: &Self::Buf,
        lse: &Self::Buf,
        targets: &Self::Ids,
        p: CrossEntropyParams,
    ) -> Result<()> {
        cross_entropy::cross_entropy_bwd(&self.ctx, dlogits, dlosses, logits, lse, targets, p)
    }
    fn sample(&self, out: &mut Self::Ids, logits: &Self::Buf, steps: &Self::Ids, p: SampleParams) -> Result<()> {
        sample::sample(&self.ctx, out, logits, steps, p)
    }

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
    ) -> Result<()> {
        decode::decode_advance(&self.ctx, state, history, tokens, positions, cache_rows, record_rows, sampled, stop_ids, p)
    }

    fn logprob_gather_fwd(
        &self,
        logp: &mut Self::Buf,
        entropy: &mut Self::Buf,
        lse: &mut Self::Buf,
        h: &Self::Buf,
        targets: &Self::Ids,
        w: &Self::Buf,
        p: LogprobParams,
    ) -> Result<()> {
        logprob_gather::logprob_gather_fwd(&self.ctx, logp, entropy, lse, h, targets, w, p)
    }
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
    ) -> Result<()> {
        logprob_gather::logprob_gather_bwd(&self.ctx, dh, dw, dlogp, dentropy, h, targets, lse, entropy, w, p)
    }
    fn kl_penalty_fwd(&self, kl: &mut Self::Buf, logp: &Self::Buf, ref_logp: &Self::Buf, mask: &Self::Buf, p: KlParams) -> Result<()> {
        rl_losses::kl_penalty_fwd(&self.ctx, kl, logp, ref_logp, mask, p)
    }
    fn kl_penalty_bwd(&self, dlogp: &mut Self::Buf, dkl: &Self::Buf, logp: &Self::Buf, ref_logp: &Self::Buf, mask: &Self::Buf, p: KlParams) -> Result<()> {
        rl_losses::kl_penalty_bwd(&self.ctx, dlogp, dkl, logp, ref_logp, mask, p)
    }
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
    ) -> Result<()> {
        let o = rl_losses::PpoOptional { dvalues, dentropy, values, old_values, returns, entropy, ref_logp };
        rl_losses::ppo_loss_fwd_bwd(&self.ctx, dlogp, stats, logp, old_logp, advantages, mask, o, p)
    }

    fn gae(&self, advantages: &mut Self::Buf, returns: &mut Self::Buf, rewards: &Self::Buf, values: &Self::Buf, mask: &Self::Buf, p: GaeParams) -> Result<()> {
        advantage::gae(&self.ctx, advantages, returns, rewards, values, mask, p)
    }
    fn masked_whiten(&self, x: &mut Self::Buf, stats: &mut Self::Buf, mask: &Self::Buf, p: WhitenParams) -> Result<()> {
        advantage::masked_whiten(&self.ctx, x, stats, mask, p)
    }

    fn sum_squares(&self, acc: &mut Self::Buf, x: &Self::Buf, p: ElementwiseParams) -> Result<()> {
        optimizer::sum_squares(&self.ctx, acc, x, p)
    }
    fn ranking_loss(
        &self,
        dscores: &mut Self::Buf,
        stats: &mut Self::Buf,
        scores: &Self::Buf,
        starts: &Self::Ids,
        margins: &Self::Buf,
        p: RankingParams,
    ) -> Result<()> {
        reward::ranking_loss(&self.ctx, dscores, stats, scores, starts, margins, p)
    }
    fn adamw(&self, param: &mut Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf, grad: &Self::Buf, norm_sq: &Self::Buf, p: AdamWParams) -> Result<()> {
        optimizer::adamw(&self.ctx, param, m, v, grad, norm_sq, p)
    }
    /// One launch for all tensors (and one to add up the norm), through a cached address table;
    /// tensor by tensor when their types mix.
    fn sum_squares_many(&self, acc: &mut Self::Buf, xs: &[Self::Buf]) -> Result<()> {
        if !optimizer::sum_squares_many(&self.ctx, acc, xs)? {
            sum_squares_each(self, acc, xs)?;
        }
        Ok(())
    }
    fn adamw_many(&self, slots: &mut [AdamWSlot<'_, Self::Buf>], norm_sq: &Self::Buf, p: AdamWParams) -> Result<()> {
        if !optimizer::adamw_many(&self.ctx, slots, norm_sq, p)? {
            adamw_each(self, slots, norm_sq, p)?;
        }
        Ok(())
    }

    fn matmul_bias(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, bias: &Self::Buf, p: MatmulParams) -> Result<()> {
        if epilogue::matmul_bias(&self.ctx, out, a, b, bias, p)? {
            return Ok(());
        }
        matmul_bias_unfused(self, out, a, b, bias, p)
    }
    fn matmul_bias_gelu(
        &self,
        out: &mut Self::Buf,
        pre: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        bias: Option<&Self::Buf>,
        p: MatmulParams,
    ) -> Result<()> {
        if epilogue::matmul_bias_gelu(&self.ctx, out, pre, a, b, bias, p)? {
            return Ok(());
        }
        matmul_bias_gelu_unfused(self, out, pre, a, b, bias, p)
    }
    fn matmul_gelu_bwd(&self, dinp: &mut Self::Buf, dact: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, pre: &Self::Buf, p: MatmulParams) -> Result<()> {
        if epilogue::matmul_gelu_bwd(&self.ctx, dinp, a, b, pre, p)? {
            return Ok(());
        }
        matmul_gelu_bwd_unfused(self, dinp, dact, a, b, pre, p)
    }
    fn preference_loss_fwd_bwd(
        &self,
        dlogp: &mut Self::Buf,
        stats: &mut Self::Buf,
        logp: &Self::Buf,
        mask: &Self::Buf,
        ref_sums: &Self::Buf,
        p: PreferenceParams,
    ) -> Result<()> {
        preference::preference_loss_fwd_bwd(&self.ctx, dlogp, stats, logp, mask, ref_sums, p)
    }
}

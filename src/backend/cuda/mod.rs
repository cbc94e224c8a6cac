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

pub mod buffer;
pub mod column_sum;
pub mod context;
pub mod epilogue;
pub mod graphs;
pub mod kernels;
pub mod lanes;
pub mod versions;

// one launcher module per op family of the op list (`activation.rs`, `attention.rs`, ...)
crate::op_list!(crate::backend::ops::family_modules);

pub use buffer::CudaBuf;
pub use context::{availability, devices, Context};

use crate::backend::ops::device;
use crate::backend::ops::*;
use crate::backend::storage::{from_bf16_bits, to_bf16_bits};
use crate::error::Result;
use cudarc::driver::{CudaSlice, DeviceRepr};
use kernels::err;

crate::op_list!(crate::backend::ops::impl_params_repr [DeviceRepr]);

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

/// `len` values from `start` of `buf` (a bounded read for streaming saves).
fn download_range_of<T: DeviceRepr>(ctx: &Context, buf: &CudaSlice<T>, start: usize, len: usize) -> Result<Vec<T>> {
    if start.checked_add(len).is_none_or(|end| end > buf.len()) {
        return Err(err(format!("download of values {start}..{} from a buffer of {}", start + len, buf.len())));
    }
    if len == 0 {
        return Ok(Vec::new());
    }
    let view = buf.slice(start..start + len);
    let v = ctx.stream().clone_dtoh(&view).map_err(|e| err(format!("download of {len} values: {e:?}")))?;
    ctx.stream().synchronize().map_err(|e| err(format!("synchronize: {e:?}")))?;
    Ok(v)
}

fn alloc_slice<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(ctx: &Context, len: usize) -> Result<CudaSlice<T>> {
    let r = if len == 0 { ctx.stream().null() } else { ctx.stream().alloc_zeros::<T>(len) };
    r.map_err(|e| err(format!("alloc of {len} values: {e:?}")))
}

impl device::Buffers for CudaBackend {
    type Buf = CudaBuf;
    type Ids = CudaSlice<i32>;
}

impl device::Device for CudaBackend {
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
            Storage::F32 => device::Device::alloc(self, len),
            Storage::Compute => match self.ctx.compute_dtype {
                Dtype::F32 => device::Device::alloc(self, len),
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
    fn download_range(&self, buf: &Self::Buf, start: usize, len: usize) -> Result<Vec<f32>> {
        match buf {
            CudaBuf::F32(s) => download_range_of(&self.ctx, s, start, len),
            CudaBuf::Bf16(s) => download_range_of(&self.ctx, s, start, len).map(|bits| from_bf16_bits(&bits)),
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
}

// every op: the launcher of the same name in the family's file, called with `self.ctx`
crate::op_list!(crate::backend::ops::impl_families_by_functions [CudaBackend, ctx]);

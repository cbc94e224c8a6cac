//! What a backend implements besides its op families: its buffer types ([`Buffers`]) and its
//! device and memory ([`Device`], in the backend's `mod.rs`); and the reference compositions that
//! are the default of the ops declared `= reference` in the op list.

use super::{AdamWParams, Backend, BiasParams, Dtype, ElementwiseParams, MatmulParams, MatmulPrecision, Storage};
use crate::error::Result;

/// The buffer types of a backend: `Buf` holds f32 or bf16 values ([`Dtype`]), `Ids` holds i32
/// token ids and positions ([`Backend::Buf`] and [`Backend::Ids`] are these).
pub trait Buffers {
    type Buf: Send + Sync;
    type Ids: Send + Sync;
}

/// The device and memory of a backend, implemented in its `mod.rs`; [`Backend`] forwards its
/// methods of the same names here. Buffers are created and read back only through the backend
/// (as f32). Ops are enqueued in program order; `synchronize` waits for them.
pub trait Device: Backend {
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
        crate::backend::precision::only_f32(Device::name(self), p)
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
        crate::backend::storage::only_f32(Device::name(self), d)
    }
    /// A zero-filled buffer of `len` values of the type `s` stands for.
    fn alloc_as(&self, len: usize, s: Storage) -> Result<Self::Buf> {
        let _ = s;
        Device::alloc(self, len)
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
    /// Reads `len` values from `start` back as f32: what a streaming checkpoint writer reads a
    /// bounded chunk at a time. The default downloads the whole buffer and slices it; the CPU
    /// backends copy only the range.
    fn download_range(&self, buf: &Self::Buf, start: usize, len: usize) -> Result<Vec<f32>> {
        let all = Device::download(self, buf)?;
        all.get(start..start + len).map(<[f32]>::to_vec).ok_or_else(|| {
            crate::error::Error::invalid(format!("download of values {start}..{} from a buffer of {}", start + len, all.len()))
        })
    }
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
    /// (the device address on CUDA), for the keys of [`Device::replay`]. Backends whose `replay`
    /// never records need none: the default is 0.
    fn buffer_key(&self, buf: &Self::Buf) -> u64 {
        let _ = buf;
        0
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

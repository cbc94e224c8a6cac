//! The CPU backend: the reference every other backend is tested against, and the embedded
//! default. Buffers are host `Vec`s; ops run synchronously, multithreaded with rayon; matmuls go
//! through the `gemm` crate. One file per op family, with the same names as `kernels/*.cu` and
//! `shaders/*.wgsl`.

pub mod profile;
pub mod sample_math;
pub mod simd;

// one module per op family of the op list (`activation.rs`, `attention.rs`, ...), each holding
// the `impl family::<Family> for CpuBackend` of its ops
crate::op_list!(crate::backend::ops::family_modules);

use crate::backend::ops::device;
use crate::error::{Error, Result};

/// A raw pointer that may cross threads, for kernels whose parallel tasks each write a disjoint
/// set of elements of one output.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: users guarantee that tasks write disjoint elements and outlive no borrow.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// Going through a method makes closures capture the whole (Send + Sync) wrapper.
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// The CPU backend. `threads` is the size of rayon's pool (0 = one per core).
#[derive(Debug, Default)]
pub struct CpuBackend {
    /// `download` calls so far (what a GPU backend would wait for: tests hold trainers to their
    /// read-backs with it)
    downloads: std::sync::atomic::AtomicUsize,
}

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend::default()
    }

    /// How many times `download` (a read-back of f32 values) has been called on this backend.
    pub fn downloads(&self) -> usize {
        self.downloads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A buffer of `len` copies of `value`; a size the host cannot allocate is an error, not an abort.
fn try_vec<T: Clone>(len: usize, value: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::Backend {
        backend: "cpu",
        msg: format!("cannot allocate a buffer of {len} values ({:.1} GiB)", (len as f64) * std::mem::size_of::<T>() as f64 / (1u64 << 30) as f64),
    })?;
    v.resize(len, value);
    Ok(v)
}

fn check(ok: bool, op: &str, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Backend { backend: "cpu", msg: format!("{op}: {what}") })
    }
}

impl device::Buffers for CpuBackend {
    type Buf = Vec<f32>;
    type Ids = Vec<i32>;
}

impl device::Device for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }
    fn device_description(&self) -> String {
        format!("cpu: {} threads (rayon), gemm {}", rayon::current_num_threads(), "0.19")
    }
    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        try_vec(len, 0.0)
    }
    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }
    fn write(&self, buf: &mut Vec<f32>, data: &[f32]) -> Result<()> {
        check(data.len() <= buf.len(), "write", "data longer than buffer")?;
        buf[..data.len()].copy_from_slice(data);
        Ok(())
    }
    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        self.downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(buf.clone())
    }
    fn download_range(&self, buf: &Vec<f32>, start: usize, len: usize) -> Result<Vec<f32>> {
        check(start.checked_add(len).is_some_and(|end| end <= buf.len()), "download_range", "range beyond the buffer")?;
        Ok(buf[start..start + len].to_vec())
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn alloc_ids(&self, len: usize) -> Result<Vec<i32>> {
        try_vec(len, 0)
    }
    fn upload_ids(&self, data: &[i32]) -> Result<Vec<i32>> {
        Ok(data.to_vec())
    }
    fn write_ids(&self, buf: &mut Vec<i32>, data: &[i32]) -> Result<()> {
        check(data.len() <= buf.len(), "write_ids", "data longer than buffer")?;
        buf[..data.len()].copy_from_slice(data);
        Ok(())
    }
    fn download_ids(&self, buf: &Vec<i32>) -> Result<Vec<i32>> {
        Ok(buf.clone())
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn buffer_key(&self, buf: &Vec<f32>) -> u64 {
        buf.as_ptr() as u64
    }
}

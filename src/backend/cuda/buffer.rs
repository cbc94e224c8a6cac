//! Typed device buffers of the CUDA backend (`--precision`, see storage.rs): a [`CudaBuf`] holds
//! f32 values or bf16 bit patterns (`u16`), and its length is in elements. The host side converts:
//! `write` into a bf16 buffer rounds to nearest even (`to_bf16_bits`), `download` widens
//! (`from_bf16_bits`, exact). Kernels receive the buffer's device pointer whatever its type
//! (`PushKernelArg` below), so a launcher checks the types with [`types`] before it picks the
//! `NAME` or `NAME_bf16` kernel. [`DevPtr`] is a buffer's raw device pointer with its type, for
//! cuBLAS and for kernels run on scratch memory or on a range of a buffer.

use super::kernels::err;
use crate::backend::storage::{op_dtype, Dtype};
use crate::error::Result;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, LaunchArgs, PushKernelArg};
use std::marker::PhantomData;

/// A device buffer of f32 or bf16 values.
#[derive(Debug)]
pub enum CudaBuf {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<u16>),
}

impl CudaBuf {
    pub fn dtype(&self) -> Dtype {
        match self {
            CudaBuf::F32(_) => Dtype::F32,
            CudaBuf::Bf16(_) => Dtype::Bf16,
        }
    }
    /// Elements (not bytes).
    pub fn len(&self) -> usize {
        match self {
            CudaBuf::F32(s) => s.len(),
            CudaBuf::Bf16(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The device pointer of elements `start ..` (`start <= len`).
    pub fn ptr_at(&self, stream: &CudaStream, start: usize) -> u64 {
        // the guard only records events, and the context runs with event tracking off
        let base = match self {
            CudaBuf::F32(s) => s.device_ptr(stream).0,
            CudaBuf::Bf16(s) => s.device_ptr(stream).0,
        };
        base + (start * self.dtype().size()) as u64
    }
}

/// Checks the buffer types of one call of `op` (the trait table of `Backend`): the `compute`
/// buffers share one type, which is returned (it picks the kernel), and the `f32` ones are f32.
pub fn types(op: &str, compute: &[(&str, &CudaBuf)], f32: &[(&str, &CudaBuf)]) -> Result<Dtype> {
    let c: Vec<(&str, Dtype)> = compute.iter().map(|(n, b)| (*n, b.dtype())).collect();
    let f: Vec<(&str, Dtype)> = f32.iter().map(|(n, b)| (*n, b.dtype())).collect();
    op_dtype("cuda", op, &c, &f)
}

/// Elements `start .. start + len` of a device buffer as a raw pointer with its element type,
/// borrowing the buffer for `'a` (a [`DevPtr`] made from `&mut` keeps it exclusively borrowed).
#[derive(Clone, Copy, Debug)]
pub struct DevPtr<'a> {
    pub ptr: u64,
    pub len: usize,
    pub dtype: Dtype,
    _borrow: PhantomData<&'a ()>,
}

impl<'a> DevPtr<'a> {
    /// Elements `range` of `buf` (checked against its length).
    pub fn of(stream: &CudaStream, buf: &'a CudaBuf, range: std::ops::Range<usize>) -> Result<Self> {
        Self::checked(buf.len(), range.clone()).map(|len| DevPtr { ptr: buf.ptr_at(stream, range.start), len, dtype: buf.dtype(), _borrow: PhantomData })
    }
    /// The same for a buffer that will be written.
    pub fn of_mut(stream: &CudaStream, buf: &'a mut CudaBuf, range: std::ops::Range<usize>) -> Result<Self> {
        Self::of(stream, buf, range)
    }
    /// Elements `range` of an f32 scratch buffer (kernels and cuBLAS may write through it: scratch
    /// memory is the backend's own, ordered by the stream).
    pub fn scratch(stream: &CudaStream, buf: &'a CudaSlice<f32>, range: std::ops::Range<usize>) -> Result<Self> {
        let len = Self::checked(buf.len(), range.clone())?;
        Ok(DevPtr { ptr: buf.device_ptr(stream).0 + 4 * range.start as u64, len, dtype: Dtype::F32, _borrow: PhantomData })
    }
    /// `len` bf16 values in the memory of an f32 scratch buffer (2 per float).
    pub fn scratch_bf16(stream: &CudaStream, buf: &'a CudaSlice<f32>, len: usize) -> Result<Self> {
        Self::checked(2 * buf.len(), 0..len)?;
        Ok(DevPtr { ptr: buf.device_ptr(stream).0, len, dtype: Dtype::Bf16, _borrow: PhantomData })
    }
    fn checked(have: usize, range: std::ops::Range<usize>) -> Result<usize> {
        if range.start > range.end || range.end > have {
            return Err(err(format!("elements {range:?} of a buffer of {have}")));
        }
        Ok(range.end - range.start)
    }
}

// SAFETY: pushes the device pointer of the inner slice exactly as cudarc does for a `CudaSlice`
// (the kernels take `float*` or `bf16*`, which the launchers pick from `dtype`).
unsafe impl<'a, 'b: 'a> PushKernelArg<&'b CudaBuf> for LaunchArgs<'a> {
    fn arg(&mut self, arg: &'b CudaBuf) -> &mut Self {
        match arg {
            CudaBuf::F32(s) => self.arg(s),
            CudaBuf::Bf16(s) => self.arg(s),
        }
    }
}

// SAFETY: as above, for a buffer the kernel writes.
unsafe impl<'a, 'b: 'a> PushKernelArg<&'b mut CudaBuf> for LaunchArgs<'a> {
    fn arg(&mut self, arg: &'b mut CudaBuf) -> &mut Self {
        match arg {
            CudaBuf::F32(s) => self.arg(s),
            CudaBuf::Bf16(s) => self.arg(s),
        }
    }
}

//! Backends: `cpu` (the reference and the embedded default), `cuda` (CUDA C kernels through NVRTC
//! and cudarc on NVIDIA GPUs) and `wgpu` (WGSL on any Vulkan, Metal or DX12 GPU), all implementing
//! the same op list ([`ops::Backend`]).

pub mod bf16_reference;
pub mod cpu;
pub mod cuda;
pub mod ops;
pub mod precision;
pub mod storage;
pub mod wgpu;

pub use self::wgpu::WgpuBackend;
pub use cpu::CpuBackend;
pub use cuda::CudaBackend;
pub use ops::Backend;
pub use precision::MatmulPrecision;
pub use storage::{Dtype, Precision, Storage};

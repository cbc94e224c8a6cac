//! Backends: `cpu` (the reference and the embedded default) and `wgpu` (WGSL on any Vulkan, Metal
//! or DX12 GPU), with `cuda` to come, all implementing the same op list ([`ops::Backend`]).

pub mod cpu;
pub mod ops;
pub mod wgpu;

pub use self::wgpu::WgpuBackend;
pub use cpu::CpuBackend;
pub use ops::Backend;

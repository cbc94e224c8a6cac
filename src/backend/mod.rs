//! Backends: `cpu` (the reference and the embedded default), with `cuda` and `wgpu` implementing
//! the same op list ([`ops::Backend`]).

pub mod cpu;
pub mod ops;

pub use cpu::CpuBackend;
pub use ops::Backend;

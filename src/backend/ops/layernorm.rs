//! The params of LayerNorm and RMSNorm (the `layernorm` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// LayerNorm / RMSNorm over the last dimension of an `[n, c]` matrix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct NormParams {
    pub n: u32,
    pub c: u32,
    pub eps: f32,
    pub _pad: u32,
}

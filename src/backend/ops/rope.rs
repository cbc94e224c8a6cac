//! The params of rotary position embedding (the `rope` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// Rotary position embedding (rotate-half convention of Llama/Qwen2 in `transformers`) applied in
/// place to the first `n_rot_heads` heads of every row of an `[n_tokens, row]` matrix; the
/// position of token i is `positions[i]`; frequency j is `theta^(-2j/head_dim)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RopeParams {
    pub n_tokens: u32,
    pub row: u32,
    pub n_rot_heads: u32,
    pub head_dim: u32,
    pub theta: f32,
    pub _pad: u32,
}

//! The params of token and position embedding (the `embedding` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// `table` rows gathered by `ids`: `out[i, :] (+)= table[ids[i], :]`, i < n.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct EmbeddingParams {
    pub n: u32,
    pub c: u32,
    /// 1: add into `out` (learned positions on top of tokens), 0: overwrite.
    pub accumulate: u32,
    pub vocab: u32,
}

//! The params of softmax cross-entropy (the `cross_entropy` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// Softmax cross-entropy over `[n, v]` logits. A negative target marks a row without loss.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct CrossEntropyParams {
    pub n: u32,
    pub v: u32,
}

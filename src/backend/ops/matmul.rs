//! The params of matmuls and bias (the `matmul` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// `out[b] (+)= alpha * op(a[b]) @ op(b[b])` for b < batch, with `op(a)` of shape `[m, k]`
/// (stored `[k, m]` when `trans_a`) and `op(b)` of shape `[k, n]` (stored `[n, k]` when `trans_b`).
/// Strides are in elements between consecutive batch matrices (0 broadcasts one matrix).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub batch: u32,
    pub trans_a: u32,
    pub trans_b: u32,
    pub accumulate: u32,
    pub alpha: f32,
    pub stride_a: u32,
    pub stride_b: u32,
    pub stride_out: u32,
    pub _pad: u32,
}

impl MatmulParams {
    /// A single `[m, k] @ [k, n]` product with the given storage transposes.
    pub fn new(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Self {
        MatmulParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            batch: 1,
            trans_a: trans_a as u32,
            trans_b: trans_b as u32,
            accumulate: 0,
            alpha: 1.0,
            stride_a: 0,
            stride_b: 0,
            stride_out: 0,
            _pad: 0,
        }
    }
    pub fn accumulate(mut self, yes: bool) -> Self {
        self.accumulate = yes as u32;
        self
    }
    pub fn batched(mut self, batch: usize, stride_a: usize, stride_b: usize, stride_out: usize) -> Self {
        self.batch = batch as u32;
        self.stride_a = stride_a as u32;
        self.stride_b = stride_b as u32;
        self.stride_out = stride_out as u32;
        self
    }
}

/// Row-broadcast bias over an `[n, c]` matrix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct BiasParams {
    pub n: u32,
    pub c: u32,
}

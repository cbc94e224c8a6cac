//! The params of the optimiser (the `optimizer` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// One AdamW step with decoupled weight decay and global-norm clipping, reading the squared
/// global gradient norm `norm_sq[0]` (accumulated by `sum_squares`) on the device:
/// - `norm_sq[0]` not finite (NaN or an infinity): nothing is written (the step is skipped);
/// - otherwise the gradient used is `g * s` with `s = min(1, max_grad_norm / (sqrt(norm_sq[0]) + 1e-6))`
///   when `max_grad_norm > 0`, else `s = 1`; the gradient buffer itself is not modified;
/// - `m = b1 m + (1-b1) g s`, `v = b2 v + (1-b2) (g s)^2`,
///   `p -= lr * (m / bc1 / (sqrt(v / bc2) + eps) + weight_decay * p)` with `bc = 1 - beta^step`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AdamWParams {
    pub n: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bias_correction1: f32,
    pub bias_correction2: f32,
    /// global-norm clipping threshold; 0 (or less) disables clipping
    pub max_grad_norm: f32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

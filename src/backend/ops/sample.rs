//! The params of next-token sampling (the `sample` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// Next-token sampling from `[n, v]` logits. temperature 0 is greedy (argmax, lowest index on
/// ties); otherwise softmax(logits / temperature) restricted to the top_k most likely tokens
/// (0 = all) and then to the smallest set whose mass reaches top_p (1 = all). The uniform draw of
/// row i is a counter-based hash of (seed, step, i), so every backend draws the same numbers. The
/// step is read on the device, `step = steps[step_at]` (as u32), so that a sequence of decode steps
/// is the same launches every time: the rollout engine keeps it in its slot state, where
/// [`Backend::decode_advance`](super::Backend::decode_advance) counts it up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SampleParams {
    pub n: u32,
    pub v: u32,
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    /// index of the sampling step in the `steps` buffer of [`Backend::sample`](super::Backend::sample)
    pub step_at: u32,
}

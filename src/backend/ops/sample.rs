//! The params of next-token sampling (the `sample` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// Next-token sampling from `[n, v]` logits. temperature <= 0 is greedy (argmax, lowest index on
/// ties); otherwise softmax(logits / temperature) restricted to the top_k largest logits (0 = all;
/// every token tied with the top_k-th is kept) and then to the smallest set of largest logits
/// whose mass reaches top_p (1 = all; ties at the cut kept too), drawn by Gumbel-max
/// (`src/backend/cpu/sample.rs` defines it exactly). The uniform of token j in row i is a
/// counter-based hash of (seed, step, i, j), so every backend draws the same numbers. The
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

/// The largest vocabulary top-p sampling takes: its fixed-point masses (2^40 per unit of
/// probability) are summed in u64.
pub const MAX_TOP_P_VOCAB: u32 = 1 << 24;

impl SampleParams {
    /// Whether the params need more than the op offers: top-p over more than
    /// [`MAX_TOP_P_VOCAB`] tokens. The message for the op's error.
    pub fn unsupported(&self) -> Option<String> {
        (self.temperature > 0.0 && self.top_p < 1.0 && self.v > MAX_TOP_P_VOCAB)
            .then(|| format!("top_p needs a vocabulary of at most {MAX_TOP_P_VOCAB} tokens, not {}", self.v))
    }
}

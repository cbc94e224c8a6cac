//! The params of the fused LM-head log-probs (the `logprob_gather` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// Default number of vocabulary rows of the LM head streamed per chunk by `logprob_gather_*`.
pub const LOGPROB_CHUNK: usize = 4096;

/// Log-probability of a chosen token and entropy of the next-token distribution, straight from
/// the final hidden states `h [n, c]` and the LM head (or tied embedding) `w [v, c]`, with
/// `z = (h @ w^T) / temperature` and `p = softmax(z)`:
/// `logp[i] = z[i, targets[i]] - lse[i]`, `entropy[i] = -sum_j p_ij log p_ij`, `lse[i] = logsumexp_j z_ij`.
/// The vocabulary is streamed `chunk` rows of `w` at a time (online log-sum-exp), so the `[n, v]`
/// logits never exist; a row whose target is negative has no outputs (all three are 0) and no
/// gradient. `temperature` must be positive (the sampling temperature, so that the log-probs are
/// those of the distribution that was sampled).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct LogprobParams {
    pub n: u32,
    pub c: u32,
    pub v: u32,
    /// vocabulary rows of `w` per streamed chunk (e.g. [`LOGPROB_CHUNK`]); sets the scratch size
    pub chunk: u32,
    pub temperature: f32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

impl LogprobParams {
    /// `n` rows of `c` channels, a vocabulary of `v`, temperature 1, chunks of [`LOGPROB_CHUNK`].
    pub fn new(n: usize, c: usize, v: usize) -> Self {
        LogprobParams { n: n as u32, c: c as u32, v: v as u32, chunk: LOGPROB_CHUNK as u32, temperature: 1.0, ..Default::default() }
    }
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = t;
        self
    }
    pub fn chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk as u32;
        self
    }
}

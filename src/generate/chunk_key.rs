//! The replay key of the rollout engine's decode chunk (see [`crate::backend::ops::Backend::replay`]):
//! a recorded chunk may stand in for the launches only while everything they bake in is the same —
//! the engine's buffers (their generation, renewed on every reallocation), the model's weights (by
//! [`Backend::buffer_key`], so another model or a reallocated weight never replays a stale graph),
//! the rows `n`, the steps of the chunk and the params of `sample` and `decode_advance`.

use crate::backend::ops::{Backend, DecodeAdvanceParams, SampleParams};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// A generation number no other buffer set of this process has had.
pub fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// The key of a chunk of `steps` decode steps over `n` rows.
pub fn chunk_key<B: Backend>(be: &B, generation: u64, weights: &[B::Buf], n: usize, steps: usize, sample: &SampleParams, advance: &DecodeAdvanceParams) -> u64 {
    let mut h = DefaultHasher::new();
    (generation, n, steps, weights.len()).hash(&mut h);
    for w in weights {
        be.buffer_key(w).hash(&mut h);
    }
    bytemuck::bytes_of(sample).hash(&mut h);
    bytemuck::bytes_of(advance).hash(&mut h);
    h.finish()
}

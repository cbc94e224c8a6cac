//! Sampling with a KV cache.

//! Model-level checks on the CPU: Hugging Face checkpoints, tokenizers and datasets, the
//! rollout engine, and parity with what `transformers` computes.

mod checkpoint;
mod data;
mod rollout;
mod transformers_parity;

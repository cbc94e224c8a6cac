//! `rlhf`: the whole RLHF pipeline on a from-scratch decoder-only transformer.
//!
//! - [`backend`]: the op list ([`backend::ops`]) and the backends that implement it;
//! - [`model`]: Hugging Face configs and checkpoints, the decoder's forward and backward;
//! - [`data`]: tokenizers, JSONL datasets, chat templates, built-in corpora;
//! - [`train`]: optimiser, learning-rate schedule, metrics;
//! - [`generate`]: sampling with a KV cache;
//! - [`rl`]: the training commands;
//! - [`rating`]: Elo ratings of models from head-to-head outcomes.

pub mod backend;
pub mod data;
pub mod demo;
pub mod error;
pub mod generate;
pub mod io;
pub mod model;
pub mod rating;
pub mod rl;
pub mod train;

pub use error::{Error, Result};

//! Tokenizers, JSONL datasets, chat templates and built-in corpora.

pub mod rng;

//! Tokenizers, JSONL datasets, chat templates and built-in corpora.

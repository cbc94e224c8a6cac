//! Tokenizers, JSONL datasets, chat templates and built-in corpora.
//!
//! - [`tokenizer`]: Hugging Face `tokenizer.json` folders and the built-in byte tokenizer;
//! - [`chat`]: chat templates (Jinja) and the assistant-only loss mask;
//! - [`jsonl`]: SFT datasets (`text`, `input_ids`, `prompt`/`completion`, `messages`);
//! - [`batch`]: `[b, t]` batches with shifted targets and a seeded, resumable batcher;
//! - [`builtin`]: a small corpus generated in code;
//! - [`rng`]: the crate's seeded random generator.

pub mod batch;
pub mod builtin;
pub mod byte_tokenizer_hf;
pub mod chat;
pub mod jsonl;
pub mod preference;
pub mod rng;
pub mod score_input;
pub mod tokenizer;

pub use batch::{Batch, Batcher};
pub use builtin::{builtin_chat, builtin_corpus, builtin_examples, builtin_qa, QaPair};
pub use chat::{encode_chat, encode_chat_prompt, render_chat, ChatTemplate, Message, FALLBACK_CHAT_TEMPLATE};
pub use jsonl::{load_sft_jsonl, parse_messages, prompt_completion_example, read_jsonl_objects, text_example, Example};
pub use rng::Rng;
pub use tokenizer::{ByteTokenizer, HfTokenizer, Span, Tokenizer, BYTE_TOKENIZER_FILE};

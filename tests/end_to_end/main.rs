//! The `rlhf` binary and the demo as a user runs them: every command's happy path and bad
//! input, `--config` files, and the demo pipeline (CPU, wgpu, bf16).

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod config;
mod demo;
mod demo_dpo;
mod demo_methods;
mod feedback;
mod hf_folders;
mod reward_cmd;
mod save_dtype;

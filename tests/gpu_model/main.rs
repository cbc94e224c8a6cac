//! Whole models on every backend that is available (CPU reference, wgpu, CUDA or its
//! emulator): fixtures' log-probs, SFT and PPO steps, every command; `f32_model` in f32 storage,
//! `bf16_model` in bf16.

#[path = "../common/mod.rs"]
mod common;

mod f32_model;
mod bf16_model;

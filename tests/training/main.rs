//! The trainers on the CPU backend: SFT, reward models, DPO, GRPO, the PPO update, and exact
//! resume of every command.

#[path = "../common/mod.rs"]
mod common;

mod sft;
mod reward;
mod dpo;
mod grpo;
mod ppo_update;
mod resume;
mod readback;

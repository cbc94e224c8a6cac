//! Training commands: supervised fine-tuning (the reward model, PPO, DPO and GRPO build on the
//! same op list and training step), and PPO's host-side pieces: the KL coefficient controller and
//! running reward statistics.

pub mod kl_controller;
pub mod running_stats;
pub mod sft;

//! Training commands: supervised fine-tuning, reward models, PPO and the DPO family (GRPO builds
//! on the same op list and training steps), and PPO's host-side pieces: the KL coefficient controller
//! and running reward statistics.

pub mod demo_dpo;
pub mod demo_task;
pub mod dpo;
pub mod kl_controller;
pub mod pipeline;
pub mod ppo;
pub mod ppo_update;
pub mod reward;
pub mod running_stats;
pub mod sft;

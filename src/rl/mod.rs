//! Training commands: supervised fine-tuning and reward models (PPO, DPO and GRPO build on the
//! same op list and training steps), and PPO's host-side pieces: the KL coefficient controller
//! and running reward statistics. GRPO/RLOO/REINFORCE++ (`grpo`) are critic-free: advantages come
//! from groups of samples per prompt (`advantage_estimators`), rewards from a reward model or a
//! built-in function (`reward_fns`).

pub mod advantage_estimators;
pub mod demo_grpo;
pub mod demo_task;
pub mod grpo;
pub mod kl_controller;
pub mod pipeline;
pub mod ppo;
pub mod ppo_update;
pub mod reward;
pub mod reward_fns;
pub mod rollout_batch;
pub mod running_stats;
pub mod sft;

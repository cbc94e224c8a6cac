//! Training commands: supervised fine-tuning, reward models, PPO, the DPO family and the
//! critic-free estimators (GRPO/RLOO/REINFORCE++: advantages from groups of samples per prompt in
//! `advantage_estimators`, rewards from a reward model, a built-in function in `reward_fns` or an outside program in
//! `reward_cmd` / an HTTP endpoint in `reward_url`),
//! and PPO's host-side pieces: the KL coefficient controller and running reward statistics.

pub mod advantage_estimators;
pub mod dpo;
pub mod dpo_config;
pub mod dpo_pairs;
pub mod grpo;
pub mod kl_controller;
pub mod ppo;
pub mod policy_update;
pub mod reward;
pub mod reward_cmd;
pub mod reward_url;
pub mod reward_fns;
pub mod rollout_batch;
pub mod running_stats;
pub mod sft;
pub mod step_readout;
pub mod update_epochs;

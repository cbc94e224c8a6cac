//! Training commands: supervised fine-tuning (the reward model, PPO, DPO and GRPO build on the
//! same op list and training step).

pub mod sft;

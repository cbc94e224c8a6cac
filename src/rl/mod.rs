//! Training commands: supervised fine-tuning and reward models (PPO, DPO and GRPO build on the
//! same op list and training steps).

pub mod reward;
pub mod sft;

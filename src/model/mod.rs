//! The decoder: configuration, parameter layout, Hugging Face checkpoints, forward and backward.

pub mod checkpoint;
pub mod config;
pub mod params;

pub use config::{Family, ModelConfig};
pub use params::ParamLayout;

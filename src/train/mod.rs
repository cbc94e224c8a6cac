//! Optimiser, learning-rate schedule, metrics and progress.

pub mod lm;
pub mod metrics;
pub mod optimizer;
pub mod progress;
pub mod schedule;

pub use metrics::MetricsWriter;
pub use optimizer::{AdamW, AdamWConfig};
pub use progress::Progress;
pub use schedule::LrSchedule;

//! Optimiser, learning-rate schedule, metrics, progress, the divergence guard, exact resume, and
//! the data-parallel world (launch environment, collective engine).

pub mod collective;
pub mod guard;
pub mod lm;
pub mod metrics;
pub mod optimizer;
pub mod progress;
pub mod resume;
pub mod run;
pub mod run_dir;
pub mod schedule;
pub mod training_config;
pub mod world;
pub mod zero;

pub use guard::DivergenceGuard;
pub use metrics::MetricsWriter;
pub use optimizer::{AdamW, AdamWConfig};
pub use progress::Progress;
pub use run::{RunSpec, TrainRun};
pub use schedule::LrSchedule;

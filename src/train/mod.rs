//! Optimiser, learning-rate schedule, metrics and progress.

//! Parity tests of the `rl_losses` family (to be written).

pub const CHECKS: &[(&str, &str)] = &[];

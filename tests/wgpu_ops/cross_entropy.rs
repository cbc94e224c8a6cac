//! Parity tests of the `cross_entropy` family (to be written).

pub const CHECKS: &[(&str, &str)] = &[];

//! Parity tests of the `activation` family (to be written).

pub const CHECKS: &[(&str, &str)] = &[];

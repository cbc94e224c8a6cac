//! Parity tests of the `advantage` family (to be written).

pub const CHECKS: &[(&str, &str)] = &[];

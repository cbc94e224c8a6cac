//! Parity tests of the `rope` family (to be written).

pub const CHECKS: &[(&str, &str)] = &[];

//! Parity tests of the `attention` family (to be written).

pub const CHECKS: &[(&str, &str)] = &[];

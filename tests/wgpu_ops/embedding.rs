//! Parity tests of the `embedding` family (to be written).

pub const CHECKS: &[(&str, &str)] = &[];

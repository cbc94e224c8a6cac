//! Parity tests of the `reward` family (to be written).

pub const CHECKS: &[(&str, &str)] = &[];

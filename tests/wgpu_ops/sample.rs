//! Parity tests of the `sample` family (to be written).

pub const CHECKS: &[(&str, &str)] = &[];

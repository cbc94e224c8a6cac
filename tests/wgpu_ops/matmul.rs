//! Parity tests of the `matmul` family (to be written).

pub const CHECKS: &[(&str, &str)] = &[];

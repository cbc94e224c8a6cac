//! Parity tests of the `layernorm` family (to be written).

pub const CHECKS: &[(&str, &str)] = &[];

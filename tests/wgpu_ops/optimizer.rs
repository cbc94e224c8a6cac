//! Parity tests of the `optimizer` family (to be written).

pub const CHECKS: &[(&str, &str)] = &[];

//! Parity tests of the `logprob_gather` family (to be written).

pub const CHECKS: &[(&str, &str)] = &[];

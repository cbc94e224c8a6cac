//! `--precision`: the element type of the buffers a model computes with (weights, activations,
//! gradients, the KV cache). Everything else stays f32: master weights and AdamW moments, norm
//! statistics, log-sum-exps, losses and every per-token RL value (log-probs, KL, advantages).
//!
//! | mode   | compute buffers | master weights | accumulation | where                          |
//! |--------|-----------------|----------------|--------------|--------------------------------|
//! | `f32`  | f32             | (the weights)  | f32          | every backend; parity tests    |
//! | `bf16` | bf16            | f32            | f32          | cuda on sm_80 and newer        |
//!
//! `auto` (the default) is bf16 where the backend has it and f32 elsewhere. A buffer is allocated
//! with a [`Storage`]: `F32` always holds f32, `Compute` holds the backend's compute type. Ops
//! read bf16 values, compute in f32 and round what they write to bf16 (round to nearest even).
//! Every op names which of its buffers are compute-typed (they must share one type, which picks
//! the kernel instantiation) and which are f32 whatever the mode; [`op_dtype`] checks both, so a
//! model that wires an f32 buffer where a compute one belongs fails with the op and buffer names
//! on every backend that checks types, the CPU reference of the bf16 mode included
//! ([`super::bf16_reference`]).

use crate::error::{Error, Result};

/// The element type of a buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dtype {
    #[default]
    F32,
    Bf16,
}

impl Dtype {
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
        }
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 => 2,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a buffer is allocated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// f32 in every mode (statistics, losses, RL values, master weights, optimiser moments)
    F32,
    /// the backend's compute type ([`super::Backend::compute_dtype`])
    Compute,
}

/// The `--precision` flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Precision {
    /// bf16 where the backend has it (cuda on sm_80 and newer), else f32
    #[default]
    Auto,
    /// f32 everywhere (the parity mode)
    F32,
    /// bf16 weights, activations and gradients; f32 master weights and optimiser state
    Bf16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
    /// The compute type this flag asks of a backend whose preferred type is `preferred`.
    pub fn resolve(self, preferred: Dtype) -> Dtype {
        match self {
            Precision::Auto => preferred,
            Precision::F32 => Dtype::F32,
            Precision::Bf16 => Dtype::Bf16,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `x` rounded to the nearest bf16 (ties to even; NaN stays NaN), as an f32.
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// Rounds every value of `xs` to bf16 in place.
pub fn round_bf16_slice(xs: &mut [f32]) {
    for x in xs {
        *x = round_bf16(*x);
    }
}

/// The bf16 bit patterns of `xs` (upload to a bf16 buffer).
pub fn to_bf16_bits(xs: &[f32]) -> Vec<u16> {
    xs.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect()
}

/// The f32 values of bf16 bit patterns (download of a bf16 buffer).
pub fn from_bf16_bits(bits: &[u16]) -> Vec<f32> {
    bits.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect()
}

/// The error of a backend asked for a compute type it does not have.
pub fn unsupported(backend: &'static str, d: Dtype, why: impl std::fmt::Display) -> Error {
    Error::Backend { backend, msg: format!("--precision {d}: {why}") }
}

/// The `set_compute_dtype` of a backend that computes in f32 only.
pub fn only_f32(backend: &'static str, d: Dtype) -> Result<()> {
    match d {
        Dtype::F32 => Ok(()),
        _ => Err(unsupported(backend, d, format!("the {backend} backend stores f32 only (use --precision f32 or auto)"))),
    }
}

/// Checks the buffer types of one call of `op`: every `(name, type)` of `compute` must share one
/// type, which is returned (it picks the kernel); every one of `f32` must be f32. The error names
/// the op and the offending buffers.
pub fn op_dtype(backend: &'static str, op: &str, compute: &[(&str, Dtype)], f32: &[(&str, Dtype)]) -> Result<Dtype> {
    if let Some((name, d)) = f32.iter().find(|(_, d)| *d != Dtype::F32) {
        return Err(Error::Backend { backend, msg: format!("{op}: `{name}` must be an f32 buffer in every precision, got {d}") });
    }
    let Some(&(first, t)) = compute.first() else { return Ok(Dtype::F32) };
    if let Some((name, d)) = compute.iter().find(|(_, d)| *d != t) {
        return Err(Error::Backend { backend, msg: format!("{op}: `{name}` is {d} but `{first}` is {t} (an op's compute buffers share one type)") });
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1)
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6
        assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 1.0 + 2f32.powi(-7));
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(from_bf16_bits(&to_bf16_bits(&[3.0, -0.5])), vec![3.0, -0.5]);
    }

    #[test]
    fn op_dtype_names_the_op_and_the_buffer() {
        let ok = op_dtype("cuda", "matmul", &[("out", Dtype::Bf16), ("a", Dtype::Bf16)], &[]).unwrap();
        assert_eq!(ok, Dtype::Bf16);
        let e = op_dtype("cuda", "matmul", &[("out", Dtype::Bf16), ("a", Dtype::F32)], &[]).unwrap_err().to_string();
        assert!(e.contains("matmul") && e.contains("`a` is f32") && e.contains("`out` is bf16"), "{e}");
        let e = op_dtype("cpu", "layernorm_fwd", &[("out", Dtype::F32)], &[("rstd", Dtype::Bf16)]).unwrap_err().to_string();
        assert!(e.contains("`rstd` must be an f32 buffer"), "{e}");
        assert_eq!(Precision::Auto.resolve(Dtype::Bf16), Dtype::Bf16);
        assert_eq!(Precision::F32.resolve(Dtype::Bf16), Dtype::F32);
    }
}

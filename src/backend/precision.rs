//! `--matmul-precision`: the precision matmul operands are rounded to (modelled on PyTorch's
//! `torch.set_float32_matmul_precision`). Buffers stay f32 and every product accumulates in f32;
//! only the operands `a` and `b` of a matmul are rounded when they are read.
//!
//! | value  | operand mantissa (stored bits) | where                                   |
//! |--------|-------------------------------:|-----------------------------------------|
//! | `f32`  | 23                             | every backend (the default, as before)  |
//! | `tf32` | 10                             | cuda (cuBLAS `CUBLAS_COMPUTE_32F_FAST_TF32`) |
//! | `bf16` | 7                              | cuda (cuBLAS `CUBLAS_COMPUTE_32F_FAST_16BF`) |
//! | `f16`  | 10 (5-bit exponent)            | wgpu (`shaders/matmul_f16.wgsl`, needs shader-f16), cuda (`_FAST_16F`) |
//!
//! The tolerances each mode is tested with are in docs/architecture.md ("Matmul precision").

use crate::error::{Error, Result};

/// The precision of matmul operands (accumulation is f32 in every mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum MatmulPrecision {
    /// f32 operands: results as without the flag
    #[default]
    F32,
    /// TensorFloat-32 operands (cuda)
    Tf32,
    /// bfloat16 operands (cuda)
    Bf16,
    /// IEEE half operands (wgpu with shader-f16, cuda)
    F16,
}

impl MatmulPrecision {
    /// The flag's spelling of the value.
    pub fn as_str(self) -> &'static str {
        match self {
            MatmulPrecision::F32 => "f32",
            MatmulPrecision::Tf32 => "tf32",
            MatmulPrecision::Bf16 => "bf16",
            MatmulPrecision::F16 => "f16",
        }
    }

    /// Bits of mantissa an operand keeps (without the implicit one).
    pub fn mantissa_bits(self) -> u32 {
        match self {
            MatmulPrecision::F32 => 23,
            MatmulPrecision::Tf32 | MatmulPrecision::F16 => 10,
            MatmulPrecision::Bf16 => 7,
        }
    }

    /// The error of a backend that cannot compute matmuls in this precision: names the flag, the
    /// value, the backend and `why`.
    pub fn unsupported(self, backend: &'static str, why: impl std::fmt::Display) -> Error {
        Error::Backend { backend, msg: format!("--matmul-precision {self}: {why}") }
    }
}

impl std::fmt::Display for MatmulPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `set_matmul_precision` of a backend that multiplies in f32 only.
pub fn only_f32(backend: &'static str, p: MatmulPrecision) -> Result<()> {
    match p {
        MatmulPrecision::F32 => Ok(()),
        _ => Err(p.unsupported(backend, format!("the {backend} backend multiplies in f32 only (the one value it accepts is f32)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_clap() {
        use clap::ValueEnum;
        for p in MatmulPrecision::value_variants() {
            assert_eq!(MatmulPrecision::from_str(p.as_str(), false).unwrap(), *p);
        }
        assert_eq!(MatmulPrecision::default(), MatmulPrecision::F32);
    }

    #[test]
    fn only_f32_names_the_flag_and_the_backend() {
        assert!(only_f32("cpu", MatmulPrecision::F32).is_ok());
        let e = only_f32("cpu", MatmulPrecision::Bf16).unwrap_err().to_string();
        assert!(e.contains("--matmul-precision bf16") && e.contains("cpu"), "{e}");
    }
}

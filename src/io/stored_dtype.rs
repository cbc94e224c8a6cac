//! Decoding the little-endian tensor bytes of a safetensors file into the f32 values the
//! engine computes in. The dtype is safetensors' own [`safetensors::Dtype`]; F32, F16 and BF16
//! are read, anything else is refused by the caller with the tensor's name.

use half::{bf16, f16};
use safetensors::Dtype;

/// `bytes` of `dtype` as f32 values, or `None` for a dtype the engine does not read.
pub fn to_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        _ => return None,
    })
}

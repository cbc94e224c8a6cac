//! The ground floor: files written atomically, content digests, and decoding stored tensors.

pub mod fs;
pub mod safetensors_out;
pub mod stored_dtype;

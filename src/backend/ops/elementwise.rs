//! The params of element-wise ops (the `elementwise` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// Element-wise ops over `n` elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ElementwiseParams {
    pub n: u32,
    pub _pad: u32,
}

impl ElementwiseParams {
    /// The params of an op over `n` elements; kernels count elements in 32 bits, so a larger `n`
    /// (a 64k-token x 152k-vocabulary tensor, say) is an error, never a count that wraps.
    pub fn new(n: usize) -> crate::error::Result<Self> {
        let n = u32::try_from(n).map_err(|_| {
            crate::error::Error::invalid(format!(
                "an element-wise op over {n} values: more than the 2^32 - 1 a kernel counts (use smaller batches or sequences)"
            ))
        })?;
        Ok(ElementwiseParams { n, _pad: 0 })
    }
}

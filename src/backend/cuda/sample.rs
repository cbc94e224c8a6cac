//! Launcher of kernels/sample.cu: one block of 256 per row (greedy, or the CPU backend's Gumbel-max
//! draw with its top-k / top-p radix selects and counter-based uniforms, keyed by the step the
//! device holds in `steps[p.step_at]`).

use super::buffer::CudaBuf;
use super::context::{launch, per_row, Context};
use super::need;
use crate::backend::ops::SampleParams;
use crate::error::Result;
use cudarc::driver::CudaSlice;

pub fn sample(ctx: &Context, out: &mut CudaSlice<i32>, logits: &CudaBuf, steps: &CudaSlice<i32>, p: SampleParams) -> Result<()> {
    let (n, v) = (p.n as usize, p.v as usize);
    need("sample", &[("out", out.len(), n), ("logits", logits.len(), n * v), ("steps", steps.len(), p.step_at as usize + 1)])?;
    if let Some(why) = p.unsupported() {
        return Err(super::kernels::err(format!("sample: {why}")));
    }
    if n == 0 || v == 0 {
        return Ok(());
    }
    let t = logits.dtype();
    launch!(ctx, "sample", "sample"[t], per_row(n, 256), out, logits, steps, &p)
}

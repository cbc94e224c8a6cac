//! Launcher of `sample` (`shaders/sample.wgsl`): one workgroup per row; greedy argmax, or the
//! CPU backend's Gumbel-max draw with the same counter-based uniforms (keyed by the step in
//! `steps[step_at]`, on the device) and the same top-k / top-p radix selects. The tokens match
//! the CPU backend's except where WGSL's looser division (or a driver's fused multiply-add) moves
//! a score or mass by an ulp across a near-tie.

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

pub fn sample(ctx: &Context, out: &GpuBuf, logits: &GpuBuf, steps: &GpuBuf, p: SampleParams) -> Result<()> {
    let (n, v) = (p.n as usize, p.v as usize);
    if v == 0 && n > 0 {
        return Err(err("sample: empty vocabulary"));
    }
    if out.len < n || logits.len < n * v {
        return Err(err(format!("sample: out needs {n} values and logits {} (they hold {} and {})", n * v, out.len, logits.len)));
    }
    if let Some(why) = p.unsupported() {
        return Err(err(format!("sample: {why}")));
    }
    if steps.len <= p.step_at as usize {
        return Err(err(format!("sample: step_at {} is outside the {} values of steps", p.step_at, steps.len)));
    }
    ctx.dispatch("sample", bytemuck::bytes_of(&p), &[out, logits, steps], ctx.grid_1d(n, 1))
}

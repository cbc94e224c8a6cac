//! Launcher of `sample` (`shaders/sample.wgsl`): one workgroup per row; greedy argmax, or the
//! CPU backend's temperature / top-k / top-p draw with the same counter-based uniform (keyed by
//! the step in `steps[step_at]`, on the device), done
//! without sorting (a 16-way search on the logit order finds each cut, an ordered scan resolves
//! ties by index). The tokens match the CPU backend's except where a running probability mass lies
//! within rounding of top_p or of the drawn uniform (f32 tree sums here, sequential sums there).

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
    if steps.len <= p.step_at as usize {
        return Err(err(format!("sample: step_at {} is outside the {} values of steps", p.step_at, steps.len)));
    }
    ctx.dispatch("sample", bytemuck::bytes_of(&p), &[out, logits, steps], ctx.grid_1d(n, 1))
}

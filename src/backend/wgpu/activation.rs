//! Launchers of the `activation` family (`shaders/activation.wgsl`): GELU (tanh form) and
//! SwiGLU, forward and backward, one invocation per element.

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

fn launch(ctx: &Context, name: &str, p: ElementwiseParams, bufs: &[&GpuBuf]) -> Result<()> {
    let n = p.n as usize;
    if bufs.iter().any(|b| b.len < n) {
        return Err(err(format!("{name}: buffer shorter than n = {n}")));
    }
    ctx.dispatch(name, bytemuck::bytes_of(&p), bufs, ctx.grid_1d(n, 256))
}

pub fn gelu_fwd(ctx: &Context, out: &GpuBuf, inp: &GpuBuf, p: ElementwiseParams) -> Result<()> {
    launch(ctx, "gelu_fwd", p, &[out, inp])
}

pub fn gelu_bwd(ctx: &Context, dinp: &GpuBuf, dout: &GpuBuf, inp: &GpuBuf, p: ElementwiseParams) -> Result<()> {
    launch(ctx, "gelu_bwd", p, &[dinp, dout, inp])
}

pub fn swiglu_fwd(ctx: &Context, out: &GpuBuf, gate: &GpuBuf, up: &GpuBuf, p: ElementwiseParams) -> Result<()> {
    launch(ctx, "swiglu_fwd", p, &[out, gate, up])
}

pub fn swiglu_bwd(ctx: &Context, dgate: &GpuBuf, dup: &GpuBuf, dout: &GpuBuf, gate: &GpuBuf, up: &GpuBuf, p: ElementwiseParams) -> Result<()> {
    launch(ctx, "swiglu_bwd", p, &[dgate, dup, dout, gate, up])
}

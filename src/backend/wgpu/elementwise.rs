//! Launchers of the element-wise family (`shaders/elementwise.wgsl`): one invocation per element.

use super::buffer::GpuBuf;
use super::context::{err, params_with, Context};
use crate::backend::ops::ElementwiseParams;
use crate::error::Result;

fn launch(ctx: &Context, name: &str, p: ElementwiseParams, scalar: f32, bufs: &[&GpuBuf]) -> Result<()> {
    let n = p.n as usize;
    if bufs.iter().any(|b| b.len < n) {
        return Err(err(format!("{name}: buffer shorter than n = {n}")));
    }
    ctx.dispatch(name, &params_with(&p, &[scalar]), bufs, ctx.grid_1d(n, 256))
}

pub fn fill(ctx: &Context, out: &GpuBuf, value: f32, p: ElementwiseParams) -> Result<()> {
    launch(ctx, "fill", p, value, &[out])
}
pub fn copy(ctx: &Context, out: &GpuBuf, inp: &GpuBuf, p: ElementwiseParams) -> Result<()> {
    launch(ctx, "copy", p, 0.0, &[out, inp])
}
pub fn add(ctx: &Context, out: &GpuBuf, a: &GpuBuf, b: &GpuBuf, p: ElementwiseParams) -> Result<()> {
    launch(ctx, "add", p, 0.0, &[out, a, b])
}
pub fn add_inplace(ctx: &Context, acc: &GpuBuf, x: &GpuBuf, p: ElementwiseParams) -> Result<()> {
    launch(ctx, "add_inplace", p, 0.0, &[acc, x])
}
pub fn scale_inplace(ctx: &Context, x: &GpuBuf, s: f32, p: ElementwiseParams) -> Result<()> {
    launch(ctx, "scale_inplace", p, s, &[x])
}

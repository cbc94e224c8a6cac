//! Launchers of the `layernorm` family (`shaders/layernorm.wgsl`): shapes checked on the host, then one
//! or more dispatches. Not yet implemented.

#![allow(unused_variables)]

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

#[allow(clippy::too_many_arguments)]
pub fn layernorm_fwd(ctx: &Context, out: &GpuBuf, mean: &GpuBuf, rstd: &GpuBuf, inp: &GpuBuf, weight: &GpuBuf, bias: &GpuBuf, p: NormParams) -> Result<()> {
    Err(err("layernorm_fwd: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn layernorm_bwd(ctx: &Context, dinp: &GpuBuf, dweight: &GpuBuf, dbias: &GpuBuf, dout: &GpuBuf, inp: &GpuBuf, mean: &GpuBuf, rstd: &GpuBuf, weight: &GpuBuf, p: NormParams) -> Result<()> {
    Err(err("layernorm_bwd: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_fwd(ctx: &Context, out: &GpuBuf, rstd: &GpuBuf, inp: &GpuBuf, weight: &GpuBuf, p: NormParams) -> Result<()> {
    Err(err("rmsnorm_fwd: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_bwd(ctx: &Context, dinp: &GpuBuf, dweight: &GpuBuf, dout: &GpuBuf, inp: &GpuBuf, rstd: &GpuBuf, weight: &GpuBuf, p: NormParams) -> Result<()> {
    Err(err("rmsnorm_bwd: not implemented on wgpu yet"))
}

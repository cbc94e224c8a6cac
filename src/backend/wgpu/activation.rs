//! Launchers of the `activation` family (`shaders/activation.wgsl`): shapes checked on the host, then one
//! or more dispatches. Not yet implemented.

#![allow(unused_variables)]

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

#[allow(clippy::too_many_arguments)]
pub fn gelu_fwd(ctx: &Context, out: &GpuBuf, inp: &GpuBuf, p: ElementwiseParams) -> Result<()> {
    Err(err("gelu_fwd: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn gelu_bwd(ctx: &Context, dinp: &GpuBuf, dout: &GpuBuf, inp: &GpuBuf, p: ElementwiseParams) -> Result<()> {
    Err(err("gelu_bwd: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn swiglu_fwd(ctx: &Context, out: &GpuBuf, gate: &GpuBuf, up: &GpuBuf, p: ElementwiseParams) -> Result<()> {
    Err(err("swiglu_fwd: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn swiglu_bwd(ctx: &Context, dgate: &GpuBuf, dup: &GpuBuf, dout: &GpuBuf, gate: &GpuBuf, up: &GpuBuf, p: ElementwiseParams) -> Result<()> {
    Err(err("swiglu_bwd: not implemented on wgpu yet"))
}

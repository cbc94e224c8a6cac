//! Launchers of the `matmul` family (`shaders/matmul.wgsl`): shapes checked on the host, then one
//! or more dispatches. Not yet implemented.

#![allow(unused_variables)]

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

#[allow(clippy::too_many_arguments)]
pub fn matmul(ctx: &Context, out: &GpuBuf, a: &GpuBuf, b: &GpuBuf, p: MatmulParams) -> Result<()> {
    Err(err("matmul: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn bias_add(ctx: &Context, out: &GpuBuf, bias: &GpuBuf, p: BiasParams) -> Result<()> {
    Err(err("bias_add: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn bias_bwd(ctx: &Context, dbias: &GpuBuf, dout: &GpuBuf, p: BiasParams) -> Result<()> {
    Err(err("bias_bwd: not implemented on wgpu yet"))
}

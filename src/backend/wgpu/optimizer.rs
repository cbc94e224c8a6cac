//! Launchers of the `optimizer` family (`shaders/optimizer.wgsl`): shapes checked on the host, then one
//! or more dispatches. Not yet implemented.

#![allow(unused_variables)]

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

#[allow(clippy::too_many_arguments)]
pub fn sum_squares(ctx: &Context, acc: &GpuBuf, x: &GpuBuf, p: ElementwiseParams) -> Result<()> {
    Err(err("sum_squares: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn clip_grad(ctx: &Context, x: &GpuBuf, norm_sq: &GpuBuf, p: ClipParams) -> Result<()> {
    Err(err("clip_grad: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn adamw(ctx: &Context, param: &GpuBuf, m: &GpuBuf, v: &GpuBuf, grad: &GpuBuf, p: AdamWParams) -> Result<()> {
    Err(err("adamw: not implemented on wgpu yet"))
}

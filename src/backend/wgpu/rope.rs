//! Launchers of the `rope` family (`shaders/rope.wgsl`): shapes checked on the host, then one
//! or more dispatches. Not yet implemented.

#![allow(unused_variables)]

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

#[allow(clippy::too_many_arguments)]
pub fn rope_fwd(ctx: &Context, x: &GpuBuf, positions: &GpuBuf, p: RopeParams) -> Result<()> {
    Err(err("rope_fwd: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn rope_bwd(ctx: &Context, dx: &GpuBuf, positions: &GpuBuf, p: RopeParams) -> Result<()> {
    Err(err("rope_bwd: not implemented on wgpu yet"))
}

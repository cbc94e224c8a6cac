//! Launchers of the `advantage` family (`shaders/advantage.wgsl`): shapes checked on the host, then one
//! or more dispatches. Not yet implemented.

#![allow(unused_variables)]

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

#[allow(clippy::too_many_arguments)]
pub fn gae(ctx: &Context, advantages: &GpuBuf, returns: &GpuBuf, rewards: &GpuBuf, values: &GpuBuf, mask: &GpuBuf, p: GaeParams) -> Result<()> {
    Err(err("gae: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn masked_whiten(ctx: &Context, x: &GpuBuf, stats: &GpuBuf, mask: &GpuBuf, p: WhitenParams) -> Result<()> {
    Err(err("masked_whiten: not implemented on wgpu yet"))
}

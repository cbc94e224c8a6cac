//! Launchers of the `cross_entropy` family (`shaders/cross_entropy.wgsl`): shapes checked on the host, then one
//! or more dispatches. Not yet implemented.

#![allow(unused_variables)]

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_fwd(ctx: &Context, losses: &GpuBuf, lse: &GpuBuf, logits: &GpuBuf, targets: &GpuBuf, p: CrossEntropyParams) -> Result<()> {
    Err(err("cross_entropy_fwd: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_bwd(ctx: &Context, dlogits: &GpuBuf, dlosses: &GpuBuf, logits: &GpuBuf, lse: &GpuBuf, targets: &GpuBuf, p: CrossEntropyParams) -> Result<()> {
    Err(err("cross_entropy_bwd: not implemented on wgpu yet"))
}

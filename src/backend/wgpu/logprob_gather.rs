//! Launchers of the `logprob_gather` family (`shaders/logprob_gather.wgsl`): shapes checked on the host, then one
//! or more dispatches. Not yet implemented.

#![allow(unused_variables)]

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

#[allow(clippy::too_many_arguments)]
pub fn logprob_gather_fwd(ctx: &Context, logp: &GpuBuf, entropy: &GpuBuf, lse: &GpuBuf, h: &GpuBuf, targets: &GpuBuf, w: &GpuBuf, p: LogprobParams) -> Result<()> {
    Err(err("logprob_gather_fwd: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn logprob_gather_bwd(ctx: &Context, dh: &GpuBuf, dw: &GpuBuf, dlogp: &GpuBuf, dentropy: &GpuBuf, h: &GpuBuf, targets: &GpuBuf, lse: &GpuBuf, entropy: &GpuBuf, w: &GpuBuf, p: LogprobParams) -> Result<()> {
    Err(err("logprob_gather_bwd: not implemented on wgpu yet"))
}

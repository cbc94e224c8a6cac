//! Launchers of the `rl_losses` family (`shaders/rl_losses.wgsl`): shapes checked on the host, then one
//! or more dispatches. Not yet implemented.

#![allow(unused_variables)]

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

#[allow(clippy::too_many_arguments)]
pub fn kl_penalty_fwd(ctx: &Context, kl: &GpuBuf, logp: &GpuBuf, ref_logp: &GpuBuf, mask: &GpuBuf, p: KlParams) -> Result<()> {
    Err(err("kl_penalty_fwd: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn kl_penalty_bwd(ctx: &Context, dlogp: &GpuBuf, dkl: &GpuBuf, logp: &GpuBuf, ref_logp: &GpuBuf, mask: &GpuBuf, p: KlParams) -> Result<()> {
    Err(err("kl_penalty_bwd: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn ppo_loss_fwd_bwd(ctx: &Context, dlogp: &GpuBuf, dvalues: Option<&GpuBuf>, dentropy: Option<&GpuBuf>, stats: &GpuBuf, logp: &GpuBuf, old_logp: &GpuBuf, advantages: &GpuBuf, mask: &GpuBuf, values: Option<&GpuBuf>, old_values: Option<&GpuBuf>, returns: Option<&GpuBuf>, entropy: Option<&GpuBuf>, ref_logp: Option<&GpuBuf>, p: PpoParams) -> Result<()> {
    Err(err("ppo_loss_fwd_bwd: not implemented on wgpu yet"))
}

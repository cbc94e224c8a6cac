//! Launcher of the `reward` family (`shaders/reward.wgsl`): the pairwise ranking loss in one
//! dispatch of one workgroup. The host checks what it can see (buffer lengths); `starts` lives on
//! the device, so a malformed group is caught by the shader instead (skipped, and stats[0] set to
//! NaN) rather than read back here.

use super::buffer::GpuBuf;
use super::context::{err, params_with, Context};
use crate::backend::ops::*;
use crate::error::Result;
use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RankUniform {
    p: RankingParams,
    /// entries of scores and dscores the groups may reach
    limit: u32,
    _pad: u32,
}

#[allow(clippy::too_many_arguments)]
pub fn ranking_loss(ctx: &Context, dscores: &GpuBuf, stats: &GpuBuf, scores: &GpuBuf, starts: &GpuBuf, margins: &GpuBuf, p: RankingParams) -> Result<()> {
    let g = p.n_groups as usize;
    if !(starts.len > g && margins.len >= g && stats.len >= 4) {
        return Err(err("ranking_loss: starts needs n_groups + 1 entries, margins n_groups, stats 4"));
    }
    let limit = scores.len.min(dscores.len).min(i32::MAX as usize) as u32;
    let u = RankUniform { p, limit, _pad: 0 };
    ctx.dispatch("ranking_loss", &params_with(&u, &[]), &[dscores, stats, scores, starts, margins], [1, 1, 1])
}

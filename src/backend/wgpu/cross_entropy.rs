//! Launchers of the `cross_entropy` family (`shaders/cross_entropy.wgsl`): the forward pass is
//! one workgroup per row (one online max/sum pass), or one invocation per row for rows of at most
//! `SMALL_V` logits; the backward pass one invocation per logit.
//!
//! The CPU backend rejects targets >= v; the targets stay on the device here (no read-back), so
//! such a row gets a NaN loss and a NaN gradient instead.

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

/// Rows of at most this many logits take the one-invocation-per-row forward kernel.
pub const SMALL_V: u32 = 1024;

fn check(op: &str, p: CrossEntropyParams, rows: &[(&str, &GpuBuf, usize)]) -> Result<()> {
    if p.v == 0 && p.n > 0 {
        return Err(err(format!("{op}: empty vocabulary")));
    }
    for (name, buf, need) in rows {
        if buf.len < *need {
            return Err(err(format!("{op}: {name} holds {} values, needs {need}", buf.len)));
        }
    }
    Ok(())
}

pub fn cross_entropy_fwd(ctx: &Context, losses: &GpuBuf, lse: &GpuBuf, logits: &GpuBuf, targets: &GpuBuf, p: CrossEntropyParams) -> Result<()> {
    let (n, v) = (p.n as usize, p.v as usize);
    check("cross_entropy_fwd", p, &[("losses", losses, n), ("lse", lse, n), ("logits", logits, n * v), ("targets", targets, n)])?;
    let bufs = [losses, lse, logits, targets];
    if p.v <= SMALL_V {
        return ctx.dispatch("cross_entropy_fwd_rows", bytemuck::bytes_of(&p), &bufs, ctx.grid_1d(n, 64));
    }
    ctx.dispatch("cross_entropy_fwd", bytemuck::bytes_of(&p), &bufs, ctx.grid_1d(n, 1))
}

#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_bwd(
    ctx: &Context,
    dlogits: &GpuBuf,
    dlosses: &GpuBuf,
    logits: &GpuBuf,
    lse: &GpuBuf,
    targets: &GpuBuf,
    p: CrossEntropyParams,
) -> Result<()> {
    let (n, v) = (p.n as usize, p.v as usize);
    check(
        "cross_entropy_bwd",
        p,
        &[("dlogits", dlogits, n * v), ("dlosses", dlosses, n), ("logits", logits, n * v), ("lse", lse, n), ("targets", targets, n)],
    )?;
    ctx.dispatch("cross_entropy_bwd", bytemuck::bytes_of(&p), &[dlogits, dlosses, logits, lse, targets], ctx.grid_1d(n * v, 256))
}

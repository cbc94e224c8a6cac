//! Launchers of the `layernorm` family (`shaders/layernorm.wgsl`): LayerNorm and RMSNorm over
//! the rows of `[n, c]`. Forward and `dinp`: one workgroup of 256 per row, or for rows of at most
//! `SMALL_C` channels the `*_rows` variants (one invocation per row, 64 rows per workgroup, no
//! barriers: a 256-wide workgroup would leave most invocations idle). Parameter gradients:
//! a block-partial pass (`norm_dw_partial`, rows in order within a chunk of rows, one invocation
//! per (column, chunk)) into a scratch buffer, then `norm_dw_final[_rms]` adds the chunks in order
//! to `dweight` (and `dbias`): deterministic, no atomics.

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;
use bytemuck::{Pod, Zeroable};

/// The uniform of the family: `NormParams` and the fields of the parameter-gradient passes.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct NormLaunch {
    p: NormParams,
    rows_per_chunk: u32,
    chunks: u32,
    has_mean: u32,
    _pad: u32,
}

/// Target number of (column, chunk) invocations of the partial pass; chunks hold at least
/// `MIN_ROWS` rows.
const TARGET_THREADS: usize = 1 << 18;
const MIN_ROWS: usize = 32;

fn launch_params(p: NormParams, has_mean: bool) -> NormLaunch {
    let (n, c) = (p.n as usize, p.c.max(1) as usize);
    let max_chunks = (TARGET_THREADS / c).clamp(1, 65535);
    let chunks = n.div_ceil(MIN_ROWS).clamp(1, max_chunks);
    let rows_per_chunk = n.div_ceil(chunks).max(1);
    let chunks = n.div_ceil(rows_per_chunk).max(1);
    NormLaunch { p, rows_per_chunk: rows_per_chunk as u32, chunks: chunks as u32, has_mean: has_mean as u32, _pad: 0 }
}

fn check(op: &str, p: NormParams, rows: &[(&str, &GpuBuf, usize)]) -> Result<()> {
    if p.c == 0 && p.n > 0 {
        return Err(err(format!("{op}: c must be positive")));
    }
    if !(p.eps >= 0.0 && p.eps.is_finite()) {
        return Err(err(format!("{op}: eps must be finite and non-negative")));
    }
    for (name, buf, need) in rows {
        if buf.len < *need {
            return Err(err(format!("{op}: {name} holds {} values, needs {need}", buf.len)));
        }
    }
    Ok(())
}

/// Rows of at most this many channels take the one-invocation-per-row variants.
pub const SMALL_C: u32 = 256;

/// The entry point for rows of `p.c` channels and its grid: `general` with one workgroup per row,
/// or `small` with one invocation per row in workgroups of 64 (both 1-D grids folded into x and y).
fn row_kernel(ctx: &Context, p: NormParams, general: &'static str, small: &'static str) -> (&'static str, [u32; 3]) {
    let n = p.n as usize;
    if p.c <= SMALL_C {
        (small, ctx.grid_1d(n, 64))
    } else {
        (general, ctx.grid_1d(n, 1))
    }
}

#[allow(clippy::too_many_arguments)]
pub fn layernorm_fwd(ctx: &Context, out: &GpuBuf, mean: &GpuBuf, rstd: &GpuBuf, inp: &GpuBuf, weight: &GpuBuf, bias: &GpuBuf, p: NormParams) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    check("layernorm_fwd", p, &[("out", out, n * c), ("mean", mean, n), ("rstd", rstd, n), ("inp", inp, n * c), ("weight", weight, c), ("bias", bias, c)])?;
    let lp = launch_params(p, true);
    let (entry, grid) = row_kernel(ctx, p, "layernorm_fwd", "layernorm_fwd_rows");
    ctx.dispatch(entry, bytemuck::bytes_of(&lp), &[out, mean, rstd, inp, weight, bias], grid)
}

/// `dweight (+ dbias) += column sums` through the chunked scratch.
#[allow(clippy::too_many_arguments)]
fn param_grads(
    ctx: &Context,
    dweight: &GpuBuf,
    dbias: Option<&GpuBuf>,
    dout: &GpuBuf,
    inp: &GpuBuf,
    mean: Option<&GpuBuf>,
    rstd: &GpuBuf,
    lp: NormLaunch,
) -> Result<()> {
    let (n, c) = (lp.p.n as usize, lp.p.c as usize);
    if n == 0 || c == 0 {
        return Ok(());
    }
    let scratch = ctx.scratch("norm_dw.partials", 2 * lp.chunks as usize * c)?;
    let bytes = bytemuck::bytes_of(&lp);
    let cols = c.div_ceil(256) as u32;
    ctx.dispatch("norm_dw_partial", bytes, &[&scratch, dout, inp, mean.unwrap_or(rstd), rstd], [cols, lp.chunks, 1])?;
    match dbias {
        Some(db) => ctx.dispatch("norm_dw_final", bytes, &[dweight, db, &scratch], [cols, 1, 1]),
        None => ctx.dispatch("norm_dw_final_rms", bytes, &[dweight, &scratch], [cols, 1, 1]),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn layernorm_bwd(
    ctx: &Context,
    dinp: &GpuBuf,
    dweight: &GpuBuf,
    dbias: &GpuBuf,
    dout: &GpuBuf,
    inp: &GpuBuf,
    mean: &GpuBuf,
    rstd: &GpuBuf,
    weight: &GpuBuf,
    p: NormParams,
) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    check(
        "layernorm_bwd",
        p,
        &[
            ("dinp", dinp, n * c),
            ("dweight", dweight, c),
            ("dbias", dbias, c),
            ("dout", dout, n * c),
            ("inp", inp, n * c),
            ("mean", mean, n),
            ("rstd", rstd, n),
            ("weight", weight, c),
        ],
    )?;
    let lp = launch_params(p, true);
    let (entry, grid) = row_kernel(ctx, p, "layernorm_bwd", "layernorm_bwd_rows");
    ctx.dispatch(entry, bytemuck::bytes_of(&lp), &[dinp, dweight, dbias, dout, inp, mean, rstd, weight], grid)?;
    param_grads(ctx, dweight, Some(dbias), dout, inp, Some(mean), rstd, lp)
}

#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_fwd(ctx: &Context, out: &GpuBuf, rstd: &GpuBuf, inp: &GpuBuf, weight: &GpuBuf, p: NormParams) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    check("rmsnorm_fwd", p, &[("out", out, n * c), ("rstd", rstd, n), ("inp", inp, n * c), ("weight", weight, c)])?;
    let lp = launch_params(p, false);
    let (entry, grid) = row_kernel(ctx, p, "rmsnorm_fwd", "rmsnorm_fwd_rows");
    ctx.dispatch(entry, bytemuck::bytes_of(&lp), &[out, rstd, inp, weight], grid)
}

#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_bwd(ctx: &Context, dinp: &GpuBuf, dweight: &GpuBuf, dout: &GpuBuf, inp: &GpuBuf, rstd: &GpuBuf, weight: &GpuBuf, p: NormParams) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    check(
        "rmsnorm_bwd",
        p,
        &[("dinp", dinp, n * c), ("dweight", dweight, c), ("dout", dout, n * c), ("inp", inp, n * c), ("rstd", rstd, n), ("weight", weight, c)],
    )?;
    let lp = launch_params(p, false);
    let (entry, grid) = row_kernel(ctx, p, "rmsnorm_bwd", "rmsnorm_bwd_rows");
    ctx.dispatch(entry, bytemuck::bytes_of(&lp), &[dinp, dweight, dout, inp, rstd, weight], grid)?;
    param_grads(ctx, dweight, None, dout, inp, None, rstd, lp)
}

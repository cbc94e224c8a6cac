//! Launchers of the `logprob_gather` family (`shaders/logprob_gather.wgsl`): the vocabulary is
//! streamed `chunk` rows of `w` at a time (and the rows of `h` in passes of at most
//! [`SCRATCH_FLOATS`]` / chunk` rows), each chunk's logits computed by the tiled matmul into a
//! scratch buffer that a row kernel reduces (forward) or turns into `dlogits` for two more matmuls
//! (backward). The `[n, v]` logits never exist: the scratch is at most
//! `max(SCRATCH_FLOATS, chunk)` floats (plus 3 per row of a pass in the forward).

use super::buffer::GpuBuf;
use super::context::{err, Context};
use super::matmul::matmul_offsets;
use crate::backend::ops::*;
use crate::error::Result;
use bytemuck::{Pod, Zeroable};

/// Logits of one (row pass, chunk) at most (16 MiB: 1024 rows of a 4096-row chunk, enough rows
/// for the chunk matmuls to fill a large GPU), or the adapter's largest storage binding if that is
/// smaller; a single row of a chunk may exceed it.
const SCRATCH_FLOATS: usize = 1 << 22;

/// The uniform of the row kernels: the op's params, then the pass / chunk being processed.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct LogprobUniform {
    p: LogprobParams,
    r0: u32,
    rows: u32,
    j0: u32,
    cw: u32,
    first: u32,
    last: u32,
    inv_t: f32,
    _pad: u32,
}

impl LogprobUniform {
    /// The uniform of rows `r0 .. r0 + rows` against vocabulary rows `j0 .. j0 + w_rows`.
    fn chunk(p: LogprobParams, r0: usize, rows: usize, j0: usize, w_rows: usize, last: bool, inv_t: f32) -> Self {
        LogprobUniform { p, r0: r0 as u32, rows: rows as u32, j0: j0 as u32, cw: w_rows as u32, first: (j0 == 0) as u32, last: last as u32, inv_t, _pad: 0 }
    }
}

/// The host-side checks of the CPU backend (targets live on the device and are not range-checked
/// here: a target `>= v` matches no chunk, its logp is `-lse`).
fn check(op: &str, h: &GpuBuf, targets: &GpuBuf, w: &GpuBuf, p: LogprobParams) -> Result<()> {
    let (n, c, v) = (p.n as usize, p.c as usize, p.v as usize);
    if !(p.temperature > 0.0 && p.temperature.is_finite()) {
        return Err(err(format!("{op}: temperature must be positive")));
    }
    if p.chunk == 0 || v == 0 {
        return Err(err(format!("{op}: chunk and vocabulary must be positive")));
    }
    if h.len < n * c || targets.len < n {
        return Err(err(format!("{op}: h or targets shorter than n rows")));
    }
    if w.len < v * c {
        return Err(err(format!("{op}: w smaller than [v, c]")));
    }
    Ok(())
}

/// (chunk width, rows per pass) for `n` rows and a vocabulary of `v`.
fn blocking(ctx: &Context, p: LogprobParams) -> (usize, usize) {
    let (n, v) = (p.n as usize, p.v as usize);
    let cw = (p.chunk as usize).min(v);
    let cap = SCRATCH_FLOATS.min(ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size) as usize / 4);
    (cw, (cap / cw).clamp(1, n.max(1)))
}

/// `scratch[rows, cw] = (h[r0 .. r0 + rows] @ w[j0 .. j0 + cw]^T) / T`.
#[allow(clippy::too_many_arguments)]
fn chunk_logits(ctx: &Context, scratch: &GpuBuf, h: &GpuBuf, w: &GpuBuf, c: usize, r0: usize, rows: usize, j0: usize, cw: usize, inv_t: f32) -> Result<()> {
    let mut mp = MatmulParams::new(rows, cw, c, false, true);
    mp.alpha = inv_t;
    matmul_offsets(ctx, scratch, h, w, mp, r0 * c, j0 * c, 0)
}

#[allow(clippy::too_many_arguments)]
pub fn logprob_gather_fwd(
    ctx: &Context,
    logp: &GpuBuf,
    entropy: &GpuBuf,
    lse: &GpuBuf,
    h: &GpuBuf,
    targets: &GpuBuf,
    w: &GpuBuf,
    p: LogprobParams,
) -> Result<()> {
    let op = "logprob_gather_fwd";
    check(op, h, targets, w, p)?;
    let (n, c, v) = (p.n as usize, p.c as usize, p.v as usize);
    if logp.len < n || entropy.len < n || lse.len < n {
        return Err(err(format!("{op}: output shorter than n")));
    }
    if n == 0 {
        return Ok(());
    }
    let (cw, pass_rows) = blocking(ctx, p);
    let inv_t = 1.0 / p.temperature;
    let scratch = ctx.scratch("logprob_gather.logits", pass_rows * cw)?;
    let stats = ctx.scratch("logprob_gather.stats", pass_rows * 3)?;
    for r0 in (0..n).step_by(pass_rows) {
        let rows = pass_rows.min(n - r0);
        for j0 in (0..v).step_by(cw) {
            let w_rows = cw.min(v - j0);
            chunk_logits(ctx, &scratch, h, w, c, r0, rows, j0, w_rows, inv_t)?;
            let u = LogprobUniform::chunk(p, r0, rows, j0, w_rows, j0 + cw >= v, inv_t);
            ctx.dispatch("logprob_gather_fwd", bytemuck::bytes_of(&u), &[logp, entropy, lse, h, targets, w, &scratch, &stats], ctx.grid_1d(rows * 256, 256))?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn logprob_gather_bwd(
    ctx: &Context,
    dh: &GpuBuf,
    dw: &GpuBuf,
    dlogp: &GpuBuf,
    dentropy: &GpuBuf,
    h: &GpuBuf,
    targets: &GpuBuf,
    lse: &GpuBuf,
    entropy: &GpuBuf,
    w: &GpuBuf,
    p: LogprobParams,
) -> Result<()> {
    let op = "logprob_gather_bwd";
    check(op, h, targets, w, p)?;
    let (n, c, v) = (p.n as usize, p.c as usize, p.v as usize);
    if dh.len < n * c || dw.len < v * c {
        return Err(err(format!("{op}: dh or dw smaller than h or w")));
    }
    if dlogp.len < n || dentropy.len < n || lse.len < n || entropy.len < n {
        return Err(err(format!("{op}: dlogp, dentropy, lse or entropy shorter than n")));
    }
    if n == 0 {
        return Ok(());
    }
    let (cw, pass_rows) = blocking(ctx, p);
    let inv_t = 1.0 / p.temperature;
    let scratch = ctx.scratch("logprob_gather.logits", pass_rows * cw)?;
    for r0 in (0..n).step_by(pass_rows) {
        let rows = pass_rows.min(n - r0);
        for j0 in (0..v).step_by(cw) {
            let w_rows = cw.min(v - j0);
            chunk_logits(ctx, &scratch, h, w, c, r0, rows, j0, w_rows, inv_t)?;
            let u = LogprobUniform::chunk(p, r0, rows, j0, w_rows, j0 + cw >= v, inv_t);
            let bufs = [dh, dw, dlogp, dentropy, h, targets, lse, entropy, w, &scratch];
            ctx.dispatch("logprob_gather_bwd", bytemuck::bytes_of(&u), &bufs, ctx.grid_1d(rows * w_rows, 256))?;
            // dh[r0..] (+)= dlogits @ w[j0..]: the first chunk overwrites
            let dh_p = MatmulParams::new(rows, c, w_rows, false, false).accumulate(j0 > 0);
            matmul_offsets(ctx, dh, &scratch, w, dh_p, 0, j0 * c, r0 * c)?;
            // dw[j0..] += dlogits^T @ h[r0..]
            let dw_p = MatmulParams::new(w_rows, c, rows, true, false).accumulate(true);
            matmul_offsets(ctx, dw, &scratch, h, dw_p, 0, r0 * c, j0 * c)?;
        }
    }
    Ok(())
}

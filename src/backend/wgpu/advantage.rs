//! Launchers of the `advantage` family (`shaders/advantage.wgsl`): GAE (one invocation per row),
//! masked whitening (five passes of compensated f32 reductions, nothing read back), group
//! advantages (one invocation per token) and reward normalisation (one workgroup). Shapes
//! and params are checked on the host as the CPU backend does.

use super::buffer::GpuBuf;
use super::context::{err, params_with, Context};
use crate::backend::ops::*;
use crate::error::Result;
use bytemuck::{Pod, Zeroable};

/// Entries per workgroup of the whitening's chunked passes (`WH_CHUNK` of the shader).
const WH_CHUNK: usize = 4096;

fn check(ok: bool, op: &str, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(err(format!("{op}: {what}")))
    }
}

#[allow(clippy::too_many_arguments)]
pub fn gae(ctx: &Context, advantages: &GpuBuf, returns: &GpuBuf, rewards: &GpuBuf, values: &GpuBuf, mask: &GpuBuf, p: GaeParams) -> Result<()> {
    let op = "gae";
    let n = p.b as usize * p.t as usize;
    check([advantages, returns, rewards, values, mask].iter().all(|b| b.len >= n), op, "buffer shorter than b * t")?;
    check(p.gamma.is_finite() && p.gamma >= 0.0 && p.lambda.is_finite() && p.lambda >= 0.0, op, "gamma and lambda must be finite and >= 0")?;
    if n == 0 {
        return Ok(());
    }
    ctx.dispatch(op, &params_with(&p, &[]), &[advantages, returns, rewards, values, mask], ctx.grid_1d(p.b as usize, 64))
}

/// The uniform of the whitening passes: the params, then the launcher's fields.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct WhitenUniform {
    p: WhitenParams,
    /// workgroups of the chunked passes
    n_wg: u32,
    _pad: [u32; 3],
}

pub fn masked_whiten(ctx: &Context, x: &GpuBuf, stats: &GpuBuf, mask: &GpuBuf, p: WhitenParams) -> Result<()> {
    let op = "masked_whiten";
    let n = p.n as usize;
    check(x.len >= n && mask.len >= n, op, "x or mask shorter than n")?;
    check(stats.len >= whiten_stat::LEN, op, "stats shorter than whiten_stat::LEN")?;
    check(p.shift_mean <= 1 && p.unbiased <= 1, op, "shift_mean and unbiased must be 0 or 1")?;
    check(p.eps > 0.0 && p.eps.is_finite(), op, "eps must be positive")?;
    // n == 0 still writes the stats (mean 0, std 0, count 0), as the CPU does
    let n_wg = n.div_ceil(WH_CHUNK).max(1);
    let params = params_with(&WhitenUniform { p, n_wg: n_wg as u32, _pad: [0; 3] }, &[]);
    // scratch (lent by the context, every value written before it is read): [mean, rstd, shift,
    // count] [(count, hi, lo) per chunk] [(hi, lo) per chunk]
    let scratch = ctx.scratch("masked_whiten.partials", 4 + 5 * n_wg)?;
    let bufs = [x, stats, mask, &*scratch];
    let chunks = ctx.grid_1d(n_wg * 256, 256);
    ctx.dispatch("masked_whiten_sum", &params, &bufs, chunks)?;
    ctx.dispatch("masked_whiten_mean", &params, &bufs, [1, 1, 1])?;
    ctx.dispatch("masked_whiten_sq", &params, &bufs, chunks)?;
    ctx.dispatch("masked_whiten_var", &params, &bufs, [1, 1, 1])?;
    ctx.dispatch(op, &params, &bufs, ctx.grid_1d(n, 256))
}

#[allow(clippy::too_many_arguments)]
pub fn group_advantages(ctx: &Context, advantages: &GpuBuf, rewards: &GpuBuf, seq_kl: &GpuBuf, mask: &GpuBuf, p: GroupAdvantageParams) -> Result<()> {
    let op = "group_advantages";
    p.validate([advantages.len, rewards.len, seq_kl.len, mask.len]).map_err(|e| err(format!("{op}: {e}")))?;
    let n = p.b as usize * p.t as usize;
    if n == 0 {
        return Ok(());
    }
    ctx.dispatch(op, &params_with(&p, &[0.0, 0.0]), &[advantages, rewards, seq_kl, mask], ctx.grid_1d(n, 256))
}

/// The uniform of `normalize_rewards`: the running moments rounded to f32.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RewardNormUniform {
    count: f32,
    mean: f32,
    m2: f32,
    n: u32,
    eps: f32,
    _pad: [u32; 3],
}

pub fn normalize_rewards(ctx: &Context, out: &GpuBuf, scores: &GpuBuf, p: RewardNormParams) -> Result<()> {
    let op = "normalize_rewards";
    p.validate(out.len, scores.len).map_err(|e| err(format!("{op}: {e}")))?;
    if p.n == 0 {
        return Ok(());
    }
    let u = RewardNormUniform { count: p.count as f32, mean: p.mean as f32, m2: p.m2 as f32, n: p.n, eps: p.eps, _pad: [0; 3] };
    ctx.dispatch(op, &params_with(&u, &[]), &[out, scores], [1, 1, 1])
}

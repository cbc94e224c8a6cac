//! Launchers of the `rl_losses` family (`shaders/rl_losses.wgsl`): the KL penalty (one invocation
//! per token) and the fused PPO loss (four passes: mask counts per chunk, the denominator, the
//! per-token gradients with per-workgroup stats partials, the stats reduction). Shapes and params
//! are checked on the host as the CPU backend does; nothing is read back.

use super::buffer::GpuBuf;
use super::context::{err, params_with, Context};
use crate::backend::ops::*;
use crate::error::Result;
use bytemuck::{Pod, Zeroable};

/// Tokens per count chunk of the token-mean aggregation (one workgroup each).
const COUNT_CHUNK: usize = 4096;
/// Invocations per workgroup of every pass.
const WG: usize = 256;

fn check(ok: bool, op: &str, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(err(format!("{op}: {what}")))
    }
}

pub fn kl_penalty_fwd(ctx: &Context, kl: &GpuBuf, logp: &GpuBuf, ref_logp: &GpuBuf, mask: &GpuBuf, p: KlParams) -> Result<()> {
    let op = "kl_penalty_fwd";
    let n = p.n as usize;
    check((1..=3).contains(&p.estimator), op, "estimator must be 1, 2 or 3")?;
    check([kl, logp, ref_logp, mask].iter().all(|b| b.len >= n), op, "buffer shorter than n")?;
    ctx.dispatch(op, &params_with(&p, &[]), &[kl, logp, ref_logp, mask], ctx.grid_1d(n, WG as u32))
}

#[allow(clippy::too_many_arguments)]
pub fn kl_penalty_bwd(ctx: &Context, dlogp: &GpuBuf, dkl: &GpuBuf, logp: &GpuBuf, ref_logp: &GpuBuf, mask: &GpuBuf, p: KlParams) -> Result<()> {
    let op = "kl_penalty_bwd";
    let n = p.n as usize;
    check((1..=3).contains(&p.estimator), op, "estimator must be 1, 2 or 3")?;
    check([dlogp, dkl, logp, ref_logp, mask].iter().all(|b| b.len >= n), op, "buffer shorter than n")?;
    ctx.dispatch(op, &params_with(&p, &[]), &[dlogp, dkl, logp, ref_logp, mask], ctx.grid_1d(n, WG as u32))
}

/// The uniform of the PPO passes: the params, then the launcher's fields (`shaders/rl_losses.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PpoUniform {
    p: PpoParams,
    has_values: u32,
    has_entropy: u32,
    has_ref: u32,
    /// tokens per count chunk (COUNT_CHUNK, or t for the sequence mean)
    chunk: u32,
    n_chunks: u32,
    /// workgroups of the per-token pass
    n_tok_wg: u32,
    /// offset of the stats partials in the scratch buffer
    stat_off: u32,
    _pad: u32,
}

#[allow(clippy::too_many_arguments)]
pub fn ppo_loss_fwd_bwd(
    ctx: &Context,
    dlogp: &GpuBuf,
    dvalues: Option<&mut GpuBuf>,
    dentropy: Option<&mut GpuBuf>,
    stats: &GpuBuf,
    logp: &GpuBuf,
    old_logp: &GpuBuf,
    advantages: &GpuBuf,
    mask: &GpuBuf,
    values: Option<&GpuBuf>,
    old_values: Option<&GpuBuf>,
    returns: Option<&GpuBuf>,
    entropy: Option<&GpuBuf>,
    ref_logp: Option<&GpuBuf>,
    p: PpoParams,
) -> Result<()> {
    let (dvalues, dentropy) = (dvalues.map(|b| &*b), dentropy.map(|b| &*b));
    let op = "ppo_loss_fwd_bwd";
    let n = p.n as usize;
    check(p.aggregation <= 1, op, "aggregation must be 0 (token mean) or 1 (sequence mean)")?;
    check(p.aggregation == 0 || (p.t > 0 && n % p.t as usize == 0), op, "sequence-mean aggregation needs t > 0 dividing n")?;
    check(p.clip_low >= 0.0 && p.clip_low < 1.0 && p.clip_high >= 0.0, op, "clip range must satisfy 0 <= clip_low < 1, clip_high >= 0")?;
    check(p.value_clip >= 0.0 && p.dual_clip >= 0.0 && p.denom >= 0.0, op, "value_clip, dual_clip and denom must be >= 0")?;
    check(ref_logp.is_none() || (1..=3).contains(&p.kl_estimator), op, "kl_estimator must be 1, 2 or 3")?;
    check(stats.len >= ppo_stat::COUNT, op, "stats shorter than ppo_stat::COUNT")?;
    check([logp, old_logp, advantages, mask].iter().all(|b| b.len >= n) && dlogp.len >= n, op, "buffer shorter than n")?;
    let some = [values.is_some(), old_values.is_some(), returns.is_some(), dvalues.is_some()];
    check(some.iter().all(|&s| s == some[0]), op, "values, old_values, returns and dvalues go together")?;
    check(entropy.is_some() == dentropy.is_some(), op, "entropy and dentropy go together")?;
    let long = |b: &Option<&GpuBuf>| b.is_none_or(|b| b.len >= n);
    check([values, old_values, returns, entropy, ref_logp].iter().all(long), op, "optional input shorter than n")?;
    check([dvalues, dentropy].iter().all(long), op, "optional output shorter than n")?;
    if n == 0 {
        return Ok(());
    }

    let chunk = if p.aggregation == 0 { COUNT_CHUNK } else { p.t as usize };
    let n_chunks = n.div_ceil(chunk);
    let n_tok_wg = n.div_ceil(WG);
    let stat_off = 1 + n_chunks;
    let u = PpoUniform {
        p,
        has_values: values.is_some() as u32,
        has_entropy: entropy.is_some() as u32,
        has_ref: ref_logp.is_some() as u32,
        chunk: chunk as u32,
        n_chunks: n_chunks as u32,
        n_tok_wg: n_tok_wg as u32,
        stat_off: stat_off as u32,
        _pad: 0,
    };
    let params = params_with(&u, &[]);
    // scratch: [scale or S] [chunk mask sums] [stats partials, slot-major]
    let scratch = ctx.alloc(stat_off + ppo_stat::COUNT * n_tok_wg)?;
    // absent outputs get their own 1-value dummies (never written); absent inputs read logp's
    // binding (never read)
    let dummy_v = if dvalues.is_none() { Some(ctx.alloc(1)?) } else { None };
    let dummy_e = if dentropy.is_none() { Some(ctx.alloc(1)?) } else { None };
    let dv = dvalues.or(dummy_v.as_ref()).unwrap();
    let de = dentropy.or(dummy_e.as_ref()).unwrap();
    let [values, old_values, returns, entropy, ref_logp] = [values, old_values, returns, entropy, ref_logp].map(|b| b.unwrap_or(logp));
    let bufs = [dlogp, dv, de, stats, logp, old_logp, advantages, mask, values, old_values, returns, entropy, ref_logp, &scratch];
    ctx.dispatch("ppo_loss_fwd_bwd_count", &params, &bufs, ctx.grid_1d(n_chunks * WG, WG as u32))?;
    ctx.dispatch("ppo_loss_fwd_bwd_denom", &params, &bufs, [1, 1, 1])?;
    ctx.dispatch(op, &params, &bufs, ctx.grid_1d(n, WG as u32))?;
    ctx.dispatch("ppo_loss_fwd_bwd_stats", &params, &bufs, [1, 1, 1])
}

//! Launchers of kernels/rl_losses.cu: KL penalty (1-D, blocks of 256) and PPO's loss in three
//! launches (aggregation scales, per-token gradients with per-block stat sums, ordered stat sum).

use super::buffer::{types, CudaBuf};
use super::context::{launch, linear, Context, Scratch};
use super::kernels::err;
use super::need;
use crate::backend::ops::{ppo_stat, KlParams, PpoParams};
use crate::error::Result;
use cudarc::driver::LaunchConfig;

type Buf = CudaBuf;

fn check_estimator(op: &str, e: u32) -> Result<()> {
    if !(1..=3).contains(&e) {
        return Err(err(format!("{op}: KL estimator must be 1, 2 or 3, got {e}")));
    }
    Ok(())
}

pub fn kl_penalty_fwd(ctx: &Context, kl: &mut Buf, logp: &Buf, ref_logp: &Buf, mask: &Buf, p: KlParams) -> Result<()> {
    check_estimator("kl_penalty_fwd", p.estimator)?;
    types("kl_penalty_fwd", &[], &[("kl", kl), ("logp", logp), ("ref_logp", ref_logp), ("mask", mask)])?;
    let n = p.n as usize;
    need("kl_penalty_fwd", &[("kl", kl.len(), n), ("logp", logp.len(), n), ("ref_logp", ref_logp.len(), n), ("mask", mask.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "rl_losses", "kl_penalty_fwd", linear(n, 256), kl, logp, ref_logp, mask, &p)
}

#[allow(clippy::too_many_arguments)]
pub fn kl_penalty_bwd(ctx: &Context, dlogp: &mut Buf, dkl: &Buf, logp: &Buf, ref_logp: &Buf, mask: &Buf, p: KlParams) -> Result<()> {
    check_estimator("kl_penalty_bwd", p.estimator)?;
    types("kl_penalty_bwd", &[], &[("dlogp", dlogp), ("dkl", dkl), ("logp", logp), ("ref_logp", ref_logp), ("mask", mask)])?;
    let n = p.n as usize;
    need(
        "kl_penalty_bwd",
        &[("dlogp", dlogp.len(), n), ("dkl", dkl.len(), n), ("logp", logp.len(), n), ("ref_logp", ref_logp.len(), n), ("mask", mask.len(), n)],
    )?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "rl_losses", "kl_penalty_bwd", linear(n, 256), dlogp, dkl, logp, ref_logp, mask, &p)
}

/// The optional inputs and outputs of the PPO loss.
pub struct PpoOptional<'a> {
    pub dvalues: Option<&'a mut Buf>,
    pub dentropy: Option<&'a mut Buf>,
    pub values: Option<&'a Buf>,
    pub old_values: Option<&'a Buf>,
    pub returns: Option<&'a Buf>,
    pub entropy: Option<&'a Buf>,
    pub ref_logp: Option<&'a Buf>,
}

#[allow(clippy::too_many_arguments)]
pub fn ppo_loss_fwd_bwd(
    ctx: &Context,
    dlogp: &mut Buf,
    dvalues: Option<&mut Buf>,
    dentropy: Option<&mut Buf>,
    stats: &mut Buf,
    logp: &Buf,
    old_logp: &Buf,
    advantages: &Buf,
    mask: &Buf,
    values: Option<&Buf>,
    old_values: Option<&Buf>,
    returns: Option<&Buf>,
    entropy: Option<&Buf>,
    ref_logp: Option<&Buf>,
    p: PpoParams,
) -> Result<()> {
    let o = PpoOptional { dvalues, dentropy, values, old_values, returns, entropy, ref_logp };
    let n = p.n as usize;
    let value_parts = [o.values.is_some(), o.old_values.is_some(), o.returns.is_some(), o.dvalues.is_some()];
    if value_parts.iter().any(|&x| x) && !value_parts.iter().all(|&x| x) {
        return Err(err("ppo_loss_fwd_bwd: values, old_values, returns and dvalues come all together or not at all"));
    }
    if o.entropy.is_some() != o.dentropy.is_some() {
        return Err(err("ppo_loss_fwd_bwd: entropy and dentropy come together"));
    }
    if o.ref_logp.is_some() {
        check_estimator("ppo_loss_fwd_bwd", p.kl_estimator)?;
    }
    if p.aggregation > 1 || (p.aggregation == 1 && (p.t == 0 || n % p.t as usize != 0)) {
        return Err(err(format!("ppo_loss_fwd_bwd: aggregation {} with {n} tokens in rows of {}", p.aggregation, p.t)));
    }
    let mut f32s = vec![("dlogp", &*dlogp), ("stats", &*stats), ("logp", logp), ("old_logp", old_logp), ("advantages", advantages), ("mask", mask)];
    let optional = [("values", o.values), ("old_values", o.old_values), ("returns", o.returns), ("entropy", o.entropy), ("ref_logp", o.ref_logp)];
    f32s.extend(optional.into_iter().filter_map(|(name, b)| Some((name, b?))));
    f32s.extend([("dvalues", o.dvalues.as_deref()), ("dentropy", o.dentropy.as_deref())].into_iter().filter_map(|(name, b)| Some((name, b?))));
    types("ppo_loss_fwd_bwd", &[], &f32s)?;
    let len = |b: &Option<&Buf>| b.map_or(n, |b| b.len());
    let len_mut = |b: &Option<&mut Buf>| b.as_ref().map_or(n, |b| b.len());
    need(
        "ppo_loss_fwd_bwd",
        &[
            ("dlogp", dlogp.len(), n),
            ("stats", stats.len(), ppo_stat::COUNT),
            ("logp", logp.len(), n),
            ("old_logp", old_logp.len(), n),
            ("advantages", advantages.len(), n),
            ("mask", mask.len(), n),
            ("values", len(&o.values), n),
            ("old_values", len(&o.old_values), n),
            ("returns", len(&o.returns), n),
            ("entropy", len(&o.entropy), n),
            ("ref_logp", len(&o.ref_logp), n),
            ("dvalues", len_mut(&o.dvalues), n),
            ("dentropy", len_mut(&o.dentropy), n),
        ],
    )?;
    if n == 0 {
        return Ok(());
    }
    let blocks = n.div_ceil(256);
    let seqs = if p.aggregation == 1 { n / p.t as usize } else { 1 };
    let (has_v, has_e, has_r) = (o.values.is_some() as i32, o.entropy.is_some() as i32, o.ref_logp.is_some() as i32);
    // absent optional buffers: `logp` stands in (never read or written with the flag off)
    let (values, old_values, returns) = (o.values.unwrap_or(logp), o.old_values.unwrap_or(logp), o.returns.unwrap_or(logp));
    let (entropy, ref_logp) = (o.entropy.unwrap_or(logp), o.ref_logp.unwrap_or(logp));
    ctx.with_scratch2((Scratch::PpoScale, seqs), (Scratch::PpoPartial, blocks * ppo_stat::COUNT), |scale, partial| {
        let one = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
        launch!(ctx, "rl_losses", "ppo_loss_fwd_bwd_count", one, &mut *scale, mask, &p)?;
        let tokens = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let f = ctx.function("rl_losses", "ppo_loss_fwd_bwd")?;
        let mut b = ctx.stream().launch_builder(&f);
        {
            use cudarc::driver::PushKernelArg;
            b.arg(&mut *dlogp);
            match o.dvalues {
                Some(d) => b.arg(d),
                None => b.arg(logp),
            };
            match o.dentropy {
                Some(d) => b.arg(d),
                None => b.arg(logp),
            };
            b.arg(&mut *partial).arg(logp).arg(old_logp).arg(advantages).arg(mask).arg(values).arg(old_values).arg(returns).arg(entropy).arg(ref_logp);
            b.arg(&*scale).arg(&has_v).arg(&has_e).arg(&has_r).arg(&p);
        }
        // SAFETY: the argument list matches `ppo_loss_fwd_bwd` in kernels/rl_losses.cu; every
        // buffer holds n values (checked above); absent outputs are never written (flags off).
        unsafe { b.launch(tokens) }.map_err(|e| err(format!("ppo_loss_fwd_bwd: {e:?}")))?;
        let nb = blocks as u32;
        let fin = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (32, 1, 1), shared_mem_bytes: 0 };
        launch!(ctx, "rl_losses", "ppo_loss_fwd_bwd_stats", fin, stats, &*partial, &nb)
    })
}

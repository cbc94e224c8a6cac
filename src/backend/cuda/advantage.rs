//! Launchers of kernels/advantage.cu: GAE (one thread per row, blocks of 128), masked whitening
//! (one block of 1024: f64 reductions in a fixed order, no host synchronisation), group advantages
//! (one block per sequence) and reward normalisation (one block).

use super::buffer::{types, CudaBuf};
use super::context::{launch, Context};
use super::need;
use crate::backend::ops::{whiten_stat, GaeParams, GroupAdvantageParams, RewardNormParams, WhitenParams};
use crate::error::Error;
use crate::error::Result;
use cudarc::driver::LaunchConfig;

type Buf = CudaBuf;

#[allow(clippy::too_many_arguments)]
pub fn gae(ctx: &Context, advantages: &mut Buf, returns: &mut Buf, rewards: &Buf, values: &Buf, mask: &Buf, p: GaeParams) -> Result<()> {
    types("gae", &[], &[("advantages", advantages), ("returns", returns), ("rewards", rewards), ("values", values), ("mask", mask)])?;
    let n = p.b as usize * p.t as usize;
    need(
        "gae",
        &[
            ("advantages", advantages.len(), n),
            ("returns", returns.len(), n),
            ("rewards", rewards.len(), n),
            ("values", values.len(), n),
            ("mask", mask.len(), n),
        ],
    )?;
    if n == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig { grid_dim: (p.b.div_ceil(128), 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    launch!(ctx, "advantage", "gae", cfg, advantages, returns, rewards, values, mask, &p)
}

pub fn masked_whiten(ctx: &Context, x: &mut Buf, stats: &mut Buf, mask: &Buf, p: WhitenParams) -> Result<()> {
    types("masked_whiten", &[], &[("x", x), ("stats", stats), ("mask", mask)])?;
    let n = p.n as usize;
    need("masked_whiten", &[("x", x.len(), n), ("stats", stats.len(), whiten_stat::LEN), ("mask", mask.len(), n)])?;
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
    launch!(ctx, "advantage", "masked_whiten", cfg, x, stats, mask, &p)
}

pub fn group_advantages(ctx: &Context, advantages: &mut Buf, rewards: &Buf, seq_kl: &Buf, mask: &Buf, p: GroupAdvantageParams) -> Result<()> {
    let op = "group_advantages";
    types(op, &[], &[("advantages", advantages), ("rewards", rewards), ("seq_kl", seq_kl), ("mask", mask)])?;
    p.validate([advantages.len(), rewards.len(), seq_kl.len(), mask.len()]).map_err(|e| Error::invalid(format!("{op}: {e}")))?;
    if p.b == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig { grid_dim: (p.b, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    launch!(ctx, "advantage", "group_advantages", cfg, advantages, rewards, seq_kl, mask, &p)
}

pub fn normalize_rewards(ctx: &Context, out: &mut Buf, scores: &Buf, p: RewardNormParams) -> Result<()> {
    let op = "normalize_rewards";
    types(op, &[], &[("out", out), ("scores", scores)])?;
    p.validate(out.len(), scores.len()).map_err(|e| Error::invalid(format!("{op}: {e}")))?;
    if p.n == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    launch!(ctx, "advantage", "normalize_rewards", cfg, out, scores, &p)
}

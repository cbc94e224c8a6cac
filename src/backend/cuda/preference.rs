//! Launcher of kernels/preference.cu: the DPO / cDPO / IPO / SimPO loss and its per-token gradient
//! in one block of 256. Shapes and params are checked on the host as the CPU backend does.

use super::buffer::{types, CudaBuf};
use super::context::{launch, Context};
use super::kernels::err;
use super::need;
use crate::backend::ops::{preference_stat, PreferenceParams};
use crate::error::Result;
use cudarc::driver::LaunchConfig;

pub fn preference_loss_fwd_bwd(
    ctx: &Context,
    dlogp: &mut CudaBuf,
    stats: &mut CudaBuf,
    logp: &CudaBuf,
    mask: &CudaBuf,
    ref_sums: &CudaBuf,
    p: PreferenceParams,
) -> Result<()> {
    p.validate().map_err(|what| err(format!("preference_loss_fwd_bwd: {what}")))?;
    types("preference_loss_fwd_bwd", &[], &[("dlogp", dlogp), ("stats", stats), ("logp", logp), ("mask", mask), ("ref_sums", ref_sums)])?;
    let n = 2 * p.pairs as usize * p.t as usize;
    need(
        "preference_loss_fwd_bwd",
        &[
            ("dlogp", dlogp.len(), n),
            ("logp", logp.len(), n),
            ("mask", mask.len(), n),
            ("ref_sums", ref_sums.len(), 2 * p.pairs as usize),
            ("stats", stats.len(), preference_stat::COUNT),
        ],
    )?;
    if p.pairs == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    launch!(ctx, "preference", "preference_loss_fwd_bwd", cfg, dlogp, stats, logp, mask, ref_sums, &p)
}

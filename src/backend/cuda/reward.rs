//! Launcher of kernels/reward.cu: the reward model's pairwise ranking loss, one block of 256.

use super::buffer::{types, CudaBuf};
use super::context::{launch, Context};
use super::kernels::err;
use super::need;
use crate::backend::ops::RankingParams;
use crate::error::Result;
use cudarc::driver::{CudaSlice, LaunchConfig};

#[allow(clippy::too_many_arguments)]
pub fn ranking_loss(
    ctx: &Context,
    dscores: &mut CudaBuf,
    stats: &mut CudaBuf,
    scores: &CudaBuf,
    starts: &CudaSlice<i32>,
    margins: &CudaBuf,
    p: RankingParams,
) -> Result<()> {
    types("ranking_loss", &[], &[("dscores", dscores), ("stats", stats), ("scores", scores), ("margins", margins)])?;
    let g = p.n_groups as usize;
    need("ranking_loss", &[("stats", stats.len(), 4), ("starts", starts.len(), g + 1), ("margins", margins.len(), g)])?;
    if g == 0 {
        return Ok(());
    }
    // the group ranges (`starts`) live on the device and are not checked here (as on wgpu); the
    // gradient must at least cover every score
    if dscores.len() < scores.len() {
        return Err(err(format!("ranking_loss: dscores holds {} values, scores {}", dscores.len(), scores.len())));
    }
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    launch!(ctx, "reward", "ranking_loss", cfg, dscores, stats, scores, starts, margins, &p)
}

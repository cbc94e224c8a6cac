//! Launcher of the `preference` family (`shaders/preference.wgsl`): the DPO / cDPO / IPO / SimPO
//! loss and its per-token gradient in one dispatch of one workgroup. Shapes and params are checked
//! on the host as the CPU backend does.

use super::buffer::GpuBuf;
use super::context::{err, params_with, Context};
use crate::backend::ops::*;
use crate::error::Result;

pub fn preference_loss_fwd_bwd(
    ctx: &Context,
    dlogp: &GpuBuf,
    stats: &GpuBuf,
    logp: &GpuBuf,
    mask: &GpuBuf,
    ref_sums: &GpuBuf,
    p: PreferenceParams,
) -> Result<()> {
    let op = "preference_loss_fwd_bwd";
    p.validate().map_err(|what| err(format!("{op}: {what}")))?;
    let n = 2 * p.pairs as usize * p.t as usize;
    if ![dlogp, logp, mask].iter().all(|b| b.len >= n) {
        return Err(err(format!("{op}: dlogp, logp or mask shorter than 2 pairs x t")));
    }
    if ref_sums.len < 2 * p.pairs as usize || stats.len < preference_stat::COUNT {
        return Err(err(format!("{op}: ref_sums shorter than 2 pairs or stats shorter than preference_stat::COUNT")));
    }
    ctx.dispatch(op, &params_with(&p, &[]), &[dlogp, stats, logp, mask, ref_sums], [1, 1, 1])
}

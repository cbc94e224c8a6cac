//! Launchers of kernels/cross_entropy.cu: one block of 256 per row.

use super::buffer::{types, CudaBuf};
use super::context::{launch, per_row, Context};
use super::need;
use crate::backend::ops::CrossEntropyParams;
use crate::error::Result;
use cudarc::driver::CudaSlice;

type Buf = CudaBuf;
type Ids = CudaSlice<i32>;

pub fn cross_entropy_fwd(ctx: &Context, losses: &mut Buf, lse: &mut Buf, logits: &Buf, targets: &Ids, p: CrossEntropyParams) -> Result<()> {
    let (n, v) = (p.n as usize, p.v as usize);
    let t = types("cross_entropy_fwd", &[("logits", logits)], &[("losses", losses), ("lse", lse)])?;
    need("cross_entropy_fwd", &[("losses", losses.len(), n), ("lse", lse.len(), n), ("logits", logits.len(), n * v), ("targets", targets.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "cross_entropy", "cross_entropy_fwd"[t], per_row(n, 256), losses, lse, logits, targets, &p)
}

#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_bwd(ctx: &Context, dlogits: &mut Buf, dlosses: &Buf, logits: &Buf, lse: &Buf, targets: &Ids, p: CrossEntropyParams) -> Result<()> {
    let (n, v) = (p.n as usize, p.v as usize);
    let t = types("cross_entropy_bwd", &[("dlogits", dlogits), ("logits", logits)], &[("dlosses", dlosses), ("lse", lse)])?;
    need(
        "cross_entropy_bwd",
        &[
            ("dlogits", dlogits.len(), n * v),
            ("dlosses", dlosses.len(), n),
            ("logits", logits.len(), n * v),
            ("lse", lse.len(), n),
            ("targets", targets.len(), n),
        ],
    )?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "cross_entropy", "cross_entropy_bwd"[t], per_row(n, 256), dlogits, dlosses, logits, lse, targets, &p)
}

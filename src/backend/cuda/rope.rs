//! Launchers of kernels/rope.cu: one thread per rotated pair, blocks of 256.

use super::buffer::CudaBuf;
use super::context::{launch, linear, Context};
use super::kernels::err;
use super::need;
use crate::backend::ops::RopeParams;
use crate::error::Result;
use cudarc::driver::CudaSlice;

type Buf = CudaBuf;
type Ids = CudaSlice<i32>;

fn rope(ctx: &Context, x: &mut Buf, positions: &Ids, p: RopeParams, bwd: bool) -> Result<()> {
    let (n, row) = (p.n_tokens as usize, p.row as usize);
    if p.head_dim % 2 != 0 || p.n_rot_heads as usize * p.head_dim as usize > row {
        return Err(err(format!("rope: {} heads of {} do not fit rows of {row} (or odd head dim)", p.n_rot_heads, p.head_dim)));
    }
    need("rope", &[("x", x.len(), n * row), ("positions", positions.len(), n)])?;
    let pairs = n * p.n_rot_heads as usize * (p.head_dim as usize / 2);
    if pairs == 0 {
        return Ok(());
    }
    // either storage type: the buffer's own picks the kernel
    let t = x.dtype();
    if bwd {
        launch!(ctx, "rope", "rope_bwd"[t], linear(pairs, 256), x, positions, &p)
    } else {
        launch!(ctx, "rope", "rope_fwd"[t], linear(pairs, 256), x, positions, &p)
    }
}

pub fn rope_fwd(ctx: &Context, x: &mut Buf, positions: &Ids, p: RopeParams) -> Result<()> {
    rope(ctx, x, positions, p, false)
}

pub fn rope_bwd(ctx: &Context, dx: &mut Buf, positions: &Ids, p: RopeParams) -> Result<()> {
    rope(ctx, dx, positions, p, true)
}

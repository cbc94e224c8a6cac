//! Launchers of kernels/optimizer.cu: the global gradient norm (two launches, f64 partial sums of
//! at most 1024 blocks in a scratch buffer) and AdamW, which clips by (or skips on) that norm on
//! the device.

use super::buffer::{types, CudaBuf};
use super::context::{elementwise, launch, Context, Scratch};
use super::need;
use crate::backend::ops::{AdamWParams, ElementwiseParams};
use crate::error::Result;
use cudarc::driver::LaunchConfig;

type Buf = CudaBuf;

const MAX_BLOCKS: usize = 1024;

pub fn sum_squares(ctx: &Context, acc: &mut Buf, x: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    // `x` of either type (its own picks the kernel), `acc` f32
    types("sum_squares", &[], &[("acc", acc)])?;
    let t = x.dtype();
    need("sum_squares", &[("acc", acc.len(), 1), ("x", x.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    let blocks = n.div_ceil(256).clamp(1, MAX_BLOCKS) as u32;
    // the partials are f64: 2 floats each
    ctx.with_scratch(Scratch::SumSquares, 2 * MAX_BLOCKS, |partial| {
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        launch!(ctx, "optimizer", "sum_squares"[t], cfg, &mut *partial, x, &p)?;
        let fin = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        launch!(ctx, "optimizer", "sum_squares_final", fin, acc, &*partial, &blocks)
    })
}

pub fn adamw(ctx: &Context, param: &mut Buf, m: &mut Buf, v: &mut Buf, grad: &Buf, norm_sq: &Buf, p: AdamWParams) -> Result<()> {
    let n = p.n as usize;
    // `grad` of either type, the master weights and moments f32
    types("adamw", &[], &[("param", param), ("m", m), ("v", v), ("norm_sq", norm_sq)])?;
    let t = grad.dtype();
    need("adamw", &[("param", param.len(), n), ("m", m.len(), n), ("v", v.len(), n), ("grad", grad.len(), n), ("norm_sq", norm_sq.len(), 1)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "optimizer", "adamw"[t], elementwise(n), param, m, v, grad, norm_sq, &p)
}

//! Launchers of the `optimizer` family (`shaders/optimizer.wgsl`): the gradient-norm reduction
//! (one workgroup for small tensors; per-chunk partials into a scratch buffer and one final
//! workgroup for large ones, deterministic either way) and the element-wise AdamW step, which
//! clips by (or skips on) a norm that stays on the device.

use super::buffer::GpuBuf;
use super::context::{err, Context};
use super::WgpuBackend;
use crate::backend::ops::*;
use crate::error::Result;
use bytemuck::{Pod, Zeroable};

/// Elements below which `sum_squares` runs as one workgroup.
const SINGLE_MAX: usize = 1 << 16;
/// Elements per workgroup of the partial pass (at least), and most partials.
const CHUNK_MIN: usize = 1 << 14;
const PARTS_MAX: usize = 1024;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SumLaunch {
    p: ElementwiseParams,
    chunk: u32,
    parts: u32,
}

pub fn sum_squares(ctx: &Context, acc: &GpuBuf, x: &GpuBuf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    if acc.len < 1 || x.len < n {
        return Err(err(format!("sum_squares: acc needs 1 value and x {n} (they hold {} and {})", acc.len, x.len)));
    }
    if n == 0 {
        return Ok(());
    }
    if n <= SINGLE_MAX {
        let lp = SumLaunch { p, chunk: 0, parts: 0 };
        return ctx.dispatch("sum_squares", bytemuck::bytes_of(&lp), &[acc, x], [1, 1, 1]);
    }
    let parts = n.div_ceil(CHUNK_MIN).min(PARTS_MAX);
    let chunk = n.div_ceil(parts);
    let parts = n.div_ceil(chunk);
    let lp = SumLaunch { p, chunk: chunk as u32, parts: parts as u32 };
    let partial = ctx.scratch("sum_squares.partials", parts)?;
    ctx.dispatch("sum_squares_partial", bytemuck::bytes_of(&lp), &[&partial, x], [parts as u32, 1, 1])?;
    ctx.dispatch("sum_squares_final", bytemuck::bytes_of(&lp), &[acc, x, &partial], [1, 1, 1])
}

pub fn adamw(ctx: &Context, param: &GpuBuf, m: &GpuBuf, v: &GpuBuf, grad: &GpuBuf, norm_sq: &GpuBuf, p: AdamWParams) -> Result<()> {
    let n = p.n as usize;
    if [param, m, v, grad].iter().any(|b| b.len < n) || norm_sq.len < 1 {
        return Err(err(format!("adamw: param, m, v and grad need n = {n} values and norm_sq 1")));
    }
    if [param, m, v].iter().any(|b| b.id == norm_sq.id) {
        return Err(err("adamw: norm_sq must not be param, m or v"));
    }
    ctx.dispatch("adamw", bytemuck::bytes_of(&p), &[param, m, v, grad, norm_sq], ctx.grid_1d(n, 256))
}

/// `sum_squares_many`: the reference (`sum_squares` per tensor).
pub fn sum_squares_many(be: &WgpuBackend, acc: &mut GpuBuf, xs: &[GpuBuf]) -> Result<()> {
    sum_squares_each(be, acc, xs)
}

/// `adamw_many`: the reference (`adamw`, then `copy`, per slot).
pub fn adamw_many(be: &WgpuBackend, slots: &mut [AdamWSlot<'_, GpuBuf>], norm_sq: &GpuBuf, p: AdamWParams) -> Result<()> {
    adamw_each(be, slots, norm_sq, p)
}

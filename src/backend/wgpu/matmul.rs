//! Launchers of the `matmul` family (`shaders/matmul.wgsl`): shapes checked on the host, then one
//! dispatch each.
//!
//! `matmul` picks one of eight entry points: the storage layout ((trans_a, trans_b) = nn, nt, tn,
//! tt, so that global loads stay coalesced) times the tiling: 128 x 128 output tiles (8 x 8 per
//! invocation) when that grid has at least [`BIG_MIN_TILES`] workgroups, else 64 x 64 tiles (4 x 4
//! per invocation) so that small products still spread over the GPU. Both tilings sum each output
//! over k in the same order, so the choice never changes a result. Batches run along the z grid
//! dimension. [`matmul_offsets`] is the same product on matrices that start at element offsets of
//! their buffers (used by `logprob_gather` on blocks of rows of the LM head).
//!
//! With `--matmul-precision f16` (`Context::matmul_precision`) the same choice is made among the
//! `_f16` entry points of `shaders/matmul_f16.wgsl` (operands rounded to f16, sums in f32), for
//! `logprob_gather`'s chunk products too.

use super::buffer::GpuBuf;
use super::context::{err, Context};
use super::WgpuBackend;
use crate::backend::ops::*;
use crate::backend::precision::MatmulPrecision;
use crate::error::Result;
use bytemuck::{Pod, Zeroable};

/// Workgroups of the 128 x 128 grid from which the big tiling is used (a heuristic: about the
/// number of streaming multiprocessors of a large GPU; below it, the 64 x 64 tiling's 4x more
/// workgroups keep more of the GPU busy).
const BIG_MIN_TILES: usize = 96;

/// The entry points by [precision][4 tiling + 2 trans_a + trans_b]: f32 operands
/// (`matmul.wgsl`), then f16 (`matmul_f16.wgsl`); the 64 x 64 tiling, then the 128 x 128 one.
const ENTRY_POINTS: [[&str; 8]; 2] = [
    ["matmul_small", "matmul_small_nt", "matmul_small_tn", "matmul_small_tt", "matmul", "matmul_nt", "matmul_tn", "matmul_tt"],
    ["matmul_small_f16", "matmul_small_nt_f16", "matmul_small_tn_f16", "matmul_small_tt_f16", "matmul_f16", "matmul_nt_f16", "matmul_tn_f16", "matmul_tt_f16"],
];

/// The uniform of the matmul entry points: the op's params, then the element offsets.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulUniform {
    p: MatmulParams,
    a_off: u32,
    b_off: u32,
    out_off: u32,
    _pad: u32,
}

pub fn matmul(ctx: &Context, out: &GpuBuf, a: &GpuBuf, b: &GpuBuf, p: MatmulParams) -> Result<()> {
    matmul_offsets(ctx, out, a, b, p, 0, 0, 0)
}

/// `matmul` on the matrices that start `a_off`, `b_off` and `out_off` elements into `a`, `b` and
/// `out` (batch `i` at `off + i * stride`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_offsets(ctx: &Context, out: &GpuBuf, a: &GpuBuf, b: &GpuBuf, p: MatmulParams, a_off: usize, b_off: usize, out_off: usize) -> Result<()> {
    let (m, n, k, batch) = (p.m as usize, p.n as usize, p.k as usize, p.batch.max(1) as usize);
    let last = |off: usize, stride: u32, size: usize| off + (batch - 1) * stride as usize + size;
    if out.len < last(out_off, p.stride_out, m * n) {
        return Err(err("matmul: output buffer too small"));
    }
    if a.len < last(a_off, p.stride_a, m * k) {
        return Err(err("matmul: operand a too small"));
    }
    if b.len < last(b_off, p.stride_b, k * n) {
        return Err(err("matmul: operand b too small"));
    }
    if batch > 1 && (p.stride_out as usize) < m * n {
        return Err(err("matmul: output batches overlap (stride_out < m * n)"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let offsets = [a_off, b_off, out_off];
    if offsets.iter().any(|&o| o > u32::MAX as usize) {
        return Err(err("matmul: offset beyond 2^32 elements"));
    }
    let big = m.div_ceil(128) * n.div_ceil(128) * batch >= BIG_MIN_TILES;
    let layout = 2 * (p.trans_a != 0) as usize + (p.trans_b != 0) as usize;
    let name = ENTRY_POINTS[(ctx.matmul_precision == MatmulPrecision::F16) as usize][4 * big as usize + layout];
    let tile = if big { 128 } else { 64 };
    let u = MatmulUniform { p: MatmulParams { batch: batch as u32, ..p }, a_off: a_off as u32, b_off: b_off as u32, out_off: out_off as u32, _pad: 0 };
    let grid = [n.div_ceil(tile), m.div_ceil(tile), batch];
    let max = ctx.limits.max_compute_workgroups_per_dimension as usize;
    if grid.iter().any(|&g| g > max) {
        return Err(err(format!("matmul: grid {grid:?} (m {m}, n {n}, batch {batch}) exceeds {max} workgroups per dimension")));
    }
    ctx.dispatch(name, bytemuck::bytes_of(&u), &[out, a, b], [grid[0] as u32, grid[1] as u32, grid[2] as u32])
}

pub fn bias_add(ctx: &Context, out: &GpuBuf, bias: &GpuBuf, p: BiasParams) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    if out.len < n * c || bias.len < c {
        return Err(err("bias_add: out smaller than [n, c] or bias shorter than c"));
    }
    ctx.dispatch("bias_add", bytemuck::bytes_of(&p), &[out, bias], ctx.grid_1d(n * c, 256))
}

pub fn bias_bwd(ctx: &Context, dbias: &GpuBuf, dout: &GpuBuf, p: BiasParams) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    if dout.len < n * c || dbias.len < c {
        return Err(err("bias_bwd: dout smaller than [n, c] or dbias shorter than c"));
    }
    let groups = c.div_ceil(8);
    if groups > ctx.limits.max_compute_workgroups_per_dimension as usize {
        return Err(err(format!("bias_bwd: {c} columns exceed the grid")));
    }
    ctx.dispatch("bias_bwd", bytemuck::bytes_of(&p), &[dbias, dout], [groups as u32, 1, 1])
}

/// `matmul_bias`: the reference (`matmul`, then `bias_add`).
pub fn matmul_bias(be: &WgpuBackend, out: &mut GpuBuf, a: &GpuBuf, b: &GpuBuf, bias: &GpuBuf, p: MatmulParams) -> Result<()> {
    matmul_bias_unfused(be, out, a, b, bias, p)
}

/// `matmul_bias_gelu`: the reference (`matmul`, `bias_add`, `gelu_fwd`).
#[allow(clippy::too_many_arguments)]
pub fn matmul_bias_gelu(be: &WgpuBackend, out: &mut GpuBuf, pre: &mut GpuBuf, a: &GpuBuf, b: &GpuBuf, bias: Option<&GpuBuf>, p: MatmulParams) -> Result<()> {
    matmul_bias_gelu_unfused(be, out, pre, a, b, bias, p)
}

/// `matmul_gelu_bwd`: the reference (`matmul` into `dact`, then `gelu_bwd`).
#[allow(clippy::too_many_arguments)]
pub fn matmul_gelu_bwd(be: &WgpuBackend, dinp: &mut GpuBuf, dact: &mut GpuBuf, a: &GpuBuf, b: &GpuBuf, pre: &GpuBuf, p: MatmulParams) -> Result<()> {
    matmul_gelu_bwd_unfused(be, dinp, dact, a, b, pre, p)
}

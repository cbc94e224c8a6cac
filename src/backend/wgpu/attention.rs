//! Launchers of the `attention` family (`shaders/attention.wgsl`): shapes checked on the host
//! (the CPU backend's checks, plus the buffer sizes the CPU asserts), then the dispatches.
//!
//! - `attention_fwd`: flash-style, one workgroup of 256 per block of 32 queries of one
//!   (sequence, head), key/value tiles of 16 staged in workgroup memory, online softmax.
//! - `attention_bwd`: three dispatches: `attention_bwd` (D_i = dout_i . out_i into a scratch
//!   `[B, NH, T]`), `attention_bwd_dq` (per block of 16 queries, over key tiles of 8) and
//!   `attention_bwd_dkv` (per block of 16 keys, over the group's query heads and query tiles of 8).
//! - Heads of at most `SMALL_HD` dims and sequences of at most `SMALL_T` queries take the
//!   `*_small` variants of the forward, dq and dk/dv kernels: one invocation per query (per key
//!   for dk/dv), 64 per workgroup, no workgroup memory or barriers.
//! - `attention_decode_fwd`: one workgroup per (row, head), chunks of 256 keys.
//! - `kv_cache_write`, `scatter_rows`: one invocation per copied value.

use super::buffer::GpuBuf;
use super::context::{err, params_with, Context};
use crate::backend::ops::*;
use crate::error::Result;

/// Largest head dimension the kernels support (the tiles' row capacity).
pub const MAX_HEAD_DIM: u32 = 128;
/// Queries per workgroup of `attention_fwd`.
const FWD_BQ: u32 = 32;
/// Query (dq) and key (dk/dv) rows per workgroup of the backward passes.
const BWD_ROWS: u32 = 16;
/// Workgroup memory of every attention kernel (tiles of 4128 + 2064 + 544 f32, plus the
/// prelude's 256-value reduction buffer and two u32 of the decode kernel).
const WORKGROUP_BYTES: u32 = (4128 + 2064 + 544 + 256 + 2) * 4;
/// Largest head dimension and query count of the one-invocation-per-row variants.
pub const SMALL_HD: u32 = 64;
pub const SMALL_T: u32 = 256;
/// Largest grid dimension WebGPU guarantees.
const MAX_GRID: u32 = 65535;

fn check_device(ctx: &Context, op: &str) -> Result<()> {
    let have = ctx.limits.max_compute_workgroup_storage_size;
    if have < WORKGROUP_BYTES {
        return Err(err(format!("{op}: the kernels need {WORKGROUP_BYTES} bytes of workgroup memory, the adapter offers {have}")));
    }
    Ok(())
}

fn check_heads(op: &str, nh: u32, nkv: u32, hd: u32) -> Result<()> {
    if nkv == 0 || nh % nkv != 0 {
        return Err(err(format!("{op}: nh must be a multiple of nkv (nh {nh}, nkv {nkv})")));
    }
    if hd == 0 || hd > MAX_HEAD_DIM {
        return Err(err(format!("{op}: head_dim {hd} is outside the supported 1..={MAX_HEAD_DIM}")));
    }
    if nh > MAX_GRID {
        return Err(err(format!("{op}: {nh} heads exceed the grid limit of {MAX_GRID}")));
    }
    Ok(())
}

fn check_len(op: &str, what: &str, buf: &GpuBuf, need: usize) -> Result<()> {
    if buf.len < need {
        return Err(err(format!("{op}: {what} holds {} values, needs {need}", buf.len)));
    }
    Ok(())
}

pub fn attention_fwd(ctx: &Context, out: &GpuBuf, lse: &GpuBuf, q: &GpuBuf, k: &GpuBuf, v: &GpuBuf, p: AttentionParams) -> Result<()> {
    const OP: &str = "attention_fwd";
    check_heads(OP, p.nh, p.nkv, p.hd)?;
    let (bsz, tq, tk, nh, nkv, hd) = (p.b as usize, p.tq as usize, p.tk as usize, p.nh as usize, p.nkv as usize, p.hd as usize);
    if bsz == 0 || tq == 0 {
        return Ok(());
    }
    if tk == 0 {
        return Err(err(format!("{OP}: {tq} queries but no keys")));
    }
    if p.b > MAX_GRID {
        return Err(err(format!("{OP}: {bsz} sequences exceed the grid limit of {MAX_GRID}")));
    }
    check_device(ctx, OP)?;
    check_len(OP, "out", out, bsz * tq * nh * hd)?;
    check_len(OP, "lse", lse, bsz * nh * tq)?;
    let last_kv = |off: u32| (bsz - 1) * p.kv_batch as usize + (tk - 1) * p.kv_row as usize + off as usize + nkv * hd;
    check_len(OP, "q", q, (bsz - 1) * p.q_batch as usize + (tq - 1) * p.q_row as usize + p.q_off as usize + nh * hd)?;
    check_len(OP, "k", k, last_kv(p.k_off))?;
    check_len(OP, "v", v, last_kv(p.v_off))?;
    let bufs = [out, lse, q, k, v];
    if p.hd <= SMALL_HD && p.tq <= SMALL_T {
        return ctx.dispatch("attention_fwd_small", &params_with(&p, &[]), &bufs, ctx.grid_1d(bsz * nh * tq, 64));
    }
    ctx.dispatch(OP, &params_with(&p, &[]), &bufs, [p.tq.div_ceil(FWD_BQ), p.nh, p.b])
}

pub fn attention_bwd(ctx: &Context, dqkv: &GpuBuf, dout: &GpuBuf, out: &GpuBuf, lse: &GpuBuf, qkv: &GpuBuf, p: AttentionParams) -> Result<()> {
    const OP: &str = "attention_bwd";
    check_heads(OP, p.nh, p.nkv, p.hd)?;
    if p.tq != p.tk || p.q_pos0 != 0 {
        return Err(err(format!("{OP}: backward needs the training layout (tq == tk, q_pos0 == 0)")));
    }
    let (bsz, t, nh, nkv, hd) = (p.b as usize, p.tq as usize, p.nh as usize, p.nkv as usize, p.hd as usize);
    if bsz == 0 || t == 0 {
        return Ok(());
    }
    if p.b > MAX_GRID {
        return Err(err(format!("{OP}: {bsz} sequences exceed the grid limit of {MAX_GRID}")));
    }
    check_device(ctx, OP)?;
    let row = p.q_row as usize;
    let widest = (p.q_off as usize + nh * hd).max(p.k_off as usize + nkv * hd).max(p.v_off as usize + nkv * hd);
    let need = (bsz * t - 1) * row + widest;
    check_len(OP, "dqkv", dqkv, need)?;
    check_len(OP, "qkv", qkv, need)?;
    check_len(OP, "dout", dout, bsz * t * nh * hd)?;
    check_len(OP, "out", out, bsz * t * nh * hd)?;
    check_len(OP, "lse", lse, bsz * nh * t)?;
    let delta = ctx.scratch("attention_bwd.delta", bsz * nh * t)?;
    let params = params_with(&p, &[]);
    let bufs = [dqkv, dout, out, lse, qkv, &delta];
    ctx.dispatch("attention_bwd", &params, &bufs, ctx.grid_1d(bsz * nh * t, 256))?;
    if p.hd <= SMALL_HD && p.tq <= SMALL_T {
        ctx.dispatch("attention_bwd_dq_small", &params, &bufs, ctx.grid_1d(bsz * nh * t, 64))?;
        return ctx.dispatch("attention_bwd_dkv_small", &params, &bufs, ctx.grid_1d(bsz * nkv * t, 64));
    }
    ctx.dispatch("attention_bwd_dq", &params, &bufs, [p.tq.div_ceil(BWD_ROWS), p.nh, p.b])?;
    ctx.dispatch("attention_bwd_dkv", &params, &bufs, [p.tq.div_ceil(BWD_ROWS), p.nkv, p.b])
}

pub fn kv_cache_write(ctx: &Context, cache: &GpuBuf, qkv: &GpuBuf, p: KvCacheParams) -> Result<()> {
    const OP: &str = "kv_cache_write";
    if p.pos0 as u64 + p.t as u64 > p.t_max as u64 {
        return Err(err(format!("{OP}: cache is full (pos0 {} + t {} > t_max {})", p.pos0, p.t, p.t_max)));
    }
    let (b, t, t_max) = (p.b as usize, p.t as usize, p.t_max as usize);
    let kv = 2 * p.nkv as usize * p.hd as usize;
    let row = p.nh as usize * p.hd as usize + kv;
    check_len(OP, "cache", cache, b * t_max * kv)?;
    check_len(OP, "qkv", qkv, b * t * row)?;
    ctx.dispatch(OP, &params_with(&p, &[]), &[cache, qkv], ctx.grid_1d(b * t * kv, 256))
}

pub fn scatter_rows(ctx: &Context, out: &GpuBuf, inp: &GpuBuf, rows: &GpuBuf, p: ScatterParams) -> Result<()> {
    const OP: &str = "scatter_rows";
    let (n, w) = (p.n as usize, p.width as usize);
    check_len(OP, "rows", rows, n)?;
    if w > p.dst_row as usize {
        return Err(err(format!("{OP}: width {w} exceeds the destination row of {}", p.dst_row)));
    }
    check_len(OP, "out", out, p.dst_rows as usize * p.dst_row as usize)?;
    if n == 0 || w == 0 {
        return Ok(());
    }
    check_len(OP, "inp", inp, (n - 1) * p.src_row as usize + p.src_off as usize + w)?;
    ctx.dispatch(OP, &params_with(&p, &[]), &[out, inp, rows], ctx.grid_1d(n * w, 256))
}

pub fn attention_decode_fwd(ctx: &Context, out: &GpuBuf, lse: &GpuBuf, q: &GpuBuf, cache: &GpuBuf, rows: &GpuBuf, p: AttentionDecodeParams) -> Result<()> {
    const OP: &str = "attention_decode_fwd";
    check_heads(OP, p.nh, p.nkv, p.hd)?;
    if p.t_max == 0 {
        return Err(err(format!("{OP}: t_max must be positive")));
    }
    let (n, nh, nkv, hd) = (p.n as usize, p.nh as usize, p.nkv as usize, p.hd as usize);
    check_len(OP, "rows", rows, n)?;
    if n == 0 {
        return Ok(());
    }
    check_device(ctx, OP)?;
    check_len(OP, "out", out, n * nh * hd)?;
    check_len(OP, "lse", lse, n * nh)?;
    check_len(OP, "q", q, (n - 1) * p.q_row as usize + p.q_off as usize + nh * hd)?;
    check_len(OP, "cache", cache, p.slots as usize * p.t_max as usize * 2 * nkv * hd)?;
    if p.slots as u64 * p.t_max as u64 > i32::MAX as u64 {
        return Err(err(format!("{OP}: a cache of {} x {} rows is not addressable by i32 rows", p.slots, p.t_max)));
    }
    let y = p.n.min(MAX_GRID);
    ctx.dispatch(OP, &params_with(&p, &[]), &[out, lse, q, cache, rows], [p.nh, y, p.n.div_ceil(y)])
}

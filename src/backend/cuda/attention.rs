//! Launchers of kernels/attention.cu (flash-style attention forward and backward, KV cache writes,
//! row scatter, decode attention). Blocks of 256 threads (8 warps); dynamic
//! shared memory sized from the head dimension as in the kernel file's header. The kernels keep
//! ATT_HD_REG = 4 values per lane, so head dimensions up to 128 are supported (a clear error above).
//! bf16 storage with head dimension 64 or 128 runs the forward and the decode on tensor cores
//! (`*_mma{64,128}_bf16`, see [`tensor_cores`]); `RLHF_CUDA_ATTENTION=simt` keeps the SIMT kernels.

use super::buffer::{types, CudaBuf};
use super::context::{launch, linear, Context, Scratch};
use super::kernels::err;
use super::need;
use crate::backend::ops::{AttentionDecodeParams, AttentionParams, KvCacheParams, ScatterParams};
use crate::error::Result;
use crate::backend::storage::Dtype;
use cudarc::driver::{CudaSlice, LaunchConfig};
use std::sync::OnceLock;

type Buf = CudaBuf;
type Ids = CudaSlice<i32>;

const WARPS: u32 = 8;
const KT: u32 = 32;
const MAX_HD: u32 = 128;
/// Keys per chunk of the tensor-core forward and of a split decode (MMA_SPLIT in the .cu).
const SPLIT: u32 = 256;

fn check_heads(op: &str, hd: u32, nh: u32, nkv: u32) -> Result<()> {
    if hd == 0 || hd > MAX_HD {
        return Err(err(format!("{op}: head dimension {hd} unsupported on cuda (1 ..= {MAX_HD})")));
    }
    if nkv == 0 || nh % nkv != 0 {
        return Err(err(format!("{op}: {nh} query heads are not a multiple of {nkv} key/value heads")));
    }
    Ok(())
}

/// The head dimension whose tensor-core kernels run this call, if any: bf16 storage (sm_80 and
/// newer, which bf16 storage requires), head dimension 64 or 128, every row stride and offset a
/// whole number of 16-byte chunks (cp.async), and `RLHF_CUDA_ATTENTION` not `simt`. Training
/// forward and decode decide alike, so rollout and training rows keep equal bits.
fn tensor_cores(ty: Dtype, hd: u32, strides: &[u32]) -> Option<u32> {
    static SIMT: OnceLock<bool> = OnceLock::new();
    let simt = *SIMT.get_or_init(|| std::env::var("RLHF_CUDA_ATTENTION").is_ok_and(|v| v == "simt"));
    (ty == Dtype::Bf16 && (hd == 64 || hd == 128) && !simt && strides.iter().all(|s| s % 8 == 0)).then_some(hd)
}

/// The tensor-core kernels' tiles (MmaTile, MmaDkv in the .cu): keys per tile, bytes per shared
/// row (hd + 8 bf16), and the dk/dv kernel's warps (16 keys each) and queries per tile.
struct MmaShape {
    tile: u32,
    row_bytes: u32,
    dkv_warps: u32,
    dkv_queries: u32,
}

impl MmaShape {
    fn of(hd: u32) -> Self {
        let small_head = hd == 64;
        MmaShape { tile: if small_head { 64 } else { 32 }, row_bytes: 2 * (hd + 8), dkv_warps: if small_head { 4 } else { 2 }, dkv_queries: if small_head { 64 } else { 16 } }
    }
    /// One K + V stage.
    fn stage_bytes(&self) -> u32 {
        2 * self.tile * self.row_bytes
    }
    /// Forward: two stages. Decode: one. dq: Q and dO of 64 rows, then one stage. dk/dv: K and V
    /// of the block's keys beside a Q and a dO tile.
    fn smem(&self) -> [(&'static str, u32); 4] {
        [
            ("forward", 2 * self.stage_bytes()),
            ("decode", self.stage_bytes()),
            ("dq", (128 * self.row_bytes).max(self.stage_bytes())),
            ("dkv", (2 * 16 * self.dkv_warps + 2 * self.dkv_queries) * self.row_bytes),
        ]
    }
}

fn cfg(grid: (u32, u32, u32), smem_floats: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: grid, block_dim: (32 * WARPS, 1, 1), shared_mem_bytes: smem_floats * 4 }
}

/// Elements of a strided q/k/v operand that the last sequence reaches.
fn strided_extent(b: u32, batch: u32, t: u32, row: u32, off: u32, width: u32) -> usize {
    if b == 0 || t == 0 {
        return 0;
    }
    (b as usize - 1) * batch as usize + (t as usize - 1) * row as usize + off as usize + width as usize
}

pub fn attention_fwd(ctx: &Context, out: &mut Buf, lse: &mut Buf, q: &Buf, k: &Buf, v: &Buf, p: AttentionParams) -> Result<()> {
    check_heads("attention_fwd", p.hd, p.nh, p.nkv)?;
    let t = types("attention_fwd", &[("out", out), ("q", q), ("k", k), ("v", v)], &[("lse", lse)])?;
    let (b, tq, nh, hd) = (p.b as usize, p.tq as usize, p.nh as usize, p.hd as usize);
    need(
        "attention_fwd",
        &[
            ("out", out.len(), b * tq * nh * hd),
            ("lse", lse.len(), b * nh * tq),
            ("q", q.len(), strided_extent(p.b, p.q_batch, p.tq, p.q_row, p.q_off, p.nh * p.hd)),
            ("k", k.len(), strided_extent(p.b, p.kv_batch, p.tk, p.kv_row, p.k_off, p.nkv * p.hd)),
            ("v", v.len(), strided_extent(p.b, p.kv_batch, p.tk, p.kv_row, p.v_off, p.nkv * p.hd)),
        ],
    )?;
    if b * tq == 0 || p.tk == 0 {
        return Ok(());
    }
    if let Some(hd) = tensor_cores(t, p.hd, &[p.q_row, p.q_batch, p.q_off, p.kv_row, p.kv_batch, p.k_off, p.v_off]) {
        let c = LaunchConfig { grid_dim: (p.tq.div_ceil(64), p.nh, p.b), block_dim: (128, 1, 1), shared_mem_bytes: MmaShape::of(hd).smem()[0].1 };
        return match hd {
            64 => launch!(ctx, "attention", "attention_fwd_mma64_bf16", c, out, lse, q, k, v, &p),
            _ => launch!(ctx, "attention", "attention_fwd_mma128_bf16", c, out, lse, q, k, v, &p),
        };
    }
    let smem = KT * (p.hd + 1) + KT * p.hd + WARPS * p.hd;
    launch!(ctx, "attention", "attention_fwd"[t], cfg((p.tq.div_ceil(WARPS), p.nh, p.b), smem), out, lse, q, k, v, &p)
}

#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(ctx: &Context, dqkv: &mut Buf, dout: &Buf, out: &Buf, lse: &Buf, qkv: &Buf, p: AttentionParams) -> Result<()> {
    check_heads("attention_bwd", p.hd, p.nh, p.nkv)?;
    if p.tq != p.tk || p.q_pos0 != 0 || p.q_row != p.kv_row || p.q_batch != p.kv_batch {
        return Err(err("attention_bwd: only the training layout (one fused qkv buffer, tq = tk, q_pos0 = 0) has a backward"));
    }
    let ty = types("attention_bwd", &[("dqkv", dqkv), ("dout", dout), ("out", out), ("qkv", qkv)], &[("lse", lse)])?;
    let (b, t, nh, hd) = (p.b as usize, p.tq as usize, p.nh as usize, p.hd as usize);
    let rows = b * t * p.q_row as usize;
    need(
        "attention_bwd",
        &[
            ("dqkv", dqkv.len(), rows),
            ("dout", dout.len(), b * t * nh * hd),
            ("out", out.len(), b * t * nh * hd),
            ("lse", lse.len(), b * nh * t),
            ("qkv", qkv.len(), rows),
        ],
    )?;
    if b * t == 0 {
        return Ok(());
    }
    ctx.with_scratch(Scratch::AttentionDelta, b * nh * t, |delta| {
        let warps = (b * t * nh) as u32;
        let dcfg = LaunchConfig { grid_dim: (warps.div_ceil(WARPS), 1, 1), block_dim: (32 * WARPS, 1, 1), shared_mem_bytes: 0 };
        launch!(ctx, "attention", "attention_bwd_delta"[ty], dcfg, &mut *delta, dout, out, &p)?;
        if let Some(hd) = tensor_cores(ty, p.hd, &[p.q_row, p.q_batch, p.q_off, p.k_off, p.v_off]) {
            let m = MmaShape::of(hd);
            let smem = m.smem();
            let dq = LaunchConfig { grid_dim: (p.tq.div_ceil(64), p.nh, p.b), block_dim: (128, 1, 1), shared_mem_bytes: smem[2].1 };
            let dkv = LaunchConfig { grid_dim: (p.tq.div_ceil(16 * m.dkv_warps), p.nkv, p.b), block_dim: (32 * m.dkv_warps, 1, 1), shared_mem_bytes: smem[3].1 };
            return match hd {
                64 => {
                    launch!(ctx, "attention", "attention_bwd_dq_mma64_bf16", dq, &mut *dqkv, dout, lse, &*delta, qkv, &p)?;
                    launch!(ctx, "attention", "attention_bwd_dkv_mma64_bf16", dkv, &mut *dqkv, dout, lse, &*delta, qkv, &p)
                }
                _ => {
                    launch!(ctx, "attention", "attention_bwd_dq_mma128_bf16", dq, &mut *dqkv, dout, lse, &*delta, qkv, &p)?;
                    launch!(ctx, "attention", "attention_bwd_dkv_mma128_bf16", dkv, &mut *dqkv, dout, lse, &*delta, qkv, &p)
                }
            };
        }
        let smem = 2 * KT * (p.hd + 1) + 2 * WARPS * p.hd;
        let grid = p.tq.div_ceil(WARPS);
        launch!(ctx, "attention", "attention_bwd"[ty], cfg((grid, p.nh, p.b), smem), &mut *dqkv, dout, lse, &*delta, qkv, &p)?;
        launch!(ctx, "attention", "attention_bwd_dkv"[ty], cfg((grid, p.nkv, p.b), smem + 2 * KT), &mut *dqkv, dout, lse, &*delta, qkv, &p)
    })
}

pub fn kv_cache_write(ctx: &Context, cache: &mut Buf, qkv: &Buf, p: KvCacheParams) -> Result<()> {
    let ty = types("kv_cache_write", &[("cache", cache), ("qkv", qkv)], &[])?;
    let kv = 2 * p.nkv as usize * p.hd as usize;
    let row = p.nh as usize * p.hd as usize + kv;
    let (b, t) = (p.b as usize, p.t as usize);
    if p.pos0 as usize + t > p.t_max as usize {
        return Err(err(format!("kv_cache_write: positions {} .. {} beyond the cache's {}", p.pos0, p.pos0 as usize + t, p.t_max)));
    }
    need("kv_cache_write", &[("cache", cache.len(), b * p.t_max as usize * kv), ("qkv", qkv.len(), b * t * row)])?;
    if b * t * kv == 0 {
        return Ok(());
    }
    launch!(ctx, "attention", "kv_cache_write"[ty], linear(b * t * kv, 256), cache, qkv, &p)
}

pub fn scatter_rows(ctx: &Context, out: &mut Buf, inp: &Buf, rows: &Ids, p: ScatterParams) -> Result<()> {
    let ty = types("scatter_rows", &[("out", out), ("inp", inp)], &[])?;
    let (n, w) = (p.n as usize, p.width as usize);
    if n == 0 || w == 0 {
        return Ok(());
    }
    if p.dst_rows == 0 {
        return Err(err(format!("scatter_rows: {n} rows into a destination of 0 rows")));
    }
    need(
        "scatter_rows",
        &[
            ("out", out.len(), (p.dst_rows as usize - 1) * p.dst_row as usize + w),
            ("inp", inp.len(), (n - 1) * p.src_row as usize + p.src_off as usize + w),
            ("rows", rows.len(), n),
        ],
    )?;
    launch!(ctx, "attention", "scatter_rows"[ty], linear(n * w, 256), out, inp, rows, &p)
}

#[allow(clippy::too_many_arguments)]
pub fn attention_decode_fwd(ctx: &Context, out: &mut Buf, lse: &mut Buf, q: &Buf, cache: &Buf, rows: &Ids, p: AttentionDecodeParams) -> Result<()> {
    check_heads("attention_decode_fwd", p.hd, p.nh, p.nkv)?;
    let ty = types("attention_decode_fwd", &[("out", out), ("q", q), ("cache", cache)], &[("lse", lse)])?;
    let (n, nh, hd) = (p.n as usize, p.nh as usize, p.hd as usize);
    if n == 0 {
        return Ok(());
    }
    need(
        "attention_decode_fwd",
        &[
            ("out", out.len(), n * nh * hd),
            ("lse", lse.len(), n * nh),
            ("q", q.len(), (n - 1) * p.q_row as usize + p.q_off as usize + nh * hd),
            ("cache", cache.len(), p.slots as usize * p.t_max as usize * 2 * p.nkv as usize * hd),
            ("rows", rows.len(), n),
        ],
    )?;
    if let Some(hd) = tensor_cores(ty, p.hd, &[p.q_row, p.q_off, 2 * p.nkv * p.hd]) {
        let groups = (p.nh / p.nkv).div_ceil(16);
        let smem = MmaShape::of(hd).smem()[1].1;
        if p.t_max <= SPLIT {
            let c = LaunchConfig { grid_dim: (p.n, p.nkv, groups), block_dim: (32, 1, 1), shared_mem_bytes: smem };
            return match hd {
                64 => launch!(ctx, "attention", "attention_decode_mma64_bf16", c, out, lse, q, cache, rows, &p),
                _ => launch!(ctx, "attention", "attention_decode_mma128_bf16", c, out, lse, q, cache, rows, &p),
            };
        }
        // flash-decoding: the keys of each row split over blocks of SPLIT keys, then merged in order
        let chunks = p.t_max.div_ceil(SPLIT);
        let len = n * nh * chunks as usize * (hd as usize + 2);
        return ctx.with_scratch(Scratch::DecodePartial, len, |partial| {
            let c = LaunchConfig { grid_dim: (p.n, p.nkv, groups * chunks), block_dim: (32, 1, 1), shared_mem_bytes: smem };
            match hd {
                64 => launch!(ctx, "attention", "attention_decode_split_mma64_bf16", c, &mut *partial, q, cache, rows, &p, &chunks)?,
                _ => launch!(ctx, "attention", "attention_decode_split_mma128_bf16", c, &mut *partial, q, cache, rows, &p, &chunks)?,
            }
            let merge = LaunchConfig { grid_dim: ((p.n * p.nh).div_ceil(WARPS), 1, 1), block_dim: (32 * WARPS, 1, 1), shared_mem_bytes: 0 };
            launch!(ctx, "attention", "attention_decode_merge_bf16", merge, out, lse, &*partial, rows, &p, &chunks)
        });
    }
    // SIMT: a warp per (row, key/value head, DecodeWarps::heads of its query heads); past SPLIT
    // keys of context, flash-decoding over chunks of SPLIT keys and the merge
    let warps = DecodeWarps::of(p.nh, p.nkv);
    let chunks = if p.t_max > SPLIT { p.t_max.div_ceil(SPLIT) } else { 0 };
    let c = LaunchConfig {
        grid_dim: (p.n, warps.count.div_ceil(DEC_WARPS), chunks.max(1)),
        block_dim: (32 * DEC_WARPS, 1, 1),
        shared_mem_bytes: DEC_WARPS * 4 * p.hd * 4,
    };
    let len = if chunks == 0 { 1 } else { n * nh * chunks as usize * (hd + 2) };
    ctx.with_scratch(Scratch::DecodePartial, len, |partial| {
        launch!(ctx, "attention", "attention_decode_fwd"[ty], c, &mut *out, &mut *lse, &mut *partial, q, cache, rows, &p, &chunks)?;
        if chunks == 0 {
            return Ok(());
        }
        let merge = LaunchConfig { grid_dim: ((p.n * p.nh).div_ceil(WARPS), 1, 1), block_dim: (32 * WARPS, 1, 1), shared_mem_bytes: 0 };
        launch!(ctx, "attention", "attention_decode_merge"[ty], merge, out, lse, &*partial, rows, &p, &chunks)
    })
}

/// Warps per block of the SIMT decode (DEC_WARPS in the .cu).
const DEC_WARPS: u32 = 4;

/// How the SIMT decode spreads the query heads over warps: each warp takes `heads` (1, 2 or 4;
/// dec_heads in the .cu) query heads of one key/value head, reading each cached key and value
/// once for them; `count` warps per cache row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeWarps {
    pub heads: u32,
    pub count: u32,
}

impl DecodeWarps {
    pub fn of(nh: u32, nkv: u32) -> Self {
        let g = nh / nkv;
        let heads = if g <= 2 { g } else { 4 };
        DecodeWarps { heads, count: nkv * g.div_ceil(heads) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tensor-core launches stay within the 48 KiB of dynamic shared memory a launch gets
    /// without opting in.
    /// MHA takes a head per warp, GQA groups of 2 a pair, larger groups 4 at a time (the last warp
    /// of a group of 7 takes 3).
    #[test]
    fn decode_warps_cover_every_query_head_once() {
        assert_eq!(DecodeWarps::of(12, 12), DecodeWarps { heads: 1, count: 12 });
        assert_eq!(DecodeWarps::of(4, 2), DecodeWarps { heads: 2, count: 2 });
        assert_eq!(DecodeWarps::of(14, 2), DecodeWarps { heads: 4, count: 4 });
        assert_eq!(DecodeWarps::of(32, 8), DecodeWarps { heads: 4, count: 8 });
        for (nh, nkv) in [(1, 1), (9, 3), (14, 2), (28, 4), (40, 8), (64, 8)] {
            let w = DecodeWarps::of(nh, nkv);
            let g = nh / nkv;
            let covered: u32 = (0..w.count / nkv).map(|y| w.heads.min(g - y * w.heads)).sum();
            assert_eq!(covered, g, "nh {nh} nkv {nkv}");
        }
    }

    #[test]
    fn tensor_core_launches_fit_the_default_shared_memory() {
        for hd in [64, 128] {
            for (kernel, bytes) in MmaShape::of(hd).smem() {
                assert!(bytes <= 48 * 1024, "hd {hd}: the {kernel} kernel asks for {bytes} bytes");
            }
        }
        assert_eq!(MmaShape::of(64).stage_bytes(), 2 * 64 * 72 * 2);
        assert_eq!(MmaShape::of(128).smem()[3].1, (64 + 32) * 136 * 2);
    }

    #[test]
    fn tensor_cores_need_bf16_a_supported_head_and_aligned_rows() {
        assert_eq!(tensor_cores(Dtype::Bf16, 64, &[768 * 3, 0, 64]), Some(64));
        assert_eq!(tensor_cores(Dtype::Bf16, 128, &[128 * 6]), Some(128));
        assert_eq!(tensor_cores(Dtype::F32, 64, &[192]), None);
        assert_eq!(tensor_cores(Dtype::Bf16, 96, &[288]), None);
        assert_eq!(tensor_cores(Dtype::Bf16, 64, &[196]), None, "a row stride of 196 bf16 is not 16-byte aligned");
    }
}

//! Launchers of kernels/embedding.cu: the gather (one block of 256 per token row) and its
//! backward (one thread per table column and vocabulary slice, walking the tokens in order:
//! deterministic, no atomics; enough slices to fill the GPU, `vocab_slices`).

use super::buffer::{types, CudaBuf};
use super::column_sum::TARGET_BLOCKS;
use super::context::{launch, linear, per_row, Context};
use super::need;
use crate::backend::ops::EmbeddingParams;
use crate::error::Result;
use cudarc::driver::CudaSlice;

type Buf = CudaBuf;

pub fn embedding_fwd(ctx: &Context, out: &mut Buf, ids: &CudaSlice<i32>, table: &Buf, p: EmbeddingParams) -> Result<()> {
    let (n, c, v) = (p.n as usize, p.c as usize, p.vocab as usize);
    let t = types("embedding_fwd", &[("out", out), ("table", table)], &[])?;
    need("embedding_fwd", &[("out", out.len(), n * c), ("ids", ids.len(), n), ("table", table.len(), v * c)])?;
    if n * c == 0 {
        return Ok(());
    }
    launch!(ctx, "embedding", "embedding_fwd"[t], per_row(n, 256), out, ids, table, &p)
}

/// The backward's vocabulary slices S: at least 64 and enough for [`TARGET_BLOCKS`] blocks of
/// 256 columns (c = 768: 88 slices, 264 blocks), at most one per table row. Every element keeps one
/// writer adding the tokens in order whatever S is, so S changes no result.
pub fn vocab_slices(c: usize, vocab: usize) -> u32 {
    let want = TARGET_BLOCKS.div_ceil(c.div_ceil(256).max(1)).max(64);
    want.min(vocab).clamp(1, 65535) as u32
}

pub fn embedding_bwd(ctx: &Context, dtable: &mut Buf, dout: &Buf, ids: &CudaSlice<i32>, p: EmbeddingParams) -> Result<()> {
    let (n, c, v) = (p.n as usize, p.c as usize, p.vocab as usize);
    let t = types("embedding_bwd", &[("dtable", dtable), ("dout", dout)], &[])?;
    need("embedding_bwd", &[("dtable", dtable.len(), v * c), ("dout", dout.len(), n * c), ("ids", ids.len(), n)])?;
    if n * c == 0 {
        return Ok(());
    }
    let mut cfg = linear(c, 256);
    cfg.grid_dim = (c.div_ceil(256) as u32, vocab_slices(c, v), 1);
    launch!(ctx, "embedding", "embedding_bwd"[t], cfg, dtable, dout, ids, &p)
}

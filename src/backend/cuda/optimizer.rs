//! Launchers of kernels/optimizer.cu: the global gradient norm (two launches, f64 partial sums of
//! at most 1024 blocks in a scratch buffer) and AdamW, which clips by (or skips on) that norm on
//! the device; and their multi-tensor forms, one launch over every tensor of a model (plus one to
//! add up the norm's partials) through a table of the tensors' addresses and chunks that is built
//! on the host, uploaded once per tensor list and then reused from the context's cache.

use super::buffer::{types, CudaBuf};
use super::context::{elementwise, launch, Context, Scratch};
use super::kernels::err;
use super::need;
use super::CudaBackend;
use crate::backend::ops::{adamw_each, sum_squares_each, AdamWParams, AdamWSlot, ElementwiseParams};
use crate::backend::storage::Dtype;
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

/// Elements per chunk of the multi-tensor kernels (`MT_CHUNK` in kernels/optimizer.cu).
pub const MT_CHUNK: usize = 65536;
/// u64 words per tensor in a multi-tensor table.
pub const MT_WORDS: usize = 7;

/// One tensor of a multi-tensor table: device addresses (0 where unused), length, weight decay.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MtEntry {
    pub param: u64,
    pub m: u64,
    pub v: u64,
    pub grad: u64,
    pub out: u64,
    pub n: usize,
    pub weight_decay: f32,
}

/// The table kernels/optimizer.cu's `*_many` kernels read: [`MT_WORDS`] words per tensor
/// (param, m, v, grad, out, n, weight-decay bits), then one word per chunk of [`MT_CHUNK`]
/// elements, `(tensor << 32) | chunk`, in tensor order. Returns it with the number of chunks.
pub fn multi_tensor_table(entries: &[MtEntry]) -> (Vec<u64>, usize) {
    let mut table: Vec<u64> = entries.iter().flat_map(|e| [e.param, e.m, e.v, e.grad, e.out, e.n as u64, e.weight_decay.to_bits() as u64]).collect();
    for (t, e) in entries.iter().enumerate() {
        table.extend((0..e.n.div_ceil(MT_CHUNK)).map(|c| ((t as u64) << 32) | c as u64));
    }
    let chunks = table.len() - MT_WORDS * entries.len();
    (table, chunks)
}

/// The one type of `bufs` (`None` when they mix types, or there are none).
fn common_dtype<'a>(mut bufs: impl Iterator<Item = &'a Buf>) -> Option<Dtype> {
    let first = bufs.next()?.dtype();
    bufs.all(|b| b.dtype() == first).then_some(first)
}

/// `Backend::sum_squares_many` in two launches; `Ok(false)` (nothing launched) when the tensors
/// mix types, for the caller to go tensor by tensor.
pub fn try_sum_squares_many(ctx: &Context, acc: &mut Buf, xs: &[Buf]) -> Result<bool> {
    types("sum_squares_many", &[], &[("acc", acc)])?;
    need("sum_squares_many", &[("acc", acc.len(), 1)])?;
    let Some(t) = common_dtype(xs.iter()) else {
        return Ok(false);
    };
    let s = ctx.stream();
    let entries: Vec<MtEntry> = xs.iter().map(|x| MtEntry { grad: x.ptr_at(s, 0), n: x.len(), ..Default::default() }).collect();
    let (table, chunks) = multi_tensor_table(&entries);
    if chunks == 0 {
        return Ok(true);
    }
    let (tensors, blocks) = (entries.len() as u32, chunks as u32);
    ctx.with_table(table, |table| {
        ctx.with_scratch(Scratch::SumSquares, 2 * chunks, |partial| {
            let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            launch!(ctx, "optimizer", "sum_squares_many"[t], cfg, &mut *partial, table, &tensors)?;
            let fin = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            launch!(ctx, "optimizer", "sum_squares_final", fin, acc, &*partial, &blocks)
        })
    })?;
    Ok(true)
}

/// `Backend::adamw_many` in one launch; `Ok(false)` (nothing launched) when the gradients mix
/// types or an output's differs from theirs, for the caller to go tensor by tensor.
pub fn try_adamw_many(ctx: &Context, slots: &mut [AdamWSlot<'_, Buf>], norm_sq: &Buf, p: AdamWParams) -> Result<bool> {
    types("adamw_many", &[], &[("norm_sq", norm_sq)])?;
    need("adamw_many", &[("norm_sq", norm_sq.len(), 1)])?;
    // one launch needs one gradient type, and the outputs in it; anything else goes tensor by tensor
    let t = common_dtype(slots.iter().map(|s| s.grad));
    let outs_match = slots.iter().all(|s| s.out.as_deref().is_none_or(|o| Some(o.dtype()) == t));
    let Some(t) = t.filter(|_| outs_match) else {
        return Ok(false);
    };
    let s = ctx.stream();
    let mut entries = Vec::with_capacity(slots.len());
    for (i, slot) in slots.iter().enumerate() {
        let n = slot.param.len();
        types("adamw_many", &[], &[("param", slot.param), ("m", slot.m), ("v", slot.v)])?;
        let out_len = slot.out.as_deref().map_or(n, |o| o.len());
        // the tensor's index is only formatted into a failure (no allocation per tensor and step)
        need("adamw_many", &[("m", slot.m.len(), n), ("v", slot.v.len(), n), ("grad", slot.grad.len(), n), ("out", out_len, n)])
            .map_err(|e| err(format!("{e} (tensor {i})")))?;
        entries.push(MtEntry {
            param: slot.param.ptr_at(s, 0),
            m: slot.m.ptr_at(s, 0),
            v: slot.v.ptr_at(s, 0),
            grad: slot.grad.ptr_at(s, 0),
            out: slot.out.as_deref().map_or(0, |o| o.ptr_at(s, 0)),
            n,
            weight_decay: slot.weight_decay,
        });
    }
    let (table, chunks) = multi_tensor_table(&entries);
    if chunks == 0 {
        return Ok(true);
    }
    let (tensors, chunks) = (entries.len() as u32, chunks as u32);
    let p = AdamWParams { n: entries.iter().map(|e| e.n).sum::<usize>().min(u32::MAX as usize) as u32, ..p };
    let cfg = LaunchConfig { grid_dim: (chunks.min(65535), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    // the table holds the addresses of buffers `slots` borrows for this call: the kernel runs in
    // stream order before any of them can be freed
    ctx.with_table(table, |table| launch!(ctx, "optimizer", "adamw_many"[t], cfg, table, &tensors, &chunks, norm_sq, &p))
        .map_err(|e| err(format!("{e} ({tensors} tensors)")))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_tensor_then_its_chunks_in_order() {
        let e = |n: usize, base: u64| MtEntry { param: base, m: base + 1, v: base + 2, grad: base + 3, out: 0, n, weight_decay: 0.1 };
        let entries = [e(5, 100), e(0, 200), e(2 * MT_CHUNK + 1, 300), e(MT_CHUNK, 400)];
        let (table, chunks) = multi_tensor_table(&entries);
        assert_eq!(chunks, 5, "1 + 0 + 3 + 1 chunks");
        assert_eq!(table.len(), MT_WORDS * 4 + chunks);
        assert_eq!(&table[..MT_WORDS], &[100, 101, 102, 103, 0, 5, 0.1f32.to_bits() as u64]);
        assert_eq!(table[2 * MT_WORDS + 5], (2 * MT_CHUNK + 1) as u64);
        let chunk_words = &table[MT_WORDS * 4..];
        assert_eq!(chunk_words, &[0, 2 << 32, (2 << 32) | 1, (2 << 32) | 2, 3 << 32]);
        // every element of every tensor is in exactly one chunk
        for (t, entry) in entries.iter().enumerate() {
            let covered: usize =
                chunk_words.iter().filter(|&&w| (w >> 32) as usize == t).map(|&w| (entry.n - (w & 0xffff_ffff) as usize * MT_CHUNK).min(MT_CHUNK)).sum();
            assert_eq!(covered, entry.n, "tensor {t}");
        }
    }

    #[test]
    fn the_kernels_chunk_size_is_the_hosts() {
        let src = include_str!("../../../kernels/optimizer.cu");
        assert!(src.contains(&format!("#define MT_CHUNK {MT_CHUNK}ull")), "MT_CHUNK differs between optimizer.cu and optimizer.rs");
    }
}

/// `sum_squares_many`: one launch for all tensors (and one to add up the norm), through a cached
/// address table; tensor by tensor (the reference) when their types mix.
pub fn sum_squares_many(be: &CudaBackend, acc: &mut Buf, xs: &[Buf]) -> Result<()> {
    if !try_sum_squares_many(&be.ctx, acc, xs)? {
        sum_squares_each(be, acc, xs)?;
    }
    Ok(())
}

/// `adamw_many`: one launch for all slots; slot by slot (the reference) when their types mix.
pub fn adamw_many(be: &CudaBackend, slots: &mut [AdamWSlot<'_, Buf>], norm_sq: &Buf, p: AdamWParams) -> Result<()> {
    if !try_adamw_many(&be.ctx, slots, norm_sq, p)? {
        adamw_each(be, slots, norm_sq, p)?;
    }
    Ok(())
}

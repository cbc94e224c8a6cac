//! The log-prob gather on CUDA (see kernels/logprob_gather.cu): per vocabulary chunk of `chunk`
//! rows of `w`, one cuBLAS product makes the `[n, cw]` logits tile (scratch, reused across calls)
//! and a kernel reduces or differentiates it; the `[n, v]` logits never exist. Extra device memory:
//! `n * chunk` floats for the tile and `3 * n * ceil(v / chunk)` for the forward's partials.
//! bf16 storage (`h`, `w`, `dh`, `dw` bf16): the products take bf16 operands (cuBLAS, f32
//! accumulation) and the logits tile stays f32, so the kernels are the f32 ones; the backward
//! rounds each dlogits tile to bf16 for its two products (`n * chunk / 2` more floats of
//! scratch) and sums `dh` over the chunks in f32 (`n * c` floats) before one rounding to bf16.

use super::buffer::{types, CudaBuf, DevPtr};
use super::context::{launch, linear, per_row, Context, Scratch};
use super::kernels::err;
use super::matmul::gemm;
use super::need;
use crate::backend::ops::{LogprobParams, MatmulParams};
use crate::backend::storage::Dtype;
use crate::error::Result;
use cudarc::driver::CudaSlice;

type Buf = CudaBuf;
type Ids = CudaSlice<i32>;

fn chunking(p: &LogprobParams) -> Result<(usize, usize)> {
    if p.temperature <= 0.0 || !p.temperature.is_finite() {
        return Err(err(format!("logprob_gather: temperature must be positive, got {}", p.temperature)));
    }
    let v = p.v as usize;
    let chunk = (p.chunk as usize).max(1).min(v.max(1));
    Ok((chunk, v.div_ceil(chunk)))
}

/// `tile[n, cw] = h @ w[j0 .. j0 + cw]^T / T` (f32 tile; bf16 or f32 operands)
fn logits_tile(ctx: &Context, tile: DevPtr<'_>, h: &Buf, w: &Buf, p: &LogprobParams, j0: usize, cw: usize) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    let mut mp = MatmulParams::new(n, cw, c, false, true);
    mp.alpha = 1.0 / p.temperature;
    let s = ctx.stream();
    gemm(ctx, tile, DevPtr::of(s, h, 0..n * c)?, DevPtr::of(s, w, j0 * c..(j0 + cw) * c)?, mp)
}

#[allow(clippy::too_many_arguments)]
pub fn logprob_gather_fwd(ctx: &Context, logp: &mut Buf, entropy: &mut Buf, lse: &mut Buf, h: &Buf, targets: &Ids, w: &Buf, p: LogprobParams) -> Result<()> {
    types("logprob_gather_fwd", &[("h", h), ("w", w)], &[("logp", logp), ("entropy", entropy), ("lse", lse)])?;
    let (n, c, v) = (p.n as usize, p.c as usize, p.v as usize);
    need(
        "logprob_gather_fwd",
        &[
            ("logp", logp.len(), n),
            ("entropy", entropy.len(), n),
            ("lse", lse.len(), n),
            ("h", h.len(), n * c),
            ("targets", targets.len(), n),
            ("w", w.len(), v * c),
        ],
    )?;
    let (chunk, n_chunks) = chunking(&p)?;
    if n == 0 || v == 0 {
        return Ok(());
    }
    ctx.with_scratch2((Scratch::LogprobTile, n * chunk), (Scratch::LogprobPartial, 3 * n * n_chunks), |tile, partial| {
        for j in 0..n_chunks {
            let j0 = j * chunk;
            let cw = chunk.min(v - j0);
            let t = DevPtr::scratch(ctx.stream(), tile, 0..n * cw)?;
            logits_tile(ctx, t, h, w, &p, j0, cw)?;
            let (j0u, cwu, ju) = (j0 as u32, cw as u32, j as u32);
            launch!(ctx, "logprob_gather", "logprob_chunk_stats", per_row(n, 256), &mut *partial, &mut *logp, &t.ptr, targets, &j0u, &cwu, &ju, &p)?;
        }
        let nc = n_chunks as u32;
        launch!(ctx, "logprob_gather", "logprob_gather_fwd", linear(n, 256), &mut *logp, &mut *entropy, &mut *lse, &*partial, targets, &nc, &p)
    })
}

#[allow(clippy::too_many_arguments)]
pub fn logprob_gather_bwd(
    ctx: &Context,
    dh: &mut Buf,
    dw: &mut Buf,
    dlogp: &Buf,
    dentropy: &Buf,
    h: &Buf,
    targets: &Ids,
    lse: &Buf,
    entropy: &Buf,
    w: &Buf,
    p: LogprobParams,
) -> Result<()> {
    let compute = [("dh", &*dh), ("dw", &*dw), ("h", h), ("w", w)];
    let ty = types("logprob_gather_bwd", &compute, &[("dlogp", dlogp), ("dentropy", dentropy), ("lse", lse), ("entropy", entropy)])?;
    let (n, c, v) = (p.n as usize, p.c as usize, p.v as usize);
    need(
        "logprob_gather_bwd",
        &[
            ("dh", dh.len(), n * c),
            ("dw", dw.len(), v * c),
            ("dlogp", dlogp.len(), n),
            ("dentropy", dentropy.len(), n),
            ("h", h.len(), n * c),
            ("targets", targets.len(), n),
            ("lse", lse.len(), n),
            ("entropy", entropy.len(), n),
            ("w", w.len(), v * c),
        ],
    )?;
    let (chunk, n_chunks) = chunking(&p)?;
    if n == 0 || c == 0 {
        return Ok(());
    }
    if v == 0 {
        let np = crate::backend::ops::ElementwiseParams::new(n * c)?;
        return super::elementwise::fill(ctx, dh, 0.0, np);
    }
    let s = ctx.stream();
    // bf16: dlogits are rounded to a bf16 tile for the bf16 products, and dh is summed over the
    // chunks in an f32 accumulator (after the tile in the same scratch), rounded once at the end
    let bf16 = ty == Dtype::Bf16;
    // the accumulator starts 256-byte aligned (the cast kernel reads it 16 bytes at a time)
    let acc0 = (n * chunk).next_multiple_of(64);
    let tile_len = if bf16 { acc0 + n * c } else { n * chunk };
    ctx.with_scratch2((Scratch::LogprobTile, tile_len), (Scratch::LogprobTileBf16, if bf16 { (n * chunk).div_ceil(2) } else { 1 }), |tile, tile16| {
        for j in 0..n_chunks {
            let j0 = j * chunk;
            let cw = chunk.min(v - j0);
            let t = DevPtr::scratch(s, tile, 0..n * cw)?;
            logits_tile(ctx, t, h, w, &p, j0, cw)?;
            let (j0u, cwu) = (j0 as u32, cw as u32);
            launch!(ctx, "logprob_gather", "logprob_gather_bwd", per_row(n, 256), &t.ptr, dlogp, dentropy, targets, lse, entropy, &j0u, &cwu, &p)?;
            let dlogits = if bf16 {
                let t16 = DevPtr::scratch_bf16(s, tile16, n * cw)?;
                super::elementwise::cast(ctx, t, t16)?;
                t16
            } else {
                t
            };
            let w_chunk = DevPtr::of(s, w, j0 * c..(j0 + cw) * c)?;
            // dh (+)= dlogits [n, cw] @ w_chunk [cw, c]
            let mp = MatmulParams::new(n, c, cw, false, false).accumulate(j > 0);
            let dh_acc = if bf16 { DevPtr::scratch(s, tile, acc0..acc0 + n * c)? } else { DevPtr::of_mut(s, dh, 0..n * c)? };
            gemm(ctx, dh_acc, dlogits, w_chunk, mp)?;
            // dw[chunk] += dlogits^T [cw, n] @ h [n, c]
            let mp = MatmulParams::new(cw, c, n, true, false).accumulate(true);
            gemm(ctx, DevPtr::of_mut(s, dw, j0 * c..(j0 + cw) * c)?, dlogits, DevPtr::of(s, h, 0..n * c)?, mp)?;
        }
        if bf16 {
            super::elementwise::cast(ctx, DevPtr::scratch(s, tile, acc0..acc0 + n * c)?, DevPtr::of_mut(s, dh, 0..n * c)?)?;
        }
        Ok(())
    })
}

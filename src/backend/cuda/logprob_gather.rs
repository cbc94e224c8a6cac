//! The log-prob gather on CUDA (see kernels/logprob_gather.cu): per vocabulary chunk of `chunk`
//! rows of `w`, one cuBLAS product makes the `[n, cw]` logits tile (scratch, reused across calls)
//! and a kernel reduces or differentiates it; the `[n, v]` logits never exist. Extra device memory:
//! `n * chunk` floats for the tile and `3 * n * ceil(v / chunk)` for the forward's partials.

use super::context::{launch, linear, per_row, Context, Scratch};
use super::kernels::err;
use super::matmul::gemm;
use super::need;
use crate::backend::ops::{LogprobParams, MatmulParams};
use crate::error::Result;
use cudarc::driver::CudaSlice;

type Buf = CudaSlice<f32>;
type Ids = CudaSlice<i32>;

fn chunking(p: &LogprobParams) -> Result<(usize, usize)> {
    if p.temperature <= 0.0 || !p.temperature.is_finite() {
        return Err(err(format!("logprob_gather: temperature must be positive, got {}", p.temperature)));
    }
    let v = p.v as usize;
    let chunk = (p.chunk as usize).max(1).min(v.max(1));
    Ok((chunk, v.div_ceil(chunk)))
}

/// `tile[n, cw] = h @ w[j0 .. j0 + cw]^T / T`
fn logits_tile(ctx: &Context, tile: &mut Buf, h: &Buf, w: &Buf, p: &LogprobParams, j0: usize, cw: usize) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    let mut mp = MatmulParams::new(n, cw, c, false, true);
    mp.alpha = 1.0 / p.temperature;
    gemm(ctx, &mut tile.slice_mut(..n * cw), &h.slice(..n * c), &w.slice(j0 * c..(j0 + cw) * c), mp)
}

#[allow(clippy::too_many_arguments)]
pub fn logprob_gather_fwd(ctx: &Context, logp: &mut Buf, entropy: &mut Buf, lse: &mut Buf, h: &Buf, targets: &Ids, w: &Buf, p: LogprobParams) -> Result<()> {
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
            logits_tile(ctx, tile, h, w, &p, j0, cw)?;
            let (j0u, cwu, ju) = (j0 as u32, cw as u32, j as u32);
            launch!(ctx, "logprob_gather", "logprob_chunk_stats", per_row(n, 256), &mut *partial, &mut *logp, &*tile, targets, &j0u, &cwu, &ju, &p)?;
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
        let np = crate::backend::ops::ElementwiseParams::new(n * c);
        return super::elementwise::fill(ctx, dh, 0.0, np);
    }
    ctx.with_scratch(Scratch::LogprobTile, n * chunk, |tile| {
        for j in 0..n_chunks {
            let j0 = j * chunk;
            let cw = chunk.min(v - j0);
            logits_tile(ctx, tile, h, w, &p, j0, cw)?;
            let (j0u, cwu) = (j0 as u32, cw as u32);
            launch!(ctx, "logprob_gather", "logprob_gather_bwd", per_row(n, 256), &mut *tile, dlogp, dentropy, targets, lse, entropy, &j0u, &cwu, &p)?;
            // dh (+)= dlogits [n, cw] @ w_chunk [cw, c]
            let mp = MatmulParams::new(n, c, cw, false, false).accumulate(j > 0);
            gemm(ctx, &mut dh.slice_mut(..n * c), &tile.slice(..n * cw), &w.slice(j0 * c..(j0 + cw) * c), mp)?;
            // dw[chunk] += dlogits^T [cw, n] @ h [n, c]
            let mp = MatmulParams::new(cw, c, n, true, false).accumulate(true);
            gemm(ctx, &mut dw.slice_mut(j0 * c..(j0 + cw) * c), &tile.slice(..n * cw), &h.slice(..n * c), mp)?;
        }
        Ok(())
    })
}

//! LayerNorm and RMSNorm over the last dimension of `[n, c]`.
//!
//! LayerNorm: `y = (x - mean) * rstd * w + b`, `rstd = 1/sqrt(var + eps)`, saves mean, rstd `[n]`.
//! Backward with `xhat = (x - mean) * rstd`, `g = dy * w`:
//!   `dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`, `dw += sum_rows dy * xhat`, `db += sum_rows dy`.
//! RMSNorm: `y = x * rstd * w`, `rstd = 1/sqrt(mean(x^2) + eps)`, saves rstd.
//! Backward: `dx = rstd * (g - xhat * mean(g * xhat))`, `dw += sum_rows dy * xhat`.
//! Row statistics are accumulated in f64 on the CPU; parameter gradients are reduced per column
//! in row order, so results do not depend on the thread count.

use crate::backend::ops::NormParams;
use rayon::prelude::*;

pub fn layernorm_fwd(out: &mut [f32], mean: &mut [f32], rstd: &mut [f32], inp: &[f32], weight: &[f32], bias: &[f32], p: NormParams) {
    let (n, c) = (p.n as usize, p.c as usize);
    out[..n * c].par_chunks_mut(c).zip(mean[..n].par_iter_mut().zip(rstd[..n].par_iter_mut())).enumerate().for_each(|(i, (o, (m, r)))| {
        let x = &inp[i * c..(i + 1) * c];
        let mu = x.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = x.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / c as f64;
        let rs = 1.0 / (var + p.eps as f64).sqrt();
        let (mu, rs) = (mu as f32, rs as f32);
        for j in 0..c {
            o[j] = (x[j] - mu) * rs * weight[j] + bias[j];
        }
        *m = mu;
        *r = rs;
    });
}

/// Sum over rows of `f(row)[j]` for every column j, in row order, parallel over column blocks.
fn column_sums(dst: &mut [f32], n: usize, c: usize, f: impl Fn(usize, usize) -> f32 + Sync) {
    const BLOCK: usize = 64;
    dst[..c].par_chunks_mut(BLOCK).enumerate().for_each(|(blk, d)| {
        let j0 = blk * BLOCK;
        let mut acc = vec![0f64; d.len()];
        for i in 0..n {
            for (jj, a) in acc.iter_mut().enumerate() {
                *a += f(i, j0 + jj) as f64;
            }
        }
        for (d, a) in d.iter_mut().zip(acc) {
            *d += a as f32;
        }
    });
}

#[allow(clippy::too_many_arguments)]
pub fn layernorm_bwd(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    mean: &[f32],
    rstd: &[f32],
    weight: &[f32],
    p: NormParams,
) {
    let (n, c) = (p.n as usize, p.c as usize);
    dinp[..n * c].par_chunks_mut(c).enumerate().for_each(|(i, dx)| {
        let x = &inp[i * c..(i + 1) * c];
        let dy = &dout[i * c..(i + 1) * c];
        let (mu, rs) = (mean[i], rstd[i]);
        let mut sum_g = 0f64;
        let mut sum_gx = 0f64;
        for j in 0..c {
            let xhat = (x[j] - mu) * rs;
            let g = dy[j] * weight[j];
            sum_g += g as f64;
            sum_gx += (g * xhat) as f64;
        }
        let mg = (sum_g / c as f64) as f32;
        let mgx = (sum_gx / c as f64) as f32;
        for j in 0..c {
            let xhat = (x[j] - mu) * rs;
            dx[j] = rs * (dy[j] * weight[j] - mg - xhat * mgx);
        }
    });
    column_sums(dweight, n, c, |i, j| dout[i * c + j] * (inp[i * c + j] - mean[i]) * rstd[i]);
    column_sums(dbias, n, c, |i, j| dout[i * c + j]);
}

pub fn rmsnorm_fwd(out: &mut [f32], rstd: &mut [f32], inp: &[f32], weight: &[f32], p: NormParams) {
    let (n, c) = (p.n as usize, p.c as usize);
    out[..n * c].par_chunks_mut(c).zip(rstd[..n].par_iter_mut()).enumerate().for_each(|(i, (o, r))| {
        let x = &inp[i * c..(i + 1) * c];
        let ms = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / c as f64;
        let rs = (1.0 / (ms + p.eps as f64).sqrt()) as f32;
        for j in 0..c {
            o[j] = x[j] * rs * weight[j];
        }
        *r = rs;
    });
}

#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_bwd(dinp: &mut [f32], dweight: &mut [f32], dout: &[f32], inp: &[f32], rstd: &[f32], weight: &[f32], p: NormParams) {
    let (n, c) = (p.n as usize, p.c as usize);
    dinp[..n * c].par_chunks_mut(c).enumerate().for_each(|(i, dx)| {
        let x = &inp[i * c..(i + 1) * c];
        let dy = &dout[i * c..(i + 1) * c];
        let rs = rstd[i];
        let mut sum_gx = 0f64;
        for j in 0..c {
            sum_gx += (dy[j] * weight[j] * x[j] * rs) as f64;
        }
        let mgx = (sum_gx / c as f64) as f32;
        for j in 0..c {
            dx[j] = rs * (dy[j] * weight[j] - x[j] * rs * mgx);
        }
    });
    column_sums(dweight, n, c, |i, j| dout[i * c + j] * inp[i * c + j] * rstd[i]);
}

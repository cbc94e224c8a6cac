//! LayerNorm and RMSNorm over the last dimension of `[n, c]`.
//!
//! LayerNorm: `y = (x - mean) * rstd * w + b`, `rstd = 1/sqrt(var + eps)`, saves mean, rstd `[n]`.
//! Backward with `xhat = (x - mean) * rstd`, `g = dy * w`:
//!   `dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`, `dw += sum_rows dy * xhat`, `db += sum_rows dy`.
//! RMSNorm: `y = x * rstd * w`, `rstd = 1/sqrt(mean(x^2) + eps)`, saves rstd.
//! Backward: `dx = rstd * (g - xhat * mean(g * xhat))`, `dw += sum_rows dy * xhat`.
//! Row statistics are accumulated in f64 on the CPU; parameter gradients are reduced per column
//! in row order, so results do not depend on the thread count.

use super::simd::multiversion;
use super::{profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::NormParams;
use crate::error::Result;
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

/// Columns per task of the parameter-gradient reductions.
const COL_BLOCK: usize = 64;

multiversion! {
    /// `dw[j] += sum_i dy[i, j] * xhat[i, j]` and `db[j] += sum_i dy[i, j]` over the columns
    /// `j0 .. j0 + dw.len()`, rows in order (f32 lanes, so the inner loop vectorises), with
    /// `xhat = (x - mean) * rstd` (RMSNorm: no mean).
    pub fn norm_param_grads_block(dw: &mut [f32], db: Option<&mut [f32]>, dy: &[f32], x: &[f32], mean: Option<&[f32]>, rstd: &[f32], c: usize, j0: usize) {
        let w = dw.len();
        let mut acc_w = [0f32; COL_BLOCK];
        let mut acc_b = [0f32; COL_BLOCK];
        for (i, &rs) in rstd.iter().enumerate() {
            let mu = mean.map_or(0.0, |m| m[i]);
            let dyr = &dy[i * c + j0..i * c + j0 + w];
            let xr = &x[i * c + j0..i * c + j0 + w];
            for jj in 0..w {
                acc_w[jj] += dyr[jj] * ((xr[jj] - mu) * rs);
                acc_b[jj] += dyr[jj];
            }
        }
        dw.iter_mut().zip(&acc_w).for_each(|(d, a)| *d += a);
        if let Some(db) = db {
            db.iter_mut().zip(&acc_b).for_each(|(d, a)| *d += a);
        }
    }
}

/// Parameter gradients of a norm over `[n, c]`, parallel over column blocks.
#[allow(clippy::too_many_arguments)]
fn norm_param_grads(dw: &mut [f32], db: Option<&mut [f32]>, dy: &[f32], x: &[f32], mean: Option<&[f32]>, rstd: &[f32], n: usize, c: usize) {
    let rstd = &rstd[..n];
    match db {
        Some(db) => dw[..c]
            .par_chunks_mut(COL_BLOCK)
            .zip(db[..c].par_chunks_mut(COL_BLOCK))
            .enumerate()
            .for_each(|(blk, (w, b))| norm_param_grads_block(w, Some(b), dy, x, mean, rstd, c, blk * COL_BLOCK)),
        None => dw[..c].par_chunks_mut(COL_BLOCK).enumerate().for_each(|(blk, w)| norm_param_grads_block(w, None, dy, x, mean, rstd, c, blk * COL_BLOCK)),
    }
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
    norm_param_grads(dweight, Some(dbias), dout, inp, Some(mean), rstd, n, c);
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
    norm_param_grads(dweight, None, dout, inp, None, rstd, n, c);
}

impl family::Layernorm for CpuBackend {
    fn layernorm_fwd(
        &self,
        out: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
        inp: &Vec<f32>,
        weight: &Vec<f32>,
        bias: &Vec<f32>,
        p: NormParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("layernorm_fwd");
        layernorm_fwd(out, mean, rstd, inp, weight, bias, p);
        Ok(())
    }
    fn layernorm_bwd(
        &self,
        dinp: &mut Vec<f32>,
        dweight: &mut Vec<f32>,
        dbias: &mut Vec<f32>,
        dout: &Vec<f32>,
        inp: &Vec<f32>,
        mean: &Vec<f32>,
        rstd: &Vec<f32>,
        weight: &Vec<f32>,
        p: NormParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("layernorm_bwd");
        layernorm_bwd(dinp, dweight, dbias, dout, inp, mean, rstd, weight, p);
        Ok(())
    }
    fn rmsnorm_fwd(&self, out: &mut Vec<f32>, rstd: &mut Vec<f32>, inp: &Vec<f32>, weight: &Vec<f32>, p: NormParams) -> Result<()> {
        let _t = profile::OpTimer::start("rmsnorm_fwd");
        rmsnorm_fwd(out, rstd, inp, weight, p);
        Ok(())
    }
    fn rmsnorm_bwd(
        &self,
        dinp: &mut Vec<f32>,
        dweight: &mut Vec<f32>,
        dout: &Vec<f32>,
        inp: &Vec<f32>,
        rstd: &Vec<f32>,
        weight: &Vec<f32>,
        p: NormParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("rmsnorm_bwd");
        rmsnorm_bwd(dinp, dweight, dout, inp, rstd, weight, p);
        Ok(())
    }
}

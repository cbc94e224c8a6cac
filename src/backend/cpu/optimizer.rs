//! Optimiser ops, element-wise over one parameter tensor `[n]`.
//! sum_squares: `acc[0] += sum x^2` (f64 partial sums in a fixed chunk order).
//! adamw (clipping fused in): skipped entirely when `norm_sq[0]` is not finite; otherwise with
//!        `s = min(1, max_norm / (sqrt(norm_sq[0]) + 1e-6))` when `max_norm > 0` (else 1) and the
//!        gradient `g s` (the gradient buffer is only read):
//!        `m = b1 m + (1-b1) g s`, `v = b2 v + (1-b2) (g s)^2`,
//!        `p -= lr (m/bc1 / (sqrt(v/bc2) + eps) + wd p)` (decoupled weight decay).

use super::{check, profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::AdamWParams;
use crate::backend::ops::*;
use crate::error::Result;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

pub fn sum_squares(acc: &mut [f32], x: &[f32]) {
    let partial: Vec<f64> = x.par_chunks(CHUNK).map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum()).collect();
    acc[0] += partial.iter().sum::<f64>() as f32;
}

/// The factor AdamW multiplies the gradient by, or `None` when the squared norm is not finite
/// (the step is skipped).
pub fn grad_scale(norm_sq: f32, max_norm: f32) -> Option<f32> {
    if !norm_sq.is_finite() {
        return None;
    }
    let s = (max_norm / (norm_sq.sqrt() + 1e-6)).min(1.0);
    Some(if max_norm > 0.0 && s < 1.0 { s } else { 1.0 })
}

pub fn adamw(param: &mut [f32], m: &mut [f32], v: &mut [f32], grad: &[f32], norm_sq: &[f32], p: AdamWParams) {
    let Some(s) = grad_scale(norm_sq[0], p.max_grad_norm) else { return };
    let n = p.n as usize;
    param[..n].par_chunks_mut(CHUNK).zip(m[..n].par_chunks_mut(CHUNK).zip(v[..n].par_chunks_mut(CHUNK))).zip(grad[..n].par_chunks(CHUNK)).for_each(
        |((w, (m, v)), g)| {
            for i in 0..w.len() {
                let g = g[i] * s;
                m[i] = p.beta1 * m[i] + (1.0 - p.beta1) * g;
                v[i] = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
                let mhat = m[i] / p.bias_correction1;
                let vhat = v[i] / p.bias_correction2;
                w[i] -= p.lr * (mhat / (vhat.sqrt() + p.eps) + p.weight_decay * w[i]);
            }
        },
    );
}

impl family::Optimizer for CpuBackend {
    fn sum_squares(&self, acc: &mut Vec<f32>, x: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("sum_squares");
        sum_squares(acc, &x[..p.n as usize]);
        Ok(())
    }
    fn adamw(&self, param: &mut Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, grad: &Vec<f32>, norm_sq: &Vec<f32>, p: AdamWParams) -> Result<()> {
        let _t = profile::OpTimer::start("adamw");
        let n = p.n as usize;
        check([param.len(), m.len(), v.len(), grad.len()].iter().all(|&l| l >= n), "adamw", "param, m, v or grad shorter than n")?;
        check(!norm_sq.is_empty(), "adamw", "norm_sq needs 1 value")?;
        adamw(param, m, v, grad, norm_sq, p);
        Ok(())
    }
}

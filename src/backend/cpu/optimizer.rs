//! Optimiser ops, element-wise over one parameter tensor `[n]`.
//! sum_squares: `acc[0] += sum x^2` (f64 partial sums in a fixed chunk order).
//! clip_grad: `x *= min(1, max_norm / (sqrt(norm_sq[0]) + 1e-6))`.
//! adamw: `m = b1 m + (1-b1) g`, `v = b2 v + (1-b2) g^2`,
//!        `p -= lr (m/bc1 / (sqrt(v/bc2) + eps) + wd p)` (decoupled weight decay).

use crate::backend::ops::{AdamWParams, ClipParams};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

pub fn sum_squares(acc: &mut [f32], x: &[f32]) {
    let partial: Vec<f64> = x.par_chunks(CHUNK).map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum()).collect();
    acc[0] += partial.iter().sum::<f64>() as f32;
}

pub fn clip_factor(norm_sq: f32, max_norm: f32) -> f32 {
    (max_norm / (norm_sq.sqrt() + 1e-6)).min(1.0)
}

pub fn clip_grad(x: &mut [f32], norm_sq: &[f32], p: ClipParams) {
    let s = clip_factor(norm_sq[0], p.max_norm);
    if s < 1.0 {
        x[..p.n as usize].par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|v| *v *= s));
    }
}

pub fn adamw(param: &mut [f32], m: &mut [f32], v: &mut [f32], grad: &[f32], p: AdamWParams) {
    let n = p.n as usize;
    param[..n].par_chunks_mut(CHUNK).zip(m[..n].par_chunks_mut(CHUNK).zip(v[..n].par_chunks_mut(CHUNK))).zip(grad[..n].par_chunks(CHUNK)).for_each(
        |((w, (m, v)), g)| {
            for i in 0..w.len() {
                m[i] = p.beta1 * m[i] + (1.0 - p.beta1) * g[i];
                v[i] = p.beta2 * v[i] + (1.0 - p.beta2) * g[i] * g[i];
                let mhat = m[i] / p.bias_correction1;
                let vhat = v[i] / p.bias_correction2;
                w[i] -= p.lr * (mhat / (vhat.sqrt() + p.eps) + p.weight_decay * w[i]);
            }
        },
    );
}

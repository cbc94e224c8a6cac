//! Activations, element-wise over `[n]`.
//! GELU (tanh form, GPT-2's `gelu_new`): `y = 0.5 x (1 + tanh(s (x + 0.044715 x^3)))`,
//! `s = sqrt(2/pi)`; backward from the saved input.
//! SwiGLU: `y = silu(g) * u`, `silu(g) = g * sigmoid(g)`; backward from the saved g and u:
//! `du = dy * silu(g)`, `dg = dy * u * sigmoid(g) * (1 + g (1 - sigmoid(g)))`.
//! Loops run over chunks in parallel, each chunk vectorised (see `simd`).

use super::simd::{self, multiversion};
use super::{profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::*;
use crate::error::Result;
use rayon::prelude::*;

const CHUNK: usize = 1 << 13;
const GELU_S: f32 = 0.797_884_6; // sqrt(2/pi)

/// tanh through one `exp`: `sign(u) (1 - e) / (1 + e)` with `e = exp(-2|u|)`.
#[inline(always)]
fn tanh(u: f32) -> f32 {
    let e = simd::exp(-2.0 * u.abs());
    ((1.0 - e) / (1.0 + e)).copysign(u)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + simd::exp(-x))
}

multiversion! {
    pub fn gelu_fwd_chunk(o: &mut [f32], x: &[f32]) {
        for (o, &x) in o.iter_mut().zip(x) {
            let u = GELU_S * (x + 0.044715 * x * x * x);
            *o = 0.5 * x * (1.0 + tanh(u));
        }
    }
}

multiversion! {
    pub fn gelu_bwd_chunk(d: &mut [f32], g: &[f32], x: &[f32]) {
        for ((d, &g), &x) in d.iter_mut().zip(g).zip(x) {
            let u = GELU_S * (x + 0.044715 * x * x * x);
            let t = tanh(u);
            let du = GELU_S * (1.0 + 3.0 * 0.044715 * x * x);
            *d = g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du);
        }
    }
}

multiversion! {
    pub fn swiglu_fwd_chunk(o: &mut [f32], g: &[f32], u: &[f32]) {
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = g * sigmoid(g) * u;
        }
    }
}

multiversion! {
    pub fn swiglu_bwd_chunk(dg: &mut [f32], du: &mut [f32], dy: &[f32], g: &[f32], u: &[f32]) {
        let n = dg.len().min(du.len()).min(dy.len()).min(g.len()).min(u.len());
        for i in 0..n {
            let s = sigmoid(g[i]);
            du[i] = dy[i] * g[i] * s;
            dg[i] = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
        }
    }
}

pub fn gelu_fwd(out: &mut [f32], inp: &[f32]) {
    out.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).for_each(|(o, x)| gelu_fwd_chunk(o, x));
}

pub fn gelu_bwd(dinp: &mut [f32], dout: &[f32], inp: &[f32]) {
    dinp.par_chunks_mut(CHUNK).zip(dout.par_chunks(CHUNK).zip(inp.par_chunks(CHUNK))).for_each(|(d, (g, x))| gelu_bwd_chunk(d, g, x));
}

pub fn swiglu_fwd(out: &mut [f32], gate: &[f32], up: &[f32]) {
    out.par_chunks_mut(CHUNK).zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK))).for_each(|(o, (g, u))| swiglu_fwd_chunk(o, g, u));
}

pub fn swiglu_bwd(dgate: &mut [f32], dup: &mut [f32], dout: &[f32], gate: &[f32], up: &[f32]) {
    dgate
        .par_chunks_mut(CHUNK)
        .zip(dup.par_chunks_mut(CHUNK))
        .zip(dout.par_chunks(CHUNK).zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK))))
        .for_each(|((dg, du), (dy, (g, u)))| swiglu_bwd_chunk(dg, du, dy, g, u));
}

impl family::Activation for CpuBackend {
    fn gelu_fwd(&self, out: &mut Vec<f32>, inp: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("gelu_fwd");
        let n = p.n as usize;
        gelu_fwd(&mut out[..n], &inp[..n]);
        Ok(())
    }
    fn gelu_bwd(&self, dinp: &mut Vec<f32>, dout: &Vec<f32>, inp: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("gelu_bwd");
        let n = p.n as usize;
        gelu_bwd(&mut dinp[..n], &dout[..n], &inp[..n]);
        Ok(())
    }
    fn swiglu_fwd(&self, out: &mut Vec<f32>, gate: &Vec<f32>, up: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("swiglu_fwd");
        let n = p.n as usize;
        swiglu_fwd(&mut out[..n], &gate[..n], &up[..n]);
        Ok(())
    }
    fn swiglu_bwd(&self, dgate: &mut Vec<f32>, dup: &mut Vec<f32>, dout: &Vec<f32>, gate: &Vec<f32>, up: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("swiglu_bwd");
        let n = p.n as usize;
        swiglu_bwd(&mut dgate[..n], &mut dup[..n], &dout[..n], &gate[..n], &up[..n]);
        Ok(())
    }
}

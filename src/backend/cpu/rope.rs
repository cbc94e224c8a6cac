//! Rotary position embedding, in place, rotate-half convention (as `transformers` Llama/Qwen2).
//! For head vector x of size d (half h = d/2), position p, `f_j = theta^(-2j/d)`, `a = p f_j`:
//!   `x'[j] = x[j] cos a - x[j+h] sin a`, `x'[j+h] = x[j+h] cos a + x[j] sin a`.
//! Backward applies the transpose (the rotation by -a) to the gradient. Shapes: rows of `row`
//! elements, one per token; the first `n_rot_heads` heads of each row are rotated (q and k of the
//! fused projection). Nothing is saved for backward.

use super::{profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::RopeParams;
use crate::error::Result;
use rayon::prelude::*;

fn rotate(x: &mut [f32], positions: &[i32], p: RopeParams, sign: f32) {
    let (row, hd, nrot) = (p.row as usize, p.head_dim as usize, p.n_rot_heads as usize);
    let half = hd / 2;
    let inv_freq: Vec<f32> = (0..half).map(|j| 1.0 / p.theta.powf((2 * j) as f32 / hd as f32)).collect();
    x[..p.n_tokens as usize * row].par_chunks_mut(row).zip(positions.par_iter()).for_each(|(r, &pos)| {
        for j in 0..half {
            let a = pos as f32 * inv_freq[j];
            let (s, c) = a.sin_cos();
            let s = s * sign;
            for h in 0..nrot {
                let base = h * hd;
                let x0 = r[base + j];
                let x1 = r[base + j + half];
                r[base + j] = x0 * c - x1 * s;
                r[base + j + half] = x1 * c + x0 * s;
            }
        }
    });
}

pub fn rope_fwd(x: &mut [f32], positions: &[i32], p: RopeParams) {
    rotate(x, positions, p, 1.0);
}

pub fn rope_bwd(dx: &mut [f32], positions: &[i32], p: RopeParams) {
    rotate(dx, positions, p, -1.0);
}

impl family::Rope for CpuBackend {
    fn rope_fwd(&self, x: &mut Vec<f32>, positions: &Vec<i32>, p: RopeParams) -> Result<()> {
        let _t = profile::OpTimer::start("rope_fwd");
        rope_fwd(x, positions, p);
        Ok(())
    }
    fn rope_bwd(&self, dx: &mut Vec<f32>, positions: &Vec<i32>, p: RopeParams) -> Result<()> {
        let _t = profile::OpTimer::start("rope_bwd");
        rope_bwd(dx, positions, p);
        Ok(())
    }
}

//! Launchers of the `rope` family (`shaders/rope.wgsl`): in-place rotary embedding, one
//! invocation per (token, frequency), looping over the rotated heads of the row.
//!
//! The frequencies `theta^(-2j/head_dim)` are computed here with the CPU reference's f32
//! expression and passed in the uniform (at most [`FREQ_MAX`] per dispatch; a head_dim above
//! `2 * FREQ_MAX` takes several dispatches over disjoint frequency ranges), so that the angle
//! `f32(position) * f_j` has the reference's bits at every position.

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;
use bytemuck::{Pod, Zeroable};

/// Frequencies per dispatch (14 vec4 of the uniform).
const FREQ_MAX: usize = 56;

/// The uniform of `rope_fwd` / `rope_bwd`: the params, then the frequency range of the dispatch.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RopeUniform {
    p: RopeParams,
    j0: u32,
    nj: u32,
    freq: [f32; FREQ_MAX],
}

fn launch(ctx: &Context, name: &str, x: &GpuBuf, positions: &GpuBuf, p: RopeParams) -> Result<()> {
    let (n, row, nrot, hd) = (p.n_tokens as usize, p.row as usize, p.n_rot_heads as usize, p.head_dim as usize);
    if nrot * hd > row {
        return Err(err(format!("{name}: {nrot} rotated heads of {hd} exceed the row of {row}")));
    }
    if x.len < n * row {
        return Err(err(format!("{name}: x holds {} values, fewer than {n} rows of {row}", x.len)));
    }
    if positions.len < n {
        return Err(err(format!("{name}: {} positions for {n} tokens", positions.len)));
    }
    let half = hd / 2;
    if n == 0 || half == 0 || nrot == 0 {
        return Ok(());
    }
    // the CPU reference's expression, bit for bit
    let inv_freq: Vec<f32> = (0..half).map(|j| 1.0 / p.theta.powf((2 * j) as f32 / hd as f32)).collect();
    for (c, chunk) in inv_freq.chunks(FREQ_MAX).enumerate() {
        let mut u = RopeUniform { p, j0: (c * FREQ_MAX) as u32, nj: chunk.len() as u32, freq: [0.0; FREQ_MAX] };
        u.freq[..chunk.len()].copy_from_slice(chunk);
        ctx.dispatch(name, bytemuck::bytes_of(&u), &[x, positions], ctx.grid_1d(n * chunk.len(), 256))?;
    }
    Ok(())
}

pub fn rope_fwd(ctx: &Context, x: &GpuBuf, positions: &GpuBuf, p: RopeParams) -> Result<()> {
    launch(ctx, "rope_fwd", x, positions, p)
}

pub fn rope_bwd(ctx: &Context, dx: &GpuBuf, positions: &GpuBuf, p: RopeParams) -> Result<()> {
    launch(ctx, "rope_bwd", dx, positions, p)
}

//! Launchers of kernels/layernorm.cu. Row kernels: one block of 256 per
//! row; parameter gradients (`norm_dw`): blocks of (32, 8) over column groups of 32.

use super::buffer::{types, CudaBuf};
use super::context::{launch, per_row, Context};
use super::need;
use crate::backend::ops::NormParams;
use crate::error::Result;
use cudarc::driver::LaunchConfig;

type Buf = CudaBuf;

fn dw_cfg(c: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (c.div_ceil(32), 1, 1), block_dim: (32, 8, 1), shared_mem_bytes: 0 }
}

#[allow(clippy::too_many_arguments)]
pub fn layernorm_fwd(ctx: &Context, out: &mut Buf, mean: &mut Buf, rstd: &mut Buf, inp: &Buf, weight: &Buf, bias: &Buf, p: NormParams) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    let t = types("layernorm_fwd", &[("out", out), ("inp", inp), ("weight", weight), ("bias", bias)], &[("mean", mean), ("rstd", rstd)])?;
    need(
        "layernorm_fwd",
        &[
            ("out", out.len(), n * c),
            ("mean", mean.len(), n),
            ("rstd", rstd.len(), n),
            ("inp", inp.len(), n * c),
            ("weight", weight.len(), c),
            ("bias", bias.len(), c),
        ],
    )?;
    if n * c == 0 {
        return Ok(());
    }
    launch!(ctx, "layernorm", "layernorm_fwd"[t], per_row(n, 256), out, mean, rstd, inp, weight, bias, &p)
}

#[allow(clippy::too_many_arguments)]
pub fn layernorm_bwd(
    ctx: &Context,
    dinp: &mut Buf,
    dweight: &mut Buf,
    dbias: &mut Buf,
    dout: &Buf,
    inp: &Buf,
    mean: &Buf,
    rstd: &Buf,
    weight: &Buf,
    p: NormParams,
) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    let compute = [("dinp", &*dinp), ("dweight", &*dweight), ("dbias", &*dbias), ("dout", dout), ("inp", inp), ("weight", weight)];
    let t = types("layernorm_bwd", &compute, &[("mean", mean), ("rstd", rstd)])?;
    need(
        "layernorm_bwd",
        &[
            ("dinp", dinp.len(), n * c),
            ("dweight", dweight.len(), c),
            ("dbias", dbias.len(), c),
            ("dout", dout.len(), n * c),
            ("inp", inp.len(), n * c),
            ("mean", mean.len(), n),
            ("rstd", rstd.len(), n),
            ("weight", weight.len(), c),
        ],
    )?;
    if n * c == 0 {
        return Ok(());
    }
    launch!(ctx, "layernorm", "layernorm_bwd"[t], per_row(n, 256), dinp, dout, inp, mean, rstd, weight, &p)?;
    let has_bias: i32 = 1;
    launch!(ctx, "layernorm", "norm_dw"[t], dw_cfg(p.c), dweight, dbias, dout, inp, mean, rstd, &has_bias, &p)
}

pub fn rmsnorm_fwd(ctx: &Context, out: &mut Buf, rstd: &mut Buf, inp: &Buf, weight: &Buf, p: NormParams) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    let t = types("rmsnorm_fwd", &[("out", out), ("inp", inp), ("weight", weight)], &[("rstd", rstd)])?;
    need("rmsnorm_fwd", &[("out", out.len(), n * c), ("rstd", rstd.len(), n), ("inp", inp.len(), n * c), ("weight", weight.len(), c)])?;
    if n * c == 0 {
        return Ok(());
    }
    launch!(ctx, "layernorm", "rmsnorm_fwd"[t], per_row(n, 256), out, rstd, inp, weight, &p)
}

#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_bwd(ctx: &Context, dinp: &mut Buf, dweight: &mut Buf, dout: &Buf, inp: &Buf, rstd: &Buf, weight: &Buf, p: NormParams) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    let t = types("rmsnorm_bwd", &[("dinp", &*dinp), ("dweight", &*dweight), ("dout", dout), ("inp", inp), ("weight", weight)], &[("rstd", rstd)])?;
    need(
        "rmsnorm_bwd",
        &[
            ("dinp", dinp.len(), n * c),
            ("dweight", dweight.len(), c),
            ("dout", dout.len(), n * c),
            ("inp", inp.len(), n * c),
            ("rstd", rstd.len(), n),
            ("weight", weight.len(), c),
        ],
    )?;
    if n * c == 0 {
        return Ok(());
    }
    launch!(ctx, "layernorm", "rmsnorm_bwd"[t], per_row(n, 256), dinp, dout, inp, rstd, weight, &p)?;
    // no bias and no mean: `rstd` stands in for both pointers and is never read or written as them
    let has_bias: i32 = 0;
    launch!(ctx, "layernorm", "norm_dw"[t], dw_cfg(p.c), dweight, rstd, dout, inp, rstd, rstd, &has_bias, &p)
}

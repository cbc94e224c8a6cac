//! Launchers of kernels/layernorm.cu. Row kernels: one block of 256 per
//! row; parameter gradients (`norm_dw`): a two-stage column sum (column_sum.rs).

use super::buffer::{types, CudaBuf};
use super::column_sum::row_chunks;
use super::context::{launch, per_row, Context};
use super::need;
use crate::backend::ops::NormParams;
use crate::backend::storage::Dtype;
use crate::error::Result;

type Buf = CudaBuf;

/// `dw += sum_rows dy xhat` (and `db += sum_rows dy` when `db` is given: LayerNorm) in two stages.
/// RMSNorm passes no `db` and no `mean`: `rstd` stands in for both pointers, never read or written
/// as them (`has_bias` 0).
#[allow(clippy::too_many_arguments)]
fn norm_dw(ctx: &Context, t: Dtype, dw: &mut Buf, db: Option<&mut Buf>, dout: &Buf, inp: &Buf, mean: Option<&Buf>, rstd: &Buf, p: NormParams) -> Result<()> {
    let (n, c) = (p.n as usize, p.c as usize);
    let has_bias = i32::from(db.is_some());
    let mean = mean.unwrap_or(rstd);
    let rc = row_chunks(n, c);
    let (rows, chunks) = (rc.rows as u32, rc.chunks as u32);
    rc.with_partials(ctx, 2, c, |partial| {
        match db {
            Some(db) => {
                launch!(ctx, "layernorm", "norm_dw"[t], rc.stage1(c), &mut *dw, &mut *db, &mut *partial, dout, inp, mean, rstd, &has_bias, &rows, &p)?;
                if chunks > 1 {
                    launch!(ctx, "layernorm", "norm_dw_final"[t], rc.stage2(c), dw, db, &*partial, &has_bias, &chunks, &p)?;
                }
            }
            None => {
                launch!(ctx, "layernorm", "norm_dw"[t], rc.stage1(c), &mut *dw, rstd, &mut *partial, dout, inp, mean, rstd, &has_bias, &rows, &p)?;
                if chunks > 1 {
                    launch!(ctx, "layernorm", "norm_dw_final"[t], rc.stage2(c), dw, rstd, &*partial, &has_bias, &chunks, &p)?;
                }
            }
        }
        Ok(())
    })
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
    norm_dw(ctx, t, dweight, Some(dbias), dout, inp, Some(mean), rstd, p)
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
    norm_dw(ctx, t, dweight, None, dout, inp, None, rstd, p)
}

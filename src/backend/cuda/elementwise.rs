//! Launchers of kernels/elementwise.cu (fill, copy, add, add_inplace, scale_inplace): flat `[n]`
//! buffers, float4 launches (`elementwise`).

use super::context::{elementwise as ew, launch, Context};
use super::need;
use crate::backend::ops::ElementwiseParams;
use crate::error::Result;
use cudarc::driver::CudaSlice;

type Buf = CudaSlice<f32>;

pub fn fill(ctx: &Context, out: &mut Buf, value: f32, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    need("fill", &[("out", out.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "elementwise", "fill", ew(n), out, &value, &p)
}

pub fn copy(ctx: &Context, out: &mut Buf, inp: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    need("copy", &[("out", out.len(), n), ("inp", inp.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "elementwise", "copy", ew(n), out, inp, &p)
}

pub fn add(ctx: &Context, out: &mut Buf, a: &Buf, b: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    need("add", &[("out", out.len(), n), ("a", a.len(), n), ("b", b.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "elementwise", "add", ew(n), out, a, b, &p)
}

pub fn add_inplace(ctx: &Context, acc: &mut Buf, x: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    need("add_inplace", &[("acc", acc.len(), n), ("x", x.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "elementwise", "add_inplace", ew(n), acc, x, &p)
}

pub fn scale_inplace(ctx: &Context, x: &mut Buf, s: f32, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    need("scale_inplace", &[("x", x.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "elementwise", "scale_inplace", ew(n), x, &s, &p)
}

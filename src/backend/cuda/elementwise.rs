//! Launchers of kernels/elementwise.cu (fill, copy, add, add_inplace, scale_inplace): flat `[n]`
//! buffers, 16-byte launches (`elementwise_of`). `fill` and `scale_inplace` take a buffer of
//! either type, `add`/`add_inplace` buffers of one type, and `copy` converts between any two
//! ([`cast`], also used on scratch memory by the log-prob gather).

use super::buffer::{types, CudaBuf, DevPtr};
use super::context::{elementwise_of as ew, launch, Context};
use super::need;
use crate::backend::ops::ElementwiseParams;
use crate::backend::storage::Dtype;
use crate::error::Result;

type Buf = CudaBuf;

pub fn fill(ctx: &Context, out: &mut Buf, value: f32, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    need("fill", &[("out", out.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    let t = out.dtype();
    launch!(ctx, "elementwise", "fill"[t], ew(n, t), out, &value, &p)
}

pub fn copy(ctx: &Context, out: &mut Buf, inp: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    need("copy", &[("out", out.len(), n), ("inp", inp.len(), n)])?;
    let s = ctx.stream();
    cast(ctx, DevPtr::of(s, inp, 0..n)?, DevPtr::of_mut(s, out, 0..n)?)
}

/// `out = inp` element-wise (`out.len` elements), converting between the two pointers' types
/// (the cast kernels round f32 to bf16 to nearest even; bf16 to f32 is exact). Both must start
/// 16-byte aligned (whole buffers, or scratch memory).
pub fn cast(ctx: &Context, inp: DevPtr<'_>, out: DevPtr<'_>) -> Result<()> {
    let n = out.len;
    need("copy", &[("inp", inp.len, n)])?;
    if n == 0 {
        return Ok(());
    }
    if (inp.ptr | out.ptr) % 16 != 0 {
        return Err(super::kernels::err(format!("copy: the cast kernels need 16-byte aligned buffers (inp {:#x}, out {:#x})", inp.ptr, out.ptr)));
    }
    let p = ElementwiseParams::new(n)?;
    let cfg = ew(n, if inp.dtype == Dtype::Bf16 { Dtype::Bf16 } else { out.dtype });
    match (out.dtype, inp.dtype) {
        (Dtype::F32, Dtype::F32) => launch!(ctx, "elementwise", "copy", cfg, &out.ptr, &inp.ptr, &p),
        (Dtype::Bf16, Dtype::Bf16) => launch!(ctx, "elementwise", "copy_bf16", cfg, &out.ptr, &inp.ptr, &p),
        (Dtype::Bf16, Dtype::F32) => launch!(ctx, "elementwise", "copy_f32_to_bf16", cfg, &out.ptr, &inp.ptr, &p),
        (Dtype::F32, Dtype::Bf16) => launch!(ctx, "elementwise", "copy_bf16_to_f32", cfg, &out.ptr, &inp.ptr, &p),
    }
}

pub fn add(ctx: &Context, out: &mut Buf, a: &Buf, b: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    let t = types("add", &[("out", out), ("a", a), ("b", b)], &[])?;
    need("add", &[("out", out.len(), n), ("a", a.len(), n), ("b", b.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "elementwise", "add"[t], ew(n, t), out, a, b, &p)
}

pub fn add_inplace(ctx: &Context, acc: &mut Buf, x: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    let t = types("add_inplace", &[("acc", acc), ("x", x)], &[])?;
    need("add_inplace", &[("acc", acc.len(), n), ("x", x.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "elementwise", "add_inplace"[t], ew(n, t), acc, x, &p)
}

pub fn scale_inplace(ctx: &Context, x: &mut Buf, s: f32, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    need("scale_inplace", &[("x", x.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    let t = x.dtype();
    launch!(ctx, "elementwise", "scale_inplace"[t], ew(n, t), x, &s, &p)
}

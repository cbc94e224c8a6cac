//! Launchers of kernels/activation.cu (GELU, SwiGLU): flat `[n]` buffers of one storage type,
//! 16-byte launches (4 f32 or 8 bf16 per thread).

use super::buffer::{types, CudaBuf};
use super::context::{elementwise_of as ew, launch, Context};
use super::need;
use crate::backend::ops::ElementwiseParams;
use crate::error::Result;
type Buf = CudaBuf;

pub fn gelu_fwd(ctx: &Context, out: &mut Buf, inp: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    let t = types("gelu_fwd", &[("out", out), ("inp", inp)], &[])?;
    need("gelu_fwd", &[("out", out.len(), n), ("inp", inp.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "activation", "gelu_fwd"[t], ew(n, t), out, inp, &p)
}

pub fn gelu_bwd(ctx: &Context, dinp: &mut Buf, dout: &Buf, inp: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    let t = types("gelu_bwd", &[("dinp", dinp), ("dout", dout), ("inp", inp)], &[])?;
    need("gelu_bwd", &[("dinp", dinp.len(), n), ("dout", dout.len(), n), ("inp", inp.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "activation", "gelu_bwd"[t], ew(n, t), dinp, dout, inp, &p)
}

pub fn swiglu_fwd(ctx: &Context, out: &mut Buf, gate: &Buf, up: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    let t = types("swiglu_fwd", &[("out", out), ("gate", gate), ("up", up)], &[])?;
    need("swiglu_fwd", &[("out", out.len(), n), ("gate", gate.len(), n), ("up", up.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "activation", "swiglu_fwd"[t], ew(n, t), out, gate, up, &p)
}

pub fn swiglu_bwd(ctx: &Context, dgate: &mut Buf, dup: &mut Buf, dout: &Buf, gate: &Buf, up: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    let t = types("swiglu_bwd", &[("dgate", dgate), ("dup", dup), ("dout", dout), ("gate", gate), ("up", up)], &[])?;
    need("swiglu_bwd", &[("dgate", dgate.len(), n), ("dup", dup.len(), n), ("dout", dout.len(), n), ("gate", gate.len(), n), ("up", up.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "activation", "swiglu_bwd"[t], ew(n, t), dgate, dup, dout, gate, up, &p)
}

//! Launchers of kernels/activation.cu (GELU, SwiGLU): flat `[n]` buffers, float4 launches.

use super::context::{elementwise as ew, launch, Context};
use super::need;
use crate::backend::ops::ElementwiseParams;
use crate::error::Result;
use cudarc::driver::CudaSlice;

type Buf = CudaSlice<f32>;

pub fn gelu_fwd(ctx: &Context, out: &mut Buf, inp: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    need("gelu_fwd", &[("out", out.len(), n), ("inp", inp.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "activation", "gelu_fwd", ew(n), out, inp, &p)
}

pub fn gelu_bwd(ctx: &Context, dinp: &mut Buf, dout: &Buf, inp: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    need("gelu_bwd", &[("dinp", dinp.len(), n), ("dout", dout.len(), n), ("inp", inp.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "activation", "gelu_bwd", ew(n), dinp, dout, inp, &p)
}

pub fn swiglu_fwd(ctx: &Context, out: &mut Buf, gate: &Buf, up: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    need("swiglu_fwd", &[("out", out.len(), n), ("gate", gate.len(), n), ("up", up.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "activation", "swiglu_fwd", ew(n), out, gate, up, &p)
}

pub fn swiglu_bwd(ctx: &Context, dgate: &mut Buf, dup: &mut Buf, dout: &Buf, gate: &Buf, up: &Buf, p: ElementwiseParams) -> Result<()> {
    let n = p.n as usize;
    need("swiglu_bwd", &[("dgate", dgate.len(), n), ("dup", dup.len(), n), ("dout", dout.len(), n), ("gate", gate.len(), n), ("up", up.len(), n)])?;
    if n == 0 {
        return Ok(());
    }
    launch!(ctx, "activation", "swiglu_bwd", ew(n), dgate, dup, dout, gate, up, &p)
}

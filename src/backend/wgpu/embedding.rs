//! Launchers of the `embedding` family (`shaders/embedding.wgsl`). Forward: one invocation per
//! output element. Backward: workgroups own (column block, id class) pairs and walk the ids in
//! token order, so every `dtable` element is updated by one invocation in token order
//! (deterministic, bit-identical to the CPU backend, no atomics). Up to `CHAIN_MAX_N` tokens the
//! backward links the tokens of each id into a chain instead (`embedding_bwd_links`, O(n^2)
//! compares) and walks each chain once per column (`embedding_bwd_chain`): the same additions in
//! the same order, without the class kernel's barriers and per-token divisions.
//!
//! The CPU backend rejects ids outside the vocabulary; here the ids stay on the device (reading
//! them back would stall the step), so only the shapes are checked: the kernels give such a
//! token a zero row in the forward pass and drop its gradient.

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;
use bytemuck::{Pod, Zeroable};

/// Id classes of the backward pass (workgroups along y per column block).
const CLASSES: u32 = 64;

/// Largest token count of the chain path of the backward pass (its link pass costs n^2 compares).
pub const CHAIN_MAX_N: u32 = 16384;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct EmbeddingLaunch {
    p: EmbeddingParams,
    classes: u32,
}

fn check(op: &str, p: EmbeddingParams, rows: &[(&str, &GpuBuf, usize)]) -> Result<()> {
    if p.accumulate > 1 {
        return Err(err(format!("{op}: accumulate must be 0 or 1")));
    }
    if p.vocab == 0 && p.n > 0 {
        return Err(err(format!("{op}: empty vocabulary")));
    }
    for (name, buf, need) in rows {
        if buf.len < *need {
            return Err(err(format!("{op}: {name} holds {} values, needs {need}", buf.len)));
        }
    }
    Ok(())
}

pub fn embedding_fwd(ctx: &Context, out: &GpuBuf, ids: &GpuBuf, table: &GpuBuf, p: EmbeddingParams) -> Result<()> {
    let (n, c, vocab) = (p.n as usize, p.c as usize, p.vocab as usize);
    check("embedding_fwd", p, &[("out", out, n * c), ("ids", ids, n), ("table", table, vocab * c)])?;
    let lp = EmbeddingLaunch { p, classes: 1 };
    ctx.dispatch("embedding_fwd", bytemuck::bytes_of(&lp), &[out, ids, table], ctx.grid_1d(n * c, 256))
}

pub fn embedding_bwd(ctx: &Context, dtable: &GpuBuf, dout: &GpuBuf, ids: &GpuBuf, p: EmbeddingParams) -> Result<()> {
    let (n, c, vocab) = (p.n as usize, p.c as usize, p.vocab as usize);
    check("embedding_bwd", p, &[("dtable", dtable, vocab * c), ("dout", dout, n * c), ("ids", ids, n)])?;
    if n == 0 || c == 0 {
        return Ok(());
    }
    if p.n <= CHAIN_MAX_N {
        let lp = EmbeddingLaunch { p, classes: 1 };
        let links = ctx.scratch("embedding_bwd.links", 2 * n)?;
        ctx.dispatch("embedding_bwd_links", bytemuck::bytes_of(&lp), &[&links, ids], ctx.grid_1d(n, 64))?;
        return ctx.dispatch("embedding_bwd_chain", bytemuck::bytes_of(&lp), &[dtable, dout, ids, &links], ctx.grid_1d(n * c, 64));
    }
    let classes = CLASSES.min(p.vocab).max(1);
    let lp = EmbeddingLaunch { p, classes };
    ctx.dispatch("embedding_bwd", bytemuck::bytes_of(&lp), &[dtable, dout, ids], [c.div_ceil(256) as u32, classes, 1])
}

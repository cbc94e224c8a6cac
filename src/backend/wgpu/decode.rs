//! Launcher of `decode_advance` (`shaders/decode.wgsl`): the rollout engine's per-step bookkeeping
//! on the device, one invocation per row of the step. The buffer sizes are checked here; the
//! values (cache rows, slot state) live on the device and a row that points outside the slots is
//! skipped by the shader.

use super::buffer::GpuBuf;
use super::context::{err, params_with, Context};
use crate::backend::ops::DecodeAdvanceParams;
use crate::error::Result;

#[allow(clippy::too_many_arguments)]
pub fn decode_advance(
    ctx: &Context,
    state: &GpuBuf,
    history: &GpuBuf,
    tokens: &GpuBuf,
    positions: &GpuBuf,
    cache_rows: &GpuBuf,
    record_rows: &GpuBuf,
    sampled: &GpuBuf,
    stop_ids: &GpuBuf,
    p: DecodeAdvanceParams,
) -> Result<()> {
    const OP: &str = "decode_advance";
    let bufs = [state, history, tokens, positions, cache_rows, record_rows, sampled, stop_ids];
    for (buf, (what, want)) in bufs.iter().zip(p.min_lens()) {
        if buf.len < want {
            return Err(err(format!("{OP}: {what} holds {} values, needs {want}", buf.len)));
        }
    }
    if p.n == 0 {
        return Ok(());
    }
    ctx.dispatch(OP, &params_with(&p, &[]), &bufs, ctx.grid_1d(p.n as usize, 64))
}

//! Launcher of kernels/decode.cu (`decode_advance`, the rollout engine's per-step bookkeeping on
//! the device): 1-D over the step's rows, blocks of 64. The buffer sizes are checked here; the
//! values (cache rows, slot state) live on the device and a row that points outside the slots is
//! skipped by the kernel.

use super::context::{launch, linear, Context};
use super::need;
use crate::backend::ops::DecodeAdvanceParams;
use crate::error::Result;
use cudarc::driver::CudaSlice;

type Ids = CudaSlice<i32>;

#[allow(clippy::too_many_arguments)]
pub fn decode_advance(
    ctx: &Context,
    state: &mut Ids,
    history: &mut Ids,
    tokens: &mut Ids,
    positions: &mut Ids,
    cache_rows: &mut Ids,
    record_rows: &mut Ids,
    sampled: &Ids,
    stop_ids: &Ids,
    p: DecodeAdvanceParams,
) -> Result<()> {
    let lens = [state.len(), history.len(), tokens.len(), positions.len(), cache_rows.len(), record_rows.len(), sampled.len(), stop_ids.len()];
    let checks: Vec<(&str, usize, usize)> = lens.iter().zip(p.min_lens()).map(|(&have, (what, want))| (what, have, want)).collect();
    need("decode_advance", &checks)?;
    if p.n == 0 {
        return Ok(());
    }
    launch!(ctx, "decode", "decode_advance", linear(p.n as usize, 64), state, history, tokens, positions, cache_rows, record_rows, sampled, stop_ids, &p)
}

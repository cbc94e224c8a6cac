//! `decode_advance`: the rollout engine's per-step bookkeeping (see `DecodeAdvanceParams`), the
//! reference of `kernels/decode.cu` and `shaders/decode.wgsl`. Per row r of a decode step, the
//! slot `s = cache_rows[r] / t_max` takes the sampled id into its history and state
//! `[len, resp_len, finish, last]`, decides whether it has finished (stop id, max_new_tokens,
//! context) and writes the next step's token, position, cache row and record row; a finished
//! slot's row keeps its frozen inputs and records into the dump row. Each call (with rows) also
//! counts the sampling step `state[4 slots]` up by one.

use super::{check, profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::{decode_finish, DecodeAdvanceParams};
use crate::error::{Error, Result};

/// Rows in order (a slot appears at most once per step). A row whose slot is outside the state or
/// whose history is full stops the op with `Err(row)` (the GPU kernels skip such rows).
#[allow(clippy::too_many_arguments)]
pub fn decode_advance(
    state: &mut [i32],
    history: &mut [i32],
    tokens: &mut [i32],
    positions: &mut [i32],
    cache_rows: &mut [i32],
    record_rows: &mut [i32],
    sampled: &[i32],
    stop_ids: &[i32],
    p: DecodeAdvanceParams,
) -> Result<(), usize> {
    if p.n == 0 {
        return Ok(());
    }
    // the sampling step counter after the slots' state
    let counter = decode_finish::state_len(p.slots as usize) - 1;
    state[counter] = state[counter].wrapping_add(1);
    let stops = &stop_ids[..p.n_stop as usize];
    let (t_max, stride) = (p.t_max as i64, p.stride as i64);
    for r in 0..p.n as usize {
        let row = cache_rows[r] as i64;
        if row < 0 || t_max == 0 || row / t_max >= p.slots as i64 {
            return Err(r);
        }
        let s = row / t_max;
        let st = &mut state[s as usize * decode_finish::STATE..][..decode_finish::STATE];
        if st[2] != decode_finish::RUNNING {
            record_rows[r] = p.dump_row as i32;
            continue;
        }
        if st[1] < 0 || st[1] as i64 >= stride {
            return Err(r);
        }
        let id = sampled[r];
        history[(s * stride) as usize + st[1] as usize] = id;
        let (len, resp) = (st[0] + 1, st[1] + 1);
        let finish = if stops.contains(&id) {
            decode_finish::STOP
        } else if resp as u32 >= p.max_new {
            decode_finish::MAX_NEW
        } else if (len + 1) as u32 >= p.max_len {
            decode_finish::CONTEXT
        } else {
            decode_finish::RUNNING
        };
        st.copy_from_slice(&[len, resp, finish, id]);
        tokens[r] = id;
        positions[r] = len;
        cache_rows[r] = (s * t_max) as i32 + len;
        record_rows[r] = if finish == decode_finish::RUNNING { (s * stride) as i32 + resp } else { p.dump_row as i32 };
    }
    Ok(())
}

impl family::Decode for CpuBackend {
    fn decode_advance(
        &self,
        state: &mut Vec<i32>,
        history: &mut Vec<i32>,
        tokens: &mut Vec<i32>,
        positions: &mut Vec<i32>,
        cache_rows: &mut Vec<i32>,
        record_rows: &mut Vec<i32>,
        sampled: &Vec<i32>,
        stop_ids: &Vec<i32>,
        p: DecodeAdvanceParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("decode_advance");
        const OP: &str = "decode_advance";
        let lens = [state.len(), history.len(), tokens.len(), positions.len(), cache_rows.len(), record_rows.len(), sampled.len(), stop_ids.len()];
        for (have, (what, want)) in lens.into_iter().zip(p.min_lens()) {
            check(have >= want, OP, &format!("{what} holds {have} values, needs {want}"))?;
        }
        decode_advance(state, history, tokens, positions, cache_rows, record_rows, sampled, stop_ids, p).map_err(|r| Error::Backend {
            backend: "cpu",
            msg: format!("{OP}: row {r}: cache row {} is outside the {} slots of {} positions, or its slot's history is full", cache_rows[r], p.slots, p.t_max),
        })
    }
}

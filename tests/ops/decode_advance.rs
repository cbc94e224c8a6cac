//! `decode_advance` on the CPU backend (the reference of the CUDA and WGSL kernels) against a
//! hand-worked step: a stop id, `max_new_tokens`, the context end, a slot that goes on, and an
//! already-finished slot; then a second step in which the finished slots idle (nothing of theirs
//! changes) and the last running one stops; the sampling step counter after the slots' state counts
//! the calls; and the errors for rows outside the slots.

use rlhf::backend::ops::{decode_finish as fin, Backend, DecodeAdvanceParams};
use rlhf::backend::CpuBackend;

/// 5 slots of 12 cache positions, 5 history entries each (dump row 25), responses of at most 4
/// tokens, a context of 11, stop ids 9 and 11 (the third id in the buffer lies past `n_stop`).
const P: DecodeAdvanceParams = DecodeAdvanceParams { n: 5, slots: 5, t_max: 12, stride: 5, max_new: 4, max_len: 11, n_stop: 2, dump_row: 25 };

struct Step {
    state: Vec<i32>,
    history: Vec<i32>,
    tokens: Vec<i32>,
    positions: Vec<i32>,
    cache_rows: Vec<i32>,
    record_rows: Vec<i32>,
}

fn advance(be: &CpuBackend, st: &mut Step, sampled: &[i32], p: DecodeAdvanceParams) -> rlhf::Result<()> {
    let stops = vec![9, 11, 7];
    be.decode_advance(&mut st.state, &mut st.history, &mut st.tokens, &mut st.positions, &mut st.cache_rows, &mut st.record_rows, &sampled.to_vec(), &stops, p)
}

/// Rows (in this order): slot 2, 0, 3, 1 (finished), 4.
fn start() -> Step {
    let mut state = vec![0; fin::state_len(5)];
    // the sampling step counter
    state[20] = 40;
    // [len, resp_len, finish, last]
    state[0..4].copy_from_slice(&[7, 3, fin::RUNNING, 4]);
    state[4..8].copy_from_slice(&[4, 2, fin::STOP, 9]);
    state[8..12].copy_from_slice(&[6, 1, fin::RUNNING, 3]);
    state[12..16].copy_from_slice(&[9, 2, fin::RUNNING, 1]);
    state[16..20].copy_from_slice(&[3, 1, fin::RUNNING, 8]);
    Step {
        state,
        history: vec![-1; 25],
        tokens: vec![3, 4, 1, 9, 8],
        positions: vec![6, 7, 9, 4, 3],
        // slot * 12 + len
        cache_rows: vec![2 * 12 + 6, 7, 3 * 12 + 9, 12 + 4, 4 * 12 + 3],
        record_rows: vec![2 * 5 + 1, 3, 3 * 5 + 2, 25, 4 * 5 + 1],
    }
}

#[test]
pub(crate) fn decode_advance_by_hand() {
    let be = CpuBackend::new();
    let mut st = start();
    advance(&be, &mut st, &[9, 2, 6, 5, 7], P).unwrap();
    let mut want_state = vec![0; 21];
    // one call: the step counter moved on by one
    want_state[20] = 41;
    // slot 0: 2 is its 4th token -> max_new_tokens
    want_state[0..4].copy_from_slice(&[8, 4, fin::MAX_NEW, 2]);
    // slot 1: finished before the step, untouched
    want_state[4..8].copy_from_slice(&[4, 2, fin::STOP, 9]);
    // slot 2: sampled the stop id 9
    want_state[8..12].copy_from_slice(&[7, 2, fin::STOP, 9]);
    // slot 3: 10 positions + the new token fill the context of 11
    want_state[12..16].copy_from_slice(&[10, 3, fin::CONTEXT, 6]);
    // slot 4: 7 is in the stop buffer but past n_stop, so it goes on
    want_state[16..20].copy_from_slice(&[4, 2, fin::RUNNING, 7]);
    assert_eq!(st.state, want_state);
    let mut want_history = vec![-1; 25];
    want_history[3] = 2; // slot 0, entry 3
    want_history[2 * 5 + 1] = 9;
    want_history[3 * 5 + 2] = 6;
    want_history[4 * 5 + 1] = 7;
    assert_eq!(st.history, want_history);
    // next inputs: the new token at the new length; the finished slot 1 keeps its frozen inputs
    assert_eq!(st.tokens, vec![9, 2, 6, 9, 7]);
    assert_eq!(st.positions, vec![7, 8, 10, 4, 4]);
    assert_eq!(st.cache_rows, vec![2 * 12 + 7, 8, 3 * 12 + 10, 12 + 4, 4 * 12 + 4]);
    // only the running slot records at its next entry; the finished ones into the dump row
    assert_eq!(st.record_rows, vec![25, 25, 25, 25, 4 * 5 + 2]);

    // the next step: the four finished slots idle, slot 4 samples the stop id 11
    let before = (st.history.clone(), st.tokens.clone(), st.positions.clone(), st.cache_rows.clone());
    advance(&be, &mut st, &[1, 1, 1, 1, 11], P).unwrap();
    want_state[16..20].copy_from_slice(&[5, 3, fin::STOP, 11]);
    want_state[20] = 42;
    assert_eq!(st.state, want_state);
    want_history[4 * 5 + 2] = 11;
    assert_eq!(st.history, want_history);
    assert_eq!(st.tokens[..4], before.1[..4]);
    assert_eq!(st.positions[..4], before.2[..4]);
    assert_eq!(st.cache_rows[..4], before.3[..4]);
    assert_eq!((st.tokens[4], st.positions[4], st.cache_rows[4]), (11, 5, 4 * 12 + 5));
    assert_eq!(st.record_rows, vec![25; 5]);
}

#[test]
fn decode_advance_rejects_rows_outside_the_slots() {
    let be = CpuBackend::new();
    // a cache row past the 5 slots of 12 positions
    let mut st = start();
    st.cache_rows[1] = 5 * 12;
    let e = advance(&be, &mut st, &[0; 5], P).unwrap_err().to_string();
    assert!(e.contains("decode_advance") && e.contains("row 1") && e.contains("60"), "{e}");
    // a running slot whose history is full
    let mut st = start();
    st.state[16 + 1] = 5;
    let e = advance(&be, &mut st, &[0; 5], P).unwrap_err().to_string();
    assert!(e.contains("row 4") && e.contains("history is full"), "{e}");
    // buffers shorter than the params
    let mut st = start();
    st.state.truncate(12);
    assert!(advance(&be, &mut st, &[0; 5], P).is_err());
    // the slots' state without the step counter
    let mut st = start();
    st.state.truncate(20);
    let e = advance(&be, &mut st, &[0; 5], P).unwrap_err().to_string();
    assert!(e.contains("state holds 20 values, needs 21"), "{e}");
    let mut st = start();
    assert!(advance(&be, &mut st, &[0; 3], P).is_err());
}

//! decode_advance: the slot state, histories and next-step inputs after each of several steps,
//! exactly (integer bookkeeping), for a few slots, many slots (more than one block) and rows in
//! shuffled slot order with finished slots among them.

use crate::{parity, Outputs};
use rlhf::backend::ops::Backend;

pub const CHECKS: &[(&str, fn())] = &[("decode_advance", decode_advance_parity)];

fn run<B: Backend>(be: &B, case: (usize, usize, usize, u64)) -> Outputs {
    crate::common::decode_advance_steps(be, case)
}

#[test]
fn decode_advance_parity() {
    parity!(&[(3, 3, 4, 1), (40, 29, 5, 2), (300, 257, 6, 3)], (0.0, 0.0), run);
}

//! decode_advance against the CPU backend: the slot state, histories and next-step inputs after
//! each of several steps, exactly (integer bookkeeping), for a few slots, many slots (more than
//! one workgroup) and rows in shuffled slot order with finished slots among them.

use crate::{cpu, gpu};

pub const CHECKS: &[(&str, fn())] = &[("decode_advance", decode_advance_parity)];

#[test]
fn decode_advance_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for case in [(3, 3, 4, 1), (40, 29, 5, 2), (300, 257, 6, 3)] {
        let want = crate::common::decode_advance_steps(&c, case);
        let got = crate::common::decode_advance_steps(g, case);
        assert_eq!(want.len(), got.len());
        for ((name, w), (_, x)) in want.iter().zip(&got) {
            crate::assert_close(&format!("{case:?} {name}"), x, w, 0.0, 0.0);
        }
    }
}

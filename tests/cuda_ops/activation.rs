//! GELU and SwiGLU forward and backward: within 2e-6 absolute + 2e-5 relative (`__expf` against
//! the CPU's polynomial exp); in bf16 storage within `bf16_tol` of that (one more bf16 ulp).

use crate::{bf16_tol, calloc, cin, cout, parity, parity_bf16, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] =
    &[("gelu_fwd", activation_parity), ("gelu_bwd", activation_parity), ("swiglu_fwd", activation_parity), ("swiglu_bwd", activation_parity),
      ("gelu_fwd_bf16", activation_bf16_parity), ("gelu_bwd_bf16", activation_bf16_parity), ("swiglu_fwd_bf16", activation_bf16_parity),
      ("swiglu_bwd_bf16", activation_bf16_parity)];

fn run<B: Backend>(be: &B, n: usize) -> Outputs {
    let mut rng = Rng::new(7 + n as u64);
    let p = ElementwiseParams::new(n).unwrap();
    let x = cin(be, &crate::common::randv(&mut rng, n, 3.0));
    let u = cin(be, &crate::common::randv(&mut rng, n, 1.0));
    let dy = cin(be, &crate::common::randv(&mut rng, n, 1.0));
    let (mut o1, mut o2) = (calloc(be, n), calloc(be, n));
    be.gelu_fwd(&mut o1, &x, p).unwrap();
    be.gelu_bwd(&mut o2, &dy, &x, p).unwrap();
    let (g_f, g_b) = (cout(be, &mut o1), cout(be, &mut o2));
    be.swiglu_fwd(&mut o1, &x, &u, p).unwrap();
    let s_f = cout(be, &mut o1);
    be.swiglu_bwd(&mut o1, &mut o2, &dy, &x, &u, p).unwrap();
    vec![("gelu_fwd", g_f), ("gelu_bwd", g_b), ("swiglu_fwd", s_f), ("swiglu_bwd dgate", cout(be, &mut o1)), ("swiglu_bwd dup", cout(be, &mut o2))]
}

#[test]
fn activation_parity() {
    parity!(&[1usize, 5, 4096, 100_003], (2e-6, 2e-5), run);
}

#[test]
fn activation_bf16_parity() {
    parity_bf16!(&[1usize, 5, 9, 4096, 100_003], bf16_tol((2e-6, 2e-5)), run);
}

//! GELU and SwiGLU forward and backward: within 2e-6 absolute + 2e-5 relative (`__expf` against
//! the CPU's polynomial exp).

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, &str)] =
    &[("gelu_fwd", "activation_parity"), ("gelu_bwd", "activation_parity"), ("swiglu_fwd", "activation_parity"), ("swiglu_bwd", "activation_parity")];

fn run<B: Backend>(be: &B, n: usize) -> Outputs {
    let mut rng = Rng::new(7 + n as u64);
    let p = ElementwiseParams::new(n);
    let x = be.upload(&crate::common::randv(&mut rng, n, 3.0)).unwrap();
    let u = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let dy = be.upload(&crate::common::randv(&mut rng, n, 1.0)).unwrap();
    let (mut o1, mut o2) = (be.alloc(n).unwrap(), be.alloc(n).unwrap());
    be.gelu_fwd(&mut o1, &x, p).unwrap();
    be.gelu_bwd(&mut o2, &dy, &x, p).unwrap();
    let (g_f, g_b) = (dl(be, &o1), dl(be, &o2));
    be.swiglu_fwd(&mut o1, &x, &u, p).unwrap();
    let s_f = dl(be, &o1);
    be.swiglu_bwd(&mut o1, &mut o2, &dy, &x, &u, p).unwrap();
    vec![("gelu_fwd", g_f), ("gelu_bwd", g_b), ("swiglu_fwd", s_f), ("swiglu_bwd dgate", dl(be, &o1)), ("swiglu_bwd dup", dl(be, &o2))]
}

#[test]
fn activation_parity() {
    parity!(&[1usize, 5, 4096, 100_003], (2e-6, 2e-5), run);
}

//! gelu_fwd/bwd and swiglu_fwd/bwd against the CPU backend, on normal inputs plus extremes
//! (|x| up to 1e4, where a naive tanh or exp overflows).
//!
//! Tolerance: 1e-6 absolute + 1e-5 relative (the CPU's exp is a polynomial, the GPU's the
//! driver's; both within a few ulp).

use crate::{assert_close, both, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] =
    &[("gelu_fwd", activation_parity), ("gelu_bwd", activation_parity), ("swiglu_fwd", activation_parity), ("swiglu_bwd", activation_parity)];

fn inputs(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    let extremes = [0.0, -0.0, 1e-20, -1e-20, 5.0, -5.0, 9.0, -9.0, 20.0, -20.0, 88.0, -88.0, 100.0, -100.0, 1e4, -1e4];
    let mut v = crate::common::randv(rng, n, scale);
    for (i, &e) in extremes.iter().enumerate() {
        if i < n {
            v[i] = e;
        }
    }
    v
}

#[test]
fn activation_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(41);
    for &n in &[1usize, 7, 1000, 70_001] {
        let what = |s: &str| format!("{s} n={n}");
        let p = ElementwiseParams::new(n).unwrap();
        let (cx, gx) = both(g, &inputs(&mut rng, n, 3.0));
        let (cu, gu) = both(g, &inputs(&mut rng, n, 2.0));
        let (cdy, gdy) = both(g, &crate::common::randv(&mut rng, n, 1.0));
        let (mut co, mut go) = both(g, &vec![7.0; n]);
        let (mut co2, mut go2) = both(g, &vec![7.0; n]);

        c.gelu_fwd(&mut co, &cx, p).unwrap();
        g.gelu_fwd(&mut go, &gx, p).unwrap();
        assert_close(&what("gelu_fwd"), &g.download(&go).unwrap(), &co, 1e-6, 1e-5);
        c.gelu_bwd(&mut co, &cdy, &cx, p).unwrap();
        g.gelu_bwd(&mut go, &gdy, &gx, p).unwrap();
        assert_close(&what("gelu_bwd"), &g.download(&go).unwrap(), &co, 1e-6, 1e-5);
        c.swiglu_fwd(&mut co, &cx, &cu, p).unwrap();
        g.swiglu_fwd(&mut go, &gx, &gu, p).unwrap();
        assert_close(&what("swiglu_fwd"), &g.download(&go).unwrap(), &co, 1e-6, 1e-5);
        c.swiglu_bwd(&mut co, &mut co2, &cdy, &cx, &cu, p).unwrap();
        g.swiglu_bwd(&mut go, &mut go2, &gdy, &gx, &gu, p).unwrap();
        assert_close(&what("swiglu_bwd dgate"), &g.download(&go).unwrap(), &co, 1e-6, 1e-5);
        assert_close(&what("swiglu_bwd dup"), &g.download(&go2).unwrap(), &co2, 1e-6, 1e-5);
    }
}

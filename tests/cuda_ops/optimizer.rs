//! sum_squares (accumulating over two tensors) and adamw with clipping active, inactive and off:
//! within 1e-6 absolute + 1e-5 relative; a NaN or infinite squared norm leaves param, m and v as
//! they were (asserted bit for bit on each backend). bf16 gradients (`x` of sum_squares and `grad`
//! of adamw compute-typed, everything else f32): every output is f32, computed in f32 (f64 sums)
//! from the same bf16 values on both backends, so the f32 tolerance holds unchanged.
//! The multi-tensor forms (`sum_squares_many`, `adamw_many`: one CUDA launch over every tensor,
//! the CPU reference going tensor by tensor) over tensors of 0 to 300001 elements (one spanning
//! two chunks plus a tail), half with a compute-typed copy of the updated weights (`out`) and
//! decay, half without: the same f32 tolerance; in bf16 storage one bf16 ulp more (an `out` value
//! near a rounding boundary may round the other way).

use crate::{calloc, cin, cout, dl, parity, parity_bf16, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[
    ("sum_squares", optimizer_parity),
    ("adamw", optimizer_parity),
    ("sum_squares_bf16", optimizer_bf16_parity),
    ("adamw_bf16", optimizer_bf16_parity),
    ("sum_squares_many", optimizer_many_parity),
    ("adamw_many", optimizer_many_parity),
    ("sum_squares_many_bf16", optimizer_many_bf16_parity),
    ("adamw_many_bf16", optimizer_many_bf16_parity),
];

/// Cases `(n, max_grad_norm, non-finite norm)`: clipping active (0.5, 1.0 under norms of ~10 to
/// ~140), inactive (1000), off (0), and skipped on NaN (even n) or +inf (odd n).
const CASES: &[(usize, f32, bool)] =
    &[(1, 1.0, false), (1001, 0.5, false), (300_001, 1000.0, false), (2_000_003, 1.0, false), (4099, 0.0, false), (4098, 1.0, true), (4099, 0.0, true)];

fn run<B: Backend>(be: &B, (n, max_grad_norm, bad_norm): (usize, f32, bool)) -> Outputs {
    let mut rng = Rng::new(73);
    let p = ElementwiseParams::new(n).unwrap();
    let mut g = cin(be, &crate::common::randv(&mut rng, n, 0.1));
    let g2 = cin(be, &crate::common::randv(&mut rng, 777, 0.1));
    let mut acc = be.upload(&[0.25]).unwrap();
    be.sum_squares(&mut acc, &g, p).unwrap();
    be.sum_squares(&mut acc, &g2, ElementwiseParams::new(777).unwrap()).unwrap();
    let norm = dl(be, &acc);
    if bad_norm {
        acc = be.upload(&[if n % 2 == 0 { f32::NAN } else { f32::INFINITY }]).unwrap();
    }
    let w0 = crate::common::randv(&mut rng, n, 1.0);
    let m0 = crate::common::randv(&mut rng, n, 0.01);
    let v0: Vec<f32> = crate::common::randv(&mut rng, n, 0.01).iter().map(|x| x.abs()).collect();
    let (mut w, mut m, mut v) = (be.upload(&w0).unwrap(), be.upload(&m0).unwrap(), be.upload(&v0).unwrap());
    let ap = crate::common::adamw_params(n, 3, max_grad_norm);
    be.adamw(&mut w, &mut m, &mut v, &g, &acc, ap).unwrap();
    if bad_norm {
        // exactly, on either backend
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (name, before, after) in [("param", &w0, &w), ("m", &m0, &m), ("v", &v0, &v)] {
            assert_eq!(bits(&dl(be, after)), bits(before), "n={n}: {name} changed although the squared norm is not finite");
        }
    }
    vec![("norm_sq", norm), ("grad (unchanged)", cout(be, &mut g)), ("param", dl(be, &w)), ("m", dl(be, &m)), ("v", dl(be, &v))]
}

#[test]
fn optimizer_parity() {
    parity!(CASES, (1e-6, 1e-5), run);
}

#[test]
fn optimizer_bf16_parity() {
    parity_bf16!(CASES, (1e-6, 1e-5), run);
}

/// Cases `(max_grad_norm, non-finite norm)` of the multi-tensor forms.
const MANY_CASES: &[(f32, bool)] = &[(1.0, false), (1000.0, false), (0.0, false), (1.0, true)];

fn run_many<B: Backend>(be: &B, (max_grad_norm, bad_norm): (f32, bool)) -> Outputs {
    let sizes = [1usize, 7, 4096, 65536 + 65536 + 9, 0, 300_001];
    let mut rng = Rng::new(79);
    let grads: Vec<B::Buf> = sizes.iter().map(|&n| cin(be, &crate::common::randv(&mut rng, n, 0.1))).collect();
    let mut acc = be.upload(&[0.25]).unwrap();
    be.sum_squares_many(&mut acc, &grads).unwrap();
    let norm = dl(be, &acc);
    if bad_norm {
        acc = be.upload(&[f32::NAN]).unwrap();
    }
    let mut state: Vec<[B::Buf; 3]> = sizes
        .iter()
        .map(|&n| {
            let w = crate::common::randv(&mut rng, n, 1.0);
            let m = crate::common::randv(&mut rng, n, 0.01);
            let v: Vec<f32> = crate::common::randv(&mut rng, n, 0.01).iter().map(|x| x.abs()).collect();
            [be.upload(&w).unwrap(), be.upload(&m).unwrap(), be.upload(&v).unwrap()]
        })
        .collect();
    let before: Vec<Vec<f32>> = state.iter().map(|[w, _, _]| dl(be, w)).collect();
    let mut outs: Vec<B::Buf> = sizes.iter().map(|&n| calloc(be, n)).collect();
    let mut slots: Vec<AdamWSlot<'_, B::Buf>> = state
        .iter_mut()
        .zip(outs.iter_mut())
        .zip(&grads)
        .enumerate()
        .map(|(i, (([w, m, v], out), grad))| AdamWSlot { param: w, m, v, grad, out: (i % 2 == 0).then_some(out), weight_decay: if i % 2 == 0 { 0.1 } else { 0.0 } })
        .collect();
    be.adamw_many(&mut slots, &acc, crate::common::adamw_params(0, 3, max_grad_norm)).unwrap();
    drop(slots);
    let mut outputs = vec![("norm_sq", norm)];
    for (i, ([w, m, v], out)) in state.iter().zip(outs.iter_mut()).enumerate() {
        let w_now = dl(be, w);
        if bad_norm {
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&w_now), bits(&before[i]), "tensor {i}: param changed although the squared norm is not finite");
        }
        outputs.extend([("param", w_now), ("m", dl(be, m)), ("v", dl(be, v)), ("out", cout(be, out))]);
    }
    outputs
}

#[test]
fn optimizer_many_parity() {
    parity!(MANY_CASES, (1e-6, 1e-5), run_many);
}

#[test]
fn optimizer_many_bf16_parity() {
    parity_bf16!(MANY_CASES, crate::bf16_tol((1e-6, 1e-5)), run_many);
}

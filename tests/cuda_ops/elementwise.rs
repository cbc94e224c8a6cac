//! fill, copy, add, add_inplace, scale_inplace: exact (one f32 operation per element). Sizes
//! cover the 16-byte body (4 f32, 8 bf16) and the scalar tail and several blocks. In bf16 storage
//! too: both backends compute the same f32 operation on the same bf16 inputs and round the same
//! f32 value to nearest even, so the results agree bit for bit; `copy` also runs as a cast
//! (f32 -> compute and compute -> f32). Also: upload and download of a bf16 buffer round to nearest
//! even, the cast kernel rounds as the host does, and a mismatched buffer type is an error naming
//! the op and the buffer.

use crate::{calloc, cin, cout, dl, parity, parity_bf16, Outputs};
use rlhf::backend::ops::*;
use rlhf::backend::storage::{round_bf16, to_bf16_bits};
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[
    ("fill", elementwise_parity),
    ("copy", elementwise_parity),
    ("add", elementwise_parity),
    ("add_inplace", elementwise_parity),
    ("scale_inplace", elementwise_parity),
    ("fill_bf16", elementwise_bf16_parity),
    ("copy_bf16", elementwise_bf16_parity),
    ("add_bf16", elementwise_bf16_parity),
    ("add_inplace_bf16", elementwise_bf16_parity),
    ("scale_inplace_bf16", elementwise_bf16_parity),
    ("copy_bf16", bf16_buffers_round_to_nearest_even),
    ("add_bf16", mismatched_buffer_types_are_errors),
];

const SIZES: &[usize] = &[1, 3, 4, 9, 1027, 70_001, 1_000_003];

fn run<B: Backend>(be: &B, n: usize) -> Outputs {
    let mut rng = Rng::new(n as u64);
    let p = ElementwiseParams::new(n).unwrap();
    let a = cin(be, &crate::common::randv(&mut rng, n, 1.0));
    let b = cin(be, &crate::common::randv(&mut rng, n, 1.0));
    // one extra element beyond n: must stay untouched
    let mut out = cin(be, &vec![9.0; n + 1]);
    be.fill(&mut out, -2.5, p).unwrap();
    let filled = cout(be, &mut out);
    be.copy(&mut out, &a, p).unwrap();
    let copied = cout(be, &mut out);
    be.add(&mut out, &a, &b, p).unwrap();
    let added = cout(be, &mut out);
    be.add_inplace(&mut out, &b, p).unwrap();
    let add_inplace = cout(be, &mut out);
    be.scale_inplace(&mut out, 0.75, p).unwrap();
    let scaled = cout(be, &mut out);
    // casts: f32 -> compute (rounds in bf16 storage), compute -> f32 (exact)
    let f = be.upload(&crate::common::randv(&mut rng, n, 3.0)).unwrap();
    be.copy(&mut out, &f, p).unwrap();
    let to_compute = cout(be, &mut out);
    let mut back = be.upload(&vec![7.0; n + 1]).unwrap();
    be.copy(&mut back, &a, p).unwrap();
    vec![
        ("fill", filled),
        ("copy", copied),
        ("add", added),
        ("add_inplace", add_inplace),
        ("scale", scaled),
        ("copy f32 -> compute", to_compute),
        ("copy compute -> f32", dl(be, &back)),
    ]
}

#[test]
fn elementwise_parity() {
    parity!(SIZES, (0.0, 0.0), run);
}

#[test]
fn elementwise_bf16_parity() {
    parity_bf16!(SIZES, (0.0, 0.0), run);
}

/// Values at and around bf16 rounding ties, NaN, infinities, subnormals and overflow.
fn tricky(rng: &mut Rng, n: usize) -> Vec<f32> {
    let u = 2f32.powi(-8);
    let mut v = vec![1.0 + u, 1.0 + 3.0 * u, 1.0 + u + 2f32.powi(-20), -(1.0 + u), f32::NAN, f32::INFINITY, -f32::INFINITY, 1e-40, -3e-39, f32::MAX, 0.0, -0.0];
    v.extend(crate::common::randv(rng, n, 100.0));
    v
}

/// `write` into a bf16 buffer and the f32 -> bf16 cast kernel both round to nearest even (ties to
/// the even mantissa, NaN kept), bit for bit as `storage::to_bf16_bits`; `download` is exact.
#[test]
fn bf16_buffers_round_to_nearest_even() {
    let Some(g) = crate::gpu_bf16() else { return };
    let mut rng = Rng::new(3);
    let x = tricky(&mut rng, 5000);
    let n = x.len();
    let mut buf = calloc(g, n);
    assert_eq!(g.dtype(&buf), Dtype::Bf16);
    assert_eq!(g.len(&buf), n);
    g.write(&mut buf, &x).unwrap();
    let down = dl(g, &buf);
    assert_eq!(down[0], 1.0, "1 + 2^-8 is a tie: rounds to the even 1");
    assert_eq!(down[1], 1.0 + 2f32.powi(-6), "1 + 3 2^-8 is a tie: rounds to the even 1 + 2^-6");
    assert_eq!(down[2], 1.0 + 2f32.powi(-7), "above the tie: rounds up");
    assert!(down[4].is_nan() && down[5] == f32::INFINITY && down[9] == f32::INFINITY);
    let bits = |v: &[f32]| v.iter().map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() }).collect::<Vec<_>>();
    let want: Vec<f32> = x.iter().map(|&v| round_bf16(v)).collect();
    assert_eq!(bits(&down), bits(&want), "write/download of a bf16 buffer");
    // the cast kernel (copy f32 -> bf16) rounds as the host does
    let mut cast = calloc(g, n);
    g.copy(&mut cast, &g.upload(&x).unwrap(), ElementwiseParams::new(n).unwrap()).unwrap();
    let got = dl(g, &cast);
    assert_eq!(bits(&got), bits(&want), "copy_f32_to_bf16");
    let nan_bits: Vec<u16> = to_bf16_bits(&got[4..5]);
    assert_eq!(nan_bits[0] & 0x7f80, 0x7f80, "NaN keeps an all-ones exponent");
}

/// A buffer of the wrong type is an error naming the op and the buffer, before any launch.
#[test]
fn mismatched_buffer_types_are_errors() {
    let Some(g) = crate::gpu_bf16() else { return };
    let p = ElementwiseParams::new(8).unwrap();
    let (mut out, a, f) = (calloc(g, 8), calloc(g, 8), g.alloc(8).unwrap());
    let e = g.add(&mut out, &a, &f, p).unwrap_err().to_string();
    assert!(e.contains("add") && e.contains("`b` is f32") && e.contains("`out` is bf16"), "{e}");
    let np = NormParams { n: 2, c: 4, eps: 1e-5, _pad: 0 };
    let (mut y, mut mean, mut rstd_bf16) = (calloc(g, 8), g.alloc(2).unwrap(), calloc(g, 2));
    let (w, b) = (calloc(g, 4), calloc(g, 4));
    let e = g.layernorm_fwd(&mut y, &mut mean, &mut rstd_bf16, &a, &w, &b, np).unwrap_err().to_string();
    assert!(e.contains("layernorm_fwd") && e.contains("`rstd` must be an f32 buffer"), "{e}");
    let mut m = calloc(g, 4);
    let e = g.matmul(&mut m, &a, &f, MatmulParams::new(2, 2, 2, false, false)).unwrap_err().to_string();
    assert!(e.contains("matmul") && e.contains("`b` is f32"), "{e}");
    let (mut kl, logp) = (g.alloc(8).unwrap(), calloc(g, 8));
    let e = g.kl_penalty_fwd(&mut kl, &logp, &f, &f, KlParams { n: 8, estimator: 1 }).unwrap_err().to_string();
    assert!(e.contains("kl_penalty_fwd") && e.contains("`logp` must be an f32 buffer"), "{e}");
    // matmul may write an f32 `out` from bf16 operands, not a bf16 one from f32 operands
    let mut out_f32 = g.alloc(4).unwrap();
    g.matmul(&mut out_f32, &a, &a, MatmulParams::new(2, 2, 2, false, false)).unwrap();
    let e = g.matmul(&mut m, &f, &f, MatmulParams::new(2, 2, 2, false, false)).unwrap_err().to_string();
    assert!(e.contains("`out` is bf16"), "{e}");
    // the device takes bf16 (this suite runs it on sm_80 and newer) and `auto` picks it there
    assert_eq!(g.preferred_compute_dtype(), Dtype::Bf16);
    assert!(g.device_description().contains("bf16 storage"), "{}", g.device_description());
}

//! rope_fwd, rope_bwd against the CPU backend, in place on fused-projection rows whose last heads
//! (the values) are not rotated.
//!
//! Tolerance: 2e-6 absolute + 1e-5 relative. The frequencies and hence the angles have the CPU's
//! bits (they come from the host); sin and cos are computed on the GPU to about 1 ulp, also at
//! positions in the tens of thousands.

use crate::{assert_close, both, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[("rope_fwd", rope_parity), ("rope_bwd", rope_parity)];

#[test]
fn rope_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(41);
    // (tokens, nh, nkv, hd, theta): hd 128 takes two dispatches (64 frequencies > 56 per uniform)
    for &(n, nh, nkv, hd, theta) in &[(37, 4, 2, 16, 10_000.0f32), (300, 2, 1, 64, 1_000_000.0), (5, 4, 2, 128, 10_000.0), (9, 3, 3, 8, 500.0)] {
        let row = (nh + 2 * nkv) * hd;
        let p = RopeParams { n_tokens: n as u32, row: row as u32, n_rot_heads: (nh + nkv) as u32, head_dim: hd as u32, theta, _pad: 0 };
        // small positions, then positions up to 40000 (where the angle's f32 rounding matters)
        let positions: Vec<i32> = (0..n).map(|i| if i < n / 2 { i as i32 } else { rng.below(40_000) as i32 }).collect();
        let gp = g.upload_ids(&positions).unwrap();
        let x = crate::common::randv(&mut rng, n * row + 3, 1.0);
        let (mut cx, mut gx) = both(g, &x);
        let what = format!("n{n} nh{nh} nkv{nkv} hd{hd}");
        c.rope_fwd(&mut cx, &positions, p).unwrap();
        g.rope_fwd(&mut gx, &gp, p).unwrap();
        let got = g.download(&gx).unwrap();
        assert_close(&format!("rope_fwd {what}"), &got, &cx, 2e-6, 1e-5);
        // the value heads and the tail are untouched
        for r in 0..n {
            assert_eq!(&got[r * row + (nh + nkv) * hd..(r + 1) * row], &x[r * row + (nh + nkv) * hd..(r + 1) * row], "{what}: value heads rotated");
        }
        c.rope_bwd(&mut cx, &positions, p).unwrap();
        g.rope_bwd(&mut gx, &gp, p).unwrap();
        let got = g.download(&gx).unwrap();
        assert_close(&format!("rope_bwd {what}"), &got, &cx, 2e-6, 1e-5);
        // the backward is the inverse rotation
        assert_close(&format!("rope_bwd(rope_fwd(x)) {what}"), &got, &x, 1e-5, 1e-5);
    }
    // the angle itself (head_dim 2: x = (1, 0) rotates to (cos a, sin a), a = position) at every
    // 7th position below 2^18, against the CPU's f32 sin_cos: within 4e-7 absolute
    let positions: Vec<i32> = (0..(1 << 18) / 7).map(|i| i * 7 - 1000).collect();
    let n = positions.len();
    let p = RopeParams { n_tokens: n as u32, row: 2, n_rot_heads: 1, head_dim: 2, theta: 10_000.0, _pad: 0 };
    let x: Vec<f32> = (0..n).flat_map(|_| [1.0f32, 0.0]).collect();
    let (mut cx, mut gx) = both(g, &x);
    c.rope_fwd(&mut cx, &positions, p).unwrap();
    g.rope_fwd(&mut gx, &g.upload_ids(&positions).unwrap(), p).unwrap();
    assert_close("rope angles up to 2^18", &g.download(&gx).unwrap(), &cx, 4e-7, 0.0);

    let p = RopeParams { n_tokens: 2, row: 16, n_rot_heads: 3, head_dim: 8, theta: 10_000.0, _pad: 0 };
    let (mut x, pos) = (g.upload(&[0.0; 32]).unwrap(), g.upload_ids(&[0, 1]).unwrap());
    assert!(g.rope_fwd(&mut x, &pos, p).is_err(), "rotated heads wider than the row must be refused");
}

//! rope_fwd and rope_bwd: within 2e-5 absolute + 2e-5 relative (sincosf against Rust's sin_cos at
//! positions up to 5000), and rope_bwd undoes rope_fwd. In bf16 storage: rope_fwd and rope_bwd on
//! independent inputs (a rotation of a pair one bf16 ulp apart is not within an ulp of each
//! element) within `bf16_tol` of the f32 tolerance.

use crate::{bf16_tol, cin, cout, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] =
    &[("rope_fwd", rope_parity), ("rope_bwd", rope_parity), ("rope_fwd_bf16", rope_bf16_parity), ("rope_bwd_bf16", rope_bf16_parity)];

const CASES: &[(usize, usize, usize, usize)] = &[(1, 1, 1, 2), (9, 6, 4, 64), (130, 4, 4, 128)];

fn run<B: Backend>(be: &B, (n, nh, nrot, hd): (usize, usize, usize, usize)) -> Outputs {
    let mut rng = Rng::new(17);
    let row = nh * hd + 7;
    let pos: Vec<i32> = (0..n).map(|_| rng.below(5000) as i32).collect();
    let pos = be.upload_ids(&pos).unwrap();
    let mut x = cin(be, &crate::common::randv(&mut rng, n * row, 1.0));
    let mut y = cin(be, &crate::common::randv(&mut rng, n * row, 1.0));
    let p = RopeParams { n_tokens: n as u32, row: row as u32, n_rot_heads: nrot as u32, head_dim: hd as u32, theta: 10000.0, _pad: 0 };
    be.rope_fwd(&mut x, &pos, p).unwrap();
    let fwd = cout(be, &mut x);
    be.rope_bwd(&mut y, &pos, p).unwrap();
    let bwd = cout(be, &mut y);
    be.rope_bwd(&mut x, &pos, p).unwrap();
    vec![("fwd", fwd), ("bwd", bwd), ("bwd(fwd)", cout(be, &mut x))]
}

#[test]
fn rope_parity() {
    parity!(CASES, (2e-5, 2e-5), run);
}

#[test]
fn rope_bf16_parity() {
    crate::compare_bf16(CASES, bf16_tol((2e-5, 2e-5)), |be, c| run(be, c)[..2].to_vec(), |be, c| run(be, c)[..2].to_vec());
}

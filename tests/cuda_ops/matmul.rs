//! matmul (every transpose, batched with broadcast strides, accumulate, alpha), bias_add and
//! bias_bwd: within 1e-4 absolute + 1e-4 relative (cuBLAS's summation order over k).

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, &str)] = &[("matmul", "matmul_parity"), ("bias_add", "bias_parity"), ("bias_bwd", "bias_parity")];

fn run<B: Backend>(be: &B, (m, n, k, batch, ta, tb, acc): (usize, usize, usize, usize, bool, bool, bool)) -> Outputs {
    let mut rng = Rng::new((m * 31 + n * 7 + k) as u64);
    // a broadcast over the batch (stride 0) when batch > 1, b batched
    let a = be.upload(&crate::common::randv(&mut rng, m * k, 1.0)).unwrap();
    let b = be.upload(&crate::common::randv(&mut rng, batch * k * n, 1.0)).unwrap();
    let mut out = be.upload(&crate::common::randv(&mut rng, batch * m * n, 1.0)).unwrap();
    let mut p = MatmulParams::new(m, n, k, ta, tb).accumulate(acc).batched(batch, 0, k * n, m * n);
    p.alpha = 0.5;
    be.matmul(&mut out, &a, &b, p).unwrap();
    vec![("out", dl(be, &out))]
}

#[test]
fn matmul_parity() {
    let cases = [
        (1, 1, 1, 1, false, false, false),
        (17, 33, 65, 1, false, false, false),
        (64, 48, 40, 3, true, false, true),
        (31, 70, 29, 2, false, true, false),
        (50, 20, 77, 1, true, true, true),
        (256, 300, 128, 2, false, true, true),
    ];
    parity!(&cases, (1e-4, 1e-4), run);
}

fn run_bias<B: Backend>(be: &B, (n, c): (usize, usize)) -> Outputs {
    let mut rng = Rng::new(3);
    let p = BiasParams { n: n as u32, c: c as u32 };
    let mut out = be.upload(&crate::common::randv(&mut rng, n * c, 1.0)).unwrap();
    let bias = be.upload(&crate::common::randv(&mut rng, c, 1.0)).unwrap();
    be.bias_add(&mut out, &bias, p).unwrap();
    let mut db = be.upload(&crate::common::randv(&mut rng, c, 1.0)).unwrap();
    be.bias_bwd(&mut db, &out, p).unwrap();
    vec![("bias_add", dl(be, &out)), ("bias_bwd", dl(be, &db))]
}

#[test]
fn bias_parity() {
    parity!(&[(1, 1), (5, 33), (300, 770)], (2e-5, 2e-5), run_bias);
}

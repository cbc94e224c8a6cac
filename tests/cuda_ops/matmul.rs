//! matmul (every transpose, batched with broadcast strides, accumulate, alpha) through cuBLAS and
//! through the SIMT kernel, bias_add and bias_bwd: within 1e-4 absolute + 1e-4 relative (another
//! summation order over k). The SIMT matmul is batch-invariant: a row's bits do not depend on
//! how many rows are multiplied with it.

use crate::{dl, parity, Outputs};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, &str)] =
    &[("matmul", "matmul_parity"), ("matmul", "simt_matmul_parity_and_batch_invariance"), ("bias_add", "bias_parity"), ("bias_bwd", "bias_parity")];

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

const CASES: &[(usize, usize, usize, usize, bool, bool, bool)] = &[
    (1, 1, 1, 1, false, false, false),
    (17, 33, 65, 1, false, false, false),
    (64, 48, 40, 3, true, false, true),
    (31, 70, 29, 2, false, true, false),
    (50, 20, 77, 1, true, true, true),
    (256, 300, 128, 2, false, true, true),
];

#[test]
fn matmul_parity() {
    parity!(CASES, (1e-4, 1e-4), run);
}

/// The SIMT backend (or `None`, having said why, when there is no CUDA device).
fn simt() -> Option<rlhf::backend::CudaBackend> {
    crate::gpu()?;
    Some(rlhf::backend::CudaBackend::with_matmul(0, true).unwrap())
}

#[test]
fn simt_matmul_parity_and_batch_invariance() {
    let Some(g) = simt() else { return };
    crate::compare(CASES, (1e-4, 1e-4), run, |_, c| run(&g, c));
    // row 5 of a 1 x k @ k x n product equals row 5 of the 77-row product, bit for bit
    let (m, n, k) = (77, 50, 300);
    let mut rng = Rng::new(9);
    let a = crate::common::randv(&mut rng, m * k, 1.0);
    let b = g.upload(&crate::common::randv(&mut rng, k * n, 1.0)).unwrap();
    let mut all = g.alloc(m * n).unwrap();
    g.matmul(&mut all, &g.upload(&a).unwrap(), &b, MatmulParams::new(m, n, k, false, false)).unwrap();
    let mut one = g.alloc(n).unwrap();
    g.matmul(&mut one, &g.upload(&a[5 * k..6 * k]).unwrap(), &b, MatmulParams::new(1, n, k, false, false)).unwrap();
    let all = dl(&g, &all);
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&dl(&g, &one)), bits(&all[5 * n..6 * n]), "SIMT matmul row depends on the batch");
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

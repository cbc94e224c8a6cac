//! Every op of the op list on the CPU backend: the forward against a naive reference written out
//! here, and every backward against central finite differences of `L = sum(out * r)` for a random
//! `r`. `OP_CHECKS` maps each op to the test function that covers it (in this file, or in the
//! modules of this binary: `rl_ops` for the fused RL ops, `ppo_math` for GAE and whitening,
//! `preference_loss` for the DPO family's loss, `decode_advance` for the rollout engine's
//! bookkeeping, `sampling` for the sampler's statistics and cuts, `adamw_step` for whole
//! optimiser steps); the compiler checks that each named test exists, and a test fails if an op
//! of `rlhf::backend::ops::OP_NAMES` has no row.

use rlhf::backend::ops::*;
use rlhf::backend::CpuBackend;
use rlhf::data::rng::Rng;

#[path = "../common/mod.rs"]
mod common;

mod adamw_step;
mod decode_advance;
mod ppo_math;
mod preference_loss;
mod rl_ops;
mod sampling;

use common::{adamw_params, dot, fd_check, randv};

/// op name -> the test covering it (forward reference and/or finite differences).
const OP_CHECKS: &[(&str, fn())] = &[
    ("fill", elementwise_ops),
    ("copy", elementwise_ops),
    ("add", elementwise_ops),
    ("add_inplace", elementwise_ops),
    ("scale_inplace", elementwise_ops),
    ("embedding_fwd", embedding_grad),
    ("embedding_bwd", embedding_grad),
    ("layernorm_fwd", layernorm_grad),
    ("layernorm_bwd", layernorm_grad),
    ("rmsnorm_fwd", rmsnorm_grad),
    ("rmsnorm_bwd", rmsnorm_grad),
    ("matmul", matmul_all_transposes),
    ("bias_add", bias_grad),
    ("bias_bwd", bias_grad),
    ("gelu_fwd", gelu_grad),
    ("gelu_bwd", gelu_grad),
    ("swiglu_fwd", swiglu_grad),
    ("swiglu_bwd", swiglu_grad),
    ("rope_fwd", rope_grad),
    ("rope_bwd", rope_grad),
    ("attention_fwd", attention_grad),
    ("attention_bwd", attention_grad),
    ("kv_cache_write", attention_cached_matches_full),
    ("scatter_rows", attention_decode_matches_training_rows),
    ("attention_decode_fwd", attention_decode_matches_training_rows),
    ("cross_entropy_fwd", cross_entropy_grad),
    ("cross_entropy_bwd", cross_entropy_grad),
    ("sample", sampling::top_k_and_top_p_keep_exactly_the_tokens_at_or_above_the_threshold),
    ("decode_advance", decode_advance::decode_advance_by_hand),
    ("logprob_gather_fwd", rl_ops::logprob_gather_matches_naive),
    ("logprob_gather_bwd", rl_ops::logprob_gather_grad),
    ("kl_penalty_fwd", rl_ops::kl_penalty_grad),
    ("kl_penalty_bwd", rl_ops::kl_penalty_grad),
    ("ppo_loss_fwd_bwd", rl_ops::ppo_loss_grad),
    ("ranking_loss", rl_ops::ranking_loss_by_hand_and_grad),
    ("gae", ppo_math::gae_hand_worked),
    ("masked_whiten", ppo_math::masked_whiten_mean_zero_std_one),
    ("group_advantages", ppo_math::group_advantages_match_the_host_estimators),
    ("normalize_rewards", ppo_math::normalize_rewards_match_running_moments),
    ("sum_squares", optimizer_ops),
    ("adamw", optimizer_ops),
    ("preference_loss_fwd_bwd", preference_loss::dlogp_matches_finite_differences_for_every_loss),
    ("matmul_bias", fused_matmuls_match_naive),
    ("matmul_bias_gelu", fused_matmuls_match_naive),
    ("matmul_gelu_bwd", fused_matmuls_match_naive),
    ("sum_squares_many", many_tensor_optimizer_ops_match_per_tensor),
    ("adamw_many", many_tensor_optimizer_ops_match_per_tensor),
];

#[test]
fn every_op_has_a_check() {
    for op in OP_NAMES {
        assert!(OP_CHECKS.iter().any(|(name, _)| name == op), "op `{op}` has no check in tests/ops/main.rs");
    }
    for (op, _) in OP_CHECKS {
        assert!(rlhf::backend::ops::op(op).is_some(), "OP_CHECKS names `{op}`, which the op list does not declare");
    }
}

#[test]
fn elementwise_ops() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(1);
    let n = 1000;
    let a = randv(&mut rng, n, 1.0);
    let b = randv(&mut rng, n, 1.0);
    let p = ElementwiseParams::new(n).unwrap();
    let mut out = be.alloc(n).unwrap();
    be.fill(&mut out, 3.5, p).unwrap();
    assert!(out.iter().all(|&v| v == 3.5));
    be.copy(&mut out, &a, p).unwrap();
    assert_eq!(out, a);
    be.add(&mut out, &a, &b, p).unwrap();
    assert!(out.iter().zip(a.iter().zip(&b)).all(|(o, (x, y))| *o == x + y));
    be.add_inplace(&mut out, &a, p).unwrap();
    assert!(out.iter().zip(a.iter().zip(&b)).all(|(o, (x, y))| *o == (x + y) + x));
    be.scale_inplace(&mut out, 0.5, p).unwrap();
    assert!(out.iter().zip(a.iter().zip(&b)).all(|(o, (x, y))| *o == ((x + y) + x) * 0.5));
    // only the first n elements are touched
    let mut big = vec![7.0; n + 5];
    be.fill(&mut big, 0.0, p).unwrap();
    assert_eq!(&big[n..], &[7.0; 5]);
}

#[test]
fn embedding_grad() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(2);
    let (n, c, vocab) = (9, 5, 4);
    let ids: Vec<i32> = (0..n).map(|_| rng.below(vocab as u64) as i32).collect();
    let table = randv(&mut rng, vocab * c, 1.0);
    let r = randv(&mut rng, n * c, 1.0);
    let p = EmbeddingParams { n: n as u32, c: c as u32, accumulate: 0, vocab: vocab as u32 };
    let fwd = |t: &[f32]| {
        let mut out = vec![0.0; n * c];
        be.embedding_fwd(&mut out, &ids, &t.to_vec(), p).unwrap();
        out
    };
    let out = fwd(&table);
    for i in 0..n {
        assert_eq!(&out[i * c..(i + 1) * c], &table[ids[i] as usize * c..(ids[i] as usize + 1) * c]);
    }
    // accumulate adds on top
    let mut acc = vec![1.0; n * c];
    be.embedding_fwd(&mut acc, &ids, &table, EmbeddingParams { accumulate: 1, ..p }).unwrap();
    assert!(acc.iter().zip(&out).all(|(a, o)| (a - (o + 1.0)).abs() < 1e-6));
    let mut dtable = vec![0.5; vocab * c];
    be.embedding_bwd(&mut dtable, &r, &ids, p).unwrap();
    let grad: Vec<f32> = dtable.iter().map(|g| g - 0.5).collect(); // accumulates onto 0.5
    fd_check("embedding dtable", &table, &grad, |t| dot(&fwd(t), &r));
    // out-of-vocabulary ids are an error, not a panic
    let bad = vec![vocab as i32; n];
    assert!(be.embedding_fwd(&mut vec![0.0; n * c], &bad, &table, p).is_err());
}

#[test]
fn layernorm_grad() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(3);
    let (n, c) = (6, 16);
    let x = randv(&mut rng, n * c, 2.0);
    let w = randv(&mut rng, c, 1.0);
    let b = randv(&mut rng, c, 1.0);
    let r = randv(&mut rng, n * c, 1.0);
    let p = NormParams { n: n as u32, c: c as u32, eps: 1e-5, _pad: 0 };
    let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        be.layernorm_fwd(&mut out, &mut mean, &mut rstd, &x.to_vec(), &w.to_vec(), &b.to_vec(), p).unwrap();
        (out, mean, rstd)
    };
    let (out, mean, rstd) = fwd(&x, &w, &b);
    for i in 0..n {
        let row = &x[i * c..(i + 1) * c];
        let mu: f32 = row.iter().sum::<f32>() / c as f32;
        let var: f32 = row.iter().map(|v| (v - mu).powi(2)).sum::<f32>() / c as f32;
        for j in 0..c {
            let want = (row[j] - mu) / (var + 1e-5).sqrt() * w[j] + b[j];
            assert!((out[i * c + j] - want).abs() < 1e-4);
        }
    }
    let (mut dx, mut dw, mut db) = (vec![9.0; n * c], vec![0.0; c], vec![0.0; c]);
    be.layernorm_bwd(&mut dx, &mut dw, &mut db, &r, &x, &mean, &rstd, &w, p).unwrap();
    fd_check("layernorm dx", &x, &dx, |x| dot(&fwd(x, &w, &b).0, &r));
    fd_check("layernorm dw", &w, &dw, |w| dot(&fwd(&x, w, &b).0, &r));
    fd_check("layernorm db", &b, &db, |b| dot(&fwd(&x, &w, b).0, &r));
}

#[test]
fn rmsnorm_grad() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(4);
    let (n, c) = (5, 12);
    let x = randv(&mut rng, n * c, 2.0);
    let w = randv(&mut rng, c, 1.0);
    let r = randv(&mut rng, n * c, 1.0);
    let p = NormParams { n: n as u32, c: c as u32, eps: 1e-6, _pad: 0 };
    let fwd = |x: &[f32], w: &[f32]| {
        let (mut out, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
        be.rmsnorm_fwd(&mut out, &mut rstd, &x.to_vec(), &w.to_vec(), p).unwrap();
        (out, rstd)
    };
    let (out, rstd) = fwd(&x, &w);
    for i in 0..n {
        let row = &x[i * c..(i + 1) * c];
        let ms: f32 = row.iter().map(|v| v * v).sum::<f32>() / c as f32;
        for j in 0..c {
            assert!((out[i * c + j] - row[j] / (ms + 1e-6).sqrt() * w[j]).abs() < 1e-4);
        }
    }
    let (mut dx, mut dw) = (vec![0.0; n * c], vec![0.0; c]);
    be.rmsnorm_bwd(&mut dx, &mut dw, &r, &x, &rstd, &w, p).unwrap();
    fd_check("rmsnorm dx", &x, &dx, |x| dot(&fwd(x, &w).0, &r));
    fd_check("rmsnorm dw", &w, &dw, |w| dot(&fwd(&x, w).0, &r));
}

fn naive_matmul(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for l in 0..k {
                let av = if ta { a[l * m + i] } else { a[i * k + l] };
                let bv = if tb { b[j * k + l] } else { b[l * n + j] };
                s += av as f64 * bv as f64;
            }
            out[i * n + j] = s as f32;
        }
    }
    out
}

/// Batch invariance of the forward matmul (`y = x W` or `x W^T`): every row of a product is the
/// same bits whatever the number of rows and the row's position (accumulating or not), for
/// narrow, wide, shallow and deep products, including `gemm`'s small-product kernels.
#[test]
fn matmul_rows_batch_invariant() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(9);
    let mmax = 140;
    for &(n, k) in &[(1, 64), (1, 700), (2, 64), (16, 16), (64, 64), (100, 40), (160, 64), (64, 600), (384, 64), (256, 768)] {
        for tb in [false, true] {
            for acc in [false, true] {
                let a = randv(&mut rng, mmax * k, 1.0);
                let w = randv(&mut rng, n * k, 1.0);
                let init = randv(&mut rng, mmax * n, 1.0);
                let mut full = init.clone();
                be.matmul(&mut full, &a, &w, MatmulParams::new(mmax, n, k, false, tb).accumulate(acc)).unwrap();
                for m in 1..mmax {
                    let off = (m * 7) % (mmax - m + 1);
                    let mut out = init[off * n..(off + m) * n].to_vec();
                    be.matmul(&mut out, &a[off * k..(off + m) * k].to_vec(), &w, MatmulParams::new(m, n, k, false, tb).accumulate(acc)).unwrap();
                    let same = out.iter().zip(&full[off * n..]).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "n{n} k{k} trans_b {tb} accumulate {acc}: {m} rows at {off} differ from {mmax} rows");
                }
            }
        }
    }
}

#[test]
fn matmul_all_transposes() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(5);
    for &(m, n, k) in &[(7, 5, 3), (33, 17, 65), (1, 9, 4), (64, 64, 64)] {
        for ta in [false, true] {
            for tb in [false, true] {
                let a = randv(&mut rng, m * k, 1.0);
                let b = randv(&mut rng, k * n, 1.0);
                let want = naive_matmul(&a, &b, m, n, k, ta, tb);
                let mut out = vec![0.0; m * n];
                be.matmul(&mut out, &a, &b, MatmulParams::new(m, n, k, ta, tb)).unwrap();
                for (o, w) in out.iter().zip(&want) {
                    assert!((o - w).abs() < 1e-4 * (1.0 + w.abs()), "m{m} n{n} k{k} ta{ta} tb{tb}: {o} vs {w}");
                }
                // accumulate adds onto what is there
                let mut acc = vec![1.0; m * n];
                be.matmul(&mut acc, &a, &b, MatmulParams::new(m, n, k, ta, tb).accumulate(true)).unwrap();
                for (o, w) in acc.iter().zip(&want) {
                    assert!((o - (w + 1.0)).abs() < 1e-4 * (1.0 + w.abs()));
                }
            }
        }
    }
    // batched, with a broadcast right operand
    let (batch, m, n, k) = (3, 4, 5, 6);
    let a = randv(&mut rng, batch * m * k, 1.0);
    let b = randv(&mut rng, k * n, 1.0);
    let mut out = vec![0.0; batch * m * n];
    be.matmul(&mut out, &a, &b, MatmulParams::new(m, n, k, false, false).batched(batch, m * k, 0, m * n)).unwrap();
    for i in 0..batch {
        let want = naive_matmul(&a[i * m * k..(i + 1) * m * k], &b, m, n, k, false, false);
        for (o, w) in out[i * m * n..(i + 1) * m * n].iter().zip(&want) {
            assert!((o - w).abs() < 1e-4);
        }
    }
    // the linear-layer backward identities: dA = dY B^T, dB = A^T dY, by finite differences
    let (m, n, k) = (5, 4, 3);
    let a = randv(&mut rng, m * k, 1.0);
    let b = randv(&mut rng, k * n, 1.0);
    let r = randv(&mut rng, m * n, 1.0);
    let mut da = vec![0.0; m * k];
    be.matmul(&mut da, &r, &b, MatmulParams::new(m, k, n, false, true)).unwrap();
    let mut db = vec![0.0; k * n];
    be.matmul(&mut db, &a, &r, MatmulParams::new(k, n, m, true, false)).unwrap();
    let f = |a: &[f32], b: &[f32]| {
        let mut o = vec![0.0; m * n];
        be.matmul(&mut o, &a.to_vec(), &b.to_vec(), MatmulParams::new(m, n, k, false, false)).unwrap();
        dot(&o, &r)
    };
    fd_check("matmul da", &a, &da, |a| f(a, &b));
    fd_check("matmul db", &b, &db, |b| f(&a, b));
    // a too-small operand is an error
    assert!(be.matmul(&mut vec![0.0; 4], &vec![0.0; 3], &vec![0.0; 4], MatmulParams::new(2, 2, 2, false, false)).is_err());
}

#[test]
fn bias_grad() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(6);
    let (n, c) = (7, 70);
    let x = randv(&mut rng, n * c, 1.0);
    let bias = randv(&mut rng, c, 1.0);
    let r = randv(&mut rng, n * c, 1.0);
    let p = BiasParams { n: n as u32, c: c as u32 };
    let fwd = |b: &[f32]| {
        let mut o = x.clone();
        be.bias_add(&mut o, &b.to_vec(), p).unwrap();
        o
    };
    let out = fwd(&bias);
    assert!((out[c + 3] - (x[c + 3] + bias[3])).abs() < 1e-6);
    let mut db = vec![0.0; c];
    be.bias_bwd(&mut db, &r, p).unwrap();
    fd_check("bias db", &bias, &db, |b| dot(&fwd(b), &r));
}

#[test]
fn gelu_grad() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(7);
    let n = 200;
    let x = randv(&mut rng, n, 2.0);
    let r = randv(&mut rng, n, 1.0);
    let p = ElementwiseParams::new(n).unwrap();
    let fwd = |x: &[f32]| {
        let mut o = vec![0.0; n];
        be.gelu_fwd(&mut o, &x.to_vec(), p).unwrap();
        o
    };
    let out = fwd(&x);
    for (o, &v) in out.iter().zip(&x) {
        let want = 0.5 * v as f64 * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v as f64 + 0.044715 * (v as f64).powi(3))).tanh());
        assert!((*o as f64 - want).abs() < 1e-5);
    }
    let mut dx = vec![0.0; n];
    be.gelu_bwd(&mut dx, &r, &x, p).unwrap();
    fd_check("gelu dx", &x, &dx, |x| dot(&fwd(x), &r));
}

#[test]
fn swiglu_grad() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(8);
    let n = 150;
    let g = randv(&mut rng, n, 2.0);
    let u = randv(&mut rng, n, 1.0);
    let r = randv(&mut rng, n, 1.0);
    let p = ElementwiseParams::new(n).unwrap();
    let fwd = |g: &[f32], u: &[f32]| {
        let mut o = vec![0.0; n];
        be.swiglu_fwd(&mut o, &g.to_vec(), &u.to_vec(), p).unwrap();
        o
    };
    let out = fwd(&g, &u);
    assert!((out[3] - g[3] / (1.0 + (-g[3]).exp()) * u[3]).abs() < 1e-6);
    let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
    be.swiglu_bwd(&mut dg, &mut du, &r, &g, &u, p).unwrap();
    fd_check("swiglu dgate", &g, &dg, |g| dot(&fwd(g, &u), &r));
    fd_check("swiglu dup", &u, &du, |u| dot(&fwd(&g, u), &r));
}

#[test]
fn rope_grad() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(9);
    let (n_tok, hd, nrot, extra) = (5, 8, 3, 2);
    let row = (nrot + extra) * hd;
    let x = randv(&mut rng, n_tok * row, 1.0);
    let pos: Vec<i32> = vec![0, 1, 2, 7, 100];
    let r = randv(&mut rng, n_tok * row, 1.0);
    let p = RopeParams { n_tokens: n_tok as u32, row: row as u32, n_rot_heads: nrot as u32, head_dim: hd as u32, theta: 10000.0, _pad: 0 };
    let fwd = |x: &[f32]| {
        let mut o = x.to_vec();
        be.rope_fwd(&mut o, &pos, p).unwrap();
        o
    };
    let out = fwd(&x);
    // position 0 is the identity, heads past n_rot_heads are untouched
    assert_eq!(&out[..row], &x[..row]);
    assert_eq!(&out[row + nrot * hd..2 * row], &x[row + nrot * hd..2 * row]);
    // token 1, head 0, pair j=1: angle = 1 * 10000^(-2/8)
    let a = 10000f32.powf(-2.0 / 8.0);
    let want = x[row + 1] * a.cos() - x[row + 1 + hd / 2] * a.sin();
    assert!((out[row + 1] - want).abs() < 1e-5);
    let mut dx = r.clone();
    be.rope_bwd(&mut dx, &pos, p).unwrap();
    fd_check("rope dx", &x, &dx, |x| dot(&fwd(x), &r));
}

/// Naive causal GQA attention over a fused `[B, T, (nh + 2 nkv) hd]` buffer.
fn naive_attention(qkv: &[f32], b: usize, t: usize, nh: usize, nkv: usize, hd: usize) -> Vec<f32> {
    let row = (nh + 2 * nkv) * hd;
    let mut out = vec![0.0; b * t * nh * hd];
    let scale = 1.0 / (hd as f64).sqrt();
    for bi in 0..b {
        for h in 0..nh {
            let kvh = h / (nh / nkv);
            for i in 0..t {
                let q = &qkv[(bi * t + i) * row + h * hd..][..hd];
                let s: Vec<f64> = (0..=i)
                    .map(|j| {
                        let k = &qkv[(bi * t + j) * row + (nh + kvh) * hd..][..hd];
                        q.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|v| (v - max).exp()).sum();
                for j in 0..=i {
                    let pj = (s[j] - max).exp() / z;
                    let v = &qkv[(bi * t + j) * row + (nh + nkv + kvh) * hd..][..hd];
                    for d in 0..hd {
                        out[(bi * t + i) * nh * hd + h * hd + d] += (pj * v[d] as f64) as f32;
                    }
                }
            }
        }
    }
    out
}

#[test]
fn attention_grad() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(10);
    // t = 150 spans several query blocks of the CPU kernel
    for &(b, t, nh, nkv, hd) in &[(2, 5, 4, 2, 4), (1, 7, 2, 2, 3), (2, 3, 3, 1, 2), (1, 150, 2, 1, 4)] {
        let row = (nh + 2 * nkv) * hd;
        let qkv = randv(&mut rng, b * t * row, 1.0);
        let r = randv(&mut rng, b * t * nh * hd, 1.0);
        let p = AttentionParams::fused(b, t, nh, nkv, hd);
        let fwd = |x: &[f32]| {
            let x = x.to_vec();
            let (mut out, mut lse) = (vec![0.0; b * t * nh * hd], vec![0.0; b * nh * t]);
            be.attention_fwd(&mut out, &mut lse, &x, &x, &x, p).unwrap();
            (out, lse)
        };
        let (out, lse) = fwd(&qkv);
        let want = naive_attention(&qkv, b, t, nh, nkv, hd);
        for (o, w) in out.iter().zip(&want) {
            assert!((o - w).abs() < 1e-5, "attention forward {o} vs {w}");
        }
        let mut dqkv = vec![5.0; b * t * row];
        be.attention_bwd(&mut dqkv, &r, &out, &lse, &qkv, p).unwrap();
        fd_check(&format!("attention dqkv b{b} t{t} nh{nh} nkv{nkv}"), &qkv, &dqkv, |x| dot(&fwd(x).0, &r));
    }
}

#[test]
fn attention_cached_matches_full() {
    // prefill 3 tokens then decode 2 one by one through the cache == full causal attention
    let be = CpuBackend::new();
    let mut rng = Rng::new(11);
    let (b, t, nh, nkv, hd, t_max) = (2, 5, 4, 2, 4, 8);
    let row = (nh + 2 * nkv) * hd;
    let kv = 2 * nkv * hd;
    let qkv = randv(&mut rng, b * t * row, 1.0);
    let full = naive_attention(&qkv, b, t, nh, nkv, hd);
    let mut cache = vec![0.0; b * t_max * kv];
    let mut pos0 = 0;
    for chunk in [3usize, 1, 1] {
        // the chunk's rows of qkv, [b, chunk, row]
        let mut part = Vec::new();
        for bi in 0..b {
            part.extend_from_slice(&qkv[(bi * t + pos0) * row..(bi * t + pos0 + chunk) * row]);
        }
        let kp = KvCacheParams { b: b as u32, t: chunk as u32, pos0: pos0 as u32, t_max: t_max as u32, nh: nh as u32, nkv: nkv as u32, hd: hd as u32, _pad: 0 };
        be.kv_cache_write(&mut cache, &part, kp).unwrap();
        let p = AttentionParams::cached(b, chunk, pos0, t_max, nh, nkv, hd);
        let (mut out, mut lse) = (vec![0.0; b * chunk * nh * hd], vec![0.0; b * nh * chunk]);
        be.attention_fwd(&mut out, &mut lse, &part, &cache, &cache, p).unwrap();
        for bi in 0..b {
            for i in 0..chunk {
                let got = &out[(bi * chunk + i) * nh * hd..][..nh * hd];
                let want = &full[(bi * t + pos0 + i) * nh * hd..][..nh * hd];
                for (g, w) in got.iter().zip(want) {
                    assert!((g - w).abs() < 1e-5);
                }
            }
        }
        pos0 += chunk;
    }
    // writing past the end of the cache is an error
    let kp = KvCacheParams { b: b as u32, t: 4, pos0: 5, t_max: t_max as u32, nh: nh as u32, nkv: nkv as u32, hd: hd as u32, _pad: 0 };
    assert!(be.kv_cache_write(&mut cache, &vec![0.0; b * 4 * row], kp).is_err());
}

#[test]
fn cross_entropy_grad() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(12);
    let (n, v) = (6, 11);
    let logits = randv(&mut rng, n * v, 3.0);
    let targets: Vec<i32> = vec![0, 10, -1, 4, 4, -1];
    let w = randv(&mut rng, n, 1.0);
    let p = CrossEntropyParams { n: n as u32, v: v as u32 };
    let fwd = |x: &[f32]| {
        let (mut loss, mut lse) = (vec![0.0; n], vec![0.0; n]);
        be.cross_entropy_fwd(&mut loss, &mut lse, &x.to_vec(), &targets, p).unwrap();
        (loss, lse)
    };
    let (loss, lse) = fwd(&logits);
    for i in 0..n {
        let row = &logits[i * v..(i + 1) * v];
        let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
        if targets[i] >= 0 {
            let want = z.ln() - row[targets[i] as usize] as f64;
            assert!((loss[i] as f64 - want).abs() < 1e-5);
        } else {
            assert_eq!(loss[i], 0.0);
        }
    }
    let mut dl = vec![3.0; n * v];
    be.cross_entropy_bwd(&mut dl, &w, &logits, &lse, &targets, p).unwrap();
    fd_check("cross_entropy dlogits", &logits, &dl, |x| dot(&fwd(x).0, &w));
    assert!(dl[2 * v..3 * v].iter().all(|&g| g == 0.0), "rows without a target get no gradient");
    let bad = vec![v as i32; n];
    assert!(be.cross_entropy_fwd(&mut vec![0.0; n], &mut vec![0.0; n], &logits, &bad, p).is_err());
}

#[test]
fn optimizer_ops() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(13);
    let n = 100;
    let g = randv(&mut rng, n, 1.0);
    let mut acc = vec![0.0];
    be.sum_squares(&mut acc, &g, ElementwiseParams::new(n).unwrap()).unwrap();
    be.sum_squares(&mut acc, &g, ElementwiseParams::new(n).unwrap()).unwrap();
    let want: f64 = 2.0 * g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
    assert!((acc[0] as f64 - want).abs() < 1e-3);
    // two AdamW steps against the formula (no clipping: a threshold far above the norm, then none)
    let mut nsq = vec![0.0];
    be.sum_squares(&mut nsq, &g, ElementwiseParams::new(n).unwrap()).unwrap();
    let mut w = randv(&mut rng, n, 1.0);
    let w0 = w.clone();
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    let (mut rm, mut rv, mut rw) = (vec![0f64; n], vec![0f64; n], w0.iter().map(|&x| x as f64).collect::<Vec<_>>());
    for (step, max_grad_norm) in [(1, 1e9f32), (2, 0.0)] {
        let p = adamw_params(n, step, max_grad_norm);
        let (lr, b1, b2, eps, wd) = (p.lr as f64, p.beta1 as f64, p.beta2 as f64, p.eps as f64, p.weight_decay as f64);
        be.adamw(&mut w, &mut m, &mut v, &g, &nsq, p).unwrap();
        for i in 0..n {
            let gi = g[i] as f64;
            rm[i] = b1 * rm[i] + (1.0 - b1) * gi;
            rv[i] = b2 * rv[i] + (1.0 - b2) * gi * gi;
            let mh = rm[i] / (1.0 - b1.powi(step));
            let vh = rv[i] / (1.0 - b2.powi(step));
            rw[i] -= lr * (mh / (vh.sqrt() + eps) + wd * rw[i]);
        }
    }
    for i in 0..n {
        assert!((w[i] as f64 - rw[i]).abs() < 1e-5, "adamw[{i}]");
    }
}

/// One AdamW step worked by hand (b1 = b2 = 1/2, bias corrections 1, eps and weight decay 0,
/// lr 0.1) from w = [1, -2], m = [0.2, 0.4], v = [0.14, 0.64]: for the gradient [0.6, 0.8],
/// m = [0.4, 0.6], v = [0.25, 0.64], w -= 0.1 m / sqrt(v) = [0.08, 0.075]. The gradient [3, 4]
/// (norm 5) clipped to norm 1 is [0.6, 0.8] (factor 1 / (5 + 1e-6)) and gives the same step.
#[test]
fn adamw_clips_by_the_device_norm_by_hand() {
    let be = CpuBackend::new();
    let run = |grad: &[f32], norm_sq: f32, max_grad_norm: f32| {
        let (mut w, mut m, mut v) = (vec![1.0f32, -2.0], vec![0.2f32, 0.4], vec![0.14f32, 0.64]);
        let g = grad.to_vec();
        let p = AdamWParams {
            n: 2,
            lr: 0.1,
            beta1: 0.5,
            beta2: 0.5,
            eps: 0.0,
            weight_decay: 0.0,
            bias_correction1: 1.0,
            bias_correction2: 1.0,
            max_grad_norm,
            ..Default::default()
        };
        be.adamw(&mut w, &mut m, &mut v, &g, &vec![norm_sq], p).unwrap();
        assert_eq!(g, grad, "adamw modified the gradient");
        (w, m, v)
    };
    let close = |what: &str, got: &[f32], want: &[f32]| {
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 2e-6, "{what}: {got:?} vs {want:?}");
        }
    };
    // clipping active: [3, 4] at norm 5 down to norm 1
    let (w, m, v) = run(&[3.0, 4.0], 25.0, 1.0);
    close("clipped w", &w, &[0.92, -2.075]);
    close("clipped m", &m, &[0.4, 0.6]);
    close("clipped v", &v, &[0.25, 0.64]);
    // clipping inactive: the norm (1) is under the threshold (2), or the threshold is off (0)
    for max_grad_norm in [2.0, 0.0] {
        let (w, m, v) = run(&[0.6, 0.8], 1.0, max_grad_norm);
        close("unclipped w", &w, &[0.92, -2.075]);
        close("unclipped m", &m, &[0.4, 0.6]);
        close("unclipped v", &v, &[0.25, 0.64]);
    }
    // [3, 4] unclipped (threshold off, or above the norm): m = [0.1 + 1.5, 0.2 + 2], v = [0.07 + 4.5, 0.32 + 8]
    for max_grad_norm in [0.0, 5.5] {
        let (_, m, v) = run(&[3.0, 4.0], 25.0, max_grad_norm);
        close("[3, 4] unclipped m", &m, &[1.6, 2.2]);
        close("[3, 4] unclipped v", &v, &[4.57, 8.32]);
    }
}

/// A squared norm that is NaN or infinite makes `adamw` write nothing, clipping on or off.
#[test]
fn adamw_skips_a_non_finite_norm_bit_for_bit() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(14);
    let n = 40_000; // more than one chunk
    let (w0, m0, g) = (randv(&mut rng, n, 1.0), randv(&mut rng, n, 0.1), randv(&mut rng, n, 1.0));
    let v0: Vec<f32> = randv(&mut rng, n, 0.1).iter().map(|x| x * x).collect();
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for norm_sq in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for max_grad_norm in [1.0, 0.0] {
            let (mut w, mut m, mut v) = (w0.clone(), m0.clone(), v0.clone());
            let p = adamw_params(n, 1, max_grad_norm);
            be.adamw(&mut w, &mut m, &mut v, &g, &vec![norm_sq], p).unwrap();
            let what = format!("norm_sq {norm_sq} max_grad_norm {max_grad_norm}");
            assert_eq!(bits(&w), bits(&w0), "{what}: param changed");
            assert_eq!(bits(&m), bits(&m0), "{what}: m changed");
            assert_eq!(bits(&v), bits(&v0), "{what}: v changed");
        }
    }
    // the same call with a finite norm does update (the test above can fail)
    let (mut w, mut m, mut v) = (w0.clone(), m0.clone(), v0.clone());
    let p = adamw_params(n, 1, 1.0);
    be.adamw(&mut w, &mut m, &mut v, &g, &vec![4.0], p).unwrap();
    assert_ne!(bits(&w), bits(&w0));
}

/// Short buffers are an error naming the op, not a panic.
#[test]
fn adamw_rejects_short_buffers() {
    let be = CpuBackend::new();
    let p = AdamWParams { n: 3, lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, bias_correction1: 0.1, bias_correction2: 0.05, ..Default::default() };
    let (mut w, mut m, mut v, g) = (vec![0.0; 3], vec![0.0; 3], vec![0.0; 2], vec![0.0; 3]);
    let e = be.adamw(&mut w, &mut m, &mut v, &g, &vec![1.0], p).unwrap_err().to_string();
    assert!(e.contains("adamw") && e.contains("shorter"), "{e}");
    let mut v = vec![0.0; 3];
    let e = be.adamw(&mut w, &mut m, &mut v, &g, &vec![], p).unwrap_err().to_string();
    assert!(e.contains("adamw") && e.contains("norm_sq"), "{e}");
}

#[test]
fn attention_decode_matches_training_rows() {
    decode_vs_training(&[(2, 5, 4, 2, 4, 8), (1, 7, 2, 1, 8, 9)]);
}

/// Long sequences (several query blocks), head sizes with and without a tail beyond the eight
/// lanes of the fixed-order dot products.
#[test]
fn attention_decode_matches_training_rows_long() {
    decode_vs_training(&[(1, 70, 2, 1, 8, 80), (3, 300, 2, 2, 4, 300), (2, 130, 4, 2, 64, 140), (2, 90, 2, 2, 12, 100)]);
}

fn decode_vs_training(cases: &[(usize, usize, usize, usize, usize, usize)]) {
    // every token's keys/values scattered into its slot's cache rows; the decode attention of the
    // token at each position equals the training attention's row there, bit for bit
    let be = CpuBackend::new();
    let mut rng = Rng::new(12);
    for &(b, t, nh, nkv, hd, t_max) in cases {
        let row = (nh + 2 * nkv) * hd;
        let kv = 2 * nkv * hd;
        let qkv = randv(&mut rng, b * t * row, 1.0);
        let p = AttentionParams::fused(b, t, nh, nkv, hd);
        let (mut out, mut lse) = (vec![0.0; b * t * nh * hd], vec![0.0; b * nh * t]);
        be.attention_fwd(&mut out, &mut lse, &qkv, &qkv, &qkv, p).unwrap();
        // slots in reverse order, so that slot != sequence index
        let slot = |bi: usize| b - 1 - bi;
        let rows: Vec<i32> = (0..b * t).map(|i| (slot(i / t) * t_max + i % t) as i32).collect();
        let mut cache = vec![f32::NAN; b * t_max * kv];
        be.scatter_rows(&mut cache, &qkv, &rows, ScatterParams::kv(b * t, nh, nkv, hd, b * t_max)).unwrap();
        for i in 0..b * t {
            let r = rows[i] as usize;
            assert_eq!(&cache[r * kv..(r + 1) * kv], &qkv[i * row + nh * hd..(i + 1) * row]);
        }
        let dp = AttentionDecodeParams {
            n: (b * t) as u32,
            t_max: t_max as u32,
            slots: b as u32,
            nh: nh as u32,
            nkv: nkv as u32,
            hd: hd as u32,
            scale: p.scale,
            q_row: row as u32,
            q_off: 0,
            _pad: 0,
        };
        let (mut dout, mut dlse) = (vec![0.0; b * t * nh * hd], vec![0.0; b * t * nh]);
        be.attention_decode_fwd(&mut dout, &mut dlse, &qkv, &cache, &rows, dp).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&dout), bits(&out), "decode rows differ from training rows (b{b} t{t})");
        for bi in 0..b {
            for h in 0..nh {
                for ti in 0..t {
                    assert_eq!(dlse[(bi * t + ti) * nh + h].to_bits(), lse[(bi * nh + h) * t + ti].to_bits());
                }
            }
        }
        // a row outside the cache is an error, not a panic
        let bad = vec![(b * t_max) as i32; b * t];
        assert!(be.attention_decode_fwd(&mut dout, &mut dlse, &qkv, &cache, &bad, dp).is_err());
        assert!(be.scatter_rows(&mut cache, &qkv, &bad, ScatterParams::kv(b * t, nh, nkv, hd, b * t_max)).is_err());
    }
}

/// Element counts beyond what a kernel counts in 32 bits are errors, not counts that wrap; token
/// ids and targets outside the vocabulary are refused before they reach a kernel.
#[test]
fn oversized_counts_and_ids_outside_the_vocabulary_are_errors() {
    assert_eq!(ElementwiseParams::new(u32::MAX as usize).unwrap().n, u32::MAX);
    let err = ElementwiseParams::new(65_536 * 151_936).unwrap_err().to_string();
    assert!(err.contains("9957277696"), "{err}");
    let be = CpuBackend::new();
    let cfg = rlhf::model::ModelConfig::preset("gpt2-tiny", 50).unwrap();
    let model = rlhf::model::Model::init(&be, cfg.clone(), 1).unwrap();
    let mut acts = rlhf::model::Activations::new(&be, &cfg, 1, 4).unwrap();
    let shape = rlhf::model::Shape { b: 1, t: 4 };
    model.decoder.set_inputs(&be, &mut acts, shape, &[1, 2, 3, 4], Some(&[2, 3, 4, -1])).unwrap();
    let err = model.decoder.set_inputs(&be, &mut acts, shape, &[1, 2, 3, 50], None).unwrap_err().to_string();
    assert!(err.contains("token id 50") && err.contains("50"), "{err}");
    let err = model.decoder.set_inputs(&be, &mut acts, shape, &[1, 2, 3, 4], Some(&[2, 3, 77, -1])).unwrap_err().to_string();
    assert!(err.contains("target token id 77"), "{err}");
}

fn gelu_ref(x: f64) -> (f64, f64) {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let t = (c * (x + 0.044715 * x * x * x)).tanh();
    (0.5 * x * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x))
}

/// `matmul_bias`, `matmul_bias_gelu` (with and without a bias) and `matmul_gelu_bwd` against the
/// naive product plus bias, GELU and GELU'.
#[test]
fn fused_matmuls_match_naive() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(21);
    let (m, n, k) = (7, 12, 9);
    let close = |what: &str, got: &[f32], want: &[f64]| {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
        }
    };
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let (a, b, bias, pre_in) = (randv(&mut rng, m * k, 1.0), randv(&mut rng, k * n, 1.0), randv(&mut rng, n, 1.0), randv(&mut rng, m * n, 2.0));
        let p = MatmulParams::new(m, n, k, ta, tb);
        let prod: Vec<f64> = naive_matmul(&a, &b, m, n, k, ta, tb).iter().map(|&x| x as f64).collect();
        let with_bias: Vec<f64> = prod.iter().enumerate().map(|(i, x)| x + bias[i % n] as f64).collect();
        let mut out = vec![0.0; m * n];
        be.matmul_bias(&mut out, &a, &b, &bias, p).unwrap();
        close("matmul_bias", &out, &with_bias);
        for (bias, want_pre) in [(Some(&bias), &with_bias), (None, &prod)] {
            let (mut act, mut pre) = (vec![0.0; m * n], vec![0.0; m * n]);
            be.matmul_bias_gelu(&mut act, &mut pre, &a, &b, bias, p).unwrap();
            close("matmul_bias_gelu pre", &pre, want_pre);
            close("matmul_bias_gelu out", &act, &want_pre.iter().map(|&x| gelu_ref(x).0).collect::<Vec<_>>());
        }
        let (mut dinp, mut dact) = (vec![0.0; m * n], vec![0.0; m * n]);
        be.matmul_gelu_bwd(&mut dinp, &mut dact, &a, &b, &pre_in, p).unwrap();
        close("matmul_gelu_bwd", &dinp, &prod.iter().zip(&pre_in).map(|(d, &x)| d * gelu_ref(x as f64).1).collect::<Vec<_>>());
    }
}

/// `sum_squares_many` and `adamw_many` give the bits of `sum_squares` per tensor and of `adamw`
/// then `copy` per slot.
#[test]
fn many_tensor_optimizer_ops_match_per_tensor() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(23);
    let sizes = [1usize, 5, 300];
    let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| randv(&mut rng, n, 0.1)).collect();
    let mut acc = vec![0.5];
    be.sum_squares_many(&mut acc, &grads).unwrap();
    let mut want = vec![0.5];
    for g in &grads {
        be.sum_squares(&mut want, g, ElementwiseParams::new(g.len()).unwrap()).unwrap();
    }
    assert_eq!(acc[0].to_bits(), want[0].to_bits(), "sum_squares_many");
    let p = adamw_params(0, 2, 1.0);
    let mut state: Vec<[Vec<f32>; 4]> = sizes.iter().map(|&n| [randv(&mut rng, n, 1.0), randv(&mut rng, n, 0.01), vec![0.01; n], vec![0.0; n]]).collect();
    let mut each = state.clone();
    let mut slots: Vec<AdamWSlot<'_, Vec<f32>>> = state
        .iter_mut()
        .zip(&grads)
        .enumerate()
        .map(|(i, ([w, m, v, out], grad))| AdamWSlot { param: w, m, v, grad, out: (i != 1).then_some(out), weight_decay: 0.1 * i as f32 })
        .collect();
    be.adamw_many(&mut slots, &acc, p).unwrap();
    drop(slots);
    for (i, ([w, m, v, out], grad)) in each.iter_mut().zip(&grads).enumerate() {
        let n = w.len();
        be.adamw(w, m, v, grad, &acc, AdamWParams { n: n as u32, weight_decay: 0.1 * i as f32, ..p }).unwrap();
        if i != 1 {
            be.copy(out, w, ElementwiseParams::new(n).unwrap()).unwrap();
        }
    }
    assert_eq!(state, each, "adamw_many");
}

#[test]
fn download_range_reads_exactly_the_range() {
    common::check_download_range(&rlhf::backend::CpuBackend::new());
}

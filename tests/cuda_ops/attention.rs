//! attention_fwd (fused and cached layouts), attention_bwd, kv_cache_write, scatter_rows,
//! attention_decode_fwd against the CPU backend. Forward within 2e-5 absolute + 2e-5 relative
//! (online softmax, another summation order); backward within 5e-5 + 2e-4; copies exact. In bf16
//! storage (lse f32, the rest bf16) within `bf16_tol` of those, the backward fed with the
//! reference forward's `out` and `lse` on both backends (identical inputs); decode attention of a
//! position still equals the training forward's row bit for bit.

use crate::{bf16_tol, calloc, cin, cout, dl, parity, parity_bf16, Outputs};
use rlhf::backend::storage::round_bf16_slice;
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[
    ("attention_fwd", attention_parity),
    ("attention_bwd", attention_parity),
    ("kv_cache_write", kv_cache_parity),
    ("scatter_rows", kv_cache_parity),
    ("attention_decode_fwd", attention_decode_parity),
    ("attention_decode_fwd", decode_matches_training_forward_bitwise),
    ("attention_fwd_bf16", attention_bf16_parity),
    ("attention_bwd_bf16", attention_bf16_parity),
    ("kv_cache_write_bf16", kv_cache_bf16_parity),
    ("scatter_rows_bf16", kv_cache_bf16_parity),
    ("attention_decode_fwd_bf16", attention_decode_bf16_parity),
    ("attention_decode_fwd_bf16", decode_matches_training_forward_bitwise),
];

/// (b, t, nh, nkv, hd): GQA groups of 1, 2 and 4, t across tile boundaries, head dims 8 .. 128.
const CASES: &[(usize, usize, usize, usize, usize)] =
    &[(1, 1, 4, 2, 8), (2, 7, 4, 2, 16), (2, 33, 4, 1, 64), (1, 130, 4, 2, 64), (1, 47, 2, 1, 128), (3, 20, 6, 3, 24)];

fn run<B: Backend>(be: &B, (b, t, nh, nkv, hd): (usize, usize, usize, usize, usize)) -> Outputs {
    let mut rng = Rng::new((b * 1000 + t * 10 + hd) as u64);
    let row = (nh + 2 * nkv) * hd;
    let qkv = be.upload(&crate::common::randv(&mut rng, b * t * row, 1.5)).unwrap();
    let p = AttentionParams::fused(b, t, nh, nkv, hd);
    let (mut out, mut lse) = (be.alloc(b * t * nh * hd).unwrap(), be.alloc(b * nh * t).unwrap());
    be.attention_fwd(&mut out, &mut lse, &qkv, &qkv, &qkv, p).unwrap();
    let dout = be.upload(&crate::common::randv(&mut rng, b * t * nh * hd, 1.0)).unwrap();
    let mut dqkv = be.upload(&vec![5.0; b * t * row]).unwrap();
    be.attention_bwd(&mut dqkv, &dout, &out, &lse, &qkv, p).unwrap();
    vec![("out", dl(be, &out)), ("lse", dl(be, &lse)), ("dqkv", dl(be, &dqkv))]
}

/// bf16: the forward on each backend; the backward from the CPU reference forward's `out` (rounded
/// to bf16) and `lse`, so that both backends differentiate the same inputs.
fn run_bf16<B: Backend>(be: &B, (b, t, nh, nkv, hd): (usize, usize, usize, usize, usize)) -> Outputs {
    let mut rng = Rng::new((b * 1000 + t * 10 + hd) as u64);
    let row = (nh + 2 * nkv) * hd;
    let mut qkv0 = crate::common::randv(&mut rng, b * t * row, 1.5);
    round_bf16_slice(&mut qkv0);
    let qkv = cin(be, &qkv0);
    let p = AttentionParams::fused(b, t, nh, nkv, hd);
    let (mut out, mut lse) = (calloc(be, b * t * nh * hd), be.alloc(b * nh * t).unwrap());
    be.attention_fwd(&mut out, &mut lse, &qkv, &qkv, &qkv, p).unwrap();
    let cpu = rlhf::backend::CpuBackend::new();
    let (mut ref_out, mut ref_lse) = (cpu.alloc(b * t * nh * hd).unwrap(), cpu.alloc(b * nh * t).unwrap());
    cpu.attention_fwd(&mut ref_out, &mut ref_lse, &qkv0, &qkv0, &qkv0, p).unwrap();
    let (out_in, lse_in) = (cin(be, &cpu.download(&ref_out).unwrap()), be.upload(&cpu.download(&ref_lse).unwrap()).unwrap());
    let dout = cin(be, &crate::common::randv(&mut rng, b * t * nh * hd, 1.0));
    let mut dqkv = cin(be, &vec![5.0; b * t * row]);
    be.attention_bwd(&mut dqkv, &dout, &out_in, &lse_in, &qkv, p).unwrap();
    vec![("out", cout(be, &mut out)), ("lse", dl(be, &lse)), ("dqkv", cout(be, &mut dqkv))]
}

/// bf16 storage with head dimension 64 or 128 runs the forward and the decode on tensor cores
/// (src/backend/cuda/attention.rs), where P is rounded to bf16 before P V as FlashAttention does:
/// an output moves by up to 2^-9 sum_j p_j |v_j| <= 2^-9 max |v| from the f32 reference. The
/// values here are normal with sigma <= 1.5, so max |v| < 9 (6 sigma).
fn on_tensor_cores(hd: usize) -> bool {
    hd == 64 || hd == 128
}

fn tensor_core_tol() -> (f32, f32) {
    let (atol, rtol) = bf16_tol((2e-5, 2e-5));
    (atol + 9.0 / 512.0, rtol)
}

/// The backward on tensor cores rounds P and dS to bf16 as the A operands of dV += P^T dO,
/// dK += dS^T Q and dQ += dS K: a gradient moves by up to 2^-9 of the sum of its terms' sizes
/// (here |dqkv| <= 12; measured: at most 0.037, median 0.001). A wrong mask, tile or head is off
/// by whole terms, O(1).
fn tensor_core_grad_tol() -> (f32, f32) {
    let (atol, rtol) = bf16_tol((5e-5, 2e-4));
    (atol + 0.05, rtol)
}

/// `cases` split by [`on_tensor_cores`] of their head dimension (`hd` picks it out of a case).
fn split<C: Copy>(cases: &[C], hd: impl Fn(&C) -> usize) -> (Vec<C>, Vec<C>) {
    cases.iter().partition(|c| !on_tensor_cores(hd(c)))
}

#[test]
fn attention_bf16_parity() {
    let (simt, tc) = split(CASES, |c| c.4);
    crate::compare_bf16(&simt, bf16_tol((2e-5, 2e-5)), |be, c| run_bf16(be, c)[..2].to_vec(), |be, c| run_bf16(be, c)[..2].to_vec());
    crate::compare_bf16(&tc, tensor_core_tol(), |be, c| run_bf16(be, c)[..2].to_vec(), |be, c| run_bf16(be, c)[..2].to_vec());
    crate::compare_bf16(&simt, bf16_tol((5e-5, 2e-4)), |be, c| run_bf16(be, c)[2..].to_vec(), |be, c| run_bf16(be, c)[2..].to_vec());
    crate::compare_bf16(&tc, tensor_core_grad_tol(), |be, c| run_bf16(be, c)[2..].to_vec(), |be, c| run_bf16(be, c)[2..].to_vec());
}

#[test]
fn attention_parity() {
    let Some(_) = crate::gpu() else { return };
    crate::compare(CASES, (2e-5, 2e-5), |be, c| run(be, c)[..2].to_vec(), |be, c| run(be, c)[..2].to_vec());
    crate::compare(CASES, (5e-5, 2e-4), |be, c| run(be, c)[2..].to_vec(), |be, c| run(be, c)[2..].to_vec());
}

/// The cached layout: t new queries at positions pos0 .. attending to a cache [b, t_max, 2 nkv hd]
/// written with kv_cache_write; and the same keys scattered with scatter_rows.
fn run_cache<B: Backend>(be: &B, (b, t, pos0, t_max, nh, nkv, hd): (usize, usize, usize, usize, usize, usize, usize)) -> Outputs {
    let mut rng = Rng::new(91);
    let row = (nh + 2 * nkv) * hd;
    let kv_row = 2 * nkv * hd;
    let mut cache = cin(be, &crate::common::randv(&mut rng, b * t_max * kv_row, 1.0));
    let qkv = cin(be, &crate::common::randv(&mut rng, b * t * row, 1.5));
    be.kv_cache_write(
        &mut cache,
        &qkv,
        KvCacheParams { b: b as u32, t: t as u32, pos0: pos0 as u32, t_max: t_max as u32, nh: nh as u32, nkv: nkv as u32, hd: hd as u32, _pad: 0 },
    )
    .unwrap();
    let written = cout(be, &mut cache);
    let p = AttentionParams::cached(b, t, pos0, t_max, nh, nkv, hd);
    let (mut out, mut lse) = (calloc(be, b * t * nh * hd), be.alloc(b * nh * t).unwrap());
    be.attention_fwd(&mut out, &mut lse, &qkv, &cache, &cache, p).unwrap();
    // scatter the same rows in reverse slot order into a fresh cache
    let rows: Vec<i32> = (0..b * t).map(|i| ((b - 1 - i / t) * t_max + pos0 + i % t) as i32).collect();
    let rows = be.upload_ids(&rows).unwrap();
    let mut cache2 = calloc(be, b * t_max * kv_row);
    be.scatter_rows(&mut cache2, &qkv, &rows, ScatterParams::kv(b * t, nh, nkv, hd, b * t_max)).unwrap();
    vec![("kv_cache_write", written), ("out", cout(be, &mut out)), ("lse", dl(be, &lse)), ("scatter_rows", cout(be, &mut cache2))]
}

const CACHE_CASES: &[(usize, usize, usize, usize, usize, usize, usize)] = &[(2, 3, 25, 40, 4, 2, 16), (1, 1, 140, 160, 4, 1, 64), (2, 37, 5, 50, 2, 2, 8)];

#[test]
fn kv_cache_bf16_parity() {
    let (simt, tc) = split(CACHE_CASES, |c| c.6);
    parity_bf16!(&simt, bf16_tol((2e-5, 2e-5)), run_cache);
    parity_bf16!(&tc, tensor_core_tol(), run_cache);
}

#[test]
fn kv_cache_parity() {
    parity!(CACHE_CASES, (2e-5, 2e-5), run_cache);
}

/// Decode attention of `n` queries (rows of `q_row`, heads from 0) over `slots` caches of `t_max`.
fn decode_params(n: usize, t_max: usize, slots: usize, nh: usize, nkv: usize, hd: usize, q_row: usize) -> AttentionDecodeParams {
    let u = |x: usize| x as u32;
    AttentionDecodeParams {
        n: u(n),
        t_max: u(t_max),
        slots: u(slots),
        nh: u(nh),
        nkv: u(nkv),
        hd: u(hd),
        scale: 1.0 / (hd as f32).sqrt(),
        q_row: u(q_row),
        q_off: 0,
        _pad: 0,
    }
}

fn run_decode<B: Backend>(be: &B, (slots, t_max, n, nh, nkv, hd): (usize, usize, usize, usize, usize, usize)) -> Outputs {
    let mut rng = Rng::new(23);
    let kv_row = 2 * nkv * hd;
    let q_row = (nh + 2 * nkv) * hd;
    let cache = cin(be, &crate::common::randv(&mut rng, slots * t_max * kv_row, 1.0));
    let q = cin(be, &crate::common::randv(&mut rng, n * q_row, 1.5));
    let rows: Vec<i32> = (0..n).map(|_| rng.below((slots * t_max) as u64) as i32).collect();
    let rows = be.upload_ids(&rows).unwrap();
    let p = decode_params(n, t_max, slots, nh, nkv, hd, q_row);
    let (mut out, mut lse) = (calloc(be, n * nh * hd), be.alloc(n * nh).unwrap());
    be.attention_decode_fwd(&mut out, &mut lse, &q, &cache, &rows, p).unwrap();
    vec![("out", cout(be, &mut out)), ("lse", dl(be, &lse))]
}

/// (slots, t_max, n, nh, nkv, hd); t_max past 256 splits the decode over blocks of 256 keys. GQA
/// groups of 1, 2, 3 and 7 query heads (the SIMT decode's warps take 1, 2 or 4 of them).
const DECODE_CASES: &[(usize, usize, usize, usize, usize, usize)] = &[
    (3, 20, 5, 4, 2, 16),
    (2, 100, 7, 2, 1, 64),
    (1, 8, 1, 12, 12, 128),
    (4, 70, 9, 9, 3, 24),
    (2, 600, 6, 4, 2, 64),
    (1, 300, 3, 2, 1, 128),
    (2, 300, 4, 14, 2, 24),
];

#[test]
fn attention_decode_bf16_parity() {
    let (simt, tc) = split(DECODE_CASES, |c| c.5);
    parity_bf16!(&simt, bf16_tol((2e-5, 2e-5)), run_decode);
    parity_bf16!(&tc, tensor_core_tol(), run_decode);
}

#[test]
fn attention_decode_parity() {
    parity!(DECODE_CASES, (2e-5, 2e-5), run_decode);
}

/// Rollout = training: decode attention of the token at position i (its keys and values in the
/// slot cache) gives the same bits as row i of the training forward over the whole sequence, in
/// f32 and in bf16 storage (on tensor cores for hd 64 and 128, on the SIMT kernels otherwise),
/// with GQA groups of 2 and 7, and with the keys of a long context split over blocks and merged.
#[test]
fn decode_matches_training_forward_bitwise() {
    let Some(g) = crate::gpu() else { return };
    for case in [(45, 4, 2, 64, 64), (45, 4, 2, 24, 64), (530, 4, 2, 64, 540), (290, 14, 2, 24, 300)] {
        decode_matches_training(g, case);
    }
    if let Some(g) = crate::gpu_bf16() {
        for case in [(45, 4, 2, 64, 64), (45, 4, 2, 24, 64), (530, 4, 2, 64, 540), (290, 2, 1, 128, 300), (290, 14, 2, 24, 300)] {
            decode_matches_training(g, case);
        }
    }
}

fn decode_matches_training(g: &rlhf::backend::CudaBackend, (t, nh, nkv, hd, t_max): (usize, usize, usize, usize, usize)) {
    let row = (nh + 2 * nkv) * hd;
    let mut rng = Rng::new(97);
    let qkv = cin(g, &crate::common::randv(&mut rng, t * row, 1.5));
    let (mut out, mut lse) = (calloc(g, t * nh * hd), g.alloc(nh * t).unwrap());
    g.attention_fwd(&mut out, &mut lse, &qkv, &qkv, &qkv, AttentionParams::fused(1, t, nh, nkv, hd)).unwrap();
    let mut cache = calloc(g, t_max * 2 * nkv * hd);
    g.kv_cache_write(
        &mut cache,
        &qkv,
        KvCacheParams { b: 1, t: t as u32, pos0: 0, t_max: t_max as u32, nh: nh as u32, nkv: nkv as u32, hd: hd as u32, _pad: 0 },
    )
    .unwrap();
    let rows = g.upload_ids(&(0..t as i32).collect::<Vec<_>>()).unwrap();
    let p = decode_params(t, t_max, 1, nh, nkv, hd, row);
    let (mut dout, mut dlse) = (calloc(g, t * nh * hd), g.alloc(t * nh).unwrap());
    g.attention_decode_fwd(&mut dout, &mut dlse, &qkv, &cache, &rows, p).unwrap();
    let bits = |x: Vec<f32>| x.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(bits(dl(g, &dout)), bits(dl(g, &out)), "t {t}, hd {hd}: decode and training attention outputs differ");
    // lse: training [nh, t], decode [t, nh]
    let (tl, dlv) = (dl(g, &lse), dl(g, &dlse));
    let transposed: Vec<f32> = (0..t).flat_map(|i| (0..nh).map(move |h| (h, i))).map(|(h, i)| tl[h * t + i]).collect();
    assert_eq!(bits(dlv), bits(transposed), "t {t}, hd {hd}: decode and training lse differ");
}


//! Causal scaled-dot-product attention with grouped-query heads (see `AttentionParams`).
//! Forward, per sequence b, query head h, query i at position `q_pos0 + i`:
//!   `s_j = scale * q_i . k_j` for `j <= q_pos0 + i`, `lse_i = logsumexp_j s_j`,
//!   `out_i = sum_j exp(s_j - lse_i) v_j`.
//! Saved for backward: `lse` `[B, NH, tq]` (the probabilities are recomputed, never stored).
//! Backward (training layout, tq = tk, q_pos0 = 0), with `p_ij = exp(s_ij - lse_i)`,
//! `D_i = dout_i . out_i`, `ds_ij = p_ij (dout_i . v_j - D_i)`:
//!   `dq_i = scale sum_j ds_ij k_j`, `dk_j = scale sum_i ds_ij q_i`, `dv_j = sum_i p_ij dout_i`,
//! summed over the query heads that share a key/value head.
//!
//! The CPU forward is one per-query routine, [`attend_query`], shared by `attention_fwd`
//! (training, prefill, scoring) and `attention_decode_fwd` (one query per cache row): scores are
//! fixed-order dot products over `hd` (eight lanes, then a fixed reduction tree), the softmax's
//! max, exponentials and sum run over the visible keys in key order (the sum again in eight lanes
//! and a fixed tree), and the value sum runs key by key, each output element its own chain. No
//! step depends on how many queries, keys beyond the visible ones, sequences or cache slots are
//! processed together, so a query's output and `lse` are the same bits in a batch of any
//! composition, at any position in it, with any padding, and in decode (batch invariance: rollout
//! log-probs equal training log-probs, DESIGN principle 6). Forward tasks are (sequence, head,
//! block of `QB` queries). The backward works on blocks of `QB` queries with `gemm` tiles (scores
//! recomputed, probabilities from the saved `lse`); its tasks own one key/value head of one
//! sequence, so every gradient element has one writer and a fixed summation order.

use super::SharedMut;
use super::{check, profile, CpuBackend};
use crate::backend::cpu::matmul::{gemm_view, View};
use crate::backend::cpu::simd;
use crate::backend::ops::family;
use crate::backend::ops::{AttentionDecodeParams, AttentionParams, KvCacheParams, ScatterParams};
use crate::error::Result;
use rayon::prelude::*;

/// Queries per block.
const QB: usize = 64;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn row_view(ptr: *const f32, rs: usize) -> View {
    View { ptr, rs: rs as isize, cs: 1 }
}

fn transposed_view(ptr: *const f32, rs: usize) -> View {
    View { ptr, rs: 1, cs: rs as isize }
}

pub fn attention_fwd(out: &mut [f32], lse: &mut [f32], q: &[f32], k: &[f32], v: &[f32], p: AttentionParams) {
    let (bsz, tq, tk, nh, nkv, hd) = (p.b as usize, p.tq as usize, p.tk as usize, p.nh as usize, p.nkv as usize, p.hd as usize);
    let group = nh / nkv;
    let out_row = nh * hd;
    assert!(out.len() >= bsz * tq * out_row && lse.len() >= bsz * nh * tq, "attention_fwd: output too small");
    let (q_row, kv_row) = (p.q_row as usize, p.kv_row as usize);
    let last_q = |b: usize| b * p.q_batch as usize + (tq - 1) * q_row + p.q_off as usize + nh * hd;
    let last_kv = |b: usize, off: u32| b * p.kv_batch as usize + (tk - 1) * kv_row + off as usize + nkv * hd;
    if bsz == 0 || tq == 0 {
        return;
    }
    assert!(q.len() >= last_q(bsz - 1) && k.len() >= last_kv(bsz - 1, p.k_off) && v.len() >= last_kv(bsz - 1, p.v_off), "attention_fwd: input too small");
    let n_blocks = tq.div_ceil(QB);
    let out_ptr = SharedMut(out.as_mut_ptr());
    let lse_ptr = SharedMut(lse.as_mut_ptr());
    (0..bsz * nh * n_blocks).into_par_iter().for_each_init(
        || vec![0f32; tk],
        |scores, task| {
            let blk = task % n_blocks;
            let h = (task / n_blocks) % nh;
            let b = task / (n_blocks * nh);
            let kvh = h / group;
            let i0 = blk * QB;
            let qb = QB.min(tq - i0);
            let n_keys = (p.q_pos0 as usize + i0 + qb).min(tk);
            let keys = &k[b * p.kv_batch as usize + p.k_off as usize + kvh * hd..][..(n_keys - 1) * kv_row + hd];
            let values = &v[b * p.kv_batch as usize + p.v_off as usize + kvh * hd..][..(n_keys - 1) * kv_row + hd];
            for i in i0..i0 + qb {
                let visible = (p.q_pos0 as usize + i + 1).min(tk);
                let qi = &q[b * p.q_batch as usize + i * q_row + p.q_off as usize + h * hd..][..hd];
                // SAFETY: output row (b, i), head h and its lse entry belong to this task alone.
                let (dst, l) = unsafe {
                    (std::slice::from_raw_parts_mut(out_ptr.ptr().add((b * tq + i) * out_row + h * hd), hd), &mut *lse_ptr.ptr().add((b * nh + h) * tq + i))
                };
                attend_query(qi, keys, values, kv_row, visible, p.scale, scores, dst, l);
            }
        },
    );
}

/// Lanes of the fixed-order reductions.
const LANES: usize = 8;

/// `scale * (q . k)` in a fixed order: [`LANES`] lanes over `i mod 8` (each an FMA chain in index
/// order), the lanes combined by a fixed tree, then the tail (an FMA chain in index order) added.
/// FMA is exact fused arithmetic in hardware and in software, so every build gives these bits.
#[inline(always)]
fn dot_fixed(q: &[f32], k: &[f32], scale: f32) -> f32 {
    let k = &k[..q.len()];
    let mut acc = [0f32; LANES];
    let (qc, kc) = (q.chunks_exact(LANES), k.chunks_exact(LANES));
    let tail = qc.remainder().iter().zip(kc.remainder()).fold(0.0, |s: f32, (x, y)| x.mul_add(*y, s));
    for (x, y) in qc.zip(kc) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    scale * (tree8(acc) + tail)
}

/// `sum_i x_i` in the fixed order of [`dot_fixed`] (lanes, tree, tail).
#[inline(always)]
fn sum_fixed(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let c = x.chunks_exact(LANES);
    let t = c.remainder();
    for x in c {
        for l in 0..LANES {
            acc[l] += x[l];
        }
    }
    tree8(acc) + t.iter().fold(0.0, |s, x| s + x)
}

#[inline(always)]
fn tree8(a: [f32; LANES]) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// `out[d0 .. d0 + W] = sum_j e_j v_j[d0 .. d0 + W]`, each element an FMA chain in key order
/// (`W` accumulators stay in registers).
#[inline(always)]
fn value_chunk<const W: usize>(e: &[f32], v: &[f32], kv_row: usize, d0: usize, out: &mut [f32]) {
    let mut acc = [0f32; W];
    for (j, &ej) in e.iter().enumerate() {
        let vj = &v[j * kv_row + d0..j * kv_row + d0 + W];
        for l in 0..W {
            acc[l] = ej.mul_add(vj[l], acc[l]);
        }
    }
    out[d0..d0 + W].copy_from_slice(&acc);
}

/// The attention of one query `q` (`hd` values) over the first `visible` keys and values (rows
/// of stride `kv_row`): `s_j = scale * (q . k_j)` ([`dot_fixed`]), `m = max_j s_j`,
/// `e_j = exp(s_j - m)`, `sum = sum_j e_j` ([`sum_fixed`]), `out = (sum_j e_j v_j) * (1 / sum)`
/// with each element of the value sum an FMA chain in key order, `lse = m + ln(sum)`.
/// Everything depends on this query's inputs only, which is what makes the attention
/// batch-invariant (see the header).
#[allow(clippy::too_many_arguments)]
pub fn attend_query(q: &[f32], k: &[f32], v: &[f32], kv_row: usize, visible: usize, scale: f32, scores: &mut Vec<f32>, out: &mut [f32], lse: &mut f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features `attend_avx2` was compiled for.
            return unsafe { attend_avx2(q, k, v, kv_row, visible, scale, scores, out, lse) };
        }
    }
    attend(dot_fixed, q, k, v, kv_row, visible, scale, scores, out, lse)
}

/// [`attend`] compiled with AVX2 + FMA, its dot products through [`dot_avx2`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_avx2(q: &[f32], k: &[f32], v: &[f32], kv_row: usize, visible: usize, scale: f32, scores: &mut Vec<f32>, out: &mut [f32], lse: &mut f32) {
    attend(|q, k, s| unsafe { dot_avx2(q, k, s) }, q, k, v, kv_row, visible, scale, scores, out, lse)
}

/// The body of [`attend_query`], generic over the dot product (which must compute
/// [`dot_fixed`]'s bits).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend(
    dot: impl Fn(&[f32], &[f32], f32) -> f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kv_row: usize,
    visible: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
    lse: &mut f32,
) {
    let hd = q.len();
    if scores.len() < visible {
        scores.resize(visible, 0.0);
    }
    let s = &mut scores[..visible];
    for (j, sj) in s.iter_mut().enumerate() {
        *sj = dot(q, &k[j * kv_row..j * kv_row + hd], scale);
    }
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for sj in s.iter_mut() {
        *sj = simd::exp(*sj - max);
    }
    let sum = sum_fixed(s);
    let mut d0 = 0;
    while d0 < hd {
        match hd - d0 {
            64.. => value_chunk::<64>(s, v, kv_row, d0, out),
            32.. => value_chunk::<32>(s, v, kv_row, d0, out),
            16.. => value_chunk::<16>(s, v, kv_row, d0, out),
            8.. => value_chunk::<8>(s, v, kv_row, d0, out),
            _ => value_chunk::<1>(s, v, kv_row, d0, out),
        }
        d0 += match hd - d0 {
            64.. => 64,
            32.. => 32,
            16.. => 16,
            8.. => 8,
            _ => 1,
        };
    }
    let inv = 1.0 / sum;
    out[..hd].iter_mut().for_each(|o| *o *= inv);
    *lse = max + sum.ln();
}

/// [`dot_fixed`] with AVX2 + FMA intrinsics: one 8-lane FMA chain, the same tree.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_avx2(q: &[f32], k: &[f32], scale: f32) -> f32 {
    use std::arch::x86_64::*;
    let hd = q.len();
    let k = &k[..hd];
    let full = hd / LANES * LANES;
    let mut acc = _mm256_setzero_ps();
    let mut c = 0;
    while c < full {
        // SAFETY: c + 8 <= full <= hd, the length of both slices.
        acc = unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(c)), _mm256_loadu_ps(k.as_ptr().add(c)), acc) };
        c += LANES;
    }
    let tail = q[full..].iter().zip(&k[full..]).fold(0.0, |s: f32, (x, y)| x.mul_add(*y, s));
    // [a0 + a4, a1 + a5, a2 + a6, a3 + a7], then [(a0 + a4) + (a2 + a6), (a1 + a5) + (a3 + a7)], then their sum
    let s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
    scale * (_mm_cvtss_f32(s1) + tail)
}

/// See `AttentionDecodeParams`: one query per row against its own slot's keys `0 ..= pos`,
/// through [`attend_query`], the routine `attention_fwd` runs for each of its queries.
pub fn attention_decode_fwd(out: &mut [f32], lse: &mut [f32], q: &[f32], cache: &[f32], rows: &[i32], p: AttentionDecodeParams) {
    let (n, t_max, nh, nkv, hd) = (p.n as usize, p.t_max as usize, p.nh as usize, p.nkv as usize, p.hd as usize);
    let group = nh / nkv;
    let out_row = nh * hd;
    let kv_row = 2 * nkv * hd;
    let q_row = p.q_row as usize;
    if n == 0 {
        return;
    }
    assert!(out.len() >= n * out_row && lse.len() >= n * nh, "attention_decode_fwd: output too small");
    assert!(q.len() >= (n - 1) * q_row + p.q_off as usize + out_row, "attention_decode_fwd: q too small");
    assert!(cache.len() >= p.slots as usize * t_max * kv_row, "attention_decode_fwd: cache too small");
    assert!(rows[..n].iter().all(|&r| r >= 0 && (r as usize) < p.slots as usize * t_max), "attention_decode_fwd: cache row out of range");
    out[..n * out_row].par_chunks_mut(out_row).zip(lse[..n * nh].par_chunks_mut(nh)).enumerate().for_each_init(
        || vec![0f32; t_max],
        |scores, (i, (dst, l))| {
            let r = rows[i] as usize;
            let (slot, pos) = (r / t_max, r % t_max);
            let base = slot * t_max * kv_row;
            for h in 0..nh {
                let kvh = h / group;
                let qi = &q[i * q_row + p.q_off as usize + h * hd..][..hd];
                let keys = &cache[base + kvh * hd..][..pos * kv_row + hd];
                let values = &cache[base + (nkv + kvh) * hd..][..pos * kv_row + hd];
                attend_query(qi, keys, values, kv_row, pos + 1, p.scale, scores, &mut dst[h * hd..(h + 1) * hd], &mut l[h]);
            }
        },
    );
}

/// See `ScatterParams`.
pub fn scatter_rows(out: &mut [f32], inp: &[f32], rows: &[i32], p: ScatterParams) {
    let (w, sr, so, dr) = (p.width as usize, p.src_row as usize, p.src_off as usize, p.dst_row as usize);
    for (i, &r) in rows[..p.n as usize].iter().enumerate() {
        let r = r as usize;
        out[r * dr..r * dr + w].copy_from_slice(&inp[i * sr + so..i * sr + so + w]);
    }
}

pub fn attention_bwd(dqkv: &mut [f32], dout: &[f32], out: &[f32], lse: &[f32], qkv: &[f32], p: AttentionParams) {
    let (bsz, t, nh, nkv, hd) = (p.b as usize, p.tq as usize, p.nh as usize, p.nkv as usize, p.hd as usize);
    let group = nh / nkv;
    let row = p.q_row as usize;
    let out_row = nh * hd;
    assert!(dqkv.len() >= bsz * t * row && qkv.len() >= bsz * t * row, "attention_bwd: buffers too small");
    assert!(dout.len() >= bsz * t * out_row && out.len() >= bsz * t * out_row, "attention_bwd: buffers too small");
    let d_ptr = SharedMut(dqkv.as_mut_ptr());
    let (q_off, k_off, v_off) = (p.q_off as usize, p.k_off as usize, p.v_off as usize);
    (0..bsz * nkv).into_par_iter().for_each(|task| {
        let b = task / nkv;
        let kvh = task % nkv;
        let base = b * t * row;
        let at = |tok: usize, off: usize, head: usize| base + tok * row + off + head * hd;
        let mut probs = vec![0f32; QB * t];
        let mut dprobs = vec![0f32; QB * t];
        // SAFETY: this task alone writes dk/dv of head kvh and dq of heads kvh*group.. of sequence b;
        // all views stay inside the buffers checked above.
        unsafe {
            for j in 0..t {
                std::slice::from_raw_parts_mut(d_ptr.ptr().add(at(j, k_off, kvh)), hd).fill(0.0);
                std::slice::from_raw_parts_mut(d_ptr.ptr().add(at(j, v_off, kvh)), hd).fill(0.0);
            }
        }
        let k_view = |tr: bool| {
            let ptr = qkv[at(0, k_off, kvh)..].as_ptr();
            if tr {
                transposed_view(ptr, row)
            } else {
                row_view(ptr, row)
            }
        };
        let v_ptr = qkv[at(0, v_off, kvh)..].as_ptr();
        for h in kvh * group..(kvh + 1) * group {
            for i0 in (0..t).step_by(QB) {
                let qb = QB.min(t - i0);
                let n_keys = i0 + qb;
                let q_ptr = qkv[at(i0, q_off, h)..].as_ptr();
                let do_ptr = dout[(b * t + i0) * out_row + h * hd..].as_ptr();
                unsafe {
                    // S = scale Q K^T, dP = dO V^T
                    gemm_view(qb, n_keys, hd, probs.as_mut_ptr(), n_keys as isize, false, row_view(q_ptr, row), k_view(true), p.scale);
                    gemm_view(qb, n_keys, hd, dprobs.as_mut_ptr(), n_keys as isize, false, row_view(do_ptr, out_row), transposed_view(v_ptr, row), 1.0);
                }
                for i in 0..qb {
                    let ti = i0 + i;
                    let l = lse[(b * nh + h) * t + ti];
                    let o = &out[(b * t + ti) * out_row + h * hd..][..hd];
                    let g = &dout[(b * t + ti) * out_row + h * hd..][..hd];
                    let d_i = dot(g, o);
                    let pr = &mut probs[i * n_keys..(i + 1) * n_keys];
                    let dp = &mut dprobs[i * n_keys..(i + 1) * n_keys];
                    for j in 0..=ti {
                        let pij = (pr[j] - l).exp();
                        pr[j] = pij;
                        dp[j] = pij * (dp[j] - d_i);
                    }
                    pr[ti + 1..].fill(0.0);
                    dp[ti + 1..].fill(0.0);
                }
                unsafe {
                    let dq = d_ptr.ptr().add(at(i0, q_off, h));
                    gemm_view(qb, hd, n_keys, dq, row as isize, false, row_view(dprobs.as_ptr(), n_keys), k_view(false), p.scale);
                    let dk = d_ptr.ptr().add(at(0, k_off, kvh));
                    gemm_view(n_keys, hd, qb, dk, row as isize, true, transposed_view(dprobs.as_ptr(), n_keys), row_view(q_ptr, row), p.scale);
                    let dv = d_ptr.ptr().add(at(0, v_off, kvh));
                    gemm_view(n_keys, hd, qb, dv, row as isize, true, transposed_view(probs.as_ptr(), n_keys), row_view(do_ptr, out_row), 1.0);
                }
            }
        }
    });
}

/// Copies the key and value heads of the fused projection `[B, t, (nh + 2 nkv) hd]` into the
/// cache `[B, t_max, 2 nkv hd]` at positions `pos0 .. pos0 + t`.
pub fn kv_cache_write(cache: &mut [f32], qkv: &[f32], p: KvCacheParams) {
    let (b, t, pos0, t_max) = (p.b as usize, p.t as usize, p.pos0 as usize, p.t_max as usize);
    let kv = 2 * p.nkv as usize * p.hd as usize;
    let row = p.nh as usize * p.hd as usize + kv;
    let q = p.nh as usize * p.hd as usize;
    cache[..b * t_max * kv].par_chunks_mut(t_max * kv).enumerate().for_each(|(bi, seq)| {
        for i in 0..t {
            let src = &qkv[(bi * t + i) * row + q..(bi * t + i + 1) * row];
            seq[(pos0 + i) * kv..(pos0 + i + 1) * kv].copy_from_slice(src);
        }
    });
}

impl family::Attention for CpuBackend {
    fn attention_fwd(&self, out: &mut Vec<f32>, lse: &mut Vec<f32>, q: &Vec<f32>, k: &Vec<f32>, v: &Vec<f32>, p: AttentionParams) -> Result<()> {
        let _t = profile::OpTimer::start("attention_fwd");
        check(p.nkv > 0 && p.nh % p.nkv == 0, "attention_fwd", "nh must be a multiple of nkv")?;
        attention_fwd(out, lse, q, k, v, p);
        Ok(())
    }
    fn attention_bwd(&self, dqkv: &mut Vec<f32>, dout: &Vec<f32>, out: &Vec<f32>, lse: &Vec<f32>, qkv: &Vec<f32>, p: AttentionParams) -> Result<()> {
        let _t = profile::OpTimer::start("attention_bwd");
        check(p.tq == p.tk && p.q_pos0 == 0, "attention_bwd", "backward needs the training layout (tq == tk, q_pos0 == 0)")?;
        attention_bwd(dqkv, dout, out, lse, qkv, p);
        Ok(())
    }
    fn kv_cache_write(&self, cache: &mut Vec<f32>, qkv: &Vec<f32>, p: KvCacheParams) -> Result<()> {
        let _t = profile::OpTimer::start("kv_cache_write");
        check(p.pos0 + p.t <= p.t_max, "kv_cache_write", "cache is full")?;
        kv_cache_write(cache, qkv, p);
        Ok(())
    }
    fn scatter_rows(&self, out: &mut Vec<f32>, inp: &Vec<f32>, rows: &Vec<i32>, p: ScatterParams) -> Result<()> {
        let _t = profile::OpTimer::start("scatter_rows");
        let (n, w) = (p.n as usize, p.width as usize);
        check(rows.len() >= n, "scatter_rows", "fewer rows than n")?;
        check(w <= p.dst_row as usize && out.len() >= p.dst_rows as usize * p.dst_row as usize, "scatter_rows", "out smaller than dst_rows x dst_row")?;
        check(n == 0 || inp.len() >= (n - 1) * p.src_row as usize + p.src_off as usize + w, "scatter_rows", "input smaller than n rows")?;
        let bad = rows[..n].iter().find(|&&r| r < 0 || r as u32 >= p.dst_rows);
        check(bad.is_none(), "scatter_rows", &format!("row {bad:?} outside the {} rows of out", p.dst_rows))?;
        scatter_rows(out, inp, rows, p);
        Ok(())
    }
    fn attention_decode_fwd(
        &self,
        out: &mut Vec<f32>,
        lse: &mut Vec<f32>,
        q: &Vec<f32>,
        cache: &Vec<f32>,
        rows: &Vec<i32>,
        p: AttentionDecodeParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("attention_decode_fwd");
        check(p.nkv > 0 && p.nh % p.nkv == 0, "attention_decode_fwd", "nh must be a multiple of nkv")?;
        check(p.t_max > 0 && rows.len() >= p.n as usize, "attention_decode_fwd", "t_max must be positive and rows hold n entries")?;
        let bad = rows[..p.n as usize].iter().find(|&&r| r < 0 || r as u64 >= p.slots as u64 * p.t_max as u64);
        check(bad.is_none(), "attention_decode_fwd", &format!("cache row {bad:?} outside the {} x {} cache", p.slots, p.t_max))?;
        attention_decode_fwd(out, lse, q, cache, rows, p);
        Ok(())
    }
}

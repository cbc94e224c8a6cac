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
//! The CPU version works on blocks of `QB` queries: the block's scores against the keys it can
//! see are one small matmul (strided views straight into the fused projection), softmax runs on
//! that `[QB, keys]` tile, and the output or gradients are more matmuls. Forward tasks are
//! (sequence, head, query block); backward tasks own one key/value head of one sequence, so every
//! gradient element has one writer and a fixed summation order.

use crate::backend::cpu::matmul::{gemm_view, View};
use crate::backend::ops::{AttentionParams, KvCacheParams};
use rayon::prelude::*;

/// Queries per block.
const QB: usize = 64;

/// A raw pointer that may cross threads; each task writes a disjoint set of elements.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// Going through a method makes closures capture the whole (Send + Sync) wrapper.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

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
        || vec![0f32; QB * tk],
        |scores, task| {
            let blk = task % n_blocks;
            let h = (task / n_blocks) % nh;
            let b = task / (n_blocks * nh);
            let kvh = h / group;
            let i0 = blk * QB;
            let qb = QB.min(tq - i0);
            let n_keys = (p.q_pos0 as usize + i0 + qb).min(tk);
            let q_ptr = q[b * p.q_batch as usize + i0 * q_row + p.q_off as usize + h * hd..].as_ptr();
            let k_ptr = k[b * p.kv_batch as usize + p.k_off as usize + kvh * hd..].as_ptr();
            let v_ptr = v[b * p.kv_batch as usize + p.v_off as usize + kvh * hd..].as_ptr();
            // SAFETY: views stay inside q, k, v (checked above); the output rows and lse entries of
            // (b, h, block) belong to this task alone.
            unsafe {
                gemm_view(qb, n_keys, hd, scores.as_mut_ptr(), n_keys as isize, false, row_view(q_ptr, q_row), transposed_view(k_ptr, kv_row), p.scale);
            }
            for i in 0..qb {
                let visible = (p.q_pos0 as usize + i0 + i + 1).min(tk);
                let row = &mut scores[i * n_keys..(i + 1) * n_keys];
                let max = row[..visible].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for s in row[..visible].iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let inv = 1.0 / sum;
                row[..visible].iter_mut().for_each(|s| *s *= inv);
                row[visible..].fill(0.0);
                unsafe { *lse_ptr.ptr().add((b * nh + h) * tq + i0 + i) = max + sum.ln() };
            }
            unsafe {
                let dst = out_ptr.ptr().add((b * tq + i0) * out_row + h * hd);
                gemm_view(qb, hd, n_keys, dst, out_row as isize, false, row_view(scores.as_ptr(), n_keys), row_view(v_ptr, kv_row), 1.0);
            }
        },
    );
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

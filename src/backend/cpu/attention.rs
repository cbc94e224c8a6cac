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

use crate::backend::cpu::matmul::{gemm_view, View, MIN_SMALL_ROWS};
use crate::backend::ops::{AttentionDecodeParams, AttentionParams, KvCacheParams, ScatterParams};
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
        || Scratch::new(QB, tk, hd),
        |scratch, task| {
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
                let dst = out_ptr.ptr().add((b * tq + i0) * out_row + h * hd);
                let lse_dst = lse_ptr.ptr().add((b * nh + h) * tq + i0);
                attend_block(
                    scratch,
                    Block { qb, n_keys, visible0: p.q_pos0 as usize + i0 + 1, hd, scale: p.scale },
                    q_ptr,
                    q_row,
                    k_ptr,
                    v_ptr,
                    kv_row,
                    dst,
                    out_row,
                    lse_dst,
                    1,
                );
            }
        },
    );
}

/// Keys per value-sum chunk: the sum over keys runs chunk by chunk in this fixed order, so a row's
/// result does not depend on how many keys its block holds (training) or only its own (decode).
const KEY_CHUNK: usize = 256;

/// Per-task scratch of the attention forward: the score tile and, for one-query blocks (which
/// run as two identical rows so that `gemm` takes its general path), the padded operands.
struct Scratch {
    scores: Vec<f32>,
    q8: Vec<f32>,
    out2: Vec<f32>,
    probs3: Vec<f32>,
    v3: Vec<f32>,
}

impl Scratch {
    fn new(qb: usize, keys: usize, hd: usize) -> Self {
        let m = qb.max(MIN_SMALL_ROWS);
        Scratch { scores: vec![0f32; m * keys], q8: vec![0f32; m * hd], out2: vec![0f32; m * hd], probs3: vec![0f32; m * 3], v3: vec![0f32; 3 * hd] }
    }
}

/// One block's shape: `qb` queries, the first seeing `visible0` keys and each next one more
/// (capped at `n_keys`), head size `hd`.
#[derive(Clone, Copy)]
struct Block {
    qb: usize,
    n_keys: usize,
    visible0: usize,
    hd: usize,
    scale: f32,
}

/// The attention of one block of queries of one head: scores `scale Q K^T` (one `gemm` tile),
/// a max-shifted softmax per row summed in key order, and `P V` summed over keys in
/// [`KEY_CHUNK`]s. Shared by `attention_fwd` and `attention_decode_fwd` so that a row computes
/// the same bits in both. A block of fewer than `MIN_SMALL_ROWS` queries runs padded with copies of its last
/// query (`gemm` takes other kernels, with other summation orders, for so few rows); chunks of fewer than three keys
/// are zero-padded to three for the same reason.
///
/// # Safety
/// `q` (qb rows, stride q_row), `k`, `v` (n_keys rows, stride kv_row), `dst` (qb rows, stride
/// dst_rs) and `lse` (qb entries, stride lse_stride) must be valid; `dst` must not alias the inputs.
#[allow(clippy::too_many_arguments)]
unsafe fn attend_block(
    s: &mut Scratch,
    blk: Block,
    q: *const f32,
    q_row: usize,
    k: *const f32,
    v: *const f32,
    kv_row: usize,
    dst: *mut f32,
    dst_rs: usize,
    lse: *mut f32,
    lse_stride: usize,
) {
    let Block { qb, n_keys, visible0, hd, scale } = blk;
    let m = qb.max(MIN_SMALL_ROWS);
    if s.scores.len() < m * n_keys {
        s.scores.resize(m * n_keys, 0.0);
    }
    if s.probs3.len() < m * 3 {
        s.probs3.resize(m * 3, 0.0);
    }
    if s.out2.len() < m * hd {
        s.out2.resize(m * hd, 0.0);
        s.q8.resize(m * hd, 0.0);
    }
    if s.v3.len() < 3 * hd {
        s.v3.resize(3 * hd, 0.0);
    }
    let small = qb < m;
    let q_view = if small {
        // the block's queries, the last one repeated up to m rows
        for i in 0..m {
            std::ptr::copy_nonoverlapping(q.add(i.min(qb - 1) * q_row), s.q8.as_mut_ptr().add(i * hd), hd);
        }
        row_view(s.q8.as_ptr(), hd)
    } else {
        row_view(q, q_row)
    };
    gemm_view(m, n_keys, hd, s.scores.as_mut_ptr(), n_keys as isize, false, q_view, transposed_view(k, kv_row), scale);
    for i in 0..m {
        let visible = (visible0 + i.min(qb - 1)).min(n_keys);
        let row = &mut s.scores[i * n_keys..(i + 1) * n_keys];
        let max = row[..visible].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for x in row[..visible].iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        let inv = 1.0 / sum;
        row[..visible].iter_mut().for_each(|x| *x *= inv);
        row[visible..].fill(0.0);
        if i < qb {
            *lse.add(i * lse_stride) = max + sum.ln();
        }
    }
    let (out, out_rs) = if small { (s.out2.as_mut_ptr(), hd) } else { (dst, dst_rs) };
    for c0 in (0..n_keys).step_by(KEY_CHUNK) {
        let kk = KEY_CHUNK.min(n_keys - c0);
        let acc = c0 > 0;
        if kk >= 3 {
            gemm_view(m, hd, kk, out, out_rs as isize, acc, row_view(s.scores.as_ptr().add(c0), n_keys), row_view(v.add(c0 * kv_row), kv_row), 1.0);
        } else {
            s.probs3[..m * 3].fill(0.0);
            s.v3[..3 * hd].fill(0.0);
            for i in 0..m {
                for j in 0..kk {
                    s.probs3[i * 3 + j] = s.scores[i * n_keys + c0 + j];
                }
            }
            for j in 0..kk {
                std::ptr::copy_nonoverlapping(v.add((c0 + j) * kv_row), s.v3.as_mut_ptr().add(j * hd), hd);
            }
            gemm_view(m, hd, 3, out, out_rs as isize, acc, row_view(s.probs3.as_ptr(), 3), row_view(s.v3.as_ptr(), hd), 1.0);
        }
    }
    if small {
        for i in 0..qb {
            std::ptr::copy_nonoverlapping(s.out2.as_ptr().add(i * hd), dst.add(i * dst_rs), hd);
        }
    }
}

/// See `AttentionDecodeParams`: one query per row against its own slot's keys `0 ..= pos`,
/// through the same per-block arithmetic as `attention_fwd`.
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
    let out_ptr = SharedMut(out.as_mut_ptr());
    let lse_ptr = SharedMut(lse.as_mut_ptr());
    (0..n * nh).into_par_iter().for_each_init(
        || Scratch::new(1, 0, hd),
        |scratch, task| {
            let (i, h) = (task / nh, task % nh);
            let r = rows[i] as usize;
            let (slot, pos) = (r / t_max, r % t_max);
            let kvh = h / group;
            let base = slot * t_max * kv_row;
            let q_ptr = q[i * q_row + p.q_off as usize + h * hd..].as_ptr();
            let k_ptr = cache[base + kvh * hd..].as_ptr();
            let v_ptr = cache[base + (nkv + kvh) * hd..].as_ptr();
            // SAFETY: rows and sizes checked above; output row i, head h belongs to this task.
            unsafe {
                let dst = out_ptr.ptr().add(i * out_row + h * hd);
                let lse_dst = lse_ptr.ptr().add(i * nh + h);
                attend_block(
                    scratch,
                    Block { qb: 1, n_keys: pos + 1, visible0: pos + 1, hd, scale: p.scale },
                    q_ptr,
                    q_row,
                    k_ptr,
                    v_ptr,
                    kv_row,
                    dst,
                    out_row,
                    lse_dst,
                    1,
                );
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

//! Causal scaled-dot-product attention with grouped-query heads (see `AttentionParams`).
//! Forward, per sequence b, query head h, query i at position `q_pos0 + i`:
//!   `s_j = scale * q_i . k_j` for `j <= q_pos0 + i`, `lse_i = logsumexp_j s_j`,
//!   `out_i = sum_j exp(s_j - lse_i) v_j`.
//! Saved for backward: `lse` `[B, NH, tq]` (the probabilities are recomputed, never stored).
//! Backward (training layout, tq = tk, q_pos0 = 0), with `p_ij = exp(s_ij - lse_i)`,
//! `D_i = dout_i . out_i`, `ds_ij = p_ij (dout_i . v_j - D_i)`:
//!   `dq_i = scale sum_j ds_ij k_j`, `dk_j = scale sum_i ds_ij q_i`, `dv_j = sum_i p_ij dout_i`,
//! summed over the query heads that share a key/value head. The CPU version walks one key/value
//! head of one sequence per task, so every gradient element has one writer and a fixed order.

use crate::backend::ops::AttentionParams;
use rayon::prelude::*;

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

pub fn attention_fwd(out: &mut [f32], lse: &mut [f32], q: &[f32], k: &[f32], v: &[f32], p: AttentionParams) {
    let (bsz, tq, tk, nh, nkv, hd) = (p.b as usize, p.tq as usize, p.tk as usize, p.nh as usize, p.nkv as usize, p.hd as usize);
    let group = nh / nkv;
    let out_row = nh * hd;
    let out_ptr = SharedMut(out.as_mut_ptr());
    let lse_ptr = SharedMut(lse.as_mut_ptr());
    assert!(out.len() >= bsz * tq * out_row && lse.len() >= bsz * nh * tq, "attention_fwd: output too small");
    (0..bsz * nh * tq).into_par_iter().for_each_init(
        || vec![0f32; tk],
        |scores, idx| {
            let i = idx % tq;
            let h = (idx / tq) % nh;
            let b = idx / (tq * nh);
            let kvh = h / group;
            let qi = &q[b * p.q_batch as usize + i * p.q_row as usize + p.q_off as usize + h * hd..][..hd];
            let n_keys = (p.q_pos0 as usize + i + 1).min(tk);
            let kv_base = b * p.kv_batch as usize;
            let mut max = f32::NEG_INFINITY;
            for j in 0..n_keys {
                let kj = &k[kv_base + j * p.kv_row as usize + p.k_off as usize + kvh * hd..][..hd];
                let s = p.scale * dot(qi, kj);
                scores[j] = s;
                max = max.max(s);
            }
            let mut sum = 0f32;
            for s in scores[..n_keys].iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            // SAFETY: element ranges below are owned by this (b, h, i) task alone.
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.ptr().add((b * tq + i) * out_row + h * hd), hd) };
            o.fill(0.0);
            let inv = 1.0 / sum;
            for j in 0..n_keys {
                let pj = scores[j] * inv;
                let vj = &v[kv_base + j * p.kv_row as usize + p.v_off as usize + kvh * hd..][..hd];
                o.iter_mut().zip(vj).for_each(|(o, v)| *o += pj * v);
            }
            unsafe { *lse_ptr.ptr().add((b * nh + h) * tq + i) = max + sum.ln() };
        },
    );
}

pub fn attention_bwd(dqkv: &mut [f32], dout: &[f32], out: &[f32], lse: &[f32], qkv: &[f32], p: AttentionParams) {
    let (bsz, t, nh, nkv, hd) = (p.b as usize, p.tq as usize, p.nh as usize, p.nkv as usize, p.hd as usize);
    let group = nh / nkv;
    let row = p.q_row as usize;
    let out_row = nh * hd;
    assert!(dqkv.len() >= bsz * t * row, "attention_bwd: dqkv too small");
    let d_ptr = SharedMut(dqkv.as_mut_ptr());
    let (q_off, k_off, v_off) = (p.q_off as usize, p.k_off as usize, p.v_off as usize);
    (0..bsz * nkv).into_par_iter().for_each(|task| {
        let b = task / nkv;
        let kvh = task % nkv;
        let base = b * t * row;
        let at = |tok: usize, off: usize, head: usize| base + tok * row + off + head * hd;
        // SAFETY: this task alone writes dk/dv of head kvh and dq of heads kvh*group.. of sequence b.
        let dslice = |idx: usize| unsafe { std::slice::from_raw_parts_mut(d_ptr.ptr().add(idx), hd) };
        for j in 0..t {
            dslice(at(j, k_off, kvh)).fill(0.0);
            dslice(at(j, v_off, kvh)).fill(0.0);
        }
        let mut ds = vec![0f32; t];
        for h in kvh * group..(kvh + 1) * group {
            for i in 0..t {
                let qi = &qkv[at(i, q_off, h)..][..hd];
                let doi = &dout[(b * t + i) * out_row + h * hd..][..hd];
                let oi = &out[(b * t + i) * out_row + h * hd..][..hd];
                let l = lse[(b * nh + h) * t + i];
                let d_i = dot(doi, oi);
                for j in 0..=i {
                    let kj = &qkv[at(j, k_off, kvh)..][..hd];
                    let vj = &qkv[at(j, v_off, kvh)..][..hd];
                    let pij = (p.scale * dot(qi, kj) - l).exp();
                    ds[j] = pij * (dot(doi, vj) - d_i);
                    let dv = dslice(at(j, v_off, kvh));
                    dv.iter_mut().zip(doi).for_each(|(d, g)| *d += pij * g);
                }
                let dq = dslice(at(i, q_off, h));
                dq.fill(0.0);
                for j in 0..=i {
                    let kj = &qkv[at(j, k_off, kvh)..][..hd];
                    let s = p.scale * ds[j];
                    dq.iter_mut().zip(kj).for_each(|(d, k)| *d += s * k);
                    let dk = dslice(at(j, k_off, kvh));
                    dk.iter_mut().zip(qi).for_each(|(d, q)| *d += s * q);
                }
            }
        }
    });
}

/// Copies the key and value heads of the fused projection `[B, t, (nh + 2 nkv) hd]` into the
/// cache `[B, t_max, 2 nkv hd]` at positions `pos0 .. pos0 + t`.
pub fn kv_cache_write(cache: &mut [f32], qkv: &[f32], p: crate::backend::ops::KvCacheParams) {
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

//! The fused RL ops: log-prob gather (with entropy) straight from the LM head, the per-token KL
//! penalty, and PPO's clipped losses with their gradients.
//!
//! `logprob_gather_fwd` — `h [n, c]`, LM head `w [v, c]`, `targets [n]`, temperature T:
//!   `z = (h @ w^T) / T`, `lse_i = logsumexp_j z_ij`, `logp_i = z_i[t_i] - lse_i`,
//!   `H_i = -sum_j p_ij log p_ij = lse_i - sum_j p_ij z_ij` with `p = softmax(z)`.
//! The vocabulary is split into chunks of `chunk` rows of `w`; a task (block of `ROW_BLOCK` rows,
//! chunk) computes its `[rows, chunk]` tile of z with one matmul and reduces each row of it to
//! `(m, s, u)` = (max, `sum e^(z - m)`, `sum e^(z - m) (z - m)`); the chunks are then merged per row
//! in chunk order (online log-sum-exp): with `M = max(m, m')`, `a = e^(m - M)`, `a' = e^(m' - M)`,
//! `s <- a s + a' s'`, `u <- a (u + (m - M) s) + a' (u' + (m' - M) s')`; finally
//! `lse = M + ln s` and `H = ln s - u / s` (no cancellation against M). The target's z is read
//! from whichever tile holds it. Outputs `logp [n]`, `entropy [n]`; saved for backward: `lse [n]`
//! (and the entropy output). Rows with a negative target get 0 everywhere.
//!
//! `logprob_gather_bwd` — upstream `dlogp [n]`, `dent [n]`; recomputes each tile of z and turns it
//! in place into `dlogits = dz / T` with `lp = z - lse`, `p = e^lp`:
//!   `dz_ij = dlogp_i (onehot_ij - p_ij) - dent_i p_ij (lp_ij + H_i)`
//! (`dH/dz_j = -p_j (z_j - sum_k p_k z_k)` and `z_j - sum_k p_k z_k = lp_j + H`). Then
//! `dh = dlogits @ w` (overwritten) and `dw += dlogits^T @ h`, 3 matmuls of `n v c` like a version
//! that stores the logits. Every output element has one writer and a fixed summation order: the
//! row blocks run one after the other, and inside a block one task per chunk adds its chunk's rows
//! of `dw` and writes its share of `dh_block` to its own slot; the shares are summed in chunk order.
//!
//! Memory: the `[n, v]` logits never exist. Extra memory is one `[ROW_BLOCK, chunk]` tile per
//! worker lane plus, in the forward, 3 floats per (row, chunk) for the partial reductions
//! ([`logprob_gather_scratch_floats`]: O(n chunk) whenever `v <= chunk^2`, i.e. for any real
//! vocabulary), and in the backward one `[ROW_BLOCK, c]` share of dh per chunk
//! ([`logprob_gather_bwd_scratch_floats`]: independent of n). The ops allocate exactly these.
//!
//! `kl_penalty_fwd/bwd` — `r = logp - ref_logp`; `k1 = r`, `k2 = r^2 / 2`,
//! `k3 = exp(-r) - 1 + r` (`expm1(-r) + r`, a Taylor series near 0); `kl = mask k(r)`; backward
//! `dlogp = dkl mask k'(r)` with `k1' = 1`, `k2' = r`, `k3' = 1 - exp(-r)`; masked-out tokens
//! give 0 without reading their log-probs into the result.
//!
//! `ppo_loss_fwd_bwd` — see `PpoParams`: per-token clipped surrogate (with the dual clip), clipped
//! value loss, entropy bonus and KL-in-loss term; aggregation weights `w_i` (token mean, or
//! sequence mean of token means); writes `dlogp`, `dvalues`, `dentropy` `[n]` and adds the weighted
//! sums of `ppo_stat` to `stats`. Reductions (mask counts, stats) run over fixed blocks of tokens
//! (or whole sequences) whose partial sums are added in block order: the result does not depend on
//! the thread count.

use super::matmul::{gemm_view, View};
use super::simd::{self, multiversion};
use super::SharedMut;
use super::{check, profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::{ppo_stat, KlParams, LogprobParams, PpoParams};
use crate::error::Result;
use rayon::prelude::*;

/// Rows of `h` per tile (the M of each chunk matmul). 256 rather than 64: every tile re-packs its
/// chunk of `w`; at n 256, c 768, v 50257 on 2 cores the forward took 270-360 ms with 64-row tiles,
/// 194 ms with 256 (the materialised matmul + cross-entropy: 224 ms in the same run).
pub const ROW_BLOCK: usize = 256;

/// Tokens per reduction block of `ppo_loss_fwd_bwd` (token-mean aggregation).
const PPO_BLOCK: usize = 1024;

/// Floats of one z tile: `min(n, ROW_BLOCK)` rows of `min(chunk, v)` logits.
fn tile_floats(n: usize, v: usize, chunk: usize) -> usize {
    ROW_BLOCK.min(n) * chunk.min(v)
}

/// Extra f32 values `logprob_gather_fwd` allocates for `n` rows, a vocabulary of `v` and chunks of
/// `chunk` when it runs on `lanes` worker lanes (at most rayon's thread count): one
/// `[min(n, ROW_BLOCK), min(chunk, v)]` logits tile per lane plus the partial reductions, 3 floats
/// per (row, chunk). Independent of `c`; with `v <= chunk^2` it is at most
/// `(lanes * ROW_BLOCK + 3 n) * chunk`, i.e. O(n chunk), not O(n v).
pub fn logprob_gather_scratch_floats(n: usize, v: usize, chunk: usize, lanes: usize) -> usize {
    let chunk = chunk.max(1);
    lanes.max(1) * tile_floats(n, v, chunk) + 3 * n * v.div_ceil(chunk)
}

/// Extra f32 values `logprob_gather_bwd` allocates: one logits tile per lane (as the forward) plus
/// one `[min(n, ROW_BLOCK), c]` share of the hidden-state gradient per vocabulary chunk.
/// Independent of `n` beyond the first row block.
pub fn logprob_gather_bwd_scratch_floats(n: usize, c: usize, v: usize, chunk: usize, lanes: usize) -> usize {
    let chunk = chunk.max(1);
    lanes.max(1) * tile_floats(n, v, chunk) + v.div_ceil(chunk) * ROW_BLOCK.min(n) * c
}

/// Worker lanes for `tasks` independent tasks: at most one per rayon thread.
fn lanes_for(tasks: usize) -> usize {
    rayon::current_num_threads().min(tasks).max(1)
}

fn row_view(ptr: *const f32, rs: usize) -> View {
    View { ptr, rs: rs as isize, cs: 1 }
}

fn transposed_view(ptr: *const f32, rs: usize) -> View {
    View { ptr, rs: 1, cs: rs as isize }
}

/// `tile[rows, cw] = (h[r0.., :] @ w[j0.., :]^T) / T`, row stride `cw`.
///
/// # Safety
/// `h` must hold rows `r0 .. r0 + rows` and `w` rows `j0 .. j0 + cw` of `c` values; `tile` at
/// least `rows * cw`.
#[allow(clippy::too_many_arguments)]
unsafe fn logits_tile(tile: &mut [f32], h: &[f32], w: &[f32], c: usize, r0: usize, rows: usize, j0: usize, cw: usize, inv_t: f32) {
    gemm_view(rows, cw, c, tile.as_mut_ptr(), cw as isize, false, row_view(h[r0 * c..].as_ptr(), c), transposed_view(w[j0 * c..].as_ptr(), c), inv_t);
}

multiversion! {
    /// `out = [m, s, u]` of one row of logits: max, `sum e^(z - m)`, `sum e^(z - m) (z - m)`,
    /// reduced over 8 lanes (then lane order, then the tail): a fixed order that vectorises.
    pub fn chunk_stats(row: &[f32], out: &mut [f32]) {
        let body = row.chunks_exact(8);
        let tail = body.remainder();
        let mut mx = [f32::NEG_INFINITY; 8];
        for ch in body.clone() {
            for k in 0..8 {
                mx[k] = if ch[k] > mx[k] { ch[k] } else { mx[k] };
            }
        }
        let mut m = mx.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        m = tail.iter().copied().fold(m, f32::max);
        let (mut s, mut u) = ([0f32; 8], [0f32; 8]);
        for ch in body {
            for k in 0..8 {
                let d = ch[k] - m;
                let e = simd::exp(d);
                s[k] += e;
                u[k] += e * d;
            }
        }
        let (mut s_all, mut u_all) = (0f32, 0f32);
        for k in 0..8 {
            s_all += s[k];
            u_all += u[k];
        }
        for &z in tail {
            let d = z - m;
            let e = simd::exp(d);
            s_all += e;
            u_all += e * d;
        }
        out[0] = m;
        out[1] = s_all;
        out[2] = u_all;
    }
}

multiversion! {
    /// One row of a z tile -> `dlogits` (without the one-hot term):
    /// `-p (dlogp + dent (lp + ent)) / T` with `lp = z - lse`, `p = e^lp`.
    pub fn dlogits_row(row: &mut [f32], lse: f32, ent: f32, dlogp: f32, dent: f32, inv_t: f32) {
        for z in row.iter_mut() {
            let lp = *z - lse;
            let p = simd::exp(lp);
            *z = -p * (dlogp + dent * (lp + ent)) * inv_t;
        }
    }
}

pub fn logprob_gather_fwd(logp: &mut [f32], entropy: &mut [f32], lse: &mut [f32], h: &[f32], targets: &[i32], w: &[f32], p: LogprobParams) {
    let (n, c, v) = (p.n as usize, p.c as usize, p.v as usize);
    let chunk = (p.chunk as usize).max(1).min(v);
    assert!(logp.len() >= n && entropy.len() >= n && lse.len() >= n && targets.len() >= n, "logprob_gather_fwd: buffers too small");
    assert!(h.len() >= n * c && w.len() >= v * c, "logprob_gather_fwd: h or w too small");
    if n == 0 || v == 0 {
        return;
    }
    let inv_t = 1.0 / p.temperature;
    let (n_blocks, n_chunks) = (n.div_ceil(ROW_BLOCK), v.div_ceil(chunk));
    let n_tasks = n_blocks * n_chunks;
    let lanes = lanes_for(n_tasks);
    let tile_len = tile_floats(n, v, chunk);
    let mut scratch = vec![0f32; logprob_gather_scratch_floats(n, v, chunk, lanes)];
    let (tiles, partials) = scratch.split_at_mut(lanes * tile_len);
    // partials[(j n + i) 3 ..][..3] = (m, s, u) of row i over chunk j; the target's z goes
    // straight into logp[i] (exactly one chunk holds it).
    let part_ptr = SharedMut(partials.as_mut_ptr());
    let logp_ptr = SharedMut(logp.as_mut_ptr());
    tiles.par_chunks_mut(tile_len).enumerate().for_each(|(lane, tile)| {
        for task in (lane..n_tasks).step_by(lanes) {
            let (j, blk) = (task / n_blocks, task % n_blocks);
            let (r0, j0) = (blk * ROW_BLOCK, j * chunk);
            let (rows, cw) = (ROW_BLOCK.min(n - r0), chunk.min(v - j0));
            // SAFETY: rows r0.. of h and j0.. of w exist (asserted above); the tile holds rows * cw.
            unsafe { logits_tile(tile, h, w, c, r0, rows, j0, cw, inv_t) };
            for i in 0..rows {
                let row = &tile[i * cw..(i + 1) * cw];
                let ri = r0 + i;
                // SAFETY: (chunk j, row ri) belongs to this task alone, and so does logp[ri] when
                // the target lies in chunk j.
                unsafe {
                    chunk_stats(row, std::slice::from_raw_parts_mut(part_ptr.ptr().add((j * n + ri) * 3), 3));
                    let t = targets[ri];
                    if t >= 0 && (t as usize) >= j0 && (t as usize) < j0 + cw {
                        *logp_ptr.ptr().add(ri) = row[t as usize - j0];
                    }
                }
            }
        }
    });
    let partials = &*partials;
    logp[..n].par_iter_mut().zip(entropy[..n].par_iter_mut()).zip(lse[..n].par_iter_mut()).enumerate().for_each(|(i, ((lp, ent), l))| {
        if targets[i] < 0 {
            (*lp, *ent, *l) = (0.0, 0.0, 0.0);
            return;
        }
        let (mut m, mut s, mut u) = (partials[i * 3], partials[i * 3 + 1], partials[i * 3 + 2]);
        for j in 1..n_chunks {
            let q = &partials[(j * n + i) * 3..][..3];
            let big = m.max(q[0]);
            let (a, b) = ((m - big).exp(), (q[0] - big).exp());
            u = a * (u + (m - big) * s) + b * (q[2] + (q[0] - big) * q[1]);
            s = a * s + b * q[1];
            m = big;
        }
        *l = m + s.ln();
        *ent = s.ln() - u / s;
        *lp -= *l;
    });
}

#[allow(clippy::too_many_arguments)]
pub fn logprob_gather_bwd(
    dh: &mut [f32],
    dw: &mut [f32],
    dlogp: &[f32],
    dent: &[f32],
    h: &[f32],
    targets: &[i32],
    lse: &[f32],
    entropy: &[f32],
    w: &[f32],
    p: LogprobParams,
) {
    let (n, c, v) = (p.n as usize, p.c as usize, p.v as usize);
    let chunk = (p.chunk as usize).max(1).min(v);
    assert!(dlogp.len() >= n && dent.len() >= n && lse.len() >= n && entropy.len() >= n && targets.len() >= n, "logprob_gather_bwd: buffers too small");
    assert!(dh.len() >= n * c && h.len() >= n * c && dw.len() >= v * c && w.len() >= v * c, "logprob_gather_bwd: h, w or their gradients too small");
    if n == 0 {
        return;
    }
    if v == 0 {
        dh[..n * c].fill(0.0);
        return;
    }
    let inv_t = 1.0 / p.temperature;
    let (n_blocks, n_chunks) = (n.div_ceil(ROW_BLOCK), v.div_ceil(chunk));
    let tile_len = tile_floats(n, v, chunk);
    // z tile -> dlogits tile for rows r0.. and vocabulary j0..
    let dlogits_tile = |tile: &mut [f32], r0: usize, rows: usize, j0: usize, cw: usize| {
        // SAFETY: rows r0.. of h and j0.. of w exist (asserted above); the tile holds rows * cw.
        unsafe { logits_tile(tile, h, w, c, r0, rows, j0, cw, inv_t) };
        for i in 0..rows {
            let ri = r0 + i;
            let row = &mut tile[i * cw..(i + 1) * cw];
            let t = targets[ri];
            if t < 0 {
                row.fill(0.0);
                continue;
            }
            dlogits_row(row, lse[ri], entropy[ri], dlogp[ri], dent[ri], inv_t);
            if (t as usize) >= j0 && (t as usize) < j0 + cw {
                row[t as usize - j0] += dlogp[ri] * inv_t;
            }
        }
    };
    let live = |r0: usize, rows: usize| targets[r0..r0 + rows].iter().any(|&t| t >= 0);

    // Row blocks one after the other (in order); inside a block, one task per chunk: it owns the
    // chunk's rows of dw (+= dlogits^T @ h_block) and writes the chunk's share of dh_block
    // (dlogits @ w_chunk) into its own slot of `dh_parts`; the shares are summed in chunk order.
    let lanes = lanes_for(n_chunks);
    let rb = ROW_BLOCK.min(n);
    let mut scratch = vec![0f32; logprob_gather_bwd_scratch_floats(n, c, v, chunk, lanes)];
    let (tiles, dh_parts) = scratch.split_at_mut(lanes * tile_len);
    let parts_ptr = SharedMut(dh_parts.as_mut_ptr());
    let dw_ptr = SharedMut(dw.as_mut_ptr());
    for blk in 0..n_blocks {
        let r0 = blk * ROW_BLOCK;
        let rows = ROW_BLOCK.min(n - r0);
        let dh_block = &mut dh[r0 * c..(r0 + rows) * c];
        if !live(r0, rows) {
            dh_block.fill(0.0);
            continue;
        }
        tiles.par_chunks_mut(tile_len).enumerate().for_each(|(lane, tile)| {
            for j in (lane..n_chunks).step_by(lanes) {
                let j0 = j * chunk;
                let cw = chunk.min(v - j0);
                dlogits_tile(tile, r0, rows, j0, cw);
                // SAFETY: rows j0 .. j0 + cw of dw and slot j of dh_parts belong to this task
                // alone; the views stay inside the tile, h and w (asserted above).
                unsafe {
                    let dst = dw_ptr.ptr().add(j0 * c);
                    gemm_view(cw, c, rows, dst, c as isize, true, transposed_view(tile.as_ptr(), cw), row_view(h[r0 * c..].as_ptr(), c), 1.0);
                    let part = parts_ptr.ptr().add(j * rb * c);
                    gemm_view(rows, c, cw, part, c as isize, false, row_view(tile.as_ptr(), cw), row_view(w[j0 * c..].as_ptr(), c), 1.0);
                }
            }
        });
        let parts = &*dh_parts;
        dh_block.par_chunks_mut(c).enumerate().for_each(|(i, row)| {
            row.copy_from_slice(&parts[i * c..(i + 1) * c]);
            for j in 1..n_chunks {
                row.iter_mut().zip(&parts[j * rb * c + i * c..][..c]).for_each(|(d, x)| *d += x);
            }
        });
    }
}

/// The KL estimator `k(r)` for `r = logp - ref_logp` (1: r, 2: r^2/2, 3: exp(-r) - 1 + r).
/// k3 is `expm1(-r) + r`, and for `|r| < 0.1`, where that sum cancels, its Taylor series
/// `r^2 (1/2 - r/6 + r^2/24 - r^3/120 + r^4/720)` (truncation below 1e-8 relative).
#[inline]
pub fn kl_estimate(estimator: u32, r: f32) -> f32 {
    match estimator {
        1 => r,
        2 => 0.5 * r * r,
        _ if r.abs() < 0.1 => r * r * (0.5 + r * (-1.0 / 6.0 + r * (1.0 / 24.0 + r * (-1.0 / 120.0 + r * (1.0 / 720.0))))),
        _ => (-r).exp_m1() + r,
    }
}

/// `dk/dr` of [`kl_estimate`].
#[inline]
pub fn kl_estimate_grad(estimator: u32, r: f32) -> f32 {
    match estimator {
        1 => 1.0,
        2 => r,
        _ => -(-r).exp_m1(),
    }
}

const EW_CHUNK: usize = 4096;

pub fn kl_penalty_fwd(kl: &mut [f32], logp: &[f32], ref_logp: &[f32], mask: &[f32], p: KlParams) {
    let n = p.n as usize;
    kl[..n].par_chunks_mut(EW_CHUNK).enumerate().for_each(|(b, out)| {
        let i0 = b * EW_CHUNK;
        for (k, o) in out.iter_mut().enumerate() {
            let i = i0 + k;
            let m = mask[i];
            *o = if m != 0.0 { m * kl_estimate(p.estimator, logp[i] - ref_logp[i]) } else { 0.0 };
        }
    });
}

pub fn kl_penalty_bwd(dlogp: &mut [f32], dkl: &[f32], logp: &[f32], ref_logp: &[f32], mask: &[f32], p: KlParams) {
    let n = p.n as usize;
    dlogp[..n].par_chunks_mut(EW_CHUNK).enumerate().for_each(|(b, out)| {
        let i0 = b * EW_CHUNK;
        for (k, o) in out.iter_mut().enumerate() {
            let i = i0 + k;
            let m = mask[i];
            *o = if m != 0.0 { dkl[i] * m * kl_estimate_grad(p.estimator, logp[i] - ref_logp[i]) } else { 0.0 };
        }
    });
}

/// The value-function inputs of `ppo_loss_fwd_bwd`: current values, values at rollout time, returns.
#[derive(Clone, Copy)]
pub struct ValueInputs<'a> {
    pub values: &'a [f32],
    pub old_values: &'a [f32],
    pub returns: &'a [f32],
}

/// The optional per-token outputs and inputs of `ppo_loss_fwd_bwd`.
pub struct PpoExtras<'a> {
    pub dvalues: Option<&'a mut [f32]>,
    pub dentropy: Option<&'a mut [f32]>,
    pub values: Option<ValueInputs<'a>>,
    pub entropy: Option<&'a [f32]>,
    pub ref_logp: Option<&'a [f32]>,
}

/// Per-token aggregation weight `w_i / m_i` of every token (0 where nothing counts).
fn ppo_token_scales(mask: &[f32], p: &PpoParams) -> Vec<f32> {
    let n = p.n as usize;
    let mut scales = vec![0f32; n];
    if p.aggregation == 0 {
        // sum of the mask over fixed blocks, the block sums added in order
        let partial: Vec<f32> = mask[..n].par_chunks(PPO_BLOCK).map(|b| b.iter().sum::<f32>()).collect();
        let total: f32 = partial.iter().sum();
        let denom = if p.denom > 0.0 { p.denom } else { total };
        let s = if denom > 0.0 && total != 0.0 { 1.0 / denom } else { 0.0 };
        scales.fill(s);
    } else {
        let t = p.t as usize;
        let counts: Vec<f32> = mask[..n].par_chunks(t).map(|q| q.iter().sum::<f32>()).collect();
        let seqs = counts.iter().filter(|&&c| c != 0.0).count() as f32;
        let denom = if p.denom > 0.0 { p.denom } else { seqs };
        scales.par_chunks_mut(t).zip(&counts).for_each(|(s, &cnt)| s.fill(if cnt != 0.0 && denom > 0.0 { 1.0 / (cnt * denom) } else { 0.0 }));
    }
    scales
}

#[allow(clippy::too_many_arguments)]
pub fn ppo_loss_fwd_bwd(
    dlogp: &mut [f32],
    stats: &mut [f32],
    logp: &[f32],
    old_logp: &[f32],
    advantages: &[f32],
    mask: &[f32],
    extras: PpoExtras<'_>,
    p: PpoParams,
) {
    let n = p.n as usize;
    let scales = ppo_token_scales(mask, &p);
    let block = if p.aggregation == 0 { PPO_BLOCK } else { p.t as usize };
    let n_blocks = n.div_ceil(block.max(1));
    let PpoExtras { dvalues, dentropy, values, entropy, ref_logp } = extras;
    let dv_ptr = dvalues.map(|d| SharedMut(d.as_mut_ptr()));
    let de_ptr = dentropy.map(|d| SharedMut(d.as_mut_ptr()));
    let (lo, hi) = (1.0 - p.clip_low, 1.0 + p.clip_high);
    let partial: Vec<[f32; ppo_stat::COUNT]> = dlogp[..n]
        .par_chunks_mut(block.max(1))
        .enumerate()
        .map(|(b, dl)| {
            let mut acc = [0f32; ppo_stat::COUNT];
            let i0 = b * block;
            for (k, dl) in dl.iter_mut().enumerate() {
                let i = i0 + k;
                let w = mask[i] * scales[i];
                // SAFETY: token i's gradient slots belong to this block alone.
                let put = |ptr: Option<SharedMut>, x: f32| {
                    if let Some(ptr) = ptr {
                        unsafe { *ptr.ptr().add(i) = x };
                    }
                };
                if w == 0.0 {
                    *dl = 0.0;
                    put(dv_ptr, 0.0);
                    put(de_ptr, 0.0);
                    continue;
                }
                // clipped surrogate, dual clip
                let a = advantages[i];
                let d = logp[i] - old_logp[i];
                let ratio = d.exp();
                let unclipped = -a * ratio;
                let clipped = -a * ratio.clamp(lo, hi);
                let (mut pg, mut dpg, clip) = if clipped > unclipped { (clipped, 0.0, 1.0) } else { (unclipped, -a * ratio, 0.0) };
                let mut dual = 0.0;
                if p.dual_clip > 1.0 && a < 0.0 {
                    let bound = -p.dual_clip * a;
                    if bound < pg {
                        (pg, dpg, dual) = (bound, 0.0, 1.0);
                    }
                }
                // value loss
                let (mut vl, mut dv, mut vclip) = (0.0, 0.0, 0.0);
                if let Some(vi) = values {
                    let (val, old, ret) = (vi.values[i], vi.old_values[i], vi.returns[i]);
                    let err = val - ret;
                    (vl, dv) = (0.5 * err * err, err);
                    if p.value_clip > 0.0 {
                        let delta = val - old;
                        let err_c = old + delta.clamp(-p.value_clip, p.value_clip) - ret;
                        if err_c * err_c > err * err {
                            vl = 0.5 * err_c * err_c;
                            dv = if delta.abs() < p.value_clip { err_c } else { 0.0 };
                            vclip = 1.0;
                        }
                    }
                }
                let ent = entropy.map_or(0.0, |e| e[i]);
                let (mut kl, mut dkl) = (0.0, 0.0);
                if let Some(r) = ref_logp {
                    let r = logp[i] - r[i];
                    (kl, dkl) = (kl_estimate(p.kl_estimator, r), kl_estimate_grad(p.kl_estimator, r));
                }
                let total = pg + p.vf_coef * vl - p.ent_coef * ent + p.kl_coef * kl;
                *dl = w * (dpg + p.kl_coef * dkl);
                put(dv_ptr, w * p.vf_coef * dv);
                put(de_ptr, -w * p.ent_coef);
                let approx_kl = d.exp_m1() - d;
                let terms = [pg, vl, ent, clip, approx_kl, kl, total, vclip, dual, 1.0];
                acc.iter_mut().zip(terms).for_each(|(a, t)| *a += w * t);
            }
            acc
        })
        .collect();
    debug_assert_eq!(partial.len(), n_blocks);
    for blk in &partial {
        stats.iter_mut().zip(blk).for_each(|(s, b)| *s += b);
    }
}

impl family::RlLosses for CpuBackend {
    fn kl_penalty_fwd(&self, kl: &mut Vec<f32>, logp: &Vec<f32>, ref_logp: &Vec<f32>, mask: &Vec<f32>, p: KlParams) -> Result<()> {
        let _t = profile::OpTimer::start("kl_penalty_fwd");
        let n = p.n as usize;
        check((1..=3).contains(&p.estimator), "kl_penalty_fwd", "estimator must be 1, 2 or 3")?;
        check([kl.len(), logp.len(), ref_logp.len(), mask.len()].iter().all(|&l| l >= n), "kl_penalty_fwd", "buffer shorter than n")?;
        kl_penalty_fwd(kl, logp, ref_logp, mask, p);
        Ok(())
    }
    fn kl_penalty_bwd(&self, dlogp: &mut Vec<f32>, dkl: &Vec<f32>, logp: &Vec<f32>, ref_logp: &Vec<f32>, mask: &Vec<f32>, p: KlParams) -> Result<()> {
        let _t = profile::OpTimer::start("kl_penalty_bwd");
        let n = p.n as usize;
        check((1..=3).contains(&p.estimator), "kl_penalty_bwd", "estimator must be 1, 2 or 3")?;
        check([dlogp.len(), dkl.len(), logp.len(), ref_logp.len(), mask.len()].iter().all(|&l| l >= n), "kl_penalty_bwd", "buffer shorter than n")?;
        kl_penalty_bwd(dlogp, dkl, logp, ref_logp, mask, p);
        Ok(())
    }
    fn ppo_loss_fwd_bwd(
        &self,
        dlogp: &mut Vec<f32>,
        dvalues: Option<&mut Vec<f32>>,
        dentropy: Option<&mut Vec<f32>>,
        stats: &mut Vec<f32>,
        logp: &Vec<f32>,
        old_logp: &Vec<f32>,
        advantages: &Vec<f32>,
        mask: &Vec<f32>,
        values: Option<&Vec<f32>>,
        old_values: Option<&Vec<f32>>,
        returns: Option<&Vec<f32>>,
        entropy: Option<&Vec<f32>>,
        ref_logp: Option<&Vec<f32>>,
        p: PpoParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("ppo_loss_fwd_bwd");
        let op = "ppo_loss_fwd_bwd";
        let n = p.n as usize;
        check(p.aggregation <= 1, op, "aggregation must be 0 (token mean) or 1 (sequence mean)")?;
        check(p.aggregation == 0 || (p.t > 0 && n % p.t as usize == 0), op, "sequence-mean aggregation needs t > 0 dividing n")?;
        check(p.clip_low >= 0.0 && p.clip_low < 1.0 && p.clip_high >= 0.0, op, "clip range must satisfy 0 <= clip_low < 1, clip_high >= 0")?;
        check(p.value_clip >= 0.0 && p.dual_clip >= 0.0 && p.denom >= 0.0, op, "value_clip, dual_clip and denom must be >= 0")?;
        check(ref_logp.is_none() || (1..=3).contains(&p.kl_estimator), op, "kl_estimator must be 1, 2 or 3")?;
        check(stats.len() >= ppo_stat::COUNT, op, "stats shorter than ppo_stat::COUNT")?;
        check([logp, old_logp, advantages, mask].iter().all(|b| b.len() >= n) && dlogp.len() >= n, op, "buffer shorter than n")?;
        let some = [values.is_some(), old_values.is_some(), returns.is_some(), dvalues.is_some()];
        check(some.iter().all(|&s| s == some[0]), op, "values, old_values, returns and dvalues go together")?;
        check(entropy.is_some() == dentropy.is_some(), op, "entropy and dentropy go together")?;
        let long = |b: &Option<&Vec<f32>>| b.is_none_or(|b| b.len() >= n);
        check([values, old_values, returns, entropy, ref_logp].iter().all(long), op, "optional input shorter than n")?;
        check(dvalues.as_ref().is_none_or(|b| b.len() >= n) && dentropy.as_ref().is_none_or(|b| b.len() >= n), op, "optional output shorter than n")?;
        let values = match (values, old_values, returns) {
            (Some(values), Some(old_values), Some(returns)) => Some(ValueInputs { values, old_values, returns }),
            _ => None,
        };
        let extras = PpoExtras {
            dvalues: dvalues.map(|d| d.as_mut_slice()),
            dentropy: dentropy.map(|d| d.as_mut_slice()),
            values,
            entropy: entropy.map(|e| e.as_slice()),
            ref_logp: ref_logp.map(|r| r.as_slice()),
        };
        ppo_loss_fwd_bwd(dlogp, stats, logp, old_logp, advantages, mask, extras, p);
        Ok(())
    }
}

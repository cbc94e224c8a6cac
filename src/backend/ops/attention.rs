//! The params of attention and the KV cache (the `attention` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// Causal scaled-dot-product attention with grouped-query heads, reading queries, keys and values
/// out of strided buffers (the fused `[B, T, (NH + 2 NKV) HD]` projection during training, the
/// KV cache during generation). Query i of a sequence sits at position `q_pos0 + i` and sees
/// keys `0 ..= q_pos0 + i` (< tk). Query head h reads key/value head `h / (nh / nkv)`.
/// Output `[B, tq, NH * HD]`; saved for backward: the log-sum-exp of every score row `[B, NH, tq]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AttentionParams {
    pub b: u32,
    pub tq: u32,
    pub tk: u32,
    pub nh: u32,
    pub nkv: u32,
    pub hd: u32,
    pub q_pos0: u32,
    pub scale: f32,
    /// elements between consecutive query rows, and between sequences, and the offset of head 0
    pub q_row: u32,
    pub q_batch: u32,
    pub q_off: u32,
    /// the same for keys and values (which share a row layout)
    pub kv_row: u32,
    pub kv_batch: u32,
    pub k_off: u32,
    pub v_off: u32,
    pub _pad: u32,
}

impl AttentionParams {
    /// Training layout: q, k, v all read from one fused `[B, T, (nh + 2 nkv) hd]` buffer.
    pub fn fused(b: usize, t: usize, nh: usize, nkv: usize, hd: usize) -> Self {
        let row = (nh + 2 * nkv) * hd;
        AttentionParams {
            b: b as u32,
            tq: t as u32,
            tk: t as u32,
            nh: nh as u32,
            nkv: nkv as u32,
            hd: hd as u32,
            q_pos0: 0,
            scale: 1.0 / (hd as f32).sqrt(),
            q_row: row as u32,
            q_batch: (t * row) as u32,
            q_off: 0,
            kv_row: row as u32,
            kv_batch: (t * row) as u32,
            k_off: (nh * hd) as u32,
            v_off: ((nh + nkv) * hd) as u32,
            _pad: 0,
        }
    }

    /// Cached layout: `t` new queries at positions `pos0 ..` read from the fused projection
    /// `[B, t, (nh + 2 nkv) hd]`, keys and values from a cache `[B, t_max, 2 nkv hd]` (see
    /// [`KvCacheParams`]) holding positions `0 .. pos0 + t`.
    pub fn cached(b: usize, t: usize, pos0: usize, t_max: usize, nh: usize, nkv: usize, hd: usize) -> Self {
        let kv_row = 2 * nkv * hd;
        AttentionParams {
            tk: (pos0 + t) as u32,
            q_pos0: pos0 as u32,
            kv_row: kv_row as u32,
            kv_batch: (t_max * kv_row) as u32,
            k_off: 0,
            v_off: (nkv * hd) as u32,
            ..AttentionParams::fused(b, t, nh, nkv, hd)
        }
    }
}

/// Copies the key and value heads of `t` new tokens from the fused projection
/// `[B, t, (nh + 2 nkv) hd]` into a cache `[B, t_max, 2 nkv hd]` at positions `pos0 .. pos0 + t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct KvCacheParams {
    pub b: u32,
    pub t: u32,
    pub pos0: u32,
    pub t_max: u32,
    pub nh: u32,
    pub nkv: u32,
    pub hd: u32,
    pub _pad: u32,
}

/// Row scatter: `out[rows[i] * dst_row + j] = inp[i * src_row + src_off + j]` for `i < n`,
/// `j < width`. The rollout engine writes the keys and values of new tokens into their slots'
/// cache rows with it (`src_off` skips the query heads of the fused projection) and files each
/// step's per-token values (e.g. log-probs) under their sequences.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ScatterParams {
    pub n: u32,
    pub width: u32,
    pub src_row: u32,
    pub src_off: u32,
    pub dst_row: u32,
    /// rows of `out` (every `rows[i]` must be below it)
    pub dst_rows: u32,
}

impl ScatterParams {
    /// The key/value heads of `n` fused-projection rows `[n, (nh + 2 nkv) hd]` into cache rows
    /// `[_, 2 nkv hd]` (a slot cache `[S, t_max, 2 nkv hd]` has `S * t_max` rows).
    pub fn kv(n: usize, nh: usize, nkv: usize, hd: usize, cache_rows: usize) -> Self {
        ScatterParams {
            n: n as u32,
            width: (2 * nkv * hd) as u32,
            src_row: ((nh + 2 * nkv) * hd) as u32,
            src_off: (nh * hd) as u32,
            dst_row: (2 * nkv * hd) as u32,
            dst_rows: cache_rows as u32,
        }
    }
}

/// Decode attention over a slot cache `[S, t_max, 2 nkv hd]` (keys then values of each
/// position): query i (row i of `q`, heads from `q_off`, `q_row` elements per row) belongs to the
/// token in cache row `rows[i]`, of slot `s = rows[i] / t_max` at position `pos = rows[i] % t_max`,
/// and attends to that slot's keys `0 ..= pos`. Output `[n, nh hd]`, saved `lse [n, nh]`.
/// On the CPU the scores, softmax and value sums of a row use the same arithmetic, in the same
/// order, as the row of `attention_fwd` at that position, so decode and training agree bit for bit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AttentionDecodeParams {
    pub n: u32,
    pub t_max: u32,
    pub slots: u32,
    pub nh: u32,
    pub nkv: u32,
    pub hd: u32,
    pub scale: f32,
    pub q_row: u32,
    pub q_off: u32,
    pub _pad: u32,
}

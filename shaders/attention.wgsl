// Causal scaled-dot-product attention with grouped-query heads: attention_fwd, attention_bwd
// (three passes: attention_bwd, attention_bwd_dq, attention_bwd_dkv), attention_decode_fwd,
// kv_cache_write, scatter_rows. The math is that of `src/backend/cpu/attention.rs`.
//
// Forward (AttentionParams), per sequence b, query head h (key/value head h / (nh / nkv)),
// query i at position q_pos0 + i, which sees keys j <= q_pos0 + i (and j < tk):
//   s_ij = scale q_i . k_j,   lse_i = logsumexp_j s_ij,   out_i = sum_j exp(s_ij - lse_i) v_j.
// q, k, v are read from strided buffers: element d of query i of head h of sequence b is
// q[b q_batch + i q_row + q_off + h hd + d]; keys and values likewise with kv_batch, kv_row,
// k_off / v_off (the fused [B, T, (nh + 2 nkv) hd] projection in training, a cache in decode).
// Output out [B, tq, nh hd]; saved for backward: lse [B, nh, tq]. No T x T matrix is ever stored:
// the forward is flash-style (a workgroup per block of BQ queries of one (b, h) loops over key
// tiles of BK staged in workgroup memory, with an online softmax: running max and sum per query,
// output accumulators in registers), and key tiles past the block's causal limit are skipped.
//
// Backward (training layout: tq = tk = t, q_pos0 = 0, q/k/v/dq/dk/dv at q_off/k_off/v_off of rows
// of q_row values), with p_ij = exp(s_ij - lse_i) recomputed from the saved lse:
//   D_i = dout_i . out_i                                  (attention_bwd, into a scratch [B, nh, t])
//   ds_ij = p_ij (dout_i . v_j - D_i)
//   dq_i = scale sum_j ds_ij k_j                          (attention_bwd_dq: per query block)
//   dk_j = scale sum_i ds_ij q_i,  dv_j = sum_i p_ij dout_i (attention_bwd_dkv: per key block,
//                                                          summed over the heads of the group)
// Every element of the q, k and v parts of dqkv is written (overwritten) exactly once.
//
// Small heads and short sequences (hd <= SMALL_HD = 64, tq <= 256: gpt2-tiny's hd 16, T 64) take
// `attention_fwd_small`, `attention_bwd_dq_small` and `attention_bwd_dkv_small` instead of the
// tiled kernels: one invocation per query (key) with no workgroup memory and no barriers, which
// suits drivers that emulate barriers (a CPU driver) and heads too narrow to fill a workgroup.
//
// Decode (AttentionDecodeParams): query i (row i of q) belongs to cache row rows[i] of a slot
// cache [S, t_max, 2 nkv hd] (keys then values per position) and attends to its slot's keys
// 0 ..= pos; a workgroup per (row, head) reduces over the keys in chunks of 256 with an online
// softmax. Output [n, nh hd], lse [n, nh]. A row outside the cache leaves its outputs untouched.
//
// kv_cache_write copies the key/value heads of the fused projection into a cache [B, t_max,
// 2 nkv hd] at positions pos0 ..; scatter_rows copies rows (out[rows[i]] = inp[i], a row outside
// out is skipped; duplicate rows race).
//
// Workgroup memory: three arrays shared by all entry points (each lays them out its own way, see
// its comment), tile_a [4128], tile_b [2064], tile_c [544] f32 = 26,944 bytes, plus the
// prelude's 1 KiB reduction buffer (decode) = under 28 KB whatever the driver counts (lavapipe
// and Metal offer 32 KiB). Head rows in tiles have a padded stride HS = HDMAX + 1 (rows start in
// different banks); hd <= HDMAX = 128.

const HDMAX: u32 = 128u;
const HS: u32 = 129u;
// forward: queries per workgroup, keys per tile, score-tile stride
const BQ: u32 = 32u;
const BK: u32 = 16u;
const SS: u32 = 17u;
// backward: rows per workgroup (queries of dq, keys of dkv), rows per inner tile
const BR: u32 = 16u;
const BT: u32 = 8u;
const PS: u32 = 9u;
// a finite stand-in for -infinity (WGSL has no infinite literals)
const NEG: f32 = -3.0e38;

var<workgroup> tile_a: array<f32, 4128>;
var<workgroup> tile_b: array<f32, 2064>;
var<workgroup> tile_c: array<f32, 544>;

struct AttnParams {
    b: u32,
    tq: u32,
    tk: u32,
    nh: u32,
    nkv: u32,
    hd: u32,
    q_pos0: u32,
    scale: f32,
    q_row: u32,
    q_batch: u32,
    q_off: u32,
    kv_row: u32,
    kv_batch: u32,
    k_off: u32,
    v_off: u32,
    _pad: u32,
}

struct KvCacheParams {
    b: u32,
    t: u32,
    pos0: u32,
    t_max: u32,
    nh: u32,
    nkv: u32,
    hd: u32,
    _pad: u32,
}

struct ScatterParams {
    n: u32,
    width: u32,
    src_row: u32,
    src_off: u32,
    dst_row: u32,
    dst_rows: u32,
}

struct DecodeParams {
    n: u32,
    t_max: u32,
    slots: u32,
    nh: u32,
    nkv: u32,
    hd: u32,
    scale: f32,
    q_row: u32,
    q_off: u32,
    _pad: u32,
}

// ---- attention_fwd ------------------------------------------------------------------------------

@group(0) @binding(0) var<uniform> pa: AttnParams;
@group(0) @binding(1) var<storage, read_write> att_out: array<f32>;
@group(0) @binding(2) var<storage, read_write> att_lse: array<f32>;
@group(0) @binding(3) var<storage, read> q_in: array<f32>;
@group(0) @binding(4) var<storage, read> k_in: array<f32>;
@group(0) @binding(5) var<storage, read> v_in: array<f32>;

// Grid [ceil(tq / BQ), nh, b], 256 invocations. tile_a: the BQ query rows (zero past tq);
// tile_b: BK key rows, then the same BK value rows; tile_c: the BQ x BK scores (stride SS).
// Invocation (row = lid / 8, part = lid % 8) computes the scores of its query against keys part
// and part + 8, then accumulates output dims part + 8c (c < 16) of its query; the running max m
// and sum l of a query are kept (identically) by its 8 invocations.
@compute @workgroup_size(256)
fn attention_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let hd = pa.hd;
    let h = wid.y;
    let b = wid.z;
    let kvh = h / (pa.nh / pa.nkv);
    let i0 = wid.x * BQ;
    let q_base = b * pa.q_batch + pa.q_off + h * hd;
    let k_base = b * pa.kv_batch + pa.k_off + kvh * hd;
    let v_base = b * pa.kv_batch + pa.v_off + kvh * hd;
    for (var e = lid; e < BQ * hd; e = e + 256u) {
        let r = e / hd;
        let d = e - r * hd;
        var x = 0.0;
        if (i0 + r < pa.tq) {
            x = q_in[q_base + (i0 + r) * pa.q_row + d];
        }
        tile_a[r * HS + d] = x;
    }
    let row = lid / 8u;
    let part = lid % 8u;
    let i = i0 + row;
    // keys visible to query i: j <= lim and j < tk
    let lim = pa.q_pos0 + i;
    let k_end = min(pa.tk, pa.q_pos0 + min(i0 + BQ, pa.tq));
    let n_tiles = (k_end + BK - 1u) / BK;
    var m = NEG;
    var l = 0.0;
    var acc: array<f32, 16>;
    for (var t = 0u; t < n_tiles; t = t + 1u) {
        let j0 = t * BK;
        // the previous tile is done with tile_b and tile_c (and the queries are staged)
        workgroupBarrier();
        for (var e = lid; e < BK * hd; e = e + 256u) {
            let r = e / hd;
            let d = e - r * hd;
            var x = 0.0;
            if (j0 + r < pa.tk) {
                x = k_in[k_base + (j0 + r) * pa.kv_row + d];
            }
            tile_b[r * HS + d] = x;
        }
        workgroupBarrier();
        var s0 = 0.0;
        var s1 = 0.0;
        let qo = row * HS;
        let ko0 = part * HS;
        let ko1 = (part + 8u) * HS;
        for (var d = 0u; d < hd; d = d + 1u) {
            let qv = tile_a[qo + d];
            s0 = fma(qv, tile_b[ko0 + d], s0);
            s1 = fma(qv, tile_b[ko1 + d], s1);
        }
        tile_c[row * SS + part] = pa.scale * s0;
        tile_c[row * SS + part + 8u] = pa.scale * s1;
        workgroupBarrier();
        for (var e = lid; e < BK * hd; e = e + 256u) {
            let r = e / hd;
            let d = e - r * hd;
            var x = 0.0;
            if (j0 + r < pa.tk) {
                x = v_in[v_base + (j0 + r) * pa.kv_row + d];
            }
            tile_b[r * HS + d] = x;
        }
        workgroupBarrier();
        var tmax = NEG;
        for (var jl = 0u; jl < BK; jl = jl + 1u) {
            let j = j0 + jl;
            if (j <= lim && j < pa.tk) {
                tmax = max(tmax, tile_c[row * SS + jl]);
            }
        }
        // key 0 is visible to every query, so m is finite after the first tile
        let m_new = max(m, tmax);
        let alpha = exp(m - m_new);
        l = l * alpha;
        for (var c = 0u; c < 16u; c = c + 1u) {
            acc[c] = acc[c] * alpha;
        }
        for (var jl = 0u; jl < BK; jl = jl + 1u) {
            let j = j0 + jl;
            var pj = 0.0;
            if (j <= lim && j < pa.tk) {
                pj = exp(tile_c[row * SS + jl] - m_new);
            }
            l = l + pj;
            let vo = jl * HS + part;
            for (var c = 0u; c < 16u; c = c + 1u) {
                if (part + 8u * c < hd) {
                    acc[c] = fma(pj, tile_b[vo + 8u * c], acc[c]);
                }
            }
        }
        m = m_new;
    }
    if (i < pa.tq) {
        let inv = 1.0 / l;
        let o = (b * pa.tq + i) * pa.nh * hd + h * hd + part;
        for (var c = 0u; c < 16u; c = c + 1u) {
            if (part + 8u * c < hd) {
                att_out[o + 8u * c] = acc[c] * inv;
            }
        }
        if (part == 0u) {
            att_lse[(b * pa.nh + h) * pa.tq + i] = m + log(l);
        }
    }
}

// ---- attention_bwd (three passes) ---------------------------------------------------------------

@group(0) @binding(1) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> fwd_out: array<f32>;
@group(0) @binding(4) var<storage, read> fwd_lse: array<f32>;
@group(0) @binding(5) var<storage, read> qkv: array<f32>;
// scratch [B, nh, t]: D_i = dout_i . out_i
@group(0) @binding(6) var<storage, read_write> delta: array<f32>;

// Pass 1: D_i for every (b, h, i), one invocation each (1-D grid over b nh t, index (b nh + h) t + i).
@compute @workgroup_size(256)
fn attention_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    let t = pa.tq;
    if (e >= pa.b * pa.nh * t) {
        return;
    }
    let i = e % t;
    let bh = e / t;
    let h = bh % pa.nh;
    let b = bh / pa.nh;
    let o = (b * t + i) * pa.nh * pa.hd + h * pa.hd;
    var s = 0.0;
    for (var d = 0u; d < pa.hd; d = d + 1u) {
        s = s + dout[o + d] * fwd_out[o + d];
    }
    delta[e] = s;
}

// Stages rows r0 .. r0 + count of head `head` at column offset `off` of qkv (zero past t) into
// `dst` at dst0 + r HS: used by both gradient passes (count * hd values, all invocations).
fn stage_qkv(which: u32, dst0: u32, base: u32, r0: u32, count: u32, off: u32, lid: u32) {
    let hd = pa.hd;
    for (var e = lid; e < count * hd; e = e + 256u) {
        let r = e / hd;
        let d = e - r * hd;
        var x = 0.0;
        if (r0 + r < pa.tq) {
            x = qkv[base + (r0 + r) * pa.q_row + off + d];
        }
        if (which == 0u) {
            tile_a[dst0 + r * HS + d] = x;
        } else {
            tile_b[dst0 + r * HS + d] = x;
        }
    }
}

// The same for rows of dout ([B, t, nh hd], head h).
fn stage_dout(which: u32, dst0: u32, b: u32, h: u32, r0: u32, count: u32, lid: u32) {
    let hd = pa.hd;
    for (var e = lid; e < count * hd; e = e + 256u) {
        let r = e / hd;
        let d = e - r * hd;
        var x = 0.0;
        if (r0 + r < pa.tq) {
            x = dout[(b * pa.tq + r0 + r) * pa.nh * hd + h * hd + d];
        }
        if (which == 0u) {
            tile_a[dst0 + r * HS + d] = x;
        } else {
            tile_b[dst0 + r * HS + d] = x;
        }
    }
}

// Pass 2: dq. Grid [ceil(t / BR), nh, b], 256 invocations; a workgroup owns BR queries of one
// (b, h) and loops over key tiles of BT up to its causal limit. tile_a: the BR query rows, then
// the BR dout rows; tile_b: BT key rows, then BT value rows; tile_c: p [BR x BT] (stride PS), then
// dout . v [BR x BT]. Scores: invocations 0..127 compute p of pair (lid / 8, lid % 8), 128..255
// dout . v of the same pair. Accumulation: invocation (lid / 16, part = lid % 16) owns dq dims
// part + 16c (c < 8) of its query.
@compute @workgroup_size(256)
fn attention_bwd_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let hd = pa.hd;
    let t = pa.tq;
    let h = wid.y;
    let b = wid.z;
    let kvh = h / (pa.nh / pa.nkv);
    let i0 = wid.x * BR;
    let base = b * t * pa.q_row;
    stage_qkv(0u, 0u, base, i0, BR, pa.q_off + h * hd, lid);
    stage_dout(0u, BR * HS, b, h, i0, BR, lid);
    let lse_row = (b * pa.nh + h) * t;
    // score role
    let e = lid % 128u;
    let si = e / BT;
    let sj = e % BT;
    let is_dp = lid >= 128u;
    let s_i = i0 + si;
    var lse_i = 0.0;
    if (s_i < t) {
        lse_i = fwd_lse[lse_row + s_i];
    }
    // accumulation role
    let ai = lid / 16u;
    let part = lid % 16u;
    var d_i = 0.0;
    if (i0 + ai < t) {
        d_i = delta[lse_row + i0 + ai];
    }
    var dq: array<f32, 8>;
    let n_tiles = (min(t, i0 + BR) + BT - 1u) / BT;
    for (var kt = 0u; kt < n_tiles; kt = kt + 1u) {
        let j0 = kt * BT;
        workgroupBarrier();
        stage_qkv(1u, 0u, base, j0, BT, pa.k_off + kvh * hd, lid);
        stage_qkv(1u, BT * HS, base, j0, BT, pa.v_off + kvh * hd, lid);
        workgroupBarrier();
        let j = j0 + sj;
        if (is_dp) {
            var s = 0.0;
            for (var d = 0u; d < hd; d = d + 1u) {
                s = fma(tile_a[(BR + si) * HS + d], tile_b[(BT + sj) * HS + d], s);
            }
            tile_c[BR * PS + si * PS + sj] = s;
        } else {
            var s = 0.0;
            for (var d = 0u; d < hd; d = d + 1u) {
                s = fma(tile_a[si * HS + d], tile_b[sj * HS + d], s);
            }
            var pij = 0.0;
            if (j <= s_i && s_i < t) {
                pij = exp(pa.scale * s - lse_i);
            }
            tile_c[si * PS + sj] = pij;
        }
        workgroupBarrier();
        for (var jl = 0u; jl < BT; jl = jl + 1u) {
            let ds = tile_c[ai * PS + jl] * (tile_c[BR * PS + ai * PS + jl] - d_i);
            let ko = jl * HS + part;
            for (var c = 0u; c < 8u; c = c + 1u) {
                if (part + 16u * c < hd) {
                    dq[c] = fma(ds, tile_b[ko + 16u * c], dq[c]);
                }
            }
        }
    }
    let i = i0 + ai;
    if (i < t) {
        let o = base + i * pa.q_row + pa.q_off + h * hd + part;
        for (var c = 0u; c < 8u; c = c + 1u) {
            if (part + 16u * c < hd) {
                dqkv[o + 16u * c] = pa.scale * dq[c];
            }
        }
    }
}

// Pass 3: dk and dv. Grid [ceil(t / BR), nkv, b], 256 invocations; a workgroup owns BR keys of
// one (b, key/value head) and loops over the query heads of its group and, for each, over query
// tiles of BT from its first key on. tile_a: the BR key rows, then the BR value rows; tile_b: BT
// query rows, then BT dout rows; tile_c: p [BR keys x BT queries] (stride PS), then dout . v, then
// the BT D_i. Scores: invocations 0..127 compute p of pair (key lid / 8, query lid % 8), 128..255
// dout . v. Accumulation: invocation (lid / 16, part = lid % 16) owns dims part + 16c (c < 8) of
// dk and dv of its key.
@compute @workgroup_size(256)
fn attention_bwd_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let hd = pa.hd;
    let t = pa.tq;
    let kvh = wid.y;
    let b = wid.z;
    let group = pa.nh / pa.nkv;
    let j0 = wid.x * BR;
    let base = b * t * pa.q_row;
    stage_qkv(0u, 0u, base, j0, BR, pa.k_off + kvh * hd, lid);
    stage_qkv(0u, BR * HS, base, j0, BR, pa.v_off + kvh * hd, lid);
    // score role
    let e = lid % 128u;
    let sj = e / BT;
    let si = e % BT;
    let is_dp = lid >= 128u;
    let s_j = j0 + sj;
    // accumulation role
    let aj = lid / 16u;
    let part = lid % 16u;
    var dk: array<f32, 8>;
    var dv: array<f32, 8>;
    let qt0 = j0 / BT;
    let n_qt = (t + BT - 1u) / BT;
    for (var hh = 0u; hh < group; hh = hh + 1u) {
        let h = kvh * group + hh;
        let lse_row = (b * pa.nh + h) * t;
        for (var qt = qt0; qt < n_qt; qt = qt + 1u) {
            let i0 = qt * BT;
            workgroupBarrier();
            stage_qkv(1u, 0u, base, i0, BT, pa.q_off + h * hd, lid);
            stage_dout(1u, BT * HS, b, h, i0, BT, lid);
            if (lid < BT) {
                var dd = 0.0;
                if (i0 + lid < t) {
                    dd = delta[lse_row + i0 + lid];
                }
                tile_c[2u * BR * PS + lid] = dd;
            }
            workgroupBarrier();
            let i = i0 + si;
            if (is_dp) {
                var s = 0.0;
                for (var d = 0u; d < hd; d = d + 1u) {
                    s = fma(tile_b[(BT + si) * HS + d], tile_a[(BR + sj) * HS + d], s);
                }
                tile_c[BR * PS + sj * PS + si] = s;
            } else {
                var s = 0.0;
                for (var d = 0u; d < hd; d = d + 1u) {
                    s = fma(tile_b[si * HS + d], tile_a[sj * HS + d], s);
                }
                var pij = 0.0;
                if (s_j <= i && i < t) {
                    pij = exp(pa.scale * s - fwd_lse[lse_row + i]);
                }
                tile_c[sj * PS + si] = pij;
            }
            workgroupBarrier();
            for (var il = 0u; il < BT; il = il + 1u) {
                let pij = tile_c[aj * PS + il];
                let ds = pij * (tile_c[BR * PS + aj * PS + il] - tile_c[2u * BR * PS + il]);
                let qo = il * HS + part;
                let go = (BT + il) * HS + part;
                for (var c = 0u; c < 8u; c = c + 1u) {
                    if (part + 16u * c < hd) {
                        dv[c] = fma(pij, tile_b[go + 16u * c], dv[c]);
                        dk[c] = fma(ds, tile_b[qo + 16u * c], dk[c]);
                    }
                }
            }
        }
    }
    let j = j0 + aj;
    if (j < t) {
        let ko = base + j * pa.q_row + pa.k_off + kvh * hd + part;
        let vo = base + j * pa.q_row + pa.v_off + kvh * hd + part;
        for (var c = 0u; c < 8u; c = c + 1u) {
            if (part + 16u * c < hd) {
                dqkv[ko + 16u * c] = pa.scale * dk[c];
                dqkv[vo + 16u * c] = dv[c];
            }
        }
    }
}

// ---- small-head variants (chosen by the launcher for hd <= SMALL_HD and t <= SMALL_T) ----------
// One invocation per query (forward, dq) or per key (dk/dv), 64 per workgroup, 1-D grids folded
// into x and y; no workgroup memory and no barriers. The invocation keeps its own head rows and
// accumulators in private arrays of SMALL_HD and loops over the keys (queries) it sees in order.
// The math is that of the tiled kernels; the forward takes two passes over the keys (the maximum
// score, then the exponentials and the output), so it needs no rescaling.
const SMALL_HD: u32 = 64u;

// Forward: invocation (b nh + h) tq + i.
@compute @workgroup_size(64)
fn attention_fwd_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 64u);
    if (e >= pa.b * pa.nh * pa.tq) {
        return;
    }
    let hd = pa.hd;
    let i = e % pa.tq;
    let bh = e / pa.tq;
    let h = bh % pa.nh;
    let b = bh / pa.nh;
    let kvh = h / (pa.nh / pa.nkv);
    let q_base = b * pa.q_batch + i * pa.q_row + pa.q_off + h * hd;
    let k_base = b * pa.kv_batch + pa.k_off + kvh * hd;
    let v_base = b * pa.kv_batch + pa.v_off + kvh * hd;
    var q: array<f32, 64>;
    var acc: array<f32, 64>;
    for (var d = 0u; d < hd; d = d + 1u) {
        q[d] = q_in[q_base + d];
        acc[d] = 0.0;
    }
    // keys visible to query i: j <= q_pos0 + i and j < tk (key 0 always)
    let n_keys = min(pa.tk, pa.q_pos0 + i + 1u);
    var m = NEG;
    for (var j = 0u; j < n_keys; j = j + 1u) {
        var s = 0.0;
        for (var d = 0u; d < hd; d = d + 1u) {
            s = fma(q[d], k_in[k_base + j * pa.kv_row + d], s);
        }
        m = max(m, pa.scale * s);
    }
    var l = 0.0;
    for (var j = 0u; j < n_keys; j = j + 1u) {
        var s = 0.0;
        for (var d = 0u; d < hd; d = d + 1u) {
            s = fma(q[d], k_in[k_base + j * pa.kv_row + d], s);
        }
        let pj = exp(pa.scale * s - m);
        l = l + pj;
        for (var d = 0u; d < hd; d = d + 1u) {
            acc[d] = fma(pj, v_in[v_base + j * pa.kv_row + d], acc[d]);
        }
    }
    let inv = 1.0 / l;
    let o = (b * pa.tq + i) * pa.nh * hd + h * hd;
    for (var d = 0u; d < hd; d = d + 1u) {
        att_out[o + d] = acc[d] * inv;
    }
    att_lse[e] = m + log(l);
}

// dq: invocation (b nh + h) t + i (after pass 1 has written D).
@compute @workgroup_size(64)
fn attention_bwd_dq_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 64u);
    let t = pa.tq;
    if (e >= pa.b * pa.nh * t) {
        return;
    }
    let hd = pa.hd;
    let i = e % t;
    let bh = e / t;
    let h = bh % pa.nh;
    let b = bh / pa.nh;
    let kvh = h / (pa.nh / pa.nkv);
    let base = b * t * pa.q_row;
    let qo = base + i * pa.q_row + pa.q_off + h * hd;
    let go = (b * t + i) * pa.nh * hd + h * hd;
    var q: array<f32, 64>;
    var g: array<f32, 64>;
    var dq: array<f32, 64>;
    for (var d = 0u; d < hd; d = d + 1u) {
        q[d] = qkv[qo + d];
        g[d] = dout[go + d];
        dq[d] = 0.0;
    }
    let lse_i = fwd_lse[e];
    let d_i = delta[e];
    for (var j = 0u; j <= i; j = j + 1u) {
        let ko = base + j * pa.q_row + pa.k_off + kvh * hd;
        let vo = base + j * pa.q_row + pa.v_off + kvh * hd;
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < hd; d = d + 1u) {
            s = fma(q[d], qkv[ko + d], s);
            dp = fma(g[d], qkv[vo + d], dp);
        }
        let ds = exp(pa.scale * s - lse_i) * (dp - d_i);
        for (var d = 0u; d < hd; d = d + 1u) {
            dq[d] = fma(ds, qkv[ko + d], dq[d]);
        }
    }
    for (var d = 0u; d < hd; d = d + 1u) {
        dqkv[qo + d] = pa.scale * dq[d];
    }
}

// dk, dv: invocation (b nkv + kvh) t + j, over the query heads of its group and queries i >= j.
@compute @workgroup_size(64)
fn attention_bwd_dkv_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 64u);
    let t = pa.tq;
    if (e >= pa.b * pa.nkv * t) {
        return;
    }
    let hd = pa.hd;
    let j = e % t;
    let bk = e / t;
    let kvh = bk % pa.nkv;
    let b = bk / pa.nkv;
    let group = pa.nh / pa.nkv;
    let base = b * t * pa.q_row;
    let ko = base + j * pa.q_row + pa.k_off + kvh * hd;
    let vo = base + j * pa.q_row + pa.v_off + kvh * hd;
    var k: array<f32, 64>;
    var v: array<f32, 64>;
    var dk: array<f32, 64>;
    var dv: array<f32, 64>;
    for (var d = 0u; d < hd; d = d + 1u) {
        k[d] = qkv[ko + d];
        v[d] = qkv[vo + d];
        dk[d] = 0.0;
        dv[d] = 0.0;
    }
    for (var hh = 0u; hh < group; hh = hh + 1u) {
        let h = kvh * group + hh;
        let row = (b * pa.nh + h) * t;
        for (var i = j; i < t; i = i + 1u) {
            let qo = base + i * pa.q_row + pa.q_off + h * hd;
            let go = (b * t + i) * pa.nh * hd + h * hd;
            var s = 0.0;
            var dp = 0.0;
            for (var d = 0u; d < hd; d = d + 1u) {
                s = fma(qkv[qo + d], k[d], s);
                dp = fma(dout[go + d], v[d], dp);
            }
            let pij = exp(pa.scale * s - fwd_lse[row + i]);
            let ds = pij * (dp - delta[row + i]);
            for (var d = 0u; d < hd; d = d + 1u) {
                dv[d] = fma(pij, dout[go + d], dv[d]);
                dk[d] = fma(ds, qkv[qo + d], dk[d]);
            }
        }
    }
    for (var d = 0u; d < hd; d = d + 1u) {
        dqkv[ko + d] = pa.scale * dk[d];
        dqkv[vo + d] = dv[d];
    }
}

// ---- kv_cache_write -----------------------------------------------------------------------------

@group(0) @binding(0) var<uniform> pkv: KvCacheParams;
@group(0) @binding(1) var<storage, read_write> kv_cache: array<f32>;
@group(0) @binding(2) var<storage, read> kv_src: array<f32>;

// One invocation per copied value (1-D grid over b t 2 nkv hd).
@compute @workgroup_size(256)
fn kv_cache_write(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    let kv = 2u * pkv.nkv * pkv.hd;
    if (e >= pkv.b * pkv.t * kv) {
        return;
    }
    let c = e % kv;
    let bi = e / kv;
    let i = bi % pkv.t;
    let b = bi / pkv.t;
    let q = pkv.nh * pkv.hd;
    kv_cache[(b * pkv.t_max + pkv.pos0 + i) * kv + c] = kv_src[bi * (q + kv) + q + c];
}

// ---- scatter_rows -------------------------------------------------------------------------------

@group(0) @binding(0) var<uniform> psc: ScatterParams;
@group(0) @binding(1) var<storage, read_write> sc_out: array<f32>;
@group(0) @binding(2) var<storage, read> sc_in: array<f32>;
@group(0) @binding(3) var<storage, read> sc_rows: array<i32>;

// One invocation per copied value (1-D grid over n width).
@compute @workgroup_size(256)
fn scatter_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg, 256u);
    if (e >= psc.n * psc.width) {
        return;
    }
    let i = e / psc.width;
    let j = e - i * psc.width;
    let r = sc_rows[i];
    if (r < 0 || u32(r) >= psc.dst_rows) {
        return;
    }
    sc_out[u32(r) * psc.dst_row + j] = sc_in[i * psc.src_row + psc.src_off + j];
}

// ---- attention_decode_fwd -----------------------------------------------------------------------

@group(0) @binding(0) var<uniform> pd: DecodeParams;
@group(0) @binding(1) var<storage, read_write> dec_out: array<f32>;
@group(0) @binding(2) var<storage, read_write> dec_lse: array<f32>;
@group(0) @binding(3) var<storage, read> dec_q: array<f32>;
@group(0) @binding(4) var<storage, read> dec_cache: array<f32>;
@group(0) @binding(5) var<storage, read> dec_rows: array<i32>;

// keys to attend to (pos + 1; 0 = row outside the cache) and the slot's first cache value
var<workgroup> dec_keys: u32;
var<workgroup> dec_base: u32;

// Grid [nh, n folded into y and z], 256 invocations. tile_b[0..hd]: the query; tile_c: the 256
// probabilities of a chunk of keys, then the partial outputs. Chunks of 256 keys: invocation lid
// scores key c0 + lid (a dot product over hd), the chunk max and sum come from wg_max / wg_sum,
// and the value sum is split over 256 / hd groups of hd invocations (group g takes keys
// g, g + groups, ... of the chunk; invocation (g, d) owns output dim d), combined at the end.
@compute @workgroup_size(256)
fn attention_decode_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let i = wid.y + wid.z * nwg.y;
    if (i >= pd.n) {
        return;
    }
    let hd = pd.hd;
    let kv_row = 2u * pd.nkv * hd;
    let kvh = h / (pd.nh / pd.nkv);
    if (lid == 0u) {
        let r = dec_rows[i];
        var keys = 0u;
        var base = 0u;
        if (r >= 0 && u32(r) < pd.slots * pd.t_max) {
            let slot = u32(r) / pd.t_max;
            keys = u32(r) - slot * pd.t_max + 1u;
            base = slot * pd.t_max * kv_row;
        }
        dec_keys = keys;
        dec_base = base;
    }
    let n_keys = workgroupUniformLoad(&dec_keys);
    if (n_keys == 0u) {
        return;
    }
    let base = dec_base;
    let k_base = base + kvh * hd;
    let v_base = base + (pd.nkv + kvh) * hd;
    if (lid < hd) {
        tile_b[lid] = dec_q[i * pd.q_row + pd.q_off + h * hd + lid];
    }
    workgroupBarrier();
    let groups = 256u / hd;
    let g = lid / hd;
    let d = lid - g * hd;
    var m = NEG;
    var l = 0.0;
    var acc = 0.0;
    for (var c0 = 0u; c0 < n_keys; c0 = c0 + 256u) {
        let j = c0 + lid;
        var s = NEG;
        if (j < n_keys) {
            var dot = 0.0;
            let ko = k_base + j * kv_row;
            for (var dd = 0u; dd < hd; dd = dd + 1u) {
                dot = fma(tile_b[dd], dec_cache[ko + dd], dot);
            }
            s = pd.scale * dot;
        }
        let m_new = max(m, wg_max(s, lid));
        let alpha = exp(m - m_new);
        var pj = 0.0;
        if (j < n_keys) {
            pj = exp(s - m_new);
        }
        l = l * alpha + wg_sum(pj, lid);
        tile_c[lid] = pj;
        workgroupBarrier();
        acc = acc * alpha;
        if (g < groups) {
            let cnt = min(256u, n_keys - c0);
            for (var jj = g; jj < cnt; jj = jj + groups) {
                acc = fma(tile_c[jj], dec_cache[v_base + (c0 + jj) * kv_row + d], acc);
            }
        }
        workgroupBarrier();
        m = m_new;
    }
    tile_c[lid] = acc;
    workgroupBarrier();
    if (lid < hd) {
        var o = 0.0;
        for (var gg = 0u; gg < groups; gg = gg + 1u) {
            o = o + tile_c[gg * hd + lid];
        }
        dec_out[i * pd.nh * hd + h * hd + lid] = o * (1.0 / l);
    }
    if (lid == 0u) {
        dec_lse[i * pd.nh + h] = m + log(l);
    }
}

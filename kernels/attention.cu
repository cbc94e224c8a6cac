// Causal scaled-dot-product attention with grouped-query heads (AttentionParams), flash style:
// online softmax over key tiles, no [T, T] matrix in global memory, the probabilities recomputed
// in backward from the saved log-sum-exp.
// Forward, sequence b, query head h (key/value head h / (nh / nkv)), query i at q_pos0 + i:
//   s_j = scale q_i . k_j for j <= q_pos0 + i (< tk), lse_i = logsumexp_j s_j,
//   out_i = sum_j exp(s_j - lse_i) v_j.  Output [B, tq, nh hd]; saved: lse [B, nh, tq].
// Backward (training layout: tq = tk = T, q_pos0 = 0, q/k/v in one fused qkv buffer), with
//   p_ij = exp(s_ij - lse_i), D_i = dout_i . out_i, ds_ij = p_ij (dout_i . v_j - D_i):
//   dq_i = scale sum_j ds_ij k_j, dk_j = scale sum_i ds_ij q_i, dv_j = sum_i p_ij dout_i,
//   dk/dv summed over the query heads sharing a key/value head; dqkv is overwritten.
//
// Work split: a warp owns one query (forward, dq) or one key (dk/dv); its lanes split the 32 rows
// of a shared-memory tile to compute 32 scores at once (lane l: row l of the tile), and split the
// head dimension (lane l: elements l, l + 32, ..., at most ATT_HD_REG per lane, so hd <= 128) to
// accumulate outputs, the scores broadcast with __shfl_sync. Tiles are padded to hd + 1 floats
// per row so that the 32 lanes reading 32 rows hit 32 banks. Every output element has one writer
// and a fixed summation order: no atomics, deterministic.
//
// Storage: every kernel is a template over the type T of q/k/v/out/dout/dqkv/cache, entries NAME
// (f32) and NAME_bf16; lse and the delta scratch are f32, tiles in shared memory are f32 (bf16
// widened on load), every sum is f32 and outputs are rounded once on store.
//
// Launch configurations (block 256 = ATT_WARPS warps; dynamic shared memory in floats):
//   attention_fwd:        grid (ceil(tq / 8), nh, b); 32 (hd + 1) + 32 hd + 8 hd.
//   attention_bwd_delta:  grid ceil(b tq nh / 8); D [b, nh, tq] into the scratch `delta`.
//   attention_bwd (dq):   grid (ceil(T / 8), nh, b); 2 x 32 (hd + 1) + 2 x 8 hd.
//   attention_bwd_dkv:    grid (ceil(T / 8), nkv, b); 2 x 32 (hd + 1) + 2 x 8 hd + 64.
//   attention_decode_fwd: grid (n, ceil(W / 4), max(chunks, 1)), block 128; 16 hd. One warp per
//                         (row, key/value head, H = 1, 2 or 4 of its query heads), W such warps per
//                         row; keys and values read straight from the slot cache, once for the H
//                         heads. Past t_max = 256, flash-decoding: grid z over chunks of 256 keys,
//                         each writing (o, m, l) to a scratch, merged by attention_decode_merge
//                         (below). The SIMT forward merges its rows' chunks at the same boundaries.
//   kv_cache_write:       1-D over b t 2 nkv hd, block 256.  scatter_rows: 1-D over n width.
// Tensor cores (bf16 storage, hd = 64 or 128, 16-byte aligned rows; RLHF_CUDA_ATTENTION=simt
// keeps the kernels above), key tiles of BC = 64 (hd 64) or 32 (hd 128) keys, shared rows of
// hd + 8 bf16 (see "Tensor cores" below):
//   attention_fwd_mma{64,128}_bf16:    grid (ceil(tq / 64), nh, b), block 128 (16 query rows per
//                                      warp); two cp.async stages of K and V tiles, 2 x 2 BC (hd + 8)
//                                      bf16 (36 KiB / 34 KiB); key tiles past the block's last
//                                      visible key are skipped, and per warp those it cannot see.
//   attention_decode_mma{64,128}_bf16: grid (n, nkv, ceil(G / 16)), G = nh / nkv, block 32: one
//                                      warp per cache row and key/value head, its mma rows the
//                                      group's query heads; one stage, 2 BC (hd + 8) bf16.
//   attention_decode_split_mma{64,128}_bf16 + attention_decode_merge[_bf16] (t_max > 256,
//                                      flash-decoding): grid z also over the chunks of 256 keys,
//                                      each block writing its chunk's (o, m, l) to a scratch of
//                                      n nh chunks (hd + 2) floats; the merge, one warp per
//                                      (row, head), grid ceil(n nh / 8), block 256. The forward
//                                      merges its rows' chunks at the same boundaries.
//   attention_bwd_dq_mma{64,128}_bf16: grid (ceil(T / 64), nh, b), block 128 (16 query rows per
//                                      warp); max(128, 2 BC) rows of hd + 8 bf16 (Q and dO first).
//   attention_bwd_dkv_mma{64,128}_bf16: grid (ceil(T / KB), nkv, b), KB = 64 (hd 64) or 32 keys,
//                                      block 2 KB threads (16 keys per warp); K, V of the block and
//                                      a Q and a dO tile of BQ = 64 (hd 64) or 16 queries.
#include "common.cuh"

#define ATT_WARPS 8
#define ATT_KT 32
#define ATT_HD_REG 4

// Keys per chunk: the forwards (SIMT and tensor cores) close the online softmax every ATT_SPLIT
// keys and merge the chunk into the running result, exactly as the split decode merges its
// blocks' partials (attention_decode_merge), so a long-context decode split over blocks keeps the
// forward's bits. A row of at most ATT_SPLIT keys is one chunk merged into an empty state, which
// changes no bit (e^-inf = 0, e^0 = 1).
#define ATT_SPLIT 256

// The merge of two partial softmax states of one row, element by element (the forward's rows and
// attention_decode_merge run these same operations): M = max(m1, m2), a = e^(m - M),
// l = l1 a1 + l2 a2, o = o1 a1 + o2 a2.
struct MergeWeights { float m, a1, a2; };
__device__ __forceinline__ MergeWeights merge_weights(float m1, float m2) {
    const float m = fmaxf(m1, m2), base = m == NEG_INF ? 0.0f : m;
    return MergeWeights{m, __expf(m1 - base), __expf(m2 - base)};
}
__device__ __forceinline__ float merge_value(float x1, float x2, MergeWeights w) { return fmaf(x1, w.a1, x2 * w.a2); }

// The SIMT rows' merge: the chunk (m, l, acc) into the running (M, L, ACC), then the chunk reset.
__device__ __forceinline__ void merge_chunk(float& M, float& L, float* ACC, float& m, float& l, float* acc) {
    const MergeWeights w = merge_weights(M, m);
    L = merge_value(L, l, w);
    M = w.m;
#pragma unroll
    for (int r = 0; r < ATT_HD_REG; r++) ACC[r] = merge_value(ACC[r], acc[r], w), acc[r] = 0.0f;
    m = NEG_INF, l = 0.0f;
}

template <typename T>
__device__ __forceinline__ float dot_row(const float* __restrict__ a, const T* __restrict__ b, u32 hd) {
    float s = 0.0f;
    for (u32 d = 0; d < hd; d++) s = fmaf(a[d], ld(b, d), s);
    return s;
}

// rows j0 .. j0 + ATT_KT of a strided operand (row r at src + r * src_row) into a shared tile with
// `stride` floats per row; rows at or past `last` are zero. The whole block takes part.
template <typename T>
__device__ __forceinline__ void load_tile(float* __restrict__ dst, u32 stride, const T* __restrict__ src, unsigned long long src_row, u32 j0, u32 last,
                                          u32 hd) {
    for (u32 e = threadIdx.x; e < ATT_KT * hd; e += blockDim.x) {
        const u32 r = e / hd, d = e % hd, j = j0 + r;
        dst[r * stride + d] = j < last ? ld(src, (unsigned long long)j * src_row + d) : 0.0f;
    }
}

// One online-softmax step of a warp over 32 keys (lane l holds score s of key l, NEG_INF when the
// key is not visible): updates the running max m and sum l, rescales acc, returns e^(s - m).
__device__ __forceinline__ float softmax_step(float s, bool visible, float& m, float& l, float* acc) {
    const float m_new = fmaxf(m, warp_max(s));
    const float e = visible ? __expf(s - m_new) : 0.0f;
    const float corr = __expf(m - m_new);
    l = l * corr + warp_sum(e);
#pragma unroll
    for (int r = 0; r < ATT_HD_REG; r++) acc[r] *= corr;
    m = m_new;
    return e;
}

// acc[d] += sum_{jj < nj} e_jj v_jj[d] for the lane's elements d = lane + 32 r, with e_jj the
// weight held by lane jj and v_jj = v + jj * v_row (in key order: a fixed FMA chain per element).
template <typename T>
__device__ __forceinline__ void accumulate_rows(float* acc, float e, const T* __restrict__ v, unsigned long long v_row, u32 nj, u32 lane, u32 hd) {
    for (u32 jj = 0; jj < nj; jj++) {
        const float pj = __shfl_sync(FULL_MASK, e, jj);
#pragma unroll
        for (int r = 0; r < ATT_HD_REG; r++) {
            const u32 d = lane + 32 * r;
            if (d < hd) acc[r] = fmaf(pj, ld(v, jj * v_row + d), acc[r]);
        }
    }
}

// out[d] = acc[d] * scale for the lane's elements
template <typename T>
__device__ __forceinline__ void store_row(T* __restrict__ out, const float* acc, float scale, u32 lane, u32 hd) {
#pragma unroll
    for (int r = 0; r < ATT_HD_REG; r++) {
        const u32 d = lane + 32 * r;
        if (d < hd) st(out, d, acc[r] * scale);
    }
}

template <typename T>
__device__ __forceinline__ void attention_fwd_t(T* __restrict__ out, float* __restrict__ lse, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                                AttentionParams p) {
    extern __shared__ float sm[];
    const u32 hd = p.hd, hp = hd + 1, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float* Ks = sm;
    float* Vs = Ks + ATT_KT * hp;
    float* Qs = Vs + ATT_KT * hd + warp * hd;
    const u32 b = blockIdx.z, h = blockIdx.y, kvh = h / (p.nh / p.nkv);
    const u32 i0 = blockIdx.x * ATT_WARPS, i = i0 + warp;
    const bool active = i < p.tq;
    if (active) {
        const T* qrow = q + (unsigned long long)b * p.q_batch + (unsigned long long)i * p.q_row + p.q_off + h * hd;
        for (u32 d = lane; d < hd; d += 32) Qs[d] = ld(qrow, d);
    }
    const u32 visible = active ? min(p.q_pos0 + i + 1, p.tk) : 0;
    const u32 last = min(p.q_pos0 + min(i0 + ATT_WARPS, p.tq), p.tk);
    const T* kb = k + (unsigned long long)b * p.kv_batch + p.k_off + kvh * hd;
    const T* vb = v + (unsigned long long)b * p.kv_batch + p.v_off + kvh * hd;
    // the current chunk of ATT_SPLIT keys (m, l, acc) and the merged chunks before it (M, L, ACC)
    float m = NEG_INF, l = 0.0f, acc[ATT_HD_REG], M = NEG_INF, L = 0.0f, ACC[ATT_HD_REG];
#pragma unroll
    for (int r = 0; r < ATT_HD_REG; r++) acc[r] = ACC[r] = 0.0f;
    for (u32 j0 = 0; j0 < last; j0 += ATT_KT) {
        __syncthreads();
        load_tile(Ks, hp, kb, p.kv_row, j0, last, hd);
        load_tile(Vs, hd, vb, p.kv_row, j0, last, hd);
        __syncthreads();
        if (j0 >= visible) continue;  // warp-uniform
        if (j0 > 0 && j0 % ATT_SPLIT == 0) merge_chunk(M, L, ACC, m, l, acc);
        const u32 j = j0 + lane;
        const float s = j < visible ? p.scale * dot_row(Qs, Ks + lane * hp, hd) : NEG_INF;
        const float e = softmax_step(s, j < visible, m, l, acc);
        accumulate_rows(acc, e, Vs, hd, min((u32)ATT_KT, visible - j0), lane, hd);
    }
    if (!active) return;
    merge_chunk(M, L, ACC, m, l, acc);
    store_row(out + ((unsigned long long)b * p.tq + i) * p.nh * hd + h * hd, ACC, 1.0f / L, lane, hd);
    if (lane == 0) lse[((unsigned long long)b * p.nh + h) * p.tq + i] = M + logf(L);
}

// D [b, nh, T] = dout . out per (sequence, query, head); one warp each.
template <typename T>
__device__ __forceinline__ void attention_bwd_delta_t(float* __restrict__ delta, const T* __restrict__ dout, const T* __restrict__ out, AttentionParams p) {
    const unsigned long long w = ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const u32 lane = threadIdx.x & 31, hd = p.hd;
    if (w >= (unsigned long long)p.b * p.tq * p.nh) return;
    const u32 h = w % p.nh;
    const unsigned long long bi = w / p.nh;  // b * tq + i
    const u32 i = bi % p.tq, b = bi / p.tq;
    const T* g = dout + bi * p.nh * hd + h * hd;
    const T* o = out + bi * p.nh * hd + h * hd;
    float s = 0.0f;
    for (u32 d = lane; d < hd; d += 32) s = fmaf(ld(g, d), ld(o, d), s);
    s = warp_sum(s);
    if (lane == 0) delta[((unsigned long long)b * p.nh + h) * p.tq + i] = s;
}

// dq: one warp per query, key tiles in shared memory.
template <typename T>
__device__ __forceinline__ void attention_bwd_t(T* __restrict__ dqkv, const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                                                const T* __restrict__ qkv, AttentionParams p) {
    extern __shared__ float sm[];
    const u32 hd = p.hd, hp = hd + 1, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, t = p.tq;
    float* Ks = sm;
    float* Vs = Ks + ATT_KT * hp;
    float* Qs = Vs + ATT_KT * hp + warp * hd;
    float* Gs = Vs + ATT_KT * hp + ATT_WARPS * hd + warp * hd;
    const u32 b = blockIdx.z, h = blockIdx.y, kvh = h / (p.nh / p.nkv);
    const u32 i0 = blockIdx.x * ATT_WARPS, i = i0 + warp;
    const bool active = i < t;
    const unsigned long long base = (unsigned long long)b * p.q_batch;
    float l_i = 0.0f, d_i = 0.0f;
    if (active) {
        const T* qrow = qkv + base + (unsigned long long)i * p.q_row + p.q_off + h * hd;
        const T* grow = dout + ((unsigned long long)b * t + i) * p.nh * hd + h * hd;
        for (u32 d = lane; d < hd; d += 32) {
            Qs[d] = ld(qrow, d);
            Gs[d] = ld(grow, d);
        }
        l_i = lse[((unsigned long long)b * p.nh + h) * t + i];
        d_i = delta[((unsigned long long)b * p.nh + h) * t + i];
    }
    const u32 visible = active ? i + 1 : 0;
    const u32 last = min(i0 + ATT_WARPS, t);
    const T* kb = qkv + base + p.k_off + kvh * hd;
    const T* vb = qkv + base + p.v_off + kvh * hd;
    float acc[ATT_HD_REG];
#pragma unroll
    for (int r = 0; r < ATT_HD_REG; r++) acc[r] = 0.0f;
    for (u32 j0 = 0; j0 < last; j0 += ATT_KT) {
        __syncthreads();
        load_tile(Ks, hp, kb, p.q_row, j0, last, hd);
        load_tile(Vs, hp, vb, p.q_row, j0, last, hd);
        __syncthreads();
        if (j0 >= visible) continue;
        const u32 j = j0 + lane;
        float ds = 0.0f;
        if (j < visible) {
            const float pr = __expf(p.scale * dot_row(Qs, Ks + lane * hp, hd) - l_i);
            ds = pr * (dot_row(Gs, Vs + lane * hp, hd) - d_i);
        }
        accumulate_rows(acc, ds, Ks, hp, min((u32)ATT_KT, visible - j0), lane, hd);
    }
    if (!active) return;
    store_row(dqkv + base + (unsigned long long)i * p.q_row + p.q_off + h * hd, acc, p.scale, lane, hd);
}

// dk, dv: one warp per key, query tiles (of every query head of the group) in shared memory.
template <typename T>
__device__ __forceinline__ void attention_bwd_dkv_t(T* __restrict__ dqkv, const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                                                    const T* __restrict__ qkv, AttentionParams p) {
    extern __shared__ float sm[];
    const u32 hd = p.hd, hp = hd + 1, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, t = p.tq;
    float* Qs = sm;
    float* Gs = Qs + ATT_KT * hp;
    float* ks = Gs + ATT_KT * hp + warp * hd;
    float* vs = Gs + ATT_KT * hp + ATT_WARPS * hd + warp * hd;
    float* Ls = Gs + ATT_KT * hp + 2 * ATT_WARPS * hd;
    float* Ds = Ls + ATT_KT;
    const u32 b = blockIdx.z, kvh = blockIdx.y, group = p.nh / p.nkv;
    const u32 j_first = blockIdx.x * ATT_WARPS, j = j_first + warp;
    const bool active = j < t;
    const unsigned long long base = (unsigned long long)b * p.q_batch;
    if (active) {
        const T* krow = qkv + base + (unsigned long long)j * p.q_row + p.k_off + kvh * hd;
        const T* vrow = qkv + base + (unsigned long long)j * p.q_row + p.v_off + kvh * hd;
        for (u32 d = lane; d < hd; d += 32) {
            ks[d] = ld(krow, d);
            vs[d] = ld(vrow, d);
        }
    }
    float dk[ATT_HD_REG], dv[ATT_HD_REG];
#pragma unroll
    for (int r = 0; r < ATT_HD_REG; r++) dk[r] = dv[r] = 0.0f;
    for (u32 h = kvh * group; h < (kvh + 1) * group; h++) {
        for (u32 i0 = j_first; i0 < t; i0 += ATT_KT) {
            __syncthreads();
            load_tile(Qs, hp, qkv + base + p.q_off + h * hd, p.q_row, i0, t, hd);
            load_tile(Gs, hp, dout + (unsigned long long)b * t * p.nh * hd + h * hd, (unsigned long long)p.nh * hd, i0, t, hd);
            if (threadIdx.x < ATT_KT) {
                const u32 i = i0 + threadIdx.x;
                const unsigned long long at = ((unsigned long long)b * p.nh + h) * t + i;
                Ls[threadIdx.x] = i < t ? lse[at] : 0.0f;
                Ds[threadIdx.x] = i < t ? delta[at] : 0.0f;
            }
            __syncthreads();
            if (!active || i0 + ATT_KT <= j) continue;  // warp-uniform: no query of the tile sees key j
            const u32 i = i0 + lane;
            float pr = 0.0f, ds = 0.0f;
            if (i < t && i >= j) {
                pr = __expf(p.scale * dot_row(Qs + lane * hp, ks, hd) - Ls[lane]);
                ds = pr * (dot_row(Gs + lane * hp, vs, hd) - Ds[lane]);
            }
            const u32 ni = min((u32)ATT_KT, t - i0);
            for (u32 ii = 0; ii < ni; ii++) {
                const float a = __shfl_sync(FULL_MASK, pr, ii), c = __shfl_sync(FULL_MASK, ds, ii);
#pragma unroll
                for (int r = 0; r < ATT_HD_REG; r++) {
                    const u32 d = lane + 32 * r;
                    if (d < hd) {
                        dv[r] = fmaf(a, Gs[ii * hp + d], dv[r]);
                        dk[r] = fmaf(c, Qs[ii * hp + d], dk[r]);
                    }
                }
            }
        }
    }
    if (!active) return;
    T* dkr = dqkv + base + (unsigned long long)j * p.q_row + p.k_off + kvh * hd;
    T* dvr = dqkv + base + (unsigned long long)j * p.q_row + p.v_off + kvh * hd;
#pragma unroll
    for (int r = 0; r < ATT_HD_REG; r++) {
        const u32 d = lane + 32 * r;
        if (d < hd) {
            st(dkr, d, p.scale * dk[r]);
            st(dvr, d, dv[r]);
        }
    }
}

template <typename T>
__device__ __forceinline__ void kv_cache_write_t(T* __restrict__ cache, const T* __restrict__ qkv, KvCacheParams p) {
    const u32 kv = 2 * p.nkv * p.hd, row = p.nh * p.hd + kv, qw = p.nh * p.hd;
    const unsigned long long total = (unsigned long long)p.b * p.t * kv;
    for (unsigned long long e = gtid(); e < total; e += gstride()) {
        const u32 c = e % kv;
        const unsigned long long bi = e / kv;  // b * t + i
        const u32 i = bi % p.t, b = bi / p.t;
        cache[((unsigned long long)b * p.t_max + p.pos0 + i) * kv + c] = qkv[bi * row + qw + c];
    }
}

template <typename T>
__device__ __forceinline__ void scatter_rows_t(T* __restrict__ out, const T* __restrict__ inp, const int* __restrict__ rows, ScatterParams p) {
    const unsigned long long total = (unsigned long long)p.n * p.width;
    for (unsigned long long e = gtid(); e < total; e += gstride()) {
        const u32 c = e % p.width;
        const unsigned long long i = e / p.width;
        const int r = rows[i];
        if (r < 0 || (u32)r >= p.dst_rows) continue;  // the host checks rows on upload paths; never write out of bounds
        out[(unsigned long long)r * p.dst_row + c] = inp[i * p.src_row + p.src_off + c];
    }
}

// One warp per (cache row i, key/value head kvh, H of its G = nh / nkv query heads: kvh G + H y
// + hh for hh < min(H, G - H y)): the query's slot s = rows[i] / t_max, position
// pos = rows[i] % t_max, keys 0 ..= pos of slot s; 32 keys per step (lane l: key j0 + l), each
// key and value element read once for the warp's H heads. Every head's arithmetic is the SIMT
// forward's (dot_row's FMA chain, softmax_step, accumulate_rows' key order, chunks of ATT_SPLIT
// keys), so decode and training rows keep equal bits. H = 1, 2 or 4 (dec_heads). chunks = 0: the
// whole context, out and lse written; chunks > 0 (t_max > ATT_SPLIT, flash-decoding): grid z is
// the chunk c, keys [c ATT_SPLIT, (c + 1) ATT_SPLIT), and the chunk's unnormalised state goes to
// partial[(i nh + h) chunks + c] = (o[hd], m, l) for attention_decode_merge.
template <typename T, int H>
__device__ __forceinline__ void attention_decode_rows(T* __restrict__ out, float* __restrict__ lse, float* __restrict__ partial, const T* __restrict__ q,
                                                      const T* __restrict__ cache, AttentionDecodeParams p, u32 chunks, u32 i, u32 slot, u32 pos, u32 kvh, u32 h0,
                                                      u32 nheads, float* Qs) {
    const u32 hd = p.hd, lane = threadIdx.x & 31, kv_row = 2 * p.nkv * hd;
    const T* qrow = q + (unsigned long long)i * p.q_row + p.q_off;
#pragma unroll
    for (int hh = 0; hh < H; hh++)
        for (u32 d = lane; d < hd; d += 32) Qs[hh * hd + d] = (u32)hh < nheads ? ld(qrow, (h0 + hh) * hd + d) : 0.0f;
    __syncwarp();
    const T* kb = cache + (unsigned long long)slot * p.t_max * kv_row + kvh * hd;
    const T* vb = cache + (unsigned long long)slot * p.t_max * kv_row + (p.nkv + kvh) * hd;
    const u32 chunk = chunks ? blockIdx.z : 0, key0 = chunk * ATT_SPLIT;
    if (key0 > pos) return;  // warp-uniform: the chunk is past the row's keys
    const u32 visible = chunks ? min(pos + 1, key0 + ATT_SPLIT) : pos + 1;
    float m[H], l[H], acc[H][ATT_HD_REG];
#pragma unroll
    for (int hh = 0; hh < H; hh++) {
        m[hh] = NEG_INF, l[hh] = 0.0f;
#pragma unroll
        for (int r = 0; r < ATT_HD_REG; r++) acc[hh][r] = 0.0f;
    }
    for (u32 j0 = key0; j0 < visible; j0 += 32) {
        const u32 j = j0 + lane;
        const bool vis = j < visible;
        float s[H];
#pragma unroll
        for (int hh = 0; hh < H; hh++) s[hh] = 0.0f;
        if (vis) {
            const T* krow = kb + (unsigned long long)j * kv_row;
            for (u32 d = 0; d < hd; d++) {
                const float kd = ld(krow, d);
#pragma unroll
                for (int hh = 0; hh < H; hh++) s[hh] = fmaf(Qs[hh * hd + d], kd, s[hh]);
            }
        }
        float e[H];
#pragma unroll
        for (int hh = 0; hh < H; hh++) e[hh] = softmax_step(vis ? p.scale * s[hh] : NEG_INF, vis, m[hh], l[hh], acc[hh]);
        const u32 nj = min(32u, visible - j0);
        for (u32 jj = 0; jj < nj; jj++) {
            float pj[H];
#pragma unroll
            for (int hh = 0; hh < H; hh++) pj[hh] = __shfl_sync(FULL_MASK, e[hh], jj);
            const T* vrow = vb + (unsigned long long)(j0 + jj) * kv_row;
#pragma unroll
            for (int r = 0; r < ATT_HD_REG; r++) {
                const u32 d = lane + 32 * r;
                if (d >= hd) continue;
                const float vd = ld(vrow, d);
#pragma unroll
                for (int hh = 0; hh < H; hh++) acc[hh][r] = fmaf(pj[hh], vd, acc[hh][r]);
            }
        }
    }
#pragma unroll
    for (int hh = 0; hh < H; hh++) {
        if ((u32)hh >= nheads) continue;
        const u32 h = h0 + hh;
        if (!chunks) {
            store_row(out + (unsigned long long)i * p.nh * hd + h * hd, acc[hh], 1.0f / l[hh], lane, hd);
            if (lane == 0) lse[(unsigned long long)i * p.nh + h] = m[hh] + logf(l[hh]);
            continue;
        }
        float* dst = partial + (((unsigned long long)i * p.nh + h) * chunks + chunk) * (hd + 2);
#pragma unroll
        for (int r = 0; r < ATT_HD_REG; r++) {
            const u32 d = lane + 32 * r;
            if (d < hd) dst[d] = acc[hh][r];
        }
        if (lane == 0) dst[hd] = m[hh], dst[hd + 1] = l[hh];
    }
}

// Query heads per warp of the SIMT decode for G query heads per key/value head (the launcher's
// dec_heads): 1, 2, else 4.
__device__ __forceinline__ u32 dec_heads(u32 g) { return g <= 2u ? g : 4u; }
#define DEC_WARPS 4

// Grid (n, ceil(nkv ceil(G / H) / DEC_WARPS), max(chunks, 1)), block 32 DEC_WARPS; shared memory
// DEC_WARPS 4 hd floats (each warp's queries).
template <typename T>
__device__ __forceinline__ void attention_decode_fwd_t(T* __restrict__ out, float* __restrict__ lse, float* __restrict__ partial, const T* __restrict__ q,
                                                       const T* __restrict__ cache, const int* __restrict__ rows, AttentionDecodeParams p, u32 chunks) {
    extern __shared__ float sm[];
    const u32 warp = threadIdx.x >> 5, G = p.nh / p.nkv, H = dec_heads(G), groups = (G + H - 1) / H;
    const u32 i = blockIdx.x, wg = blockIdx.y * DEC_WARPS + warp;
    if (i >= p.n || wg >= p.nkv * groups) return;  // warp-uniform; no block-wide barriers below
    const int row = rows[i];
    if (row < 0 || (u32)row >= p.slots * p.t_max) return;
    const u32 slot = row / p.t_max, pos = row % p.t_max, kvh = wg / groups, y = wg % groups, h0 = kvh * G + y * H;
    const u32 nheads = min(H, G - y * H);
    float* Qs = sm + warp * 4 * p.hd;
    switch (H) {
        case 1: attention_decode_rows<T, 1>(out, lse, partial, q, cache, p, chunks, i, slot, pos, kvh, h0, nheads, Qs); break;
        case 2: attention_decode_rows<T, 2>(out, lse, partial, q, cache, p, chunks, i, slot, pos, kvh, h0, nheads, Qs); break;
        default: attention_decode_rows<T, 4>(out, lse, partial, q, cache, p, chunks, i, slot, pos, kvh, h0, nheads, Qs); break;
    }
}

// ---- Tensor cores (bf16 storage, head dimension HD = 64 or 128): FlashAttention-2's forward.
// A warp owns 16 query rows; per key tile of MMA_BC keys it computes S = Q K^T with mma (Q's
// fragments held in registers, K's by ldmatrix from shared memory), the online softmax on the
// accumulator fragments (each lane holds 2 rows x 2 columns per 8-key group; row max and sum over
// the 4 lanes of a row by __shfl_xor_sync 1, 2), then O += P V with P rounded to bf16 straight from
// the S fragments into A fragments and V's by ldmatrix .trans. The decode kernel runs the same
// per-row arithmetic (mma_row_tile) over the slot cache, with the query heads of one key/value
// group as the 16 rows, so rollout and training outputs keep equal bits.
#define MMA_BR 64  // query rows per block (4 warps x 16)
template <int HD> struct MmaTile {
    static constexpr int BC = HD == 64 ? 64 : 32;  // keys per tile
    static constexpr int STRIDE = HD + 8;          // bf16 per shared row: 16-byte aligned, ldmatrix without bank conflicts
    static constexpr int KV = 2 * BC * STRIDE;     // one stage: K and V tiles
};

__device__ __forceinline__ u32 pack_bf16(float lo, float hi) { return (u32)bf16_bits(lo) | ((u32)bf16_bits(hi) << 16); }

// rows [0, rows) of a tile from `src` (row r at src + r * row, HD bf16 each) into shared rows of
// STRIDE by cp.async; rows at or past `valid` are zeros. `who` / `count`: this thread among those copying.
template <int HD>
__device__ __forceinline__ void mma_stage_rows(bf16* dst, const bf16* __restrict__ src, unsigned long long row, u32 rows, u32 valid, u32 who, u32 count) {
    constexpr int CH = HD / 8;  // 16-byte chunks per row
    for (u32 c = who; c < rows * CH; c += count) {
        const u32 r = c / CH, x = c % CH;
        const bool ok = r < valid;
        cp_async16(dst + r * MmaTile<HD>::STRIDE + 8 * x, src + (ok ? (unsigned long long)r * row + 8 * x : 0), ok);
    }
}

// The running state of a warp's 16 rows: row g (index 0) and g + 8 (index 1) of lane (g, t).
template <int HD> struct MmaRows {
    float m[2], l[2], o[HD / 8][4];
};

// A fragments of a warp's 16 rows (shared rows of STRIDE from `As`) over the head dimension.
template <int HD>
__device__ __forceinline__ void mma_load_a(u32 (*af)[4], const bf16* As) {
    const u32 l = threadIdx.x & 31;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) ldmatrix_x4(af[kk], As + ((l & 7) + ((l >> 3) & 1) * 8) * MmaTile<HD>::STRIDE + kk * 16 + (l >> 4) * 8);
}

// s = A B^T for the warp's 16 rows: A as fragments af over the head dimension, B the NT x 8
// shared rows of Bs (row c: column c of s); k-steps in order.
template <int HD, int NT>
__device__ __forceinline__ void mma_abt(float (*s)[4], const u32 (*af)[4], const bf16* Bs) {
    constexpr int S = MmaTile<HD>::STRIDE;
    const u32 l = threadIdx.x & 31;
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
        for (int i = 0; i < 4; i++) s[n][i] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk += 2) {
#pragma unroll
        for (int n = 0; n < NT; n++) {
            u32 b[4];  // k-steps kk (b[0], b[1]) and kk + 1 (b[2], b[3])
            ldmatrix_x4(b, Bs + (n * 8 + (l & 7)) * S + kk * 16 + (l >> 3) * 8);
            mma_bf16_16816(s[n], af[kk], b, s[n]);
            mma_bf16_16816(s[n], af[kk + 1], b + 2, s[n]);
        }
    }
}

// mma_abt with A read from shared rows As (16 of STRIDE) two k-steps at a time, not held whole:
// the same products in the same order with 8 registers of A instead of HD / 4.
template <int HD, int NT>
__device__ __forceinline__ void mma_abt_shared(float (*s)[4], const bf16* As, const bf16* Bs) {
    constexpr int S = MmaTile<HD>::STRIDE;
    const u32 l = threadIdx.x & 31;
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
        for (int i = 0; i < 4; i++) s[n][i] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk += 2) {
        u32 af[2][4];
#pragma unroll
        for (int x = 0; x < 2; x++) ldmatrix_x4(af[x], As + ((l & 7) + ((l >> 3) & 1) * 8) * S + (kk + x) * 16 + (l >> 4) * 8);
#pragma unroll
        for (int n = 0; n < NT; n++) {
            u32 b[4];
            ldmatrix_x4(b, Bs + (n * 8 + (l & 7)) * S + kk * 16 + (l >> 3) * 8);
            mma_bf16_16816(s[n], af[0], b, s[n]);
            mma_bf16_16816(s[n], af[1], b + 2, s[n]);
        }
    }
}

// o += P B for the warp's 16 rows: P the accumulator fragments p[NT][4] of 16 rows x 8 NT
// columns (rounded to bf16 into A fragments), B the 8 NT shared rows of Bs (row c: column c of P)
// over the head dimension.
template <int HD, int NT>
__device__ __forceinline__ void mma_pb(float (*o)[4], const float (*p)[4], const bf16* Bs) {
    constexpr int S = MmaTile<HD>::STRIDE;
    const u32 l = threadIdx.x & 31;
#pragma unroll
    for (int ks = 0; ks < NT / 2; ks++) {
        const u32 pa[4] = {pack_bf16(p[2 * ks][0], p[2 * ks][1]), pack_bf16(p[2 * ks][2], p[2 * ks][3]), pack_bf16(p[2 * ks + 1][0], p[2 * ks + 1][1]),
                           pack_bf16(p[2 * ks + 1][2], p[2 * ks + 1][3])};
#pragma unroll
        for (int d = 0; d < HD / 8; d += 2) {
            u32 b[4];  // d-tiles d (b[0], b[1]) and d + 1 (b[2], b[3])
            ldmatrix_x4_trans(b, Bs + (ks * 16 + (l & 7) + ((l >> 3) & 1) * 8) * S + (d + (l >> 4)) * 8);
            mma_bf16_16816(o[d], pa, b, o[d]);
            mma_bf16_16816(o[d + 1], pa, b + 2, o[d + 1]);
        }
    }
}

// One key tile for a warp: qf the Q fragments, Ks / Vs the tile in shared memory (BC rows of
// STRIDE), key j0 + c visible to row r when c < vis[r] (vis <= 0: none).
template <int HD>
__device__ __forceinline__ void mma_row_tile(MmaRows<HD>& st, const u32 (*qf)[4], const bf16* Ks, const bf16* Vs, const int* vis, float scale) {
    constexpr int BC = MmaTile<HD>::BC;
    const u32 t = threadIdx.x & 3;
    float s[BC / 8][4];
    mma_abt<HD, BC / 8>(s, qf, Ks);
    float corr[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float mx = NEG_INF;
#pragma unroll
        for (int n = 0; n < BC / 8; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int c = n * 8 + 2 * (int)t + e;
                const float x = c < vis[r] ? s[n][2 * r + e] * scale : NEG_INF;
                s[n][2 * r + e] = x;
                mx = fmaxf(mx, x);
            }
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
        const float m_new = fmaxf(st.m[r], mx);
        const float base = m_new == NEG_INF ? 0.0f : m_new;  // a row with nothing visible yet stays at 0
        corr[r] = __expf(st.m[r] - base);
        float sum = 0.0f;
#pragma unroll
        for (int n = 0; n < BC / 8; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float pe = __expf(s[n][2 * r + e] - base);
                s[n][2 * r + e] = pe;
                sum += pe;
            }
        sum += __shfl_xor_sync(FULL_MASK, sum, 1);
        sum += __shfl_xor_sync(FULL_MASK, sum, 2);
        st.l[r] = st.l[r] * corr[r] + sum;
        st.m[r] = m_new;
    }
#pragma unroll
    for (int d = 0; d < HD / 8; d++)
#pragma unroll
        for (int i = 0; i < 4; i++) st.o[d][i] *= corr[i >> 1];
    mma_pb<HD, BC / 8>(st.o, s, Vs);
}

template <int HD>
__device__ __forceinline__ void mma_rows_init(MmaRows<HD>& st) {
    for (int r = 0; r < 2; r++) st.m[r] = NEG_INF, st.l[r] = 0.0f;
#pragma unroll
    for (int d = 0; d < HD / 8; d++)
#pragma unroll
        for (int i = 0; i < 4; i++) st.o[d][i] = 0.0f;
}

template <int HD>
__device__ __forceinline__ void mma_rows_merge(MmaRows<HD>& acc, const MmaRows<HD>& st) {
    MergeWeights w[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        w[r] = merge_weights(acc.m[r], st.m[r]);
        acc.l[r] = merge_value(acc.l[r], st.l[r], w[r]);
        acc.m[r] = w[r].m;
    }
#pragma unroll
    for (int d = 0; d < HD / 8; d++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc.o[d][i] = merge_value(acc.o[d][i], st.o[d][i], w[i >> 1]);
}

// out row r of the warp (r = 0: row g, 1: g + 8) = o / l at `dst` (HD bf16), lse = m + log l.
template <int HD>
__device__ __forceinline__ void mma_store_row(const MmaRows<HD>& st, int r, bf16* dst, float* lse) {
    const u32 t = threadIdx.x & 3;
    const float inv = 1.0f / st.l[r];
#pragma unroll
    for (int d = 0; d < HD / 8; d++) *reinterpret_cast<u32*>(dst + d * 8 + 2 * t) = pack_bf16(st.o[d][2 * r] * inv, st.o[d][2 * r + 1] * inv);
    if (t == 0) *lse = st.m[r] + logf(st.l[r]);
}

// attention_fwd on tensor cores: grid (ceil(tq / 64), nh, b), 128 threads; shared memory two
// stages of K and V tiles (2 KV bf16; Q passes through the second stage first).
template <int HD>
__device__ __forceinline__ void attention_fwd_mma_t(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                    const bf16* __restrict__ v, AttentionParams p) {
    using Tile = MmaTile<HD>;
    constexpr int BC = Tile::BC, S = Tile::STRIDE;
    extern __shared__ float sm[];
    bf16* stage[2] = {reinterpret_cast<bf16*>(sm), reinterpret_cast<bf16*>(sm) + Tile::KV};
    const u32 tid = threadIdx.x, w = tid >> 5, l = tid & 31, g = l >> 2;
    const u32 b = blockIdx.z, h = blockIdx.y, kvh = h / (p.nh / p.nkv), i0 = blockIdx.x * MMA_BR;
    const u32 last = min(p.q_pos0 + min(i0 + MMA_BR, p.tq), p.tk);  // keys any row of the block sees
    const u32 tiles = (last + BC - 1) / BC;
    const bf16* kb = k + (unsigned long long)b * p.kv_batch + p.k_off + kvh * HD;
    const bf16* vb = v + (unsigned long long)b * p.kv_batch + p.v_off + kvh * HD;
    auto load_kv = [&](u32 j, bf16* dst) {
        const u32 j0 = j * BC, valid = min((u32)BC, last - j0);
        mma_stage_rows<HD>(dst, kb + (unsigned long long)j0 * p.kv_row, p.kv_row, BC, valid, tid, blockDim.x);
        mma_stage_rows<HD>(dst + BC * S, vb + (unsigned long long)j0 * p.kv_row, p.kv_row, BC, valid, tid, blockDim.x);
    };
    const bf16* qb = q + (unsigned long long)b * p.q_batch + (unsigned long long)i0 * p.q_row + p.q_off + h * HD;
    mma_stage_rows<HD>(stage[1], qb, p.q_row, MMA_BR, min((u32)MMA_BR, p.tq - i0), tid, blockDim.x);
    load_kv(0, stage[0]);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    u32 qf[HD / 16][4];
    mma_load_a<HD>(qf, stage[1] + w * 16 * S);
    MmaRows<HD> acc, st;  // the merged chunks so far, and the current chunk
    mma_rows_init(acc);
    mma_rows_init(st);
    const u32 row0 = i0 + w * 16 + g;  // the lane's rows row0 and row0 + 8
    for (u32 j = 0; j < tiles; j++) {
        if (j > 0 && j * BC % ATT_SPLIT == 0) {
            mma_rows_merge(acc, st);
            mma_rows_init(st);
        }
        if (j > 0) {
            cp_async_wait<0>();
        }
        __syncthreads();  // tile j landed for every thread; every warp is done with tile j - 1 (and Q)
        if (j + 1 < tiles) {
            load_kv(j + 1, stage[(j + 1) & 1]);
            cp_async_commit();
        }
        const int j0 = (int)(j * BC);
        int vis[2];
        for (int r = 0; r < 2; r++) {
            const u32 i = row0 + 8 * r;
            vis[r] = i < p.tq ? (int)min(p.q_pos0 + i + 1, p.tk) - j0 : 0;
        }
        // a tile no row of this warp sees leaves every row's state as it is: skip it (warp-uniform)
        const u32 warp_last = min(p.q_pos0 + min(i0 + w * 16 + 16, p.tq), p.tk);
        if (i0 + w * 16 < p.tq && (u32)j0 < warp_last) mma_row_tile<HD>(st, qf, stage[j & 1], stage[j & 1] + BC * S, vis, p.scale);
    }
    mma_rows_merge(acc, st);
    for (int r = 0; r < 2; r++) {
        const u32 i = row0 + 8 * r;
        if (i < p.tq) mma_store_row<HD>(acc, r, out + ((unsigned long long)b * p.tq + i) * p.nh * HD + h * HD, lse + ((unsigned long long)b * p.nh + h) * p.tq + i);
    }
}

// attention_decode_fwd on tensor cores: one warp (block of 32) per (cache row i, key/value head
// kvh, group of 16 query heads); its rows are the query heads kvh G + 16 y + r (G = nh / nkv)
// for r < min(16, G - 16 y), each key/value row of the slot read once for all of them; key tiles
// of BC keys from position 0, as attention_fwd_mma, so every row's arithmetic is the training
// forward's. Grid (n, nkv, ceil(G / 16) x chunks); shared memory one stage (KV bf16).
// chunks = 0: the whole context in one block, out and lse written. chunks > 0 (flash-decoding,
// t_max > ATT_SPLIT): block z covers keys [c ATT_SPLIT, (c + 1) ATT_SPLIT) of its rows (c = z %
// chunks) and writes the chunk's unnormalised state to partial[(i nh + h) chunks + c] = (o[HD],
// m, l); attention_decode_merge then merges the chunks in order.
template <int HD>
__device__ __forceinline__ void attention_decode_mma_t(bf16* __restrict__ out, float* __restrict__ lse, float* __restrict__ partial, const bf16* __restrict__ q,
                                                       const bf16* __restrict__ cache, const int* __restrict__ rows, AttentionDecodeParams p, u32 chunks) {
    using Tile = MmaTile<HD>;
    constexpr int BC = Tile::BC, S = Tile::STRIDE;
    extern __shared__ float sm[];
    bf16* Ks = reinterpret_cast<bf16*>(sm);
    bf16* Vs = Ks + BC * S;
    const u32 l = threadIdx.x & 31, g = l >> 2, t = l & 3;
    const u32 per = chunks ? chunks : 1, chunk = blockIdx.z % per, y = blockIdx.z / per;
    const u32 i = blockIdx.x, kvh = blockIdx.y, G = p.nh / p.nkv, h0 = kvh * G + y * 16;
    const u32 nrows = min(16u, G - y * 16);
    const int row = rows[i];
    if (row < 0 || (u32)row >= p.slots * p.t_max) return;  // block-uniform
    const u32 slot = row / p.t_max, pos = row % p.t_max, kv_row = 2 * p.nkv * HD;
    const bf16* kb = cache + (unsigned long long)slot * p.t_max * kv_row + kvh * HD;
    const bf16* vb = cache + (unsigned long long)slot * p.t_max * kv_row + (p.nkv + kvh) * HD;
    const bf16* qrow = q + (unsigned long long)i * p.q_row + p.q_off;
    // Q fragments straight from global memory (rows past nrows are zeros)
    u32 qf[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++)
#pragma unroll
        for (int x = 0; x < 4; x++) {
            const u32 r = g + (x & 1) * 8, c = kk * 16 + 2 * t + (x >> 1) * 8;
            qf[kk][x] = r < nrows ? *reinterpret_cast<const u32*>(qrow + (h0 + r) * HD + c) : 0u;
        }
    MmaRows<HD> st;
    mma_rows_init(st);
    const u32 key0 = chunks ? chunk * ATT_SPLIT : 0, visible = chunks ? min(pos + 1, key0 + ATT_SPLIT) : pos + 1;
    if (key0 > pos) return;  // block-uniform: the chunk is past the row's keys
    for (u32 j0 = key0; j0 < visible; j0 += BC) {
        const u32 valid = min((u32)BC, visible - j0);
        __syncwarp();
        mma_stage_rows<HD>(Ks, kb + (unsigned long long)j0 * kv_row, kv_row, BC, valid, l, 32);
        mma_stage_rows<HD>(Vs, vb + (unsigned long long)j0 * kv_row, kv_row, BC, valid, l, 32);
        cp_async_commit();
        cp_async_wait<0>();
        __syncwarp();
        const int vis[2] = {g < nrows ? (int)valid : 0, g + 8 < nrows ? (int)valid : 0};
        mma_row_tile<HD>(st, qf, Ks, Vs, vis, p.scale);
    }
    for (int r = 0; r < 2; r++) {
        const u32 hr = g + 8 * r;
        if (hr >= nrows) continue;
        if (!chunks) {
            mma_store_row<HD>(st, r, out + (unsigned long long)i * p.nh * HD + (h0 + hr) * HD, lse + (unsigned long long)i * p.nh + h0 + hr);
            continue;
        }
        float* dst = partial + (((unsigned long long)i * p.nh + h0 + hr) * chunks + chunk) * (HD + 2);
#pragma unroll
        for (int d = 0; d < HD / 8; d++) {
            dst[d * 8 + 2 * t] = st.o[d][2 * r];
            dst[d * 8 + 2 * t + 1] = st.o[d][2 * r + 1];
        }
        if (t == 0) dst[HD] = st.m[r], dst[HD + 1] = st.l[r];
    }
}

// The chunks of a split decode merged in order (from an empty state, as the forward's rows):
// one warp per (cache row i, head h), lanes over the head dimension; out = o / l, lse = m + log l.
// Grid ceil(n nh / 8), block 256.
template <typename T>
__device__ __forceinline__ void attention_decode_merge_t(T* __restrict__ out, float* __restrict__ lse, const float* __restrict__ partial, const int* __restrict__ rows,
                                                         AttentionDecodeParams p, u32 chunks) {
    const unsigned long long w = ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const u32 lane = threadIdx.x & 31, hd = p.hd;
    if (w >= (unsigned long long)p.n * p.nh) return;
    const u32 i = w / p.nh;
    const int row = rows[i];
    if (row < 0 || (u32)row >= p.slots * p.t_max) return;
    const u32 used = (u32)row % p.t_max / ATT_SPLIT + 1;  // chunks holding keys 0 ..= pos
    const float* src = partial + w * chunks * (hd + 2);
    float m = NEG_INF, l = 0.0f, o[ATT_HD_REG];
#pragma unroll
    for (int r = 0; r < ATT_HD_REG; r++) o[r] = 0.0f;
    for (u32 c = 0; c < used; c++) {
        const float* part = src + c * (hd + 2);
        const MergeWeights mw = merge_weights(m, part[hd]);
        l = merge_value(l, part[hd + 1], mw);
        m = mw.m;
#pragma unroll
        for (int r = 0; r < ATT_HD_REG; r++) {
            const u32 d = lane + 32 * r;
            if (d < hd) o[r] = merge_value(o[r], part[d], mw);
        }
    }
    const float inv = 1.0f / l;
    T* dst = out + w * hd;
#pragma unroll
    for (int r = 0; r < ATT_HD_REG; r++) {
        const u32 d = lane + 32 * r;
        if (d < hd) st(dst, d, o[r] * inv);
    }
    if (lane == 0) lse[w] = m + logf(l);
}

// The training backward on tensor cores (tq = tk = T, q_pos0 = 0, one fused qkv buffer), P
// recomputed from the saved lse, D from attention_bwd_delta; dS = P (dP - D) and P rounded to bf16
// as the A operand of the products. No atomics: dq and dk/dv come from two kernels, each output
// row written once by one warp.
// Shared rows of a tile from the fused qkv (or dout) rows: rows r0 .. r0 + rows, valid below T.
template <int HD>
__device__ __forceinline__ void mma_stage_qkv(bf16* dst, const bf16* __restrict__ src, unsigned long long row, u32 r0, u32 rows, u32 t) {
    mma_stage_rows<HD>(dst, src + (unsigned long long)r0 * row, row, rows, r0 < t ? min(rows, t - r0) : 0, threadIdx.x, blockDim.x);
}

// dq: grid (ceil(T / 64), nh, b), block 128 (16 query rows per warp); Q and dO pass through
// shared memory into fragments, then key tiles of BC keys (K and V, one stage):
//   S = Q K^T, dP = dO V^T, dS = P (dP - D), dQ += dS K; dq = scale dQ.
template <int HD>
__device__ __forceinline__ void attention_bwd_dq_mma_t(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                                                       const bf16* __restrict__ qkv, AttentionParams p) {
    using Tile = MmaTile<HD>;
    constexpr int BC = Tile::BC, S = Tile::STRIDE;
    extern __shared__ float sm[];
    bf16* Ks = reinterpret_cast<bf16*>(sm);
    bf16* Vs = Ks + BC * S;
    const u32 tid = threadIdx.x, w = tid >> 5, l = tid & 31, g = l >> 2, t = l & 3, T = p.tq;
    const u32 b = blockIdx.z, h = blockIdx.y, kvh = h / (p.nh / p.nkv), i0 = blockIdx.x * MMA_BR;
    const unsigned long long base = (unsigned long long)b * p.q_batch, g_row = (unsigned long long)p.nh * HD;
    const bf16* gb = dout + (unsigned long long)b * T * g_row + h * HD;
    mma_stage_qkv<HD>(Ks, qkv + base + p.q_off + h * HD, p.q_row, i0, MMA_BR, T);
    mma_stage_qkv<HD>(Ks + MMA_BR * S, gb, g_row, i0, MMA_BR, T);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    u32 qf[HD / 16][4], gf[HD / 16][4];
    mma_load_a<HD>(qf, Ks + w * 16 * S);
    mma_load_a<HD>(gf, Ks + (MMA_BR + w * 16) * S);
    const u32 row0 = i0 + w * 16 + g;
    float lse_r[2], d_r[2];
    for (int r = 0; r < 2; r++) {
        const u32 i = row0 + 8 * r;
        const unsigned long long at = ((unsigned long long)b * p.nh + h) * T + i;
        lse_r[r] = i < T ? lse[at] : 0.0f;
        d_r[r] = i < T ? delta[at] : 0.0f;
    }
    float dq[HD / 8][4];
#pragma unroll
    for (int d = 0; d < HD / 8; d++)
#pragma unroll
        for (int i = 0; i < 4; i++) dq[d][i] = 0.0f;
    const u32 last = min(i0 + MMA_BR, T), warp_last = min(i0 + w * 16 + 16, T);
    for (u32 j0 = 0; j0 < last; j0 += BC) {
        __syncthreads();  // every warp is done with the previous tile (and with Q, dO)
        mma_stage_qkv<HD>(Ks, qkv + base + p.k_off + kvh * HD, p.q_row, j0, BC, last);
        mma_stage_qkv<HD>(Vs, qkv + base + p.v_off + kvh * HD, p.q_row, j0, BC, last);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        if (i0 + w * 16 >= T || j0 >= warp_last) continue;  // warp-uniform: no row of the warp sees the tile
        float s[BC / 8][4], dp[BC / 8][4];
        mma_abt<HD, BC / 8>(s, qf, Ks);
        mma_abt<HD, BC / 8>(dp, gf, Vs);
#pragma unroll
        for (int n = 0; n < BC / 8; n++)
#pragma unroll
            for (int x = 0; x < 4; x++) {
                const u32 i = row0 + 8 * (x >> 1), j = j0 + n * 8 + 2 * t + (x & 1);
                const float pr = (i < T && j <= i) ? __expf(p.scale * s[n][x] - lse_r[x >> 1]) : 0.0f;
                s[n][x] = pr * (dp[n][x] - d_r[x >> 1]);
            }
        mma_pb<HD, BC / 8>(dq, s, Ks);
    }
    for (int r = 0; r < 2; r++) {
        const u32 i = row0 + 8 * r;
        if (i >= T) continue;
        bf16* dst = dqkv + base + (unsigned long long)i * p.q_row + p.q_off + h * HD;
#pragma unroll
        for (int d = 0; d < HD / 8; d++) *reinterpret_cast<u32*>(dst + d * 8 + 2 * t) = pack_bf16(p.scale * dq[d][2 * r], p.scale * dq[d][2 * r + 1]);
    }
}

// The dk/dv kernel's tiles: warps of 16 keys each, 64 keys per block for hd 64 and 32 for hd 128
// (the K, V and query tiles then fit 48 KiB), query tiles of BQ (hd 128: 16, so that dK and dV,
// 128 floats per lane, fit the registers beside S and dP).
template <int HD> struct MmaDkv {
    static constexpr int WARPS = HD == 64 ? 4 : 2;
    static constexpr int KB = 16 * WARPS;
    static constexpr int BQ = HD == 64 ? 64 : 16;
};

// dk, dv: grid (ceil(T / KB), nkv, b), block 32 x WARPS (16 keys per warp); K and V of the
// block's keys stay in shared memory; per query head of the group and per query tile of BQ
// queries (from the first that sees the block's first key), Q and dO tiles (one stage):
//   S^T = K Q^T, dP^T = V dO^T, P^T from lse, dV += P^T dO, dK += dS^T Q; dk = scale dK.
template <int HD>
__device__ __forceinline__ void attention_bwd_dkv_mma_t(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                                                        const bf16* __restrict__ qkv, AttentionParams p) {
    using Tile = MmaTile<HD>;
    constexpr int BQ = MmaDkv<HD>::BQ, S = Tile::STRIDE, KB = MmaDkv<HD>::KB;
    extern __shared__ float sm[];
    bf16* Ks = reinterpret_cast<bf16*>(sm);
    bf16* Vs = Ks + KB * S;
    bf16* Qs = Vs + KB * S;
    bf16* Gs = Qs + BQ * S;
    const u32 tid = threadIdx.x, w = tid >> 5, l = tid & 31, g = l >> 2, t = l & 3, T = p.tq;
    const u32 b = blockIdx.z, kvh = blockIdx.y, group = p.nh / p.nkv, j0 = blockIdx.x * KB, kw0 = j0 + w * 16;
    const unsigned long long base = (unsigned long long)b * p.q_batch, g_row = (unsigned long long)p.nh * HD;
    mma_stage_qkv<HD>(Ks, qkv + base + p.k_off + kvh * HD, p.q_row, j0, KB, T);
    mma_stage_qkv<HD>(Vs, qkv + base + p.v_off + kvh * HD, p.q_row, j0, KB, T);
    float dk[HD / 8][4], dv[HD / 8][4];
#pragma unroll
    for (int d = 0; d < HD / 8; d++)
#pragma unroll
        for (int i = 0; i < 4; i++) dk[d][i] = dv[d][i] = 0.0f;
    for (u32 h = kvh * group; h < (kvh + 1) * group; h++) {
        const bf16* gb = dout + (unsigned long long)b * T * g_row + h * HD;
        const float* lse_h = lse + ((unsigned long long)b * p.nh + h) * T;
        const float* d_h = delta + ((unsigned long long)b * p.nh + h) * T;
        for (u32 i0 = j0 / BQ * BQ; i0 < T; i0 += BQ) {
            __syncthreads();  // every warp is done with the previous query tile
            mma_stage_qkv<HD>(Qs, qkv + base + p.q_off + h * HD, p.q_row, i0, BQ, T);
            mma_stage_qkv<HD>(Gs, gb, g_row, i0, BQ, T);
            cp_async_commit();
            cp_async_wait<0>();
            __syncthreads();
            if (kw0 >= T || i0 + BQ <= kw0) continue;  // warp-uniform: no query of the tile sees the warp's keys
            float s[BQ / 8][4], dp[BQ / 8][4];
            mma_abt_shared<HD, BQ / 8>(s, Ks + w * 16 * S, Qs);
            mma_abt_shared<HD, BQ / 8>(dp, Vs + w * 16 * S, Gs);
#pragma unroll
            for (int n = 0; n < BQ / 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const u32 i = i0 + n * 8 + 2 * t + e;
                    const float li = i < T ? lse_h[i] : 0.0f, di = i < T ? d_h[i] : 0.0f;
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        const u32 j = kw0 + g + 8 * r;
                        const float pr = (i < T && i >= j) ? __expf(p.scale * s[n][2 * r + e] - li) : 0.0f;
                        s[n][2 * r + e] = pr;
                        dp[n][2 * r + e] = pr * (dp[n][2 * r + e] - di);
                    }
                }
            mma_pb<HD, BQ / 8>(dv, s, Gs);
            mma_pb<HD, BQ / 8>(dk, dp, Qs);
        }
    }
    for (int r = 0; r < 2; r++) {
        const u32 j = kw0 + g + 8 * r;
        if (j >= T) continue;
        bf16* dkr = dqkv + base + (unsigned long long)j * p.q_row + p.k_off + kvh * HD;
        bf16* dvr = dqkv + base + (unsigned long long)j * p.q_row + p.v_off + kvh * HD;
#pragma unroll
        for (int d = 0; d < HD / 8; d++) {
            *reinterpret_cast<u32*>(dkr + d * 8 + 2 * t) = pack_bf16(p.scale * dk[d][2 * r], p.scale * dk[d][2 * r + 1]);
            *reinterpret_cast<u32*>(dvr + d * 8 + 2 * t) = pack_bf16(dv[d][2 * r], dv[d][2 * r + 1]);
        }
    }
}

// The entries: T = float (NAME) and T = bf16 (NAME_bf16); lse and delta are f32 in both.
#define ATT_F32 float* __restrict__
#define ATT_CF32 const float* __restrict__
extern "C" __global__ void attention_fwd(ATT_F32 out, ATT_F32 lse, ATT_CF32 q, ATT_CF32 k, ATT_CF32 v, AttentionParams p) { attention_fwd_t(out, lse, q, k, v, p); }
extern "C" __global__ void attention_fwd_bf16(bf16* __restrict__ out, ATT_F32 lse, const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                                              AttentionParams p) {
    attention_fwd_t(out, lse, q, k, v, p);
}
extern "C" __global__ void attention_bwd_delta(ATT_F32 delta, ATT_CF32 dout, ATT_CF32 out, AttentionParams p) { attention_bwd_delta_t(delta, dout, out, p); }
extern "C" __global__ void attention_bwd_delta_bf16(ATT_F32 delta, const bf16* __restrict__ dout, const bf16* __restrict__ out, AttentionParams p) {
    attention_bwd_delta_t(delta, dout, out, p);
}
extern "C" __global__ void attention_bwd(ATT_F32 dqkv, ATT_CF32 dout, ATT_CF32 lse, ATT_CF32 delta, ATT_CF32 qkv, AttentionParams p) {
    attention_bwd_t(dqkv, dout, lse, delta, qkv, p);
}
extern "C" __global__ void attention_bwd_bf16(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, ATT_CF32 lse, ATT_CF32 delta, const bf16* __restrict__ qkv,
                                              AttentionParams p) {
    attention_bwd_t(dqkv, dout, lse, delta, qkv, p);
}
extern "C" __global__ void attention_bwd_dkv(ATT_F32 dqkv, ATT_CF32 dout, ATT_CF32 lse, ATT_CF32 delta, ATT_CF32 qkv, AttentionParams p) {
    attention_bwd_dkv_t(dqkv, dout, lse, delta, qkv, p);
}
extern "C" __global__ void attention_bwd_dkv_bf16(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, ATT_CF32 lse, ATT_CF32 delta, const bf16* __restrict__ qkv,
                                                  AttentionParams p) {
    attention_bwd_dkv_t(dqkv, dout, lse, delta, qkv, p);
}
extern "C" __global__ void kv_cache_write(ATT_F32 cache, ATT_CF32 qkv, KvCacheParams p) { kv_cache_write_t(cache, qkv, p); }
extern "C" __global__ void kv_cache_write_bf16(bf16* __restrict__ cache, const bf16* __restrict__ qkv, KvCacheParams p) { kv_cache_write_t(cache, qkv, p); }
extern "C" __global__ void scatter_rows(ATT_F32 out, ATT_CF32 inp, const int* __restrict__ rows, ScatterParams p) { scatter_rows_t(out, inp, rows, p); }
extern "C" __global__ void scatter_rows_bf16(bf16* __restrict__ out, const bf16* __restrict__ inp, const int* __restrict__ rows, ScatterParams p) {
    scatter_rows_t(out, inp, rows, p);
}
extern "C" __global__ void attention_decode_fwd(ATT_F32 out, ATT_F32 lse, ATT_F32 partial, ATT_CF32 q, ATT_CF32 cache, const int* __restrict__ rows,
                                                AttentionDecodeParams p, u32 chunks) {
    attention_decode_fwd_t(out, lse, partial, q, cache, rows, p, chunks);
}
extern "C" __global__ void attention_decode_fwd_bf16(bf16* __restrict__ out, ATT_F32 lse, ATT_F32 partial, const bf16* __restrict__ q, const bf16* __restrict__ cache,
                                                     const int* __restrict__ rows, AttentionDecodeParams p, u32 chunks) {
    attention_decode_fwd_t(out, lse, partial, q, cache, rows, p, chunks);
}
extern "C" __global__ void attention_fwd_mma64_bf16(bf16* __restrict__ out, ATT_F32 lse, const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                                                    AttentionParams p) {
    attention_fwd_mma_t<64>(out, lse, q, k, v, p);
}
extern "C" __global__ void attention_fwd_mma128_bf16(bf16* __restrict__ out, ATT_F32 lse, const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                                                     AttentionParams p) {
    attention_fwd_mma_t<128>(out, lse, q, k, v, p);
}
extern "C" __global__ void attention_decode_mma64_bf16(bf16* __restrict__ out, ATT_F32 lse, const bf16* __restrict__ q, const bf16* __restrict__ cache,
                                                       const int* __restrict__ rows, AttentionDecodeParams p) {
    attention_decode_mma_t<64>(out, lse, nullptr, q, cache, rows, p, 0);
}
extern "C" __global__ void attention_decode_split_mma64_bf16(ATT_F32 partial, const bf16* __restrict__ q, const bf16* __restrict__ cache, const int* __restrict__ rows,
                                                       AttentionDecodeParams p, u32 chunks) {
    attention_decode_mma_t<64>(nullptr, nullptr, partial, q, cache, rows, p, chunks);
}
extern "C" __global__ void attention_decode_mma128_bf16(bf16* __restrict__ out, ATT_F32 lse, const bf16* __restrict__ q, const bf16* __restrict__ cache,
                                                       const int* __restrict__ rows, AttentionDecodeParams p) {
    attention_decode_mma_t<128>(out, lse, nullptr, q, cache, rows, p, 0);
}
extern "C" __global__ void attention_decode_split_mma128_bf16(ATT_F32 partial, const bf16* __restrict__ q, const bf16* __restrict__ cache, const int* __restrict__ rows,
                                                       AttentionDecodeParams p, u32 chunks) {
    attention_decode_mma_t<128>(nullptr, nullptr, partial, q, cache, rows, p, chunks);
}
extern "C" __global__ void attention_bwd_dq_mma64_bf16(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, ATT_CF32 lse, ATT_CF32 delta,
                                                  const bf16* __restrict__ qkv, AttentionParams p) {
    attention_bwd_dq_mma_t<64>(dqkv, dout, lse, delta, qkv, p);
}
extern "C" __global__ void attention_bwd_dkv_mma64_bf16(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, ATT_CF32 lse, ATT_CF32 delta,
                                                  const bf16* __restrict__ qkv, AttentionParams p) {
    attention_bwd_dkv_mma_t<64>(dqkv, dout, lse, delta, qkv, p);
}
extern "C" __global__ void attention_bwd_dq_mma128_bf16(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, ATT_CF32 lse, ATT_CF32 delta,
                                                  const bf16* __restrict__ qkv, AttentionParams p) {
    attention_bwd_dq_mma_t<128>(dqkv, dout, lse, delta, qkv, p);
}
extern "C" __global__ void attention_bwd_dkv_mma128_bf16(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, ATT_CF32 lse, ATT_CF32 delta,
                                                  const bf16* __restrict__ qkv, AttentionParams p) {
    attention_bwd_dkv_mma_t<128>(dqkv, dout, lse, delta, qkv, p);
}
extern "C" __global__ void attention_decode_merge_bf16(bf16* __restrict__ out, ATT_F32 lse, ATT_CF32 partial, const int* __restrict__ rows, AttentionDecodeParams p,
                                                       u32 chunks) {
    attention_decode_merge_t(out, lse, partial, rows, p, chunks);
}
extern "C" __global__ void attention_decode_merge(ATT_F32 out, ATT_F32 lse, ATT_CF32 partial, const int* __restrict__ rows, AttentionDecodeParams p, u32 chunks) {
    attention_decode_merge_t(out, lse, partial, rows, p, chunks);
}

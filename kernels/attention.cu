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
//   attention_decode_fwd: grid (n, ceil(nh / 8)); 8 hd. One warp per (row, head); keys and values
//                         read straight from the slot cache (one query each: no tile reuse).
//   kv_cache_write:       1-D over b t 2 nkv hd, block 256.  scatter_rows: 1-D over n width.
#include "common.cuh"

#define ATT_WARPS 8
#define ATT_KT 32
#define ATT_HD_REG 4

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
    float m = NEG_INF, l = 0.0f, acc[ATT_HD_REG];
#pragma unroll
    for (int r = 0; r < ATT_HD_REG; r++) acc[r] = 0.0f;
    for (u32 j0 = 0; j0 < last; j0 += ATT_KT) {
        __syncthreads();
        load_tile(Ks, hp, kb, p.kv_row, j0, last, hd);
        load_tile(Vs, hd, vb, p.kv_row, j0, last, hd);
        __syncthreads();
        if (j0 >= visible) continue;  // warp-uniform
        const u32 j = j0 + lane;
        const float s = j < visible ? p.scale * dot_row(Qs, Ks + lane * hp, hd) : NEG_INF;
        const float e = softmax_step(s, j < visible, m, l, acc);
        accumulate_rows(acc, e, Vs, hd, min((u32)ATT_KT, visible - j0), lane, hd);
    }
    if (!active) return;
    store_row(out + ((unsigned long long)b * p.tq + i) * p.nh * hd + h * hd, acc, 1.0f / l, lane, hd);
    if (lane == 0) lse[((unsigned long long)b * p.nh + h) * p.tq + i] = m + logf(l);
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

// One warp per (cache row i, head h): the query's slot s = rows[i] / t_max, position
// pos = rows[i] % t_max, keys 0 ..= pos of slot s; 32 keys per step (lane l: key j0 + l).
template <typename T>
__device__ __forceinline__ void attention_decode_fwd_t(T* __restrict__ out, float* __restrict__ lse, const T* __restrict__ q, const T* __restrict__ cache,
                                                       const int* __restrict__ rows, AttentionDecodeParams p) {
    extern __shared__ float sm[];
    const u32 hd = p.hd, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const u32 i = blockIdx.x, h = blockIdx.y * ATT_WARPS + warp;
    if (i >= p.n || h >= p.nh) return;  // warp-uniform; no block-wide barriers below
    float* Qs = sm + warp * hd;
    const int row = rows[i];
    if (row < 0 || (u32)row >= p.slots * p.t_max) return;
    const u32 slot = row / p.t_max, pos = row % p.t_max, kvh = h / (p.nh / p.nkv), kv_row = 2 * p.nkv * hd;
    const T* qrow = q + (unsigned long long)i * p.q_row + p.q_off + h * hd;
    for (u32 d = lane; d < hd; d += 32) Qs[d] = ld(qrow, d);
    __syncwarp();
    const T* kb = cache + (unsigned long long)slot * p.t_max * kv_row + kvh * hd;
    const T* vb = cache + (unsigned long long)slot * p.t_max * kv_row + (p.nkv + kvh) * hd;
    const u32 visible = pos + 1;
    float m = NEG_INF, l = 0.0f, acc[ATT_HD_REG];
#pragma unroll
    for (int r = 0; r < ATT_HD_REG; r++) acc[r] = 0.0f;
    for (u32 j0 = 0; j0 < visible; j0 += 32) {
        const u32 j = j0 + lane;
        const float s = j < visible ? p.scale * dot_row(Qs, kb + (unsigned long long)j * kv_row, hd) : NEG_INF;
        const float e = softmax_step(s, j < visible, m, l, acc);
        accumulate_rows(acc, e, vb + (unsigned long long)j0 * kv_row, kv_row, min(32u, visible - j0), lane, hd);
    }
    store_row(out + (unsigned long long)i * p.nh * hd + h * hd, acc, 1.0f / l, lane, hd);
    if (lane == 0) lse[(unsigned long long)i * p.nh + h] = m + logf(l);
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
extern "C" __global__ void attention_decode_fwd(ATT_F32 out, ATT_F32 lse, ATT_CF32 q, ATT_CF32 cache, const int* __restrict__ rows, AttentionDecodeParams p) {
    attention_decode_fwd_t(out, lse, q, cache, rows, p);
}
extern "C" __global__ void attention_decode_fwd_bf16(bf16* __restrict__ out, ATT_F32 lse, const bf16* __restrict__ q, const bf16* __restrict__ cache,
                                                     const int* __restrict__ rows, AttentionDecodeParams p) {
    attention_decode_fwd_t(out, lse, q, cache, rows, p);
}

// LayerNorm and RMSNorm over the last dimension of an [n, c] matrix.
// LayerNorm: y = (x - mean) rstd w + b, rstd = 1 / sqrt(var + eps); saved: mean, rstd [n].
//   Backward, xhat = (x - mean) rstd, g = dy w: dx = rstd (g - mean(g) - xhat mean(g xhat)),
//   dw += sum_rows dy xhat, db += sum_rows dy.
// RMSNorm: y = x rstd w, rstd = 1 / sqrt(mean(x^2) + eps); saved: rstd [n].
//   Backward: dx = rstd (g - xhat mean(g xhat)), dw += sum_rows dy xhat.
// Row kernels (layernorm_fwd, layernorm_bwd, rmsnorm_fwd, rmsnorm_bwd: dx only): grid n (one block
// per row), block 256, 32 floats of static shared memory for the block reductions; rows are read
// with 16-byte loads in the statistics passes and the forward's output pass (x in, y out) when c
// is a multiple of 4 (f32) or 8 (bf16); the backward and the weights are read element by element.
// Storage: entries NAME (f32) and NAME_bf16 (inp, out, weight, bias and their gradients bf16;
// mean and rstd f32 in both), one template each; bf16 is read as f32 and rounded once per store. Statistics are two-pass (mean, then centred squares) in f32
// with f32 tree reductions (the CPU uses f64: agreement to ~1e-6 relative).
// Parameter gradients (dw and, for LayerNorm, db): two-stage column sums (common.cuh). norm_dw:
// grid (ceil(c / 32), chunks), block (32, 8), 2 x 8 x 33 floats of static shared memory; column
// j = blockIdx.x * 32 + threadIdx.x of the rows of chunk blockIdx.y (rows_per_chunk each, the
// last one shorter), the 8 thread rows taking rows ty, ty + 8, ... combined in ty order. The host
// picks chunks from n and c (src/backend/cuda/column_sum.rs: >= 264 blocks, twice an H100's SMs,
// when n allows chunks of >= 64 rows; e.g. n = 16384, c = 768: 11 chunks of 1490 rows, 264 blocks).
// One chunk: norm_dw adds to dw / db itself; more: it writes f32 partial sums [2 chunks, c] (a
// scratch of the host's) and norm_dw_final (1-D over c, block 256) adds them in chunk order.
// Fixed orders and one writer per element: deterministic.
#include "common.cuh"

#define NORM_BLOCK 256

// sum over the row of f(j, x_j), 16-byte loads when c is a multiple of their group (4 f32, 8 bf16)
template <typename T, typename F>
__device__ __forceinline__ float row_sum(const T* __restrict__ x, u32 c, F f, float* scratch) {
    constexpr int G = Elt<T>::PER16;
    float s = 0.0f;
    if (c % G == 0) {
        for (u32 q = threadIdx.x; q < c / G; q += blockDim.x) {
            float v[G];
            load_group<T, G>(x, q, v);
            float t = f(G * q, v[0]);
#pragma unroll
            for (int e = 1; e < G; e++) t += f(G * q + e, v[e]);
            s += t;
        }
    } else {
        for (u32 j = threadIdx.x; j < c; j += blockDim.x) s += f(j, ld(x, j));
    }
    return block_sum(s, scratch);
}

// y[j] = f(j, x[j]) over the row, 16-byte loads and stores when c is a multiple of their group
template <typename T, typename F>
__device__ __forceinline__ void row_map(T* __restrict__ y, const T* __restrict__ x, u32 c, F f) {
    constexpr int G = Elt<T>::PER16;
    if (c % G == 0) {
        for (u32 q = threadIdx.x; q < c / G; q += blockDim.x) {
            float v[G];
            load_group<T, G>(x, q, v);
#pragma unroll
            for (int e = 0; e < G; e++) v[e] = f(G * q + e, v[e]);
            store_group<T, G>(y, q, v);
        }
    } else {
        for (u32 j = threadIdx.x; j < c; j += blockDim.x) st(y, j, f(j, ld(x, j)));
    }
}

template <typename T>
__device__ __forceinline__ void layernorm_fwd_t(T* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd, const T* __restrict__ inp,
                                                const T* __restrict__ weight, const T* __restrict__ bias, NormParams p) {
    __shared__ float scratch[32];
    const unsigned long long i = blockIdx.x;
    if (i >= p.n) return;
    const u32 c = p.c;
    const T* x = inp + i * c;
    const float mu = row_sum(x, c, [](u32, float v) { return v; }, scratch) / c;
    const float var = row_sum(x, c, [mu](u32, float v) { return (v - mu) * (v - mu); }, scratch) / c;
    const float rs = rsqrtf(var + p.eps);
    T* y = out + i * c;
    row_map(y, x, c, [&](u32 j, float v) { return (v - mu) * rs * ld(weight, j) + ld(bias, j); });
    if (threadIdx.x == 0) {
        mean[i] = mu;
        rstd[i] = rs;
    }
}
extern "C" __global__ void layernorm_fwd(float* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd, const float* __restrict__ inp,
                                         const float* __restrict__ weight, const float* __restrict__ bias, NormParams p) {
    layernorm_fwd_t(out, mean, rstd, inp, weight, bias, p);
}
extern "C" __global__ void layernorm_fwd_bf16(bf16* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd, const bf16* __restrict__ inp,
                                              const bf16* __restrict__ weight, const bf16* __restrict__ bias, NormParams p) {
    layernorm_fwd_t(out, mean, rstd, inp, weight, bias, p);
}

// dx of one row; `has_mean` 0 for RMSNorm (mean taken as 0 and mean(g) not subtracted)
template <typename T>
__device__ __forceinline__ void norm_dx_row(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ weight, float mu, float rs,
                                            bool has_mean, u32 c, float* scratch) {
    float sg = 0.0f, sgx = 0.0f;
    for (u32 j = threadIdx.x; j < c; j += blockDim.x) {
        const float g = ld(dy, j) * ld(weight, j);
        sg += g;
        sgx += g * (ld(x, j) - mu) * rs;
    }
    const float mg = has_mean ? block_sum(sg, scratch) / c : 0.0f;
    const float mgx = block_sum(sgx, scratch) / c;
    for (u32 j = threadIdx.x; j < c; j += blockDim.x) st(dx, j, rs * (ld(dy, j) * ld(weight, j) - mg - (ld(x, j) - mu) * rs * mgx));
}

template <typename T>
__device__ __forceinline__ void layernorm_bwd_t(T* __restrict__ dinp, const T* __restrict__ dout, const T* __restrict__ inp, const float* __restrict__ mean,
                                                const float* __restrict__ rstd, const T* __restrict__ weight, NormParams p) {
    __shared__ float scratch[32];
    const unsigned long long i = blockIdx.x;
    if (i >= p.n) return;
    norm_dx_row(dinp + i * p.c, dout + i * p.c, inp + i * p.c, weight, mean[i], rstd[i], true, p.c, scratch);
}
extern "C" __global__ void layernorm_bwd(float* __restrict__ dinp, const float* __restrict__ dout, const float* __restrict__ inp, const float* __restrict__ mean,
                                         const float* __restrict__ rstd, const float* __restrict__ weight, NormParams p) {
    layernorm_bwd_t(dinp, dout, inp, mean, rstd, weight, p);
}
extern "C" __global__ void layernorm_bwd_bf16(bf16* __restrict__ dinp, const bf16* __restrict__ dout, const bf16* __restrict__ inp, const float* __restrict__ mean,
                                              const float* __restrict__ rstd, const bf16* __restrict__ weight, NormParams p) {
    layernorm_bwd_t(dinp, dout, inp, mean, rstd, weight, p);
}

template <typename T>
__device__ __forceinline__ void rmsnorm_fwd_t(T* __restrict__ out, float* __restrict__ rstd, const T* __restrict__ inp, const T* __restrict__ weight, NormParams p) {
    __shared__ float scratch[32];
    const unsigned long long i = blockIdx.x;
    if (i >= p.n) return;
    const u32 c = p.c;
    const T* x = inp + i * c;
    const float ms = row_sum(x, c, [](u32, float v) { return v * v; }, scratch) / c;
    const float rs = rsqrtf(ms + p.eps);
    T* y = out + i * c;
    row_map(y, x, c, [&](u32 j, float v) { return v * rs * ld(weight, j); });
    if (threadIdx.x == 0) rstd[i] = rs;
}
extern "C" __global__ void rmsnorm_fwd(float* __restrict__ out, float* __restrict__ rstd, const float* __restrict__ inp, const float* __restrict__ weight,
                                       NormParams p) {
    rmsnorm_fwd_t(out, rstd, inp, weight, p);
}
extern "C" __global__ void rmsnorm_fwd_bf16(bf16* __restrict__ out, float* __restrict__ rstd, const bf16* __restrict__ inp, const bf16* __restrict__ weight,
                                            NormParams p) {
    rmsnorm_fwd_t(out, rstd, inp, weight, p);
}

template <typename T>
__device__ __forceinline__ void rmsnorm_bwd_t(T* __restrict__ dinp, const T* __restrict__ dout, const T* __restrict__ inp, const float* __restrict__ rstd,
                                              const T* __restrict__ weight, NormParams p) {
    __shared__ float scratch[32];
    const unsigned long long i = blockIdx.x;
    if (i >= p.n) return;
    norm_dx_row(dinp + i * p.c, dout + i * p.c, inp + i * p.c, weight, 0.0f, rstd[i], false, p.c, scratch);
}
extern "C" __global__ void rmsnorm_bwd(float* __restrict__ dinp, const float* __restrict__ dout, const float* __restrict__ inp, const float* __restrict__ rstd,
                                       const float* __restrict__ weight, NormParams p) {
    rmsnorm_bwd_t(dinp, dout, inp, rstd, weight, p);
}
extern "C" __global__ void rmsnorm_bwd_bf16(bf16* __restrict__ dinp, const bf16* __restrict__ dout, const bf16* __restrict__ inp, const float* __restrict__ rstd,
                                            const bf16* __restrict__ weight, NormParams p) {
    rmsnorm_bwd_t(dinp, dout, inp, rstd, weight, p);
}

// dw[j] += sum_i dy[i, j] xhat[i, j]; db[j] += sum_i dy[i, j] when `has_bias` (LayerNorm);
// `mean` is read only when `has_bias` (RMSNorm has no mean). Two stages (common.cuh): norm_dw sums
// each chunk of rows into partial[chunk c + j] (dw) and partial[(chunks + chunk) c + j] (db), or
// into dw / db directly when there is one chunk; norm_dw_final adds the chunks. The sums run in
// f32; each of dw and db is rounded once when added (bf16).
template <typename T>
__device__ __forceinline__ void norm_dw_t(T* __restrict__ dw, T* __restrict__ db, float* __restrict__ partial, const T* __restrict__ dout,
                                          const T* __restrict__ inp, const float* __restrict__ mean, const float* __restrict__ rstd, int has_bias,
                                          u32 rows_per_chunk, NormParams p) {
    __shared__ float sw[8][33], sb[8][33];
    const u32 j = blockIdx.x * 32 + threadIdx.x;
    const RowChunk rows = row_chunk(p.n, rows_per_chunk);
    float aw = 0.0f, ab = 0.0f;
    if (j < p.c) {
        for (u32 i = rows.begin + threadIdx.y; i < rows.end; i += 8) {
            const unsigned long long at = (unsigned long long)i * p.c + j;
            const float mu = has_bias ? mean[i] : 0.0f;
            const float g = ld(dout, at);
            aw += g * ((ld(inp, at) - mu) * rstd[i]);
            ab += g;
        }
    }
    const float w = tile_combine(sw, aw), b = tile_combine(sb, ab);
    if (threadIdx.y == 0 && j < p.c) {
        column_out(dw, partial, p.c, j, w);
        if (has_bias) column_out(db, partial + (unsigned long long)gridDim.y * p.c, p.c, j, b);
    }
}
extern "C" __global__ void norm_dw(float* __restrict__ dw, float* __restrict__ db, float* __restrict__ partial, const float* __restrict__ dout,
                                   const float* __restrict__ inp, const float* __restrict__ mean, const float* __restrict__ rstd, int has_bias,
                                   u32 rows_per_chunk, NormParams p) {
    norm_dw_t(dw, db, partial, dout, inp, mean, rstd, has_bias, rows_per_chunk, p);
}
extern "C" __global__ void norm_dw_bf16(bf16* __restrict__ dw, bf16* __restrict__ db, float* __restrict__ partial, const bf16* __restrict__ dout,
                                        const bf16* __restrict__ inp, const float* __restrict__ mean, const float* __restrict__ rstd, int has_bias,
                                        u32 rows_per_chunk, NormParams p) {
    norm_dw_t(dw, db, partial, dout, inp, mean, rstd, has_bias, rows_per_chunk, p);
}

// stage 2: dw[j] += the chunks' partial sums of column j in chunk order (db too when `has_bias`)
template <typename T>
__device__ __forceinline__ void norm_dw_final_t(T* __restrict__ dw, T* __restrict__ db, const float* __restrict__ partial, int has_bias, u32 chunks,
                                                NormParams p) {
    const unsigned long long j = gtid();
    if (j >= p.c) return;
    st(dw, j, ld(dw, j) + chunk_sum(partial, chunks, p.c, (u32)j));
    if (has_bias) st(db, j, ld(db, j) + chunk_sum(partial + (unsigned long long)chunks * p.c, chunks, p.c, (u32)j));
}
extern "C" __global__ void norm_dw_final(float* __restrict__ dw, float* __restrict__ db, const float* __restrict__ partial, int has_bias, u32 chunks,
                                         NormParams p) {
    norm_dw_final_t(dw, db, partial, has_bias, chunks, p);
}
extern "C" __global__ void norm_dw_final_bf16(bf16* __restrict__ dw, bf16* __restrict__ db, const float* __restrict__ partial, int has_bias, u32 chunks,
                                              NormParams p) {
    norm_dw_final_t(dw, db, partial, has_bias, chunks, p);
}

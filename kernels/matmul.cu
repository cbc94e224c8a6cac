// Matmul family. The backend runs `matmul` through cuBLAS (sgemm, strided batched; row-major
// operands through the usual swap: C^T = op(B)^T op(A)^T in column-major). This file holds the
// bias ops and a portable tiled SIMT `matmul` used when cuBLAS cannot be loaded.
// matmul: out[b] (+)= alpha op(a[b]) @ op(b[b]), op(a) [m, k] (stored [k, m] when trans_a),
//   op(b) [k, n] (stored [n, k] when trans_b), batch strides in elements (0 broadcasts).
//   Launch: grid (ceil(n / 32), ceil(m / 32), batch), block (32, 8), static shared memory
//   2 x 32 x 33 floats; each thread computes 4 rows (ty, ty + 8, ...) of one column.
// bias_add: out[i, j] += bias[j] over [n, c]. Launch: 1-D over n c, block 256.
// bias_bwd: dbias[j] += sum_i dout[i, j], a two-stage column sum (common.cuh). bias_bwd: grid
//   (ceil(c / 32), chunks), block (32, 8), 8 x 33 floats of static shared memory; block (x, y)
//   sums the rows of chunk y (rows_per_chunk each, the last one shorter) of its 32 columns, rows
//   split over threadIdx.y and combined in ty order; with one chunk it adds to dbias, else it
//   writes f32 partial sums [chunks, c] (the host's scratch) and bias_bwd_final (1-D over c,
//   block 256) adds them in chunk order. Chunks from n and c as for norm_dw (>= 264 blocks at
//   n = 16384, c >= 768). Deterministic, no atomics.
// Storage: matmul (f32), matmul_bf16 (bf16 operands and out), matmul_bf16_out_f32 (bf16
//   operands, f32 out), all accumulating in f32 (the operand tiles in shared memory are f32);
//   bias_add / bias_bwd / bias_bwd_final and their _bf16 entries (bf16 out, bias, dout, dbias;
//   sums and partial sums in f32).
// Nothing is saved for backward (the backward of a matmul is two more matmuls).
#include "common.cuh"

#define MM_T 32

template <typename TO, typename TI>
__device__ __forceinline__ void matmul_t(TO* __restrict__ out, const TI* __restrict__ a, const TI* __restrict__ b, MatmulParams p) {
    __shared__ float as[MM_T][MM_T + 1], bs[MM_T][MM_T + 1];
    const u32 tx = threadIdx.x, ty = threadIdx.y;
    const u32 col = blockIdx.x * MM_T + tx, row0 = blockIdx.y * MM_T;
    const unsigned long long z = blockIdx.z;
    const TI* A = a + z * p.stride_a;
    const TI* B = b + z * p.stride_b;
    TO* C = out + z * p.stride_out;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (u32 k0 = 0; k0 < p.k; k0 += MM_T) {
        for (u32 r = ty; r < MM_T; r += 8) {
            // as[r][tx] = op(a)[row0 + r, k0 + tx]; bs[r][tx] = op(b)[k0 + r, blockIdx.x * 32 + tx]
            const u32 ar = row0 + r, ak = k0 + tx;
            float va = 0.0f;
            if (ar < p.m && ak < p.k) va = ld(A, p.trans_a ? (unsigned long long)ak * p.m + ar : (unsigned long long)ar * p.k + ak);
            as[r][tx] = va;
            const u32 bk = k0 + r, bc = blockIdx.x * MM_T + tx;
            float vb = 0.0f;
            if (bk < p.k && bc < p.n) vb = ld(B, p.trans_b ? (unsigned long long)bc * p.k + bk : (unsigned long long)bk * p.n + bc);
            bs[r][tx] = vb;
        }
        __syncthreads();
#pragma unroll 8
        for (u32 kk = 0; kk < MM_T; kk++) {
            const float bv = bs[kk][tx];
#pragma unroll
            for (int q = 0; q < 4; q++) acc[q] = fmaf(as[ty + 8 * q][kk], bv, acc[q]);
        }
        __syncthreads();
    }
    if (col >= p.n) return;
#pragma unroll
    for (int q = 0; q < 4; q++) {
        const u32 r = row0 + ty + 8 * q;
        if (r < p.m) {
            const unsigned long long at = (unsigned long long)r * p.n + col;
            st(C, at, p.alpha * acc[q] + (p.accumulate ? ld(C, at) : 0.0f));
        }
    }
}

extern "C" __global__ void matmul(float* __restrict__ out, const float* __restrict__ a, const float* __restrict__ b, MatmulParams p) { matmul_t(out, a, b, p); }
extern "C" __global__ void matmul_bf16(bf16* __restrict__ out, const bf16* __restrict__ a, const bf16* __restrict__ b, MatmulParams p) { matmul_t(out, a, b, p); }
extern "C" __global__ void matmul_bf16_out_f32(float* __restrict__ out, const bf16* __restrict__ a, const bf16* __restrict__ b, MatmulParams p) { matmul_t(out, a, b, p); }

template <typename T>
__device__ __forceinline__ void bias_add_t(T* __restrict__ out, const T* __restrict__ bias, BiasParams p) {
    const unsigned long long total = (unsigned long long)p.n * p.c;
    for (unsigned long long i = gtid(); i < total; i += gstride()) st(out, i, ld(out, i) + ld(bias, i % p.c));
}
extern "C" __global__ void bias_add(float* __restrict__ out, const float* __restrict__ bias, BiasParams p) { bias_add_t(out, bias, p); }
extern "C" __global__ void bias_add_bf16(bf16* __restrict__ out, const bf16* __restrict__ bias, BiasParams p) { bias_add_t(out, bias, p); }

// stage 1 of the column sum (common.cuh): the chunk's rows of column j into partial[chunk c + j],
// or into dbias when there is one chunk
template <typename T>
__device__ __forceinline__ void bias_bwd_t(T* __restrict__ dbias, float* __restrict__ partial, const T* __restrict__ dout, u32 rows_per_chunk, BiasParams p) {
    __shared__ float s[8][33];
    const u32 j = blockIdx.x * 32 + threadIdx.x;
    const RowChunk rows = row_chunk(p.n, rows_per_chunk);
    float acc = 0.0f;
    if (j < p.c)
        for (u32 i = rows.begin + threadIdx.y; i < rows.end; i += 8) acc += ld(dout, (unsigned long long)i * p.c + j);
    const float t = tile_combine(s, acc);
    if (threadIdx.y == 0 && j < p.c) column_out(dbias, partial, p.c, j, t);
}
extern "C" __global__ void bias_bwd(float* __restrict__ dbias, float* __restrict__ partial, const float* __restrict__ dout, u32 rows_per_chunk, BiasParams p) {
    bias_bwd_t(dbias, partial, dout, rows_per_chunk, p);
}
extern "C" __global__ void bias_bwd_bf16(bf16* __restrict__ dbias, float* __restrict__ partial, const bf16* __restrict__ dout, u32 rows_per_chunk, BiasParams p) {
    bias_bwd_t(dbias, partial, dout, rows_per_chunk, p);
}

// stage 2: dbias[j] += the chunks' partial sums of column j in chunk order
template <typename T>
__device__ __forceinline__ void bias_bwd_final_t(T* __restrict__ dbias, const float* __restrict__ partial, u32 chunks, BiasParams p) {
    const unsigned long long j = gtid();
    if (j < p.c) st(dbias, j, ld(dbias, j) + chunk_sum(partial, chunks, p.c, (u32)j));
}
extern "C" __global__ void bias_bwd_final(float* __restrict__ dbias, const float* __restrict__ partial, u32 chunks, BiasParams p) {
    bias_bwd_final_t(dbias, partial, chunks, p);
}
extern "C" __global__ void bias_bwd_final_bf16(bf16* __restrict__ dbias, const float* __restrict__ partial, u32 chunks, BiasParams p) {
    bias_bwd_final_t(dbias, partial, chunks, p);
}

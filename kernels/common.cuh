// Shared by every kernel file: the `#[repr(C)]` params structs of src/backend/ops/ (same fields,
// same order, so the host passes them by value as a kernel argument) and the warp / block
// reductions. Included through NVRTC's header list (name "common.cuh"); no CUDA headers needed.
//
// Reductions: `warp_sum`/`warp_max` use __shfl_xor_sync over a full warp (every lane gets the
// result); `block_sum`/`block_max` reduce a whole block (blockDim.x a multiple of 32, <= 1024)
// through 32 floats of shared memory passed by the caller, and return the result to every thread.
// The combination order depends only on blockDim, so results are deterministic run to run.
//
// Storage types (`--precision`): a compute-typed buffer holds `float` or `bf16`. `bf16` is the
// bits of a bfloat16 in an unsigned short (no cuda_bf16.h, so NVRTC needs no header): `ld` shifts
// them into the high half of a float (exact), `st` rounds a float to nearest even (NaN kept quiet,
// as the `half` crate on the host). Kernels read with `ld`, compute and accumulate in f32 and
// write with `st`; a kernel body is a template over the storage type T, instantiated as the
// `extern "C"` entry NAME (T = float) and NAME_bf16 (T = bf16). For float, `ld`/`st` are the
// identity, so the f32 kernels compute exactly what they did before the templates.
// `load_group` / `store_group` move G consecutive elements through 16-byte (uint4) accesses:
// G = 4 floats or 8 bf16 per uint4 (`Elt<T>::PER16`); buffers are cudaMalloc'd (256-byte
// aligned) and element-wise ops use them from offset 0, so groups are aligned.
#pragma once

typedef unsigned int u32;

struct EmbeddingParams { u32 n, c, accumulate, vocab; };
struct NormParams { u32 n, c; float eps; u32 _pad; };
struct MatmulParams {
    u32 m, n, k, batch, trans_a, trans_b, accumulate;
    float alpha;
    u32 stride_a, stride_b, stride_out, _pad;
};
struct BiasParams { u32 n, c; };
struct ElementwiseParams { u32 n, _pad; };
struct RopeParams { u32 n_tokens, row, n_rot_heads, head_dim; float theta; u32 _pad; };
struct AttentionParams {
    u32 b, tq, tk, nh, nkv, hd, q_pos0;
    float scale;
    u32 q_row, q_batch, q_off, kv_row, kv_batch, k_off, v_off, _pad;
};
struct KvCacheParams { u32 b, t, pos0, t_max, nh, nkv, hd, _pad; };
struct ScatterParams { u32 n, width, src_row, src_off, dst_row, dst_rows; };
struct AttentionDecodeParams { u32 n, t_max, slots, nh, nkv, hd; float scale; u32 q_row, q_off, _pad; };
struct CrossEntropyParams { u32 n, v; };
struct SampleParams { u32 n, v; float temperature; u32 top_k; float top_p; u32 seed_lo, seed_hi, step_at; };
struct DecodeAdvanceParams { u32 n, slots, t_max, stride, max_new, max_len, n_stop, dump_row; };
struct AdamWParams { u32 n; float lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2, max_grad_norm; u32 _pad0, _pad1, _pad2; };
struct RankingParams { u32 n_groups; float scale; };
struct PreferenceParams { u32 pairs, t, loss_type, length_norm; float beta, label_smoothing, simpo_gamma, scale; };
struct GaeParams { u32 b, t; float gamma, lambda; };
struct WhitenParams { u32 n, shift_mean, unbiased; float eps; };
struct GroupAdvantageParams { u32 b, t, group, estimator; float beta, eps; };
struct RewardNormParams { double count, mean, m2; u32 n; float eps; };
struct LogprobParams { u32 n, c, v, chunk; float temperature; u32 _pad0, _pad1, _pad2; };
struct KlParams { u32 n, estimator; };
struct PpoParams {
    u32 n, t, aggregation, kl_estimator;
    float clip_low, clip_high, dual_clip, value_clip, vf_coef, ent_coef, kl_coef, denom;
};

// ppo_stat slots (src/backend/ops/)
#define PPO_STAT_COUNT 10

#define FULL_MASK 0xffffffffu
#define NEG_INF (-__int_as_float(0x7f800000))

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(FULL_MASK, x, o);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, o));
    return x;
}

// Reduction of x over the block with `op` (the warp-level reduction); `scratch` holds 32 values of
// shared memory, `identity` fills the missing warps. Every thread gets the result.
template <typename T, typename W>
__device__ __forceinline__ T block_reduce(T x, T* scratch, T identity, W op) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    x = op(x);
    __syncthreads();
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = lane < warps ? scratch[lane] : identity;
    return op(x);
}

__device__ __forceinline__ float block_sum(float x, float* scratch) { return block_reduce(x, scratch, 0.0f, warp_sum<float>); }
__device__ __forceinline__ double block_sum_d(double x, double* scratch) { return block_reduce(x, scratch, 0.0, warp_sum<double>); }
__device__ __forceinline__ float block_max(float x, float* scratch) { return block_reduce(x, scratch, NEG_INF, warp_max); }

struct bf16 { unsigned short bits; };

__device__ __forceinline__ float ld(float x) { return x; }
__device__ __forceinline__ float ld(bf16 x) { return __uint_as_float((u32)x.bits << 16); }
__device__ __forceinline__ unsigned short bf16_bits(float x) {
    const u32 u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // NaN stays NaN
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);                 // nearest, ties to even
}
template <typename T> __device__ __forceinline__ T cvt(float x);
template <> __device__ __forceinline__ float cvt<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 cvt<bf16>(float x) { return bf16{bf16_bits(x)}; }
// p[i] as f32, and p[i] = x rounded to T
template <typename T> __device__ __forceinline__ float ld(const T* p, unsigned long long i) { return ld(p[i]); }
template <typename T> __device__ __forceinline__ void st(T* p, unsigned long long i, float x) { p[i] = cvt<T>(x); }

// The elements of one 16-byte word: unpack to f32 / pack from f32.
template <typename T> struct Elt;
template <> struct Elt<float> {
    static constexpr int PER16 = 4;
    static __device__ __forceinline__ void unpack(uint4 w, float* v) { v[0] = __uint_as_float(w.x); v[1] = __uint_as_float(w.y); v[2] = __uint_as_float(w.z); v[3] = __uint_as_float(w.w); }
    static __device__ __forceinline__ uint4 pack(const float* v) { return make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]), __float_as_uint(v[3])); }
};
template <> struct Elt<bf16> {
    static constexpr int PER16 = 8;
    static __device__ __forceinline__ void two(u32 w, float* v) { v[0] = __uint_as_float(w << 16); v[1] = __uint_as_float(w & 0xffff0000u); }
    static __device__ __forceinline__ u32 join(float a, float b) { return (u32)bf16_bits(a) | ((u32)bf16_bits(b) << 16); }
    static __device__ __forceinline__ void unpack(uint4 w, float* v) { two(w.x, v); two(w.y, v + 2); two(w.z, v + 4); two(w.w, v + 6); }
    static __device__ __forceinline__ uint4 pack(const float* v) { return make_uint4(join(v[0], v[1]), join(v[2], v[3]), join(v[4], v[5]), join(v[6], v[7])); }
};
// v[0 .. G) = p[q G .. q G + G) as f32 (G a multiple of Elt<T>::PER16), and the store back.
template <typename T, int G>
__device__ __forceinline__ void load_group(const T* p, unsigned long long q, float* v) {
    const uint4* src = reinterpret_cast<const uint4*>(p + q * G);
#pragma unroll
    for (int c = 0; c < G / Elt<T>::PER16; c++) Elt<T>::unpack(src[c], v + c * Elt<T>::PER16);
}
template <typename T, int G>
__device__ __forceinline__ void store_group(T* p, unsigned long long q, const float* v) {
    uint4* dst = reinterpret_cast<uint4*>(p + q * G);
#pragma unroll
    for (int c = 0; c < G / Elt<T>::PER16; c++) dst[c] = Elt<T>::pack(v + c * Elt<T>::PER16);
}

// Global thread index and grid-wide stride of a 1-D launch.
__device__ __forceinline__ unsigned long long gtid() { return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ unsigned long long gstride() { return (unsigned long long)gridDim.x * blockDim.x; }

// Element-wise loop over [n]: `vec(q)` for every group of G (elements G q .. G q + G - 1, for
// 16-byte loads and stores), then `scalar(i)` for the n % G tail. Grid-stride over a 1-D launch.
template <int G, typename V, typename S>
__device__ __forceinline__ void ew_loop_g(unsigned long long n, V vec, S scalar) {
    const unsigned long long ng = n / G;
    for (unsigned long long q = gtid(); q < ng; q += gstride()) vec(q);
    for (unsigned long long i = ng * G + gtid(); i < n; i += gstride()) scalar(i);
}
template <typename V, typename S>
__device__ __forceinline__ void ew_loop(unsigned long long n, V vec, S scalar) { ew_loop_g<4>(n, vec, scalar); }

// out[i] = f(a[i]) (ew_map1) and out[i] = f(a[i], b[i]) (ew_map2) over [n], storage type T,
// computed in f32, in groups of Elt<T>::PER16 (out may be a or b: each element is read first).
template <typename T, typename F>
__device__ __forceinline__ void ew_map1(unsigned long long n, T* out, const T* a, F f) {
    constexpr int G = Elt<T>::PER16;
    ew_loop_g<G>(n, [&](unsigned long long q) {
            float x[G];
            load_group<T, G>(a, q, x);
#pragma unroll
            for (int e = 0; e < G; e++) x[e] = f(x[e]);
            store_group<T, G>(out, q, x);
        }, [&](unsigned long long i) { st(out, i, f(ld(a, i))); });
}
template <typename T, typename F>
__device__ __forceinline__ void ew_map2(unsigned long long n, T* out, const T* a, const T* b, F f) {
    constexpr int G = Elt<T>::PER16;
    ew_loop_g<G>(n, [&](unsigned long long q) {
            float x[G], y[G];
            load_group<T, G>(a, q, x);
            load_group<T, G>(b, q, y);
#pragma unroll
            for (int e = 0; e < G; e++) x[e] = f(x[e], y[e]);
            store_group<T, G>(out, q, x);
        }, [&](unsigned long long i) { st(out, i, f(ld(a, i), ld(b, i))); });
}

// ---- Tensor-core instructions (sm_80 and newer), one wrapper each.
// On the device each is inline PTX; under the CUDA emulator (RLHF_CUDA_EMU, tests/cuda_emu) each is
// a C++ model of the PTX ISA's per-lane fragment layout built on the emulator's warp exchange, so
// the kernels that use them run, and are checked, without a GPU. Lane l of a warp: g = l / 4 (the
// "groupID"), t = l % 4 ("threadID_in_group"). A u32 register holds two bf16, the lower-indexed
// element in its low half.
//
// mma_bf16_16816(d, a, b, c): D = A B + C for A 16x16 bf16 (row-major), B 16x8 bf16 (column-major),
// C and D 16x8 f32. Registers per lane:
//   a[0] = A[g][2t, 2t+1]   a[1] = A[g+8][2t, 2t+1]   a[2] = A[g][2t+8, 2t+9]   a[3] = A[g+8][2t+8, 2t+9]
//   b[0] = B[2t, 2t+1][g]   b[1] = B[2t+8, 2t+9][g]
//   c[0], c[1] = C[g][2t, 2t+1]   c[2], c[3] = C[g+8][2t, 2t+1]   (d likewise)
// ldmatrix_x4(r, row) / ldmatrix_x2: four (two) 8x8 b16 matrices from shared memory; lanes
// 8i .. 8i+7 give the addresses of rows 0..7 of matrix i (16-byte aligned); lane l receives
// r[i] = M_i[l / 4][2 (l % 4), 2 (l % 4) + 1]. The _trans forms receive the transpose:
// r[i] = (M_i[2 (l % 4)][l / 4], M_i[2 (l % 4) + 1][l / 4]).
// cp_async16(dst, src, valid): 16 bytes global -> shared without a register stop (zeros when
// !valid); they land only after a cp_async_commit() closing their group and a cp_async_wait<n>()
// (every group but the newest n landed) — and other threads see them after a __syncthreads.
#ifndef RLHF_CUDA_EMU
__device__ __forceinline__ u32 smem_u32(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
__device__ __forceinline__ void mma_bf16_16816(float* d, const u32* a, const u32* b, const float* c) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
__device__ __forceinline__ void ldmatrix_x4(u32* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(row)));
}
__device__ __forceinline__ void ldmatrix_x2(u32* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_u32(row)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(u32* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_u32(row)));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_u32(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }
#else
struct MmaFragments { u32 a[4], b[2]; };
inline unsigned short frag_half(u32 r, int odd) { return (unsigned short)(odd ? r >> 16 : r & 0xffffu); }
inline void mma_bf16_16816(float* d, const u32* a, const u32* b, const float* c) {
    MmaFragments mine;
    for (int i = 0; i < 4; i++) mine.a[i] = a[i];
    for (int i = 0; i < 2; i++) mine.b[i] = b[i];
    const MmaFragments* all = emu_warp_collect(mine);
    const int l = emu_lane(), g = l >> 2, t = l & 3;
    // A[row][k]: lane (row % 8) * 4 + (k % 8) / 2, register (k / 8) * 2 + row / 8, half k % 2
    auto A = [&](int row, int k) { return ld(bf16{frag_half(all[(row & 7) * 4 + ((k & 7) >> 1)].a[(k >> 3) * 2 + (row >> 3)], k & 1)}); };
    // B[k][col]: lane col * 4 + (k % 8) / 2, register k / 8, half k % 2
    auto B = [&](int k, int col) { return ld(bf16{frag_half(all[col * 4 + ((k & 7) >> 1)].b[k >> 3], k & 1)}); };
    float out[4];
    for (int i = 0; i < 4; i++) {
        const int row = g + (i >> 1) * 8, col = 2 * t + (i & 1);
        float s = c[i];
        for (int k = 0; k < 16; k++) s = fmaf(A(row, k), B(k, col), s);
        out[i] = s;
    }
    for (int i = 0; i < 4; i++) d[i] = out[i];
}
template <int M, bool TRANS>
inline void ldmatrix_model(u32* r, const void* row) {
    const unsigned char* const* rows = emu_warp_collect(static_cast<const unsigned char*>(row));
    const int l = emu_lane();
    auto at = [&](int m, int i, int j) {  // element (i, j) of matrix m
        unsigned short v;
        std::memcpy(&v, rows[8 * m + i] + 2 * j, 2);
        return (u32)v;
    };
    for (int m = 0; m < M; m++)
        r[m] = TRANS ? at(m, 2 * (l & 3), l >> 2) | at(m, 2 * (l & 3) + 1, l >> 2) << 16 : at(m, l >> 2, 2 * (l & 3)) | at(m, l >> 2, 2 * (l & 3) + 1) << 16;
}
inline void ldmatrix_x4(u32* r, const void* row) { ldmatrix_model<4, false>(r, row); }
inline void ldmatrix_x4_trans(u32* r, const void* row) { ldmatrix_model<4, true>(r, row); }
inline void ldmatrix_x2(u32* r, const void* row) { ldmatrix_model<2, false>(r, row); }
inline void ldmatrix_x2_trans(u32* r, const void* row) { ldmatrix_model<2, true>(r, row); }
inline void cp_async16(void* dst, const void* src, bool valid) { emu_cp_async(dst, src, 16, valid ? 16 : 0); }
inline void cp_async_commit() { emu_cp_async_commit(); }
template <int N>
inline void cp_async_wait() { emu_cp_async_wait(N); }
#endif

// Two-stage column sums over an [n, c] matrix (norm_dw, bias_bwd: parameter gradients summed over
// rows). Stage 1: grid (ceil(c / 32), chunks), block (32, 8); block (x, y) owns columns x 32 + tx
// and the rows [y R, min(n, y R + R)) of chunk y (R rows per chunk, the host's choice); thread row
// ty sums rows ty, ty + 8, ... of the chunk in order, `tile_combine` adds the 8 thread rows in ty
// order, and `column_out` adds the sum to out[j] when there is one chunk, else writes it to
// partial[y c + j]. Stage 2 (1-D over c, block 256): `chunk_sum` adds partial[0 .. chunks) of
// column j in chunk order. Every order is fixed: deterministic run to run, no atomics.
struct RowChunk { u32 begin, end; };
__device__ __forceinline__ RowChunk row_chunk(u32 n, u32 rows_per_chunk) {
    const unsigned long long b = (unsigned long long)blockIdx.y * rows_per_chunk;
    const unsigned long long e = b + rows_per_chunk;
    return RowChunk{(u32)(b < n ? b : n), (u32)(e < n ? e : n)};
}
// the sum of `acc` over the block's 8 thread rows in ty order (valid in thread row 0); `s` is
// 8 x 33 floats of shared memory of the caller's
__device__ __forceinline__ float tile_combine(float (*s)[33], float acc) {
    s[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    float t = 0.0f;
    if (threadIdx.y == 0)
        for (int r = 0; r < 8; r++) t += s[r][threadIdx.x];
    return t;
}
template <typename T>
__device__ __forceinline__ void column_out(T* out, float* partial, u32 c, u32 j, float sum) {
    if (gridDim.y == 1) st(out, j, ld(out, j) + sum);
    else partial[(unsigned long long)blockIdx.y * c + j] = sum;
}
__device__ __forceinline__ float chunk_sum(const float* partial, u32 chunks, u32 c, u32 j) {
    float t = 0.0f;
    for (u32 k = 0; k < chunks; k++) t += partial[(unsigned long long)k * c + j];
    return t;
}

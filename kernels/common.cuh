// Shared by every kernel file: the `#[repr(C)]` params structs of src/backend/ops.rs (same fields,
// same order, so the host passes them by value as a kernel argument) and the warp / block
// reductions. Included through NVRTC's header list (name "common.cuh"); no CUDA headers needed.
//
// Reductions: `warp_sum`/`warp_max` use __shfl_xor_sync over a full warp (every lane gets the
// result); `block_sum`/`block_max` reduce a whole block (blockDim.x a multiple of 32, <= 1024)
// through 32 floats of shared memory passed by the caller, and return the result to every thread.
// The combination order depends only on blockDim, so results are deterministic run to run.
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
struct LogprobParams { u32 n, c, v, chunk; float temperature; u32 _pad0, _pad1, _pad2; };
struct KlParams { u32 n, estimator; };
struct PpoParams {
    u32 n, t, aggregation, kl_estimator;
    float clip_low, clip_high, dual_clip, value_clip, vf_coef, ent_coef, kl_coef, denom;
};

// ppo_stat slots (src/backend/ops.rs)
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

// Global thread index and grid-wide stride of a 1-D launch.
__device__ __forceinline__ unsigned long long gtid() { return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ unsigned long long gstride() { return (unsigned long long)gridDim.x * blockDim.x; }

// Element-wise loop over [n]: `vec(q)` for every group of 4 (elements 4q .. 4q + 3, for float4
// loads and stores), then `scalar(i)` for the n % 4 tail. Grid-stride over a 1-D launch.
template <typename V, typename S>
__device__ __forceinline__ void ew_loop(unsigned long long n, V vec, S scalar) {
    const unsigned long long n4 = n / 4;
    for (unsigned long long q = gtid(); q < n4; q += gstride()) vec(q);
    for (unsigned long long i = n4 * 4 + gtid(); i < n; i += gstride()) scalar(i);
}

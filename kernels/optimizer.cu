// Optimiser ops over one parameter tensor [n].
// sum_squares: acc[0] += sum_i x_i^2 in two stages: sum_squares (grid G <= 1024 blocks of 256,
//   grid-stride, f64 per-thread sums, block tree) writes partial[blockIdx.x]; sum_squares_final
//   (one block of 1024... launched with 256 threads) adds partial[0 .. G] in a fixed order and
//   adds the total to acc[0]. The host owns the partial buffer (1024 doubles as 2048 floats).
// adamw (global-norm clipping fused in): norm_sq [1] is read on the device (no host sync); when it
//   is not finite nothing is written (the step is skipped); otherwise g = grad * s with
//   s = min(1, max_grad_norm / (sqrt(norm_sq) + 1e-6)) when max_grad_norm > 0, else s = 1 (grad is
//   only read), and m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
//   p -= lr (m / bc1 / (sqrt(v / bc2) + eps) + wd p). float4 loads and stores.
// Storage: `x` of sum_squares and `grad` of adamw may be f32 (NAME) or bf16 (NAME_bf16, the
//   gradients of bf16 compute buffers); acc, param (the f32 master weights), m, v, norm_sq are f32.
// Launch for adamw: 1-D, block 256, grid ceil(ceil(n / 4) / 256).
// Multi-tensor forms (one launch for every tensor of a model): `table` (u64 words, on the device,
//   built by the host once per tensor list) holds per tensor t, at 7 t: the addresses of param, m,
//   v, grad and out (0: no out), n, and the tensor's weight decay (f32 bits); then per chunk c, at
//   7 T + c: (t << 32) | (index of the chunk in its tensor), a chunk being MT_CHUNK elements.
//   sum_squares_many: one block of 256 per chunk (grid = chunks) writes the chunk's f64 sum of
//   squares to partial[c]; sum_squares_final then adds partial[0 .. chunks) in a fixed order.
//   adamw_many: grid-stride over chunks, 8 elements per thread per pass (two float4 of param, m
//   and v; grad and out through load_group / store_group), the same update as adamw with the
//   tensor's decay, and out[i] = round(param[i]) to the storage type (the bf16 compute weights of
//   the f32 master) when out is given — also on a skipped step (non-finite norm_sq), which
//   leaves param, m and v untouched. grad and out share T (f32: adamw_many, bf16: _bf16).
#include "common.cuh"

#define MT_CHUNK 65536ull

template <typename T>
__device__ __forceinline__ void sum_squares_t(double* __restrict__ partial, const T* __restrict__ x, ElementwiseParams p) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (unsigned long long i = gtid(); i < p.n; i += gstride()) {
        const double v = ld(x, i);
        s += v * v;
    }
    s = block_sum_d(s, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

extern "C" __global__ void sum_squares(double* __restrict__ partial, const float* __restrict__ x, ElementwiseParams p) { sum_squares_t(partial, x, p); }
extern "C" __global__ void sum_squares_bf16(double* __restrict__ partial, const bf16* __restrict__ x, ElementwiseParams p) { sum_squares_t(partial, x, p); }

extern "C" __global__ void sum_squares_final(float* __restrict__ acc, const double* __restrict__ partial, u32 blocks) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (u32 i = threadIdx.x; i < blocks; i += blockDim.x) s += partial[i];
    s = block_sum_d(s, scratch);
    if (threadIdx.x == 0) acc[0] += (float)s;
}

__device__ __forceinline__ void adamw_one(float& w, float& m, float& v, float g, const AdamWParams& p) {
    m = p.beta1 * m + (1.0f - p.beta1) * g;
    v = p.beta2 * v + (1.0f - p.beta2) * g * g;
    const float mhat = m / p.bias_correction1, vhat = v / p.bias_correction2;
    w -= p.lr * (mhat / (sqrtf(vhat) + p.eps) + p.weight_decay * w);
}

// grad of type T, read in groups of G = 4 (one float4, or half a uint4 of bf16: 8-byte loads)
template <typename T>
__device__ __forceinline__ void load4(const T* g, unsigned long long q, float* v);
template <> __device__ __forceinline__ void load4<float>(const float* g, unsigned long long q, float* v) {
    const float4 x = reinterpret_cast<const float4*>(g)[q];
    v[0] = x.x; v[1] = x.y; v[2] = x.z; v[3] = x.w;
}
template <> __device__ __forceinline__ void load4<bf16>(const bf16* g, unsigned long long q, float* v) {
    const uint2 x = reinterpret_cast<const uint2*>(g)[q];
    Elt<bf16>::two(x.x, v);
    Elt<bf16>::two(x.y, v + 2);
}

template <typename T>
__device__ __forceinline__ void adamw_t(float* __restrict__ param, float* __restrict__ m, float* __restrict__ v, const T* __restrict__ grad,
                                        const float* __restrict__ norm_sq, AdamWParams p) {
    const float nsq = norm_sq[0];
    if ((__float_as_uint(nsq) & 0x7f800000u) == 0x7f800000u) return;  // exponent all ones: inf or NaN
    const float s = p.max_grad_norm > 0.0f ? fminf(p.max_grad_norm / (sqrtf(nsq) + 1e-6f), 1.0f) : 1.0f;
    const unsigned long long n = p.n, n4 = n / 4;
    for (unsigned long long q = gtid(); q < n4; q += gstride()) {
        float4 w = reinterpret_cast<float4*>(param)[q], mm = reinterpret_cast<float4*>(m)[q], vv = reinterpret_cast<float4*>(v)[q];
        float g[4];
        load4(grad, q, g);
        adamw_one(w.x, mm.x, vv.x, g[0] * s, p);
        adamw_one(w.y, mm.y, vv.y, g[1] * s, p);
        adamw_one(w.z, mm.z, vv.z, g[2] * s, p);
        adamw_one(w.w, mm.w, vv.w, g[3] * s, p);
        reinterpret_cast<float4*>(param)[q] = w;
        reinterpret_cast<float4*>(m)[q] = mm;
        reinterpret_cast<float4*>(v)[q] = vv;
    }
    for (unsigned long long i = n4 * 4 + gtid(); i < n; i += gstride()) adamw_one(param[i], m[i], v[i], ld(grad, i) * s, p);
}
extern "C" __global__ void adamw(float* __restrict__ param, float* __restrict__ m, float* __restrict__ v, const float* __restrict__ grad,
                                 const float* __restrict__ norm_sq, AdamWParams p) {
    adamw_t(param, m, v, grad, norm_sq, p);
}
extern "C" __global__ void adamw_bf16(float* __restrict__ param, float* __restrict__ m, float* __restrict__ v, const bf16* __restrict__ grad,
                                      const float* __restrict__ norm_sq, AdamWParams p) {
    adamw_t(param, m, v, grad, norm_sq, p);
}

// One tensor's entry of a multi-tensor table.
struct MtTensor {
    float* param;
    float* m;
    float* v;
    const void* grad;
    void* out;
    unsigned long long n;
    float weight_decay;
};
__device__ __forceinline__ MtTensor mt_tensor(const unsigned long long* __restrict__ table, u32 t) {
    const unsigned long long* e = table + 7ull * t;
    return MtTensor{(float*)e[0], (float*)e[1], (float*)e[2], (const void*)e[3], (void*)e[4], e[5], __uint_as_float((u32)e[6])};
}

template <typename T>
__device__ __forceinline__ void sum_squares_many_t(double* __restrict__ partial, const unsigned long long* __restrict__ table, u32 tensors) {
    __shared__ double scratch[32];
    const unsigned long long e = table[7ull * tensors + blockIdx.x];
    const MtTensor d = mt_tensor(table, (u32)(e >> 32));
    const unsigned long long start = (e & 0xffffffffull) * MT_CHUNK, end = min(d.n, start + MT_CHUNK);
    const T* x = (const T*)d.grad;
    double s = 0.0;
    for (unsigned long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        const double v = ld(x, i);
        s += v * v;
    }
    s = block_sum_d(s, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
extern "C" __global__ void sum_squares_many(double* __restrict__ partial, const unsigned long long* __restrict__ table, u32 tensors) {
    sum_squares_many_t<float>(partial, table, tensors);
}
extern "C" __global__ void sum_squares_many_bf16(double* __restrict__ partial, const unsigned long long* __restrict__ table, u32 tensors) {
    sum_squares_many_t<bf16>(partial, table, tensors);
}

template <typename T>
__device__ __forceinline__ void adamw_many_t(const unsigned long long* __restrict__ table, u32 tensors, u32 chunks, const float* __restrict__ norm_sq, AdamWParams p) {
    const float nsq = norm_sq[0];
    // inf or NaN: the step is skipped (param, m, v untouched), and out still gets the compute copy
    // of param, as after any call (the reference, `adamw_each`, copies param into out either way)
    const bool skip = (__float_as_uint(nsq) & 0x7f800000u) == 0x7f800000u;
    const float s = p.max_grad_norm > 0.0f ? fminf(p.max_grad_norm / (sqrtf(nsq) + 1e-6f), 1.0f) : 1.0f;
    for (u32 c = blockIdx.x; c < chunks; c += gridDim.x) {
        const unsigned long long e = table[7ull * tensors + c];
        const MtTensor d = mt_tensor(table, (u32)(e >> 32));
        AdamWParams q = p;
        q.weight_decay = d.weight_decay;
        const T* grad = (const T*)d.grad;
        T* out = (T*)d.out;
        const unsigned long long start = (e & 0xffffffffull) * MT_CHUNK, end = min(d.n, start + MT_CHUNK);
        const unsigned long long groups = (end - start) / 8;  // start is a multiple of 8: aligned groups
        if (skip) {
            if (!out) continue;
            for (unsigned long long k = threadIdx.x; k < groups; k += blockDim.x) {
                float w[8];
                load_group<float, 8>(d.param, start / 8 + k, w);
                store_group<T, 8>(out, start / 8 + k, w);
            }
            for (unsigned long long i = start + groups * 8 + threadIdx.x; i < end; i += blockDim.x) st(out, i, d.param[i]);
            continue;
        }
        for (unsigned long long k = threadIdx.x; k < groups; k += blockDim.x) {
            const unsigned long long g8 = start / 8 + k;
            float w[8], mm[8], vv[8], g[8];
            load_group<float, 8>(d.param, g8, w);
            load_group<float, 8>(d.m, g8, mm);
            load_group<float, 8>(d.v, g8, vv);
            load_group<T, 8>(grad, g8, g);
#pragma unroll
            for (int j = 0; j < 8; j++) adamw_one(w[j], mm[j], vv[j], g[j] * s, q);
            store_group<float, 8>(d.param, g8, w);
            store_group<float, 8>(d.m, g8, mm);
            store_group<float, 8>(d.v, g8, vv);
            if (out) store_group<T, 8>(out, g8, w);
        }
        for (unsigned long long i = start + groups * 8 + threadIdx.x; i < end; i += blockDim.x) {
            adamw_one(d.param[i], d.m[i], d.v[i], ld(grad, i) * s, q);
            if (out) st(out, i, d.param[i]);
        }
    }
}
extern "C" __global__ void adamw_many(const unsigned long long* __restrict__ table, u32 tensors, u32 chunks, const float* __restrict__ norm_sq, AdamWParams p) {
    adamw_many_t<float>(table, tensors, chunks, norm_sq, p);
}
extern "C" __global__ void adamw_many_bf16(const unsigned long long* __restrict__ table, u32 tensors, u32 chunks, const float* __restrict__ norm_sq, AdamWParams p) {
    adamw_many_t<bf16>(table, tensors, chunks, norm_sq, p);
}

// Element-wise ops over flat `[n]` buffers: fill, copy, add, add_inplace, scale_inplace.
//   fill: out[i] = value; copy: out[i] = inp[i]; add: out[i] = a[i] + b[i];
//   add_inplace: acc[i] += x[i]; scale_inplace: x[i] *= s. Nothing saved for backward.
// Storage types: every op has an f32 entry (NAME) and a bf16 one (NAME_bf16, computed in f32 and
// rounded to nearest even on store); `copy` converts between any two types: copy (f32 -> f32),
// copy_bf16 (bf16 -> bf16), copy_f32_to_bf16 and copy_bf16_to_f32 (the cast kernels).
// Launch: 1-D, block 256, grid ceil(ceil(n / G) / 256), at most 65535 blocks (grid-stride loops,
// `ew_loop_g` of common.cuh). Each thread handles G consecutive elements through 16-byte accesses
// (G = 4 for f32, 8 when a bf16 buffer is involved; buffers are cudaMalloc'd, 256-byte aligned,
// and used from offset 0); the last partial group falls back to scalar accesses.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void fill_t(T* out, float value, ElementwiseParams p) {
    constexpr int G = Elt<T>::PER16;
    ew_loop_g<G>(p.n, [&](unsigned long long q) {
            float v[G];
#pragma unroll
            for (int e = 0; e < G; e++) v[e] = value;
            store_group<T, G>(out, q, v);
        }, [&](unsigned long long i) { st(out, i, value); });
}

// out (type TO) = inp (type TI), in groups of the larger of the two types' per-16-byte counts
template <typename TO, typename TI>
__device__ __forceinline__ void copy_t(TO* out, const TI* inp, ElementwiseParams p) {
    constexpr int G = Elt<TO>::PER16 > Elt<TI>::PER16 ? Elt<TO>::PER16 : Elt<TI>::PER16;
    ew_loop_g<G>(p.n, [&](unsigned long long q) {
            float v[G];
            load_group<TI, G>(inp, q, v);
            store_group<TO, G>(out, q, v);
        }, [&](unsigned long long i) { st(out, i, ld(inp, i)); });
}

extern "C" __global__ void fill(float* __restrict__ out, float value, ElementwiseParams p) { fill_t(out, value, p); }
extern "C" __global__ void fill_bf16(bf16* __restrict__ out, float value, ElementwiseParams p) { fill_t(out, value, p); }

extern "C" __global__ void copy(float* __restrict__ out, const float* __restrict__ inp, ElementwiseParams p) { copy_t(out, inp, p); }
extern "C" __global__ void copy_bf16(bf16* __restrict__ out, const bf16* __restrict__ inp, ElementwiseParams p) { copy_t(out, inp, p); }
extern "C" __global__ void copy_f32_to_bf16(bf16* __restrict__ out, const float* __restrict__ inp, ElementwiseParams p) { copy_t(out, inp, p); }
extern "C" __global__ void copy_bf16_to_f32(float* __restrict__ out, const bf16* __restrict__ inp, ElementwiseParams p) { copy_t(out, inp, p); }

template <typename T>
__device__ __forceinline__ void add_t(T* out, const T* a, const T* b, ElementwiseParams p) {
    ew_map2(p.n, out, a, b, [](float x, float y) { return x + y; });
}
extern "C" __global__ void add(float* __restrict__ out, const float* __restrict__ a, const float* __restrict__ b, ElementwiseParams p) { add_t(out, a, b, p); }
extern "C" __global__ void add_bf16(bf16* __restrict__ out, const bf16* __restrict__ a, const bf16* __restrict__ b, ElementwiseParams p) { add_t(out, a, b, p); }

template <typename T>
__device__ __forceinline__ void add_inplace_t(T* acc, const T* x, ElementwiseParams p) {
    ew_map2(p.n, acc, acc, x, [](float s, float y) { return s + y; });
}
extern "C" __global__ void add_inplace(float* __restrict__ acc, const float* __restrict__ x, ElementwiseParams p) { add_inplace_t(acc, x, p); }
extern "C" __global__ void add_inplace_bf16(bf16* __restrict__ acc, const bf16* __restrict__ x, ElementwiseParams p) { add_inplace_t(acc, x, p); }

template <typename T>
__device__ __forceinline__ void scale_inplace_t(T* x, float s, ElementwiseParams p) {
    ew_map1(p.n, x, x, [s](float v) { return v * s; });
}
extern "C" __global__ void scale_inplace(float* __restrict__ x, float s, ElementwiseParams p) { scale_inplace_t(x, s, p); }
extern "C" __global__ void scale_inplace_bf16(bf16* __restrict__ x, float s, ElementwiseParams p) { scale_inplace_t(x, s, p); }

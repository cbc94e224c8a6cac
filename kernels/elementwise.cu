// Element-wise ops over flat `[n]` buffers: fill, copy, add, add_inplace, scale_inplace.
//   fill: out[i] = value; copy: out[i] = inp[i]; add: out[i] = a[i] + b[i];
//   add_inplace: acc[i] += x[i]; scale_inplace: x[i] *= s. Nothing saved for backward.
// Launch: 1-D, block 256, grid ceil(ceil(n / 4) / 256), at most 65535 blocks (grid-stride
// loops, `ew_loop` of common.cuh). Each thread handles 4 consecutive elements with one 16-byte
// float4 load/store (buffers are cudaMalloc'd, 256-byte aligned, and used from offset 0); the
// last partial group of 4 falls back to scalar accesses.
#include "common.cuh"


extern "C" __global__ void fill(float* __restrict__ out, float value, ElementwiseParams p) {
    ew_loop(p.n, [&](unsigned long long q) { reinterpret_cast<float4*>(out)[q] = make_float4(value, value, value, value); }, [&](unsigned long long i) { out[i] = value; });
}

extern "C" __global__ void copy(float* __restrict__ out, const float* __restrict__ inp, ElementwiseParams p) {
    ew_loop(p.n, [&](unsigned long long q) { reinterpret_cast<float4*>(out)[q] = reinterpret_cast<const float4*>(inp)[q]; }, [&](unsigned long long i) { out[i] = inp[i]; });
}

extern "C" __global__ void add(float* __restrict__ out, const float* __restrict__ a, const float* __restrict__ b, ElementwiseParams p) {
    ew_loop(p.n, [&](unsigned long long q) {
            const float4 x = reinterpret_cast<const float4*>(a)[q], y = reinterpret_cast<const float4*>(b)[q];
            reinterpret_cast<float4*>(out)[q] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
        }, [&](unsigned long long i) { out[i] = a[i] + b[i]; });
}

extern "C" __global__ void add_inplace(float* __restrict__ acc, const float* __restrict__ x, ElementwiseParams p) {
    ew_loop(p.n, [&](unsigned long long q) {
            float4 s = reinterpret_cast<float4*>(acc)[q];
            const float4 y = reinterpret_cast<const float4*>(x)[q];
            s.x += y.x; s.y += y.y; s.z += y.z; s.w += y.w;
            reinterpret_cast<float4*>(acc)[q] = s;
        }, [&](unsigned long long i) { acc[i] += x[i]; });
}

extern "C" __global__ void scale_inplace(float* __restrict__ x, float s, ElementwiseParams p) {
    ew_loop(p.n, [&](unsigned long long q) {
            float4 v = reinterpret_cast<float4*>(x)[q];
            v.x *= s; v.y *= s; v.z *= s; v.w *= s;
            reinterpret_cast<float4*>(x)[q] = v;
        }, [&](unsigned long long i) { x[i] *= s; });
}

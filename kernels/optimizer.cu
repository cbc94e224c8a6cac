// Optimiser ops over one parameter tensor [n].
// sum_squares: acc[0] += sum_i x_i^2 in two stages: sum_squares (grid G <= 1024 blocks of 256,
//   grid-stride, f64 per-thread sums, block tree) writes partial[blockIdx.x]; sum_squares_final
//   (one block of 1024... launched with 256 threads) adds partial[0 .. G] in a fixed order and
//   adds the total to acc[0]. The host owns the partial buffer (1024 doubles as 2048 floats).
// clip_grad: x *= min(1, max_norm / (sqrt(norm_sq[0]) + 1e-6)), read on the device (no host sync).
// adamw: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
//   p -= lr (m / bc1 / (sqrt(v / bc2) + eps) + wd p). float4 loads and stores.
// Launch for clip_grad and adamw: 1-D, block 256, grid ceil(ceil(n / 4) / 256).
#include "common.cuh"

extern "C" __global__ void sum_squares(double* __restrict__ partial, const float* __restrict__ x, ElementwiseParams p) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (unsigned long long i = gtid(); i < p.n; i += gstride()) {
        const double v = x[i];
        s += v * v;
    }
    s = block_sum_d(s, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

extern "C" __global__ void sum_squares_final(float* __restrict__ acc, const double* __restrict__ partial, u32 blocks) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (u32 i = threadIdx.x; i < blocks; i += blockDim.x) s += partial[i];
    s = block_sum_d(s, scratch);
    if (threadIdx.x == 0) acc[0] += (float)s;
}

extern "C" __global__ void clip_grad(float* __restrict__ x, const float* __restrict__ norm_sq, ClipParams p) {
    const float s = fminf(p.max_norm / (sqrtf(norm_sq[0]) + 1e-6f), 1.0f);
    if (s >= 1.0f) return;
    const unsigned long long n = p.n, n4 = n / 4;
    for (unsigned long long q = gtid(); q < n4; q += gstride()) {
        float4 v = reinterpret_cast<float4*>(x)[q];
        v.x *= s; v.y *= s; v.z *= s; v.w *= s;
        reinterpret_cast<float4*>(x)[q] = v;
    }
    for (unsigned long long i = n4 * 4 + gtid(); i < n; i += gstride()) x[i] *= s;
}

__device__ __forceinline__ void adamw_one(float& w, float& m, float& v, float g, const AdamWParams& p) {
    m = p.beta1 * m + (1.0f - p.beta1) * g;
    v = p.beta2 * v + (1.0f - p.beta2) * g * g;
    const float mhat = m / p.bias_correction1, vhat = v / p.bias_correction2;
    w -= p.lr * (mhat / (sqrtf(vhat) + p.eps) + p.weight_decay * w);
}

extern "C" __global__ void adamw(float* __restrict__ param, float* __restrict__ m, float* __restrict__ v, const float* __restrict__ grad, AdamWParams p) {
    const unsigned long long n = p.n, n4 = n / 4;
    for (unsigned long long q = gtid(); q < n4; q += gstride()) {
        float4 w = reinterpret_cast<float4*>(param)[q], mm = reinterpret_cast<float4*>(m)[q], vv = reinterpret_cast<float4*>(v)[q];
        const float4 g = reinterpret_cast<const float4*>(grad)[q];
        adamw_one(w.x, mm.x, vv.x, g.x, p);
        adamw_one(w.y, mm.y, vv.y, g.y, p);
        adamw_one(w.z, mm.z, vv.z, g.z, p);
        adamw_one(w.w, mm.w, vv.w, g.w, p);
        reinterpret_cast<float4*>(param)[q] = w;
        reinterpret_cast<float4*>(m)[q] = mm;
        reinterpret_cast<float4*>(v)[q] = vv;
    }
    for (unsigned long long i = n4 * 4 + gtid(); i < n; i += gstride()) adamw_one(param[i], m[i], v[i], grad[i], p);
}

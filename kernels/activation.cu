// Activations, element-wise over `[n]` (the input is saved for backward by the caller).
// GELU, tanh form (GPT-2 gelu_new): y = 0.5 x (1 + tanh(s (x + 0.044715 x^3))), s = sqrt(2/pi);
//   dx = dy (0.5 (1 + t) + 0.5 x (1 - t^2) s (1 + 3 0.044715 x^2)).
// SwiGLU: y = silu(g) u, silu(g) = g sigmoid(g); du = dy silu(g),
//   dg = dy u sigmoid(g) (1 + g (1 - sigmoid(g))).
// Launch: 1-D, block 256, grid ceil(ceil(n / 4) / 256); 4 elements per thread through float4
// loads, a scalar tail for n % 4.
#include "common.cuh"

#define GELU_S 0.7978845608f

__device__ __forceinline__ float tanh_stable(float u) {
    const float e = __expf(-2.0f * fabsf(u));
    return copysignf((1.0f - e) / (1.0f + e), u);
}
__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + __expf(-x)); }
__device__ __forceinline__ float gelu_f(float x) { return 0.5f * x * (1.0f + tanh_stable(GELU_S * (x + 0.044715f * x * x * x))); }
__device__ __forceinline__ float gelu_grad(float g, float x) {
    const float t = tanh_stable(GELU_S * (x + 0.044715f * x * x * x));
    return g * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_S * (1.0f + 3.0f * 0.044715f * x * x));
}

#define F4(ptr) reinterpret_cast<const float4*>(ptr)[q]

extern "C" __global__ void gelu_fwd(float* __restrict__ out, const float* __restrict__ inp, ElementwiseParams p) {
    ew_loop(p.n, [&](unsigned long long q) {
            const float4 x = F4(inp);
            reinterpret_cast<float4*>(out)[q] = make_float4(gelu_f(x.x), gelu_f(x.y), gelu_f(x.z), gelu_f(x.w));
        }, [&](unsigned long long i) { out[i] = gelu_f(inp[i]); });
}

extern "C" __global__ void gelu_bwd(float* __restrict__ dinp, const float* __restrict__ dout, const float* __restrict__ inp, ElementwiseParams p) {
    ew_loop(p.n, [&](unsigned long long q) {
            const float4 g = F4(dout), x = F4(inp);
            reinterpret_cast<float4*>(dinp)[q] = make_float4(gelu_grad(g.x, x.x), gelu_grad(g.y, x.y), gelu_grad(g.z, x.z), gelu_grad(g.w, x.w));
        }, [&](unsigned long long i) { dinp[i] = gelu_grad(dout[i], inp[i]); });
}

__device__ __forceinline__ float swiglu_f(float g, float u) { return g * sigmoid_f(g) * u; }

extern "C" __global__ void swiglu_fwd(float* __restrict__ out, const float* __restrict__ gate, const float* __restrict__ up, ElementwiseParams p) {
    ew_loop(p.n, [&](unsigned long long q) {
            const float4 g = F4(gate), u = F4(up);
            reinterpret_cast<float4*>(out)[q] = make_float4(swiglu_f(g.x, u.x), swiglu_f(g.y, u.y), swiglu_f(g.z, u.z), swiglu_f(g.w, u.w));
        }, [&](unsigned long long i) { out[i] = swiglu_f(gate[i], up[i]); });
}

__device__ __forceinline__ void swiglu_grad(float& dg, float& du, float dy, float g, float u) {
    const float s = sigmoid_f(g);
    du = dy * g * s;
    dg = dy * u * s * (1.0f + g * (1.0f - s));
}

extern "C" __global__ void swiglu_bwd(float* __restrict__ dgate, float* __restrict__ dup, const float* __restrict__ dout, const float* __restrict__ gate,
                                      const float* __restrict__ up, ElementwiseParams p) {
    ew_loop(p.n, [&](unsigned long long q) {
            const float4 dy = F4(dout), g = F4(gate), u = F4(up);
            float4 dg, du;
            swiglu_grad(dg.x, du.x, dy.x, g.x, u.x);
            swiglu_grad(dg.y, du.y, dy.y, g.y, u.y);
            swiglu_grad(dg.z, du.z, dy.z, g.z, u.z);
            swiglu_grad(dg.w, du.w, dy.w, g.w, u.w);
            reinterpret_cast<float4*>(dgate)[q] = dg;
            reinterpret_cast<float4*>(dup)[q] = du;
        }, [&](unsigned long long i) { swiglu_grad(dgate[i], dup[i], dout[i], gate[i], up[i]); });
}

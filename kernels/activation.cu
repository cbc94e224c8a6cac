// Activations, element-wise over `[n]` (the input is saved for backward by the caller).
// GELU, tanh form (GPT-2 gelu_new): y = 0.5 x (1 + tanh(s (x + 0.044715 x^3))), s = sqrt(2/pi);
//   dx = dy (0.5 (1 + t) + 0.5 x (1 - t^2) s (1 + 3 0.044715 x^2)).
// SwiGLU: y = silu(g) u, silu(g) = g sigmoid(g); du = dy silu(g),
//   dg = dy u sigmoid(g) (1 + g (1 - sigmoid(g))).
// Entries NAME (f32 storage) and NAME_bf16 (bf16 storage, computed in f32) of one template each.
// Launch: 1-D, block 256, grid ceil(ceil(n / G) / 256); G elements per thread through 16-byte
// loads (G = 4 f32 or 8 bf16), a scalar tail for n % G.
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

template <typename T>
__device__ __forceinline__ void gelu_fwd_t(T* out, const T* inp, ElementwiseParams p) { ew_map1(p.n, out, inp, [](float x) { return gelu_f(x); }); }
extern "C" __global__ void gelu_fwd(float* __restrict__ out, const float* __restrict__ inp, ElementwiseParams p) { gelu_fwd_t(out, inp, p); }
extern "C" __global__ void gelu_fwd_bf16(bf16* __restrict__ out, const bf16* __restrict__ inp, ElementwiseParams p) { gelu_fwd_t(out, inp, p); }

template <typename T>
__device__ __forceinline__ void gelu_bwd_t(T* dinp, const T* dout, const T* inp, ElementwiseParams p) {
    ew_map2(p.n, dinp, dout, inp, [](float g, float x) { return gelu_grad(g, x); });
}
extern "C" __global__ void gelu_bwd(float* __restrict__ dinp, const float* __restrict__ dout, const float* __restrict__ inp, ElementwiseParams p) { gelu_bwd_t(dinp, dout, inp, p); }
extern "C" __global__ void gelu_bwd_bf16(bf16* __restrict__ dinp, const bf16* __restrict__ dout, const bf16* __restrict__ inp, ElementwiseParams p) { gelu_bwd_t(dinp, dout, inp, p); }

__device__ __forceinline__ float swiglu_f(float g, float u) { return g * sigmoid_f(g) * u; }

template <typename T>
__device__ __forceinline__ void swiglu_fwd_t(T* out, const T* gate, const T* up, ElementwiseParams p) { ew_map2(p.n, out, gate, up, [](float g, float u) { return swiglu_f(g, u); }); }
extern "C" __global__ void swiglu_fwd(float* __restrict__ out, const float* __restrict__ gate, const float* __restrict__ up, ElementwiseParams p) { swiglu_fwd_t(out, gate, up, p); }
extern "C" __global__ void swiglu_fwd_bf16(bf16* __restrict__ out, const bf16* __restrict__ gate, const bf16* __restrict__ up, ElementwiseParams p) { swiglu_fwd_t(out, gate, up, p); }

__device__ __forceinline__ void swiglu_grad(float& dg, float& du, float dy, float g, float u) {
    const float s = sigmoid_f(g);
    du = dy * g * s;
    dg = dy * u * s * (1.0f + g * (1.0f - s));
}

template <typename T>
__device__ __forceinline__ void swiglu_bwd_t(T* dgate, T* dup, const T* dout, const T* gate, const T* up, ElementwiseParams p) {
    constexpr int G = Elt<T>::PER16;
    ew_loop_g<G>(p.n, [&](unsigned long long q) {
            float dy[G], g[G], u[G], dg[G], du[G];
            load_group<T, G>(dout, q, dy);
            load_group<T, G>(gate, q, g);
            load_group<T, G>(up, q, u);
#pragma unroll
            for (int e = 0; e < G; e++) swiglu_grad(dg[e], du[e], dy[e], g[e], u[e]);
            store_group<T, G>(dgate, q, dg);
            store_group<T, G>(dup, q, du);
        }, [&](unsigned long long i) {
            float dg, du;
            swiglu_grad(dg, du, ld(dout, i), ld(gate, i), ld(up, i));
            st(dgate, i, dg);
            st(dup, i, du);
        });
}
extern "C" __global__ void swiglu_bwd(float* __restrict__ dgate, float* __restrict__ dup, const float* __restrict__ dout, const float* __restrict__ gate,
                                      const float* __restrict__ up, ElementwiseParams p) {
    swiglu_bwd_t(dgate, dup, dout, gate, up, p);
}
extern "C" __global__ void swiglu_bwd_bf16(bf16* __restrict__ dgate, bf16* __restrict__ dup, const bf16* __restrict__ dout, const bf16* __restrict__ gate,
                                           const bf16* __restrict__ up, ElementwiseParams p) {
    swiglu_bwd_t(dgate, dup, dout, gate, up, p);
}

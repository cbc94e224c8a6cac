// Rotary position embedding, in place, rotate-half convention (transformers Llama/Qwen2).
// Head vector x of size d = head_dim (half h = d / 2), position pos = positions[token],
// f_j = theta^(-2j/d), a = pos f_j:
//   x'[j] = x[j] cos a - x[j+h] sin a,  x'[j+h] = x[j+h] cos a + x[j] sin a.
// rope_bwd applies the transpose (rotation by -a) to the gradient. Rows of `row` elements, one per
// token; the first n_rot_heads heads of each row rotate. Nothing saved for backward.
// Entries for f32 (rope_fwd, rope_bwd) and bf16 (rope_fwd_bf16, rope_bwd_bf16) buffers: read as f32,
// rotated in f32, rounded to bf16 on store.
// Launch: 1-D over n_tokens * n_rot_heads * h (one thread per rotated pair), block 256.
// sin/cos use the precise sincosf (angles reach thousands of radians at long positions).
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void rope_rotate(T* x, const int* positions, RopeParams p, float sign) {
    const u32 half = p.head_dim / 2;
    const unsigned long long total = (unsigned long long)p.n_tokens * p.n_rot_heads * half;
    for (unsigned long long t = gtid(); t < total; t += gstride()) {
        const u32 j = t % half;
        const u32 h = (t / half) % p.n_rot_heads;
        const unsigned long long tok = t / ((unsigned long long)half * p.n_rot_heads);
        const float inv_freq = 1.0f / powf(p.theta, (float)(2 * j) / (float)p.head_dim);
        const float a = (float)positions[tok] * inv_freq;
        float s, c;
        sincosf(a, &s, &c);
        s *= sign;
        T* base = x + tok * p.row + (unsigned long long)h * p.head_dim;
        const float x0 = ld(base, j), x1 = ld(base, j + half);
        st(base, j, x0 * c - x1 * s);
        st(base, j + half, x1 * c + x0 * s);
    }
}

extern "C" __global__ void rope_fwd(float* __restrict__ x, const int* __restrict__ positions, RopeParams p) { rope_rotate(x, positions, p, 1.0f); }

extern "C" __global__ void rope_bwd(float* __restrict__ dx, const int* __restrict__ positions, RopeParams p) { rope_rotate(dx, positions, p, -1.0f); }

extern "C" __global__ void rope_fwd_bf16(bf16* __restrict__ x, const int* __restrict__ positions, RopeParams p) { rope_rotate(x, positions, p, 1.0f); }

extern "C" __global__ void rope_bwd_bf16(bf16* __restrict__ dx, const int* __restrict__ positions, RopeParams p) { rope_rotate(dx, positions, p, -1.0f); }

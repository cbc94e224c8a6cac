// Softmax cross-entropy over [n, v] logits with integer targets (negative = no loss).
// Forward: lse_i = logsumexp(logits_i), loss_i = lse_i - logits_i[t_i] (0 when t_i < 0);
//   saved: lse [n].
// Backward: dlogits_i = dloss_i (exp(logits_i - lse_i) - onehot(t_i)), overwritten, 0 for rows
//   without a target.
// Storage: NAME (f32 logits) and NAME_bf16 (bf16 logits and dlogits); losses, dlosses and lse are
// f32 in both, everything is computed in f32.
// Launch (both): grid n (one block per row), block 256, 32 floats of static shared memory.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void cross_entropy_fwd_t(float* __restrict__ losses, float* __restrict__ lse, const T* __restrict__ logits, const int* __restrict__ targets,
                                                    CrossEntropyParams p) {
    __shared__ float scratch[32];
    const unsigned long long i = blockIdx.x;
    if (i >= p.n) return;
    const T* row = logits + i * p.v;
    float m = NEG_INF;
    for (u32 j = threadIdx.x; j < p.v; j += blockDim.x) m = fmaxf(m, ld(row, j));
    m = block_max(m, scratch);
    float s = 0.0f;
    for (u32 j = threadIdx.x; j < p.v; j += blockDim.x) s += __expf(ld(row, j) - m);
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) {
        const float l = m + logf(s);
        const int t = targets[i];
        lse[i] = l;
        losses[i] = t >= 0 ? l - ld(row, t) : 0.0f;
    }
}
extern "C" __global__ void cross_entropy_fwd(float* __restrict__ losses, float* __restrict__ lse, const float* __restrict__ logits, const int* __restrict__ targets,
                                             CrossEntropyParams p) {
    cross_entropy_fwd_t(losses, lse, logits, targets, p);
}
extern "C" __global__ void cross_entropy_fwd_bf16(float* __restrict__ losses, float* __restrict__ lse, const bf16* __restrict__ logits, const int* __restrict__ targets,
                                                  CrossEntropyParams p) {
    cross_entropy_fwd_t(losses, lse, logits, targets, p);
}

template <typename T>
__device__ __forceinline__ void cross_entropy_bwd_t(T* __restrict__ dlogits, const float* __restrict__ dlosses, const T* __restrict__ logits,
                                                    const float* __restrict__ lse, const int* __restrict__ targets, CrossEntropyParams p) {
    const unsigned long long i = blockIdx.x;
    if (i >= p.n) return;
    const int t = targets[i];
    const float g = dlosses[i], l = lse[i];
    const T* row = logits + i * p.v;
    T* d = dlogits + i * p.v;
    for (u32 j = threadIdx.x; j < p.v; j += blockDim.x) st(d, j, t < 0 ? 0.0f : g * (__expf(ld(row, j) - l) - ((int)j == t ? 1.0f : 0.0f)));
}
extern "C" __global__ void cross_entropy_bwd(float* __restrict__ dlogits, const float* __restrict__ dlosses, const float* __restrict__ logits,
                                             const float* __restrict__ lse, const int* __restrict__ targets, CrossEntropyParams p) {
    cross_entropy_bwd_t(dlogits, dlosses, logits, lse, targets, p);
}
extern "C" __global__ void cross_entropy_bwd_bf16(bf16* __restrict__ dlogits, const float* __restrict__ dlosses, const bf16* __restrict__ logits,
                                                  const float* __restrict__ lse, const int* __restrict__ targets, CrossEntropyParams p) {
    cross_entropy_bwd_t(dlogits, dlosses, logits, lse, targets, p);
}

// Per-token KL penalty and PPO's clipped losses (forward and backward in one op).
// kl_penalty_fwd: r = logp - ref_logp, kl = mask k(r), k1 = r, k2 = r^2 / 2,
//   k3 = expm1(-r) + r (Taylor series r^2 (1/2 - r/6 + r^2/24 - r^3/120 + r^4/720) for |r| < 0.1);
// kl_penalty_bwd: dlogp = dkl mask k'(r), k1' = 1, k2' = r, k3' = -expm1(-r). Masked-out tokens
//   give 0 without their log-probs entering the result. Launch: 1-D over n, block 256.
// ppo_loss_fwd_bwd (PpoParams; see src/backend/ops.rs for the loss): three kernels.
//   ppo_loss_fwd_bwd_count (grid 1, block 1024): the aggregation's per-token scale into
//     scale [n / t + 1]: token mean: scale[0] = 1 / denom (0 when no token is masked);
//     sequence mean: scale[s] = 1 / (count_s S) per sequence, S = sequences with a masked token
//     (or `denom`). Sums in f32 over fixed blocks in a fixed order.
//   ppo_loss_fwd_bwd (1-D over n, block 256, grid G): per token w_i = mask_i scale, the gradients
//     dlogp, dvalues, dentropy (overwritten) and this block's weighted stat sums into
//     partial[blockIdx.x][10] (block tree sums).
//   ppo_loss_fwd_bwd_stats (grid 1, block 32): stats[k] += sum over blocks of partial[.][k], in
//     block order (deterministic).
// Optional inputs come with a flag (has_values, has_entropy, has_ref); when unset, the pointer
// is any valid buffer and is never read.
#include "common.cuh"

__device__ __forceinline__ float kl_estimate(u32 est, float r) {
    if (est == 1) return r;
    if (est == 2) return 0.5f * r * r;
    if (fabsf(r) < 0.1f) return r * r * (0.5f + r * (-1.0f / 6.0f + r * (1.0f / 24.0f + r * (-1.0f / 120.0f + r * (1.0f / 720.0f)))));
    return expm1f(-r) + r;
}

__device__ __forceinline__ float kl_estimate_grad(u32 est, float r) {
    if (est == 1) return 1.0f;
    if (est == 2) return r;
    return -expm1f(-r);
}

extern "C" __global__ void kl_penalty_fwd(float* __restrict__ kl, const float* __restrict__ logp, const float* __restrict__ ref_logp, const float* __restrict__ mask,
                                          KlParams p) {
    for (unsigned long long i = gtid(); i < p.n; i += gstride()) {
        const float m = mask[i];
        kl[i] = m != 0.0f ? m * kl_estimate(p.estimator, logp[i] - ref_logp[i]) : 0.0f;
    }
}

extern "C" __global__ void kl_penalty_bwd(float* __restrict__ dlogp, const float* __restrict__ dkl, const float* __restrict__ logp, const float* __restrict__ ref_logp,
                                          const float* __restrict__ mask, KlParams p) {
    for (unsigned long long i = gtid(); i < p.n; i += gstride()) {
        const float m = mask[i];
        dlogp[i] = m != 0.0f ? dkl[i] * m * kl_estimate_grad(p.estimator, logp[i] - ref_logp[i]) : 0.0f;
    }
}

extern "C" __global__ void ppo_loss_fwd_bwd_count(float* __restrict__ scale, const float* __restrict__ mask, PpoParams p) {
    __shared__ float scratch[32];
    __shared__ float seqs_s;
    if (p.aggregation == 0) {
        float s = 0.0f;
        for (u32 i = threadIdx.x; i < p.n; i += blockDim.x) s += mask[i];
        s = block_sum(s, scratch);
        if (threadIdx.x == 0) {
            const float denom = p.denom > 0.0f ? p.denom : s;
            scale[0] = (denom > 0.0f && s != 0.0f) ? 1.0f / denom : 0.0f;
        }
        return;
    }
    const u32 t = p.t, n_seq = p.n / t;
    // per-sequence counts (one warp per sequence), then the number of sequences with a token
    const u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    for (u32 s = warp; s < n_seq; s += warps) {
        float c = 0.0f;
        for (u32 j = lane; j < t; j += 32) c += mask[(unsigned long long)s * t + j];
        c = warp_sum(c);
        if (lane == 0) scale[s] = c;
    }
    __syncthreads();
    float nz = 0.0f;
    for (u32 s = threadIdx.x; s < n_seq; s += blockDim.x) nz += scale[s] != 0.0f ? 1.0f : 0.0f;
    nz = block_sum(nz, scratch);
    if (threadIdx.x == 0) seqs_s = p.denom > 0.0f ? p.denom : nz;
    __syncthreads();
    const float denom = seqs_s;
    for (u32 s = threadIdx.x; s < n_seq; s += blockDim.x) {
        const float c = scale[s];
        scale[s] = (c != 0.0f && denom > 0.0f) ? 1.0f / (c * denom) : 0.0f;
    }
}

extern "C" __global__ void ppo_loss_fwd_bwd(float* __restrict__ dlogp, float* __restrict__ dvalues, float* __restrict__ dentropy, float* __restrict__ partial,
                                            const float* __restrict__ logp, const float* __restrict__ old_logp, const float* __restrict__ advantages,
                                            const float* __restrict__ mask, const float* __restrict__ values, const float* __restrict__ old_values,
                                            const float* __restrict__ returns, const float* __restrict__ entropy, const float* __restrict__ ref_logp,
                                            const float* __restrict__ scale, int has_values, int has_entropy, int has_ref, PpoParams p) {
    __shared__ float scratch[32];
    const unsigned long long i = gtid();
    float terms[PPO_STAT_COUNT];
#pragma unroll
    for (int k = 0; k < PPO_STAT_COUNT; k++) terms[k] = 0.0f;
    if (i < p.n) {
        const float w = mask[i] * (p.aggregation == 0 ? scale[0] : scale[i / p.t]);
        if (w == 0.0f) {
            dlogp[i] = 0.0f;
            if (has_values) dvalues[i] = 0.0f;
            if (has_entropy) dentropy[i] = 0.0f;
        } else {
            const float lo = 1.0f - p.clip_low, hi = 1.0f + p.clip_high;
            const float a = advantages[i], d = logp[i] - old_logp[i], ratio = expf(d);
            const float unclipped = -a * ratio, clipped = -a * fminf(fmaxf(ratio, lo), hi);
            float pg, dpg, clip, dual = 0.0f;
            if (clipped > unclipped) {
                pg = clipped; dpg = 0.0f; clip = 1.0f;
            } else {
                pg = unclipped; dpg = -a * ratio; clip = 0.0f;
            }
            if (p.dual_clip > 1.0f && a < 0.0f) {
                const float bound = -p.dual_clip * a;
                if (bound < pg) {
                    pg = bound; dpg = 0.0f; dual = 1.0f;
                }
            }
            float vl = 0.0f, dv = 0.0f, vclip = 0.0f;
            if (has_values) {
                const float val = values[i], old = old_values[i], ret = returns[i], err = val - ret;
                vl = 0.5f * err * err;
                dv = err;
                if (p.value_clip > 0.0f) {
                    const float delta = val - old;
                    const float err_c = old + fminf(fmaxf(delta, -p.value_clip), p.value_clip) - ret;
                    if (err_c * err_c > err * err) {
                        vl = 0.5f * err_c * err_c;
                        dv = fabsf(delta) < p.value_clip ? err_c : 0.0f;
                        vclip = 1.0f;
                    }
                }
            }
            const float ent = has_entropy ? entropy[i] : 0.0f;
            float kl = 0.0f, dkl = 0.0f;
            if (has_ref) {
                const float r = logp[i] - ref_logp[i];
                kl = kl_estimate(p.kl_estimator, r);
                dkl = kl_estimate_grad(p.kl_estimator, r);
            }
            const float total = pg + p.vf_coef * vl - p.ent_coef * ent + p.kl_coef * kl;
            dlogp[i] = w * (dpg + p.kl_coef * dkl);
            if (has_values) dvalues[i] = w * p.vf_coef * dv;
            if (has_entropy) dentropy[i] = -w * p.ent_coef;
            const float t10[PPO_STAT_COUNT] = {pg, vl, ent, clip, expm1f(d) - d, kl, total, vclip, dual, 1.0f};
#pragma unroll
            for (int k = 0; k < PPO_STAT_COUNT; k++) terms[k] = w * t10[k];
        }
    }
#pragma unroll
    for (int k = 0; k < PPO_STAT_COUNT; k++) {
        const float s = block_sum(terms[k], scratch);
        if (threadIdx.x == 0) partial[(unsigned long long)blockIdx.x * PPO_STAT_COUNT + k] = s;
    }
}

extern "C" __global__ void ppo_loss_fwd_bwd_stats(float* __restrict__ stats, const float* __restrict__ partial, u32 blocks) {
    const u32 k = threadIdx.x;
    if (k >= PPO_STAT_COUNT) return;
    float s = 0.0f;
    for (u32 b = 0; b < blocks; b++) s += partial[(unsigned long long)b * PPO_STAT_COUNT + k];
    stats[k] += s;
}

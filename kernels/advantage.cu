// Advantages for PPO.
// gae: rewards, values, mask [b, t] -> advantages, returns [b, t]; per row a reverse scan
//   delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lambda A_{t+1}, returns_t = A_t + V_t,
//   with V_{t+1} = A_{t+1} = 0 after the last response token (a masked position resets the scan);
//   masked positions get 0 in both outputs and their inputs are never read.
//   Launch: 1-D over b (one thread per row, a sequential scan), block 128.
// masked_whiten: x [n] in place over the entries m with mask != 0: mean = sum_m x / |m|,
//   var = sum_m (x - mean)^2 / (|m| - unbiased), x = (x - mean) / sqrt(var + eps) (+ mean when
//   shift_mean == 0), 0 where mask == 0; stats = [mean, sqrt(var), |m|] (overwritten).
//   Launch: grid 1, block 1024: both passes (mean, then centred squares) in f64, tree-reduced in a
//   fixed order, then the update; advantages of one batch are small (n up to ~10^6), so one block
//   keeps the whole op a single launch without host synchronisation.
// group_advantages: rewards, seq_kl [b] and mask [b, t] -> advantages [b, t]; per group of `group`
//   consecutive sequences, r_s = rewards[s] - beta seq_kl[s] (f32, not contracted; skipped when beta
//   is 0), then in f64 with sums in index order: GRPO (r - mean) / (std + eps) (std Bessel-corrected,
//   0 for one sample), GRPO_NO_STD r - mean, RLOO r - (sum - r) / (n - 1); A_s rounded to f32 and
//   advantages[s t + i] = A_s mask[s t + i]. The CPU's arithmetic in the CPU's order: equal results.
//   Launch: grid b, block 128 (one block per sequence; every thread reads its group's rewards, a few
//   dozen numbers, in the same order, then the block writes the row).
// normalize_rewards: scores [n] -> out [n]; the running moments (count, mean, m2) of the params
//   merged with the batch's (two passes in f64, block-reduced) by Chan et al.'s update, then
//   out = (x - mean') / max(sqrt(m2' / (count' - 1)), eps) (std 1 below 2 samples) with the mean
//   and std rounded to f32. Launch: grid 1, block 256 (a batch of scores is a few hundred numbers).
#include "common.cuh"

// r_j of group_advantages
__device__ __forceinline__ float kl_penalised(const float* rewards, const float* seq_kl, u32 j, float beta) {
    return beta == 0.0f ? rewards[j] : __fsub_rn(rewards[j], __fmul_rn(beta, seq_kl[j]));
}

extern "C" __global__ void gae(float* __restrict__ advantages, float* __restrict__ returns, const float* __restrict__ rewards, const float* __restrict__ values,
                               const float* __restrict__ mask, GaeParams p) {
    const unsigned long long row = gtid();
    if (row >= p.b) return;
    const unsigned long long base = row * p.t;
    const float gl = p.gamma * p.lambda;
    float next_v = 0.0f, next_a = 0.0f;
    for (int i = (int)p.t - 1; i >= 0; i--) {
        const unsigned long long at = base + i;
        if (mask[at] == 0.0f) {
            advantages[at] = returns[at] = 0.0f;
            next_v = next_a = 0.0f;
            continue;
        }
        const float v = values[at];
        const float a = rewards[at] + p.gamma * next_v - v + gl * next_a;
        advantages[at] = a;
        returns[at] = a + v;
        next_v = v;
        next_a = a;
    }
}

extern "C" __global__ void masked_whiten(float* __restrict__ x, float* __restrict__ stats, const float* __restrict__ mask, WhitenParams p) {
    __shared__ double scratch[32];
    double cnt = 0.0, sum = 0.0;
    for (u32 i = threadIdx.x; i < p.n; i += blockDim.x)
        if (mask[i] != 0.0f) {
            cnt += 1.0;
            sum += (double)x[i];
        }
    cnt = block_sum_d(cnt, scratch);
    sum = block_sum_d(sum, scratch);
    const double mean = cnt > 0.0 ? sum / cnt : 0.0;
    double sq = 0.0;
    for (u32 i = threadIdx.x; i < p.n; i += blockDim.x)
        if (mask[i] != 0.0f) {
            const double d = (double)x[i] - mean;
            sq += d * d;
        }
    sq = block_sum_d(sq, scratch);
    const double dof = cnt - (p.unbiased ? 1.0 : 0.0);
    const double var = dof > 0.0 ? sq / dof : 0.0;
    const double rstd = 1.0 / sqrt(var + (double)p.eps);
    const double back = p.shift_mean ? 0.0 : mean;
    for (u32 i = threadIdx.x; i < p.n; i += blockDim.x) x[i] = mask[i] != 0.0f ? (float)(((double)x[i] - mean) * rstd + back) : 0.0f;
    if (threadIdx.x == 0) {
        stats[0] = (float)mean;
        stats[1] = (float)sqrt(var);
        stats[2] = (float)cnt;
    }
}

extern "C" __global__ void group_advantages(float* __restrict__ advantages, const float* __restrict__ rewards, const float* __restrict__ seq_kl,
                                            const float* __restrict__ mask, GroupAdvantageParams p) {
    const u32 s = blockIdx.x;
    if (s >= p.b) return;
    const u32 g0 = s / p.group * p.group;
    const double n = (double)p.group;
    double sum = 0.0;
    for (u32 j = g0; j < g0 + p.group; j++) sum += (double)kl_penalised(rewards, seq_kl, j, p.beta);
    const double r = (double)kl_penalised(rewards, seq_kl, s, p.beta);
    float a;
    if (p.estimator == 2u) {
        a = (float)(r - (sum - r) / (n - 1.0));
    } else {
        const double mean = sum / n;
        double scale = 1.0;
        if (p.estimator == 0u) {
            double sq = 0.0;
            for (u32 j = g0; j < g0 + p.group; j++) {
                const double d = (double)kl_penalised(rewards, seq_kl, j, p.beta) - mean;
                sq += d * d;
            }
            const double var = p.group > 1u ? sq / (n - 1.0) : 0.0;
            scale = 1.0 / (sqrt(var) + (double)p.eps);
        }
        a = (float)((r - mean) * scale);
    }
    const unsigned long long base = (unsigned long long)s * p.t;
    for (u32 i = threadIdx.x; i < p.t; i += blockDim.x) advantages[base + i] = __fmul_rn(a, mask[base + i]);
}

extern "C" __global__ void normalize_rewards(float* __restrict__ out, const float* __restrict__ scores, RewardNormParams p) {
    __shared__ double scratch[32];
    double count = p.count, mean = p.mean, m2 = p.m2;
    if (p.n > 0u) {
        const double nb = (double)p.n;
        double sum = 0.0;
        for (u32 i = threadIdx.x; i < p.n; i += blockDim.x) sum += (double)scores[i];
        const double mean_b = block_sum_d(sum, scratch) / nb;
        double sq = 0.0;
        for (u32 i = threadIdx.x; i < p.n; i += blockDim.x) {
            const double d = (double)scores[i] - mean_b;
            sq += d * d;
        }
        const double var_b = block_sum_d(sq, scratch) / nb;
        const double total = count + nb;
        const double delta = mean_b - mean;
        m2 += var_b * nb + delta * delta * count * nb / total;
        mean += delta * nb / total;
        count = total;
    }
    const double std = count > 1.0 ? sqrt(m2 / (count - 1.0)) : 1.0;
    const float m = (float)mean, sd = (float)fmax(std, (double)p.eps);
    for (u32 i = threadIdx.x; i < p.n; i += blockDim.x) out[i] = __fdiv_rn(__fsub_rn(scores[i], m), sd);
}

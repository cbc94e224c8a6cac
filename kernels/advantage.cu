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
#include "common.cuh"

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

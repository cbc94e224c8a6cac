// Reward-model ranking loss (RankingParams). Group g holds scores s[starts[g] .. starts[g + 1]]
// (best first); for its pairs i < j, z = s_i - s_j - margins[g]:
//   loss_g = mean_pairs softplus(-z), ds_i -= scale sigmoid(-z) / pairs_g, ds_j += the same;
//   dscores overwritten; stats += [scale sum_g loss_g, pairs with s_i > s_j, pairs, sum (s_i - s_j)].
// Launch: grid 1, block 256: thread r takes groups r, r + 256, ... (each group's dscores range is
// written by that thread alone), per-thread f64 sums, then block tree sums in a fixed order.
#include "common.cuh"

__device__ __forceinline__ float softplus_f(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

extern "C" __global__ void ranking_loss(float* __restrict__ dscores, float* __restrict__ stats, const float* __restrict__ scores, const int* __restrict__ starts,
                                        const float* __restrict__ margins, RankingParams p) {
    __shared__ double scratch[32];
    double loss = 0.0, correct = 0.0, pairs = 0.0, gap = 0.0;
    for (u32 g = threadIdx.x; g < p.n_groups; g += blockDim.x) {
        const int a = starts[g], b = starts[g + 1];
        for (int i = a; i < b; i++) dscores[i] = 0.0f;
        const int k = b - a;
        const float n_pairs = (float)(k * (k - 1) / 2);
        double group_loss = 0.0;
        for (int i = a; i < b; i++)
            for (int j = i + 1; j < b; j++) {
                const float diff = scores[i] - scores[j], z = diff - margins[g];
                group_loss += (double)softplus_f(-z);
                const float gp = p.scale * (1.0f / (1.0f + expf(z))) / n_pairs;
                dscores[i] -= gp;
                dscores[j] += gp;
                correct += diff > 0.0f ? 1.0 : 0.0;
                pairs += 1.0;
                gap += (double)diff;
            }
        if (k > 1) loss += (double)p.scale * group_loss / (double)n_pairs;
    }
    loss = block_sum_d(loss, scratch);
    correct = block_sum_d(correct, scratch);
    pairs = block_sum_d(pairs, scratch);
    gap = block_sum_d(gap, scratch);
    if (threadIdx.x == 0) {
        stats[0] += (float)loss;
        stats[1] += (float)correct;
        stats[2] += (float)pairs;
        stats[3] += (float)gap;
    }
}

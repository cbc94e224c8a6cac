// The DPO family of preference losses: preference_loss_fwd_bwd (PreferenceParams; the reference
// is src/backend/cpu/preference.rs). Shapes: logp, mask, dlogp [2P, t] with the chosen rows
// 0 .. P and the rejected rows P .. 2P (pair i is rows i and P + i); ref_sums [2P] (the cached
// reference sums, unused by SimPO); stats [6].
// Per row: s = sum_t mask logp, n = sum_t mask, d = max(n, 1) if length_norm else 1, a = s / d,
// ra = ref / d; h = (a_c - ra_c) - (a_r - ra_r);
//   sigmoid / cDPO: z = beta h, L = -(1-eps) log s(z) - eps log s(-z), dL/dh = beta (-(1-eps) s(-z) + eps s(z));
//   IPO: L = (h - 1/(2 beta))^2, dL/dh = 2 (h - 1/(2 beta));
//   SimPO: z = beta (a_c - a_r) - gamma, L as sigmoid, dL/d(a_c - a_r) = beta dL/dz.
// dlogp[c, :] = scale dL/dh mask / d_c, dlogp[r, :] = -scale dL/dh mask / d_r (overwritten);
// stats += [loss, correct pairs, chosen reward, rejected reward, margin, pairs] (unscaled sums);
// rewards beta (a - ra) (SimPO: beta a). Nothing is saved for backward.
// Launch: grid 1, block 256 (pairs per step are few; each is two rows of t): thread l takes pairs
// l, l + 256, ..., sums its rows in token order in f64 (as the CPU), the per-thread stats are
// reduced over the block in a fixed order (f64) and thread 0 adds them to stats.
#include "common.cuh"

#define PREF_IPO 1u
#define PREF_SIMPO 2u

// log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)), stable for any x
__device__ __forceinline__ double log_sigmoid_d(double x) { return fmin(x, 0.0) - log1p(exp(-fabs(x))); }
__device__ __forceinline__ double sigmoid_d(double x) {
    const double e = exp(-fabs(x));
    return x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

extern "C" __global__ void preference_loss_fwd_bwd(float* __restrict__ dlogp, float* __restrict__ stats, const float* __restrict__ logp,
                                                   const float* __restrict__ mask, const float* __restrict__ ref_sums, PreferenceParams p) {
    __shared__ double scratch[32];
    double loss = 0.0, correct = 0.0, chosen = 0.0, rejected = 0.0, margin = 0.0, pairs = 0.0;
    const double beta = p.beta, eps = p.label_smoothing;
    for (u32 i = threadIdx.x; i < p.pairs; i += blockDim.x) {
        const size_t c = (size_t)i * p.t, r = ((size_t)p.pairs + i) * p.t;
        double s_c = 0.0, n_c = 0.0, s_r = 0.0, n_r = 0.0;
        for (u32 j = 0; j < p.t; j++) {
            const float mc = mask[c + j], mr = mask[r + j];
            if (mc != 0.0f) { s_c += (double)(mc * logp[c + j]); n_c += mc; }
            if (mr != 0.0f) { s_r += (double)(mr * logp[r + j]); n_r += mr; }
        }
        const double d_c = p.length_norm ? fmax(n_c, 1.0) : 1.0, d_r = p.length_norm ? fmax(n_r, 1.0) : 1.0;
        const double a_c = s_c / d_c, a_r = s_r / d_r;
        double l, dh, rc, rr;
        if (p.loss_type == PREF_SIMPO) {
            const double z = beta * (a_c - a_r) - (double)p.simpo_gamma;
            l = -(1.0 - eps) * log_sigmoid_d(z) - eps * log_sigmoid_d(-z);
            dh = beta * (-(1.0 - eps) * sigmoid_d(-z) + eps * sigmoid_d(z));
            rc = beta * a_c;
            rr = beta * a_r;
        } else {
            const double ra_c = ref_sums[i] / d_c, ra_r = ref_sums[p.pairs + i] / d_r;
            const double h = (a_c - ra_c) - (a_r - ra_r);
            if (p.loss_type == PREF_IPO) {
                const double dd = h - 1.0 / (2.0 * beta);
                l = dd * dd;
                dh = 2.0 * dd;
            } else {
                const double z = beta * h;
                l = -(1.0 - eps) * log_sigmoid_d(z) - eps * log_sigmoid_d(-z);
                dh = beta * (-(1.0 - eps) * sigmoid_d(-z) + eps * sigmoid_d(z));
            }
            rc = beta * (a_c - ra_c);
            rr = beta * (a_r - ra_r);
        }
        const float g_c = (float)((double)p.scale * dh / d_c), g_r = (float)(-(double)p.scale * dh / d_r);
        for (u32 j = 0; j < p.t; j++) {
            dlogp[c + j] = g_c * mask[c + j];
            dlogp[r + j] = g_r * mask[r + j];
        }
        loss += l;
        correct += rc > rr ? 1.0 : 0.0;
        chosen += rc;
        rejected += rr;
        margin += rc - rr;
        pairs += 1.0;
    }
    loss = block_sum_d(loss, scratch);
    correct = block_sum_d(correct, scratch);
    chosen = block_sum_d(chosen, scratch);
    rejected = block_sum_d(rejected, scratch);
    margin = block_sum_d(margin, scratch);
    pairs = block_sum_d(pairs, scratch);
    if (threadIdx.x == 0) {
        stats[0] += (float)loss;
        stats[1] += (float)correct;
        stats[2] += (float)chosen;
        stats[3] += (float)rejected;
        stats[4] += (float)margin;
        stats[5] += (float)pairs;
    }
}

// Log-probability of the chosen token and entropy of the next-token distribution straight from
// the final hidden states h [n, c] and the LM head w [v, c]: z = (h @ w^T) / T, p = softmax(z),
//   lse_i = logsumexp_j z_ij, logp_i = z_i[t_i] - lse_i, H_i = lse_i - sum_j p_ij z_ij.
// The vocabulary is streamed in chunks of `chunk` rows of w: for each chunk the host computes the
// [n, cw] logits tile with one cuBLAS sgemm (alpha = 1 / T) into a scratch tile, then:
//   logprob_chunk_stats: reduces each tile row to (m, s, u) = (max, sum e^(z - m),
//     sum e^(z - m)(z - m)) into partial[(chunk n + i) 3 ..] and copies the target's z to logp[i]
//     when the chunk holds it. Grid n, block 256 (one block per row of the tile).
//   logprob_gather_fwd: merges the chunks of each row in chunk order (online log-sum-exp):
//     M = max(m, m'), a = e^(m - M), a' = e^(m' - M), s <- a s + a' s',
//     u <- a (u + (m - M) s) + a' (u' + (m' - M) s'); lse = M + ln s, H = ln s - u / s,
//     logp -= lse; rows with a negative target get 0 in all three. 1-D grid-stride over n, block 256.
// So the [n, v] logits never exist: scratch is one [n, chunk] tile plus 3 floats per (row, chunk).
// Saved for backward: lse [n] and the entropy output.
// Backward, per chunk: the host recomputes the tile (sgemm), logprob_gather_bwd turns it in place
// into dlogits = dz / T with lp = z - lse, p = e^lp,
//   dz_ij = dlogp_i (onehot_ij - p_ij) - dent_i p_ij (lp_ij + H_i)   (0 for negative targets),
// grid n, block 256; then dh (+)= dlogits @ w_chunk (overwrite on the first chunk) and
// dw[chunk] += dlogits^T @ h through cuBLAS. cuBLAS is deterministic for a fixed configuration.
#include "common.cuh"

extern "C" __global__ void logprob_chunk_stats(float* __restrict__ partial, float* __restrict__ logp, const float* __restrict__ tile, const int* __restrict__ targets,
                                               u32 j0, u32 cw, u32 chunk_index, LogprobParams p) {
    __shared__ float scratch[32];
    const unsigned long long i = blockIdx.x;
    if (i >= p.n) return;
    const float* z = tile + i * cw;
    float m = NEG_INF;
    for (u32 j = threadIdx.x; j < cw; j += blockDim.x) m = fmaxf(m, z[j]);
    m = block_max(m, scratch);
    float s = 0.0f, u = 0.0f;
    for (u32 j = threadIdx.x; j < cw; j += blockDim.x) {
        const float d = z[j] - m, e = __expf(d);
        s += e;
        u = fmaf(e, d, u);
    }
    s = block_sum(s, scratch);
    u = block_sum(u, scratch);
    if (threadIdx.x == 0) {
        float* q = partial + ((unsigned long long)chunk_index * p.n + i) * 3;
        q[0] = m;
        q[1] = s;
        q[2] = u;
        const int t = targets[i];
        if (t >= 0 && (u32)t >= j0 && (u32)t < j0 + cw) logp[i] = z[t - j0];
    }
}

extern "C" __global__ void logprob_gather_fwd(float* __restrict__ logp, float* __restrict__ entropy, float* __restrict__ lse, const float* __restrict__ partial,
                                              const int* __restrict__ targets, u32 n_chunks, LogprobParams p) {
    for (unsigned long long i = gtid(); i < p.n; i += gstride()) {
        if (targets[i] < 0) {
            logp[i] = entropy[i] = lse[i] = 0.0f;
            continue;
        }
        float m = partial[i * 3], s = partial[i * 3 + 1], u = partial[i * 3 + 2];
        for (u32 c = 1; c < n_chunks; c++) {
            const float* q = partial + ((unsigned long long)c * p.n + i) * 3;
            const float big = fmaxf(m, q[0]);
            const float a = expf(m - big), b = expf(q[0] - big);
            u = a * (u + (m - big) * s) + b * (q[2] + (q[0] - big) * q[1]);
            s = a * s + b * q[1];
            m = big;
        }
        const float l = m + logf(s);
        lse[i] = l;
        entropy[i] = logf(s) - u / s;
        logp[i] -= l;
    }
}

extern "C" __global__ void logprob_gather_bwd(float* __restrict__ tile, const float* __restrict__ dlogp, const float* __restrict__ dentropy,
                                              const int* __restrict__ targets, const float* __restrict__ lse, const float* __restrict__ entropy, u32 j0, u32 cw,
                                              LogprobParams p) {
    const unsigned long long i = blockIdx.x;
    if (i >= p.n) return;
    float* z = tile + i * cw;
    const int t = targets[i];
    const float inv_t = 1.0f / p.temperature;
    if (t < 0) {
        for (u32 j = threadIdx.x; j < cw; j += blockDim.x) z[j] = 0.0f;
        return;
    }
    const float l = lse[i], ent = entropy[i], g = dlogp[i], ge = dentropy[i];
    for (u32 j = threadIdx.x; j < cw; j += blockDim.x) {
        const float lp = z[j] - l, pr = __expf(lp);
        float d = -pr * (g + ge * (lp + ent));
        if ((u32)t == j0 + j) d += g;
        z[j] = d * inv_t;
    }
}

// Next-token sampling from [n, v] logits: out[i] (int) = the token drawn for row i (SampleParams).
// The algorithm and its arithmetic are the CPU reference's (src/backend/cpu/sample.rs and
// sample_math.rs), operation for operation, so the ids equal the CPU's bit for bit.
//
// temperature <= 0: greedy, argmax with the lowest index on ties (NaN logits skipped; 0 if all
// are NaN). One pass over the row.
// Otherwise: Gumbel-max over the kept tokens, out = argmax_j (x_j / T + g_j) (lowest index on
// ties), g_j = -ln(-ln u_j), u_j = (2k + 1) / 2^24 with k the top 23 bits of the SplitMix64
// output mix(state + (j + 1) * golden), state = row_state(seed, step, row), step =
// steps[step_at] (a device counter, so a decode step is the same launch every time). u_j lies in
// (0, 1) with both ends excluded: both logarithms are finite. `ln_f` / `exp_neg` are written in
// single __f*_rn operations (never contracted into FMAs, no logf/expf: those differ from the
// CPU's libm by an ulp), in the CPU's order; x_j / T and the sum are __fdiv_rn / __fadd_rn.
// A token is kept when its logit is not NaN and its order key (key_of: f32 bits in total order)
// is >= thr (0 at first: all). Temperature alone: one pass over the row (the draw).
// - top_k (0 < top_k < v): thr = the top_k-th largest key (with multiplicity); every token whose
//   key equals thr is kept (ties at the threshold can keep more than top_k). 4 passes.
// - top_p (< 1): max = the row's largest logit (1 pass); masses m_j = floor(exp_neg((x_j - max) /
//   T) 2^40) (u64) of the kept tokens, total = their sum; thr = the largest key K whose kept
//   tokens with key >= K hold at least goal = max(1, floor(total floor(top_p 2^24) / 2^24)); every
//   token at thr is kept; no cut when total = 0. 4 passes.
// Both cuts are a radix select on the key's 4 bytes from the top: each pass builds a 256-bin
// histogram of the weights (1, or the masses) of the kept tokens whose higher bytes equal the
// prefix found so far (8 per-warp copies in shared memory, u64 atomicAdd: integer sums, so the
// result does not depend on the order of the atomics), then thread 0 walks the bins from the top
// to the one where the running sum reaches what is still needed. So a draw reads the row
// 1 (temperature), 5 (top-k), 6 (top-p) or 10 (both) times.
// The sampled token's log-prob is not computed here: the rollout records -log p at temperature 1
// with cross_entropy_fwd over the same logits, the kernel that teacher-forced scoring
// (src/model/scoring.rs) runs, and the two must agree bit for bit; a log-sum-exp computed in this
// kernel would add in another order (and the draw is at temperature T, not 1).
// Storage: `sample` reads f32 logits, `sample_bf16` bf16 ones (widened to f32, exactly).
// Launch: grid n (one block per row), block 256 (= the histogram's bins, required); static shared
// memory 16 KiB of histograms + 2 KiB for the argmax reduction.
#include "common.cuh"

typedef unsigned long long u64;

#define NONE 0xFFFFFFFFu
#define BINS 256
#define WARPS 8
#define GOLDEN 0x9E3779B97F4A7C15ull

__device__ __forceinline__ u32 key_of(float x) {
    const u32 b = __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ u64 mix(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ u64 row_state(u64 seed, u32 step, u32 row) { return mix((seed ^ ((((u64)step << 32) | row) * GOLDEN)) + GOLDEN); }

__device__ __forceinline__ float uniform_open(u64 state, u32 j) {
    const u64 z = mix(state + ((u64)j + 1ull) * GOLDEN);
    return __fmul_rn((float)((u32)(z >> 41) * 2u + 1u), 5.9604644775390625e-8f);
}

#define LN2_HI __uint_as_float(0x3F317180u)
#define LN2_LO __uint_as_float(0x3717F7D1u)

// ln of a positive normal float: x = m 2^e, m in [sqrt(1/2), sqrt(2)), s = (m - 1) / (m + 1),
// ln m = s (2 + z (2/3 + z (2/5 + z (2/7 + z 2/9)))), z = s^2; ln x = e ln2_hi + (e ln2_lo + ln m)
__device__ __forceinline__ float ln_f(float x) {
    const u32 b = __float_as_uint(x);
    const int e = ((int)(b - 0x3F3504F3u)) >> 23;
    const float m = __uint_as_float(b - ((u32)e << 23));
    const float s = __fdiv_rn(__fsub_rn(m, 1.0f), __fadd_rn(m, 1.0f));
    const float z = __fmul_rn(s, s);
    float t = __fmul_rn(z, __uint_as_float(0x3E638E39u));
    t = __fmul_rn(z, __fadd_rn(__uint_as_float(0x3E924925u), t));
    t = __fmul_rn(z, __fadd_rn(__uint_as_float(0x3ECCCCCDu), t));
    t = __fmul_rn(z, __fadd_rn(__uint_as_float(0x3F2AAAABu), t));
    const float lnm = __fmul_rn(s, __fadd_rn(2.0f, t));
    const float ef = (float)e;
    return __fadd_rn(__fmul_rn(ef, LN2_HI), __fadd_rn(__fmul_rn(ef, LN2_LO), lnm));
}

// exp(d) for d in [-28, 0], 0 below (or NaN): d = k ln2 + r, e^r by Taylor to r^7 / 7!, times 2^k
__device__ __forceinline__ float exp_neg(float d) {
    if (d != d || d < -28.0f) return 0.0f;
    const float k = floorf(__fadd_rn(__fmul_rn(d, __uint_as_float(0x3FB8AA3Bu)), 0.5f));
    const float r = __fsub_rn(__fsub_rn(d, __fmul_rn(k, LN2_HI)), __fmul_rn(k, LN2_LO));
    float t = __fmul_rn(r, __uint_as_float(0x39500D01u));
    t = __fmul_rn(r, __fadd_rn(__uint_as_float(0x3AB60B61u), t));
    t = __fmul_rn(r, __fadd_rn(__uint_as_float(0x3C088889u), t));
    t = __fmul_rn(r, __fadd_rn(__uint_as_float(0x3D2AAAABu), t));
    t = __fmul_rn(r, __fadd_rn(__uint_as_float(0x3E2AAAABu), t));
    t = __fmul_rn(r, __fadd_rn(0.5f, t));
    t = __fmul_rn(r, __fadd_rn(1.0f, t));
    const float p = __fadd_rn(1.0f, t);
    return __fmul_rn(p, __uint_as_float((u32)((int)k + 127) << 23));
}

__device__ __forceinline__ u64 mass(float x, float mx, float temperature) {
    return (u64)__fmul_rn(exp_neg(__fdiv_rn(__fsub_rn(x, mx), temperature)), 1099511627776.0f);
}

__device__ __forceinline__ u64 top_p_goal(u64 total, float top_p) {
    const u64 p = top_p > 0.0f ? (u64)__fmul_rn(top_p, 16777216.0f) : 0ull;
    const u64 g = (total >> 24) * p + (((total & 0xFFFFFFull) * p) >> 24);
    return g > 0ull ? g : 1ull;
}

__device__ __forceinline__ float score(float x, float temperature, u64 state, u32 j) {
    return __fadd_rn(__fdiv_rn(x, temperature), -ln_f(-ln_f(uniform_open(state, j))));
}

// (s, j) replaces the best (bs, bj) if j is a candidate with a larger score, or an equal one at a
// lower index; NaN scores never win.
__device__ __forceinline__ void take_better(float& bs, u32& bj, float s, u32 j) {
    if (j != NONE && s == s && (bj == NONE || s > bs || (s == bs && j < bj))) {
        bs = s;
        bj = j;
    }
}

// The block's argmax of the threads' (s, j) (NONE: no candidate), to every thread.
__device__ u32 block_argmax(float s, u32 j, float* sv, u32* si) {
    sv[threadIdx.x] = s;
    si[threadIdx.x] = j;
    __syncthreads();
    for (u32 half = blockDim.x / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) take_better(sv[threadIdx.x], si[threadIdx.x], sv[threadIdx.x + half], si[threadIdx.x + half]);
        __syncthreads();
    }
    return si[0];
}

struct Select {
    u64 hist[WARPS][BINS];
    u64 still;
    u32 prefix, found;
};

// Radix select (see the header): the largest key K such that the weights (masses ? m_j : 1) of
// the kept tokens (not NaN, key >= thr) with key >= K reach `top_k` (masses = 0) or
// top_p_goal(total) (masses = 1); `fallback` when they never do (or total = 0).
template <typename T>
__device__ u32 radix_select(const T* row, u32 v, u32 thr, int masses, float mx, const SampleParams& p, u32 fallback, Select& sel) {
    u32 prefix = 0;
    u64 still = 0;
    const u32 warp = threadIdx.x >> 5;
    for (int pass = 0; pass < 4; pass++) {
        const int shift = 24 - 8 * pass;
        const u32 above = pass == 0 ? 0u : (0xFFFFFFFFu << (shift + 8));
        for (u32 b = threadIdx.x; b < WARPS * BINS; b += blockDim.x) sel.hist[b / BINS][b % BINS] = 0ull;
        __syncthreads();
        for (u32 j = threadIdx.x; j < v; j += blockDim.x) {
            const float x = ld(row, j);
            const u32 k = key_of(x);
            if (x != x || k < thr || (k & above) != prefix) continue;
            const u64 w = masses ? mass(x, mx, p.temperature) : 1ull;
            if (w) atomicAdd(&sel.hist[warp][(k >> shift) & 255u], w);
        }
        __syncthreads();
        u64 bin = 0;
        for (int w = 0; w < WARPS; w++) bin += sel.hist[w][threadIdx.x];
        __syncthreads();
        sel.hist[0][threadIdx.x] = bin;
        __syncthreads();
        if (threadIdx.x == 0) {
            if (pass == 0) {
                u64 total = 0;
                for (int b = 0; b < BINS; b++) total += sel.hist[0][b];
                still = masses ? (total ? top_p_goal(total, p.top_p) : ~0ull) : (u64)p.top_k;
            }
            u64 cum = 0;
            int found = -1;
            for (int b = BINS - 1; b >= 0; b--) {
                if (cum + sel.hist[0][b] >= still) {
                    found = b;
                    break;
                }
                cum += sel.hist[0][b];
            }
            sel.found = found >= 0;
            sel.prefix = prefix | (found >= 0 ? (u32)found << shift : 0u);
            sel.still = still - cum;
        }
        __syncthreads();
        if (!sel.found) return fallback;
        prefix = sel.prefix;
        still = sel.still;
    }
    return prefix;
}

template <typename T>
__device__ __forceinline__ void sample_t(int* __restrict__ out, const T* __restrict__ logits, const int* __restrict__ steps, SampleParams p) {
    __shared__ float scratch[32];
    __shared__ float sv[256];
    __shared__ u32 si[256];
    __shared__ Select sel;
    const u32 i = blockIdx.x;
    if (i >= p.n) return;
    const T* row = logits + (unsigned long long)i * p.v;
    float best = NEG_INF;
    u32 bj = NONE;
    if (p.temperature <= 0.0f) {
        for (u32 j = threadIdx.x; j < p.v; j += blockDim.x) take_better(best, bj, ld(row, j), j);
        const u32 arg = block_argmax(best, bj, sv, si);
        if (threadIdx.x == 0) out[i] = arg == NONE ? 0 : (int)arg;
        return;
    }
    u32 thr = 0;
    if (p.top_k != 0 && p.top_k < p.v) thr = radix_select(row, p.v, 0u, 0, 0.0f, p, 0u, sel);
    if (p.top_p < 1.0f) {
        float mx = NEG_INF;
        for (u32 j = threadIdx.x; j < p.v; j += blockDim.x) {
            const float x = ld(row, j);
            if (x > mx) mx = x;
        }
        mx = block_max(mx, scratch);
        thr = radix_select(row, p.v, thr, 1, mx, p, thr, sel);
    }
    const u64 state = row_state(((u64)p.seed_hi << 32) | p.seed_lo, (u32)steps[p.step_at], i);
    for (u32 j = threadIdx.x; j < p.v; j += blockDim.x) {
        const float x = ld(row, j);
        if (x == x && key_of(x) >= thr) take_better(best, bj, score(x, p.temperature, state, j), j);
    }
    const u32 arg = block_argmax(best, bj, sv, si);
    if (threadIdx.x == 0) out[i] = arg == NONE ? 0 : (int)arg;
}

extern "C" __global__ void sample(int* __restrict__ out, const float* __restrict__ logits, const int* __restrict__ steps, SampleParams p) {
    sample_t(out, logits, steps, p);
}
extern "C" __global__ void sample_bf16(int* __restrict__ out, const bf16* __restrict__ logits, const int* __restrict__ steps, SampleParams p) {
    sample_t(out, logits, steps, p);
}

// Next-token sampling from [n, v] logits: out[i] (int) = the token drawn for row i (SampleParams).
// temperature <= 0: greedy, argmax with the lowest index on ties (NaN logits skipped).
// Otherwise the CPU procedure (src/backend/cpu/sample.rs) without sorting: candidates in the
// order "logit descending, index ascending" (f32 total order through `key_of`), weights
// q_j = exp((x_j - max) / T); cut to the first top_k (0 = all), then to the shortest prefix whose
// q-mass reaches top_p * total (top_p < 1), then walk the kept prefix until the running mass
// exceeds u * mass, u = uniform(seed, step, row) (SplitMix64, as on the CPU), step = steps[step_at]
// (a device counter, so the launch is the same every decode step).
// Every cut is a prefix of the order, a pivot (key K, index I): included(j) = key_j > K ||
// (key_j == K && j <= I). `find` locates the element at which the running weight first reaches
// (>=) or exceeds (>) a goal: a bitwise binary search on the key (32 passes over the row, each a
// block sum of the weights with key >= candidate) gives K; among the elements with exactly key K
// a bitwise search on the index (ceil(log2(v + 1)) passes) gives I.
// Differences to the CPU: masses are f32 tree sums rather than sequential sums in sorted order,
// so a token can differ only when a running mass lies within rounding of a threshold.
// Storage: `sample` reads f32 logits, `sample_bf16` bf16 ones (widened to f32, exactly).
// Launch: grid n (one block per row), block 256, 32 floats of static shared memory.
#include "common.cuh"

__device__ __forceinline__ u32 key_of(float x) {
    const u32 b = __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

struct Pivot { u32 key, idx; };

__device__ __forceinline__ bool included(Pivot c, u32 key, u32 j) { return key > c.key || (key == c.key && j <= c.idx); }

__device__ float uniform_draw(unsigned long long seed, u32 step, u32 row) {
    unsigned long long z = seed ^ ((((unsigned long long)step << 32) | row) * 0x9E3779B97F4A7C15ull);
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) / 16777216.0f;
}

// Weight of element j: 1 (mode 0, counting for top-k) or q_j restricted to the cut `c`.
template <typename T>
struct Weights {
    const T* row;
    float max, temperature;
    int counting;
    Pivot c;
    __device__ __forceinline__ float at(u32 j, u32 key) const {
        if (!included(c, key, j)) return 0.0f;
        return counting ? 1.0f : expf((ld(row, j) - max) / temperature);
    }
};

// Sum of the weights of the elements with key > k0 (strict = 1) or key >= k0, or, when
// tie_key_only, of the elements with key == k0 and index < idx_lim.
template <typename T>
__device__ float masked_sum(const Weights<T>& w, u32 v, u32 k0, int strict, int tie_only, u32 idx_lim, float* scratch) {
    float s = 0.0f;
    for (u32 j = threadIdx.x; j < v; j += blockDim.x) {
        const u32 key = key_of(ld(w.row, j));
        const bool in = tie_only ? (key == k0 && j < idx_lim) : (strict ? key > k0 : key >= k0);
        if (in) s += w.at(j, key);
    }
    return block_sum(s, scratch);
}

__device__ __forceinline__ bool reaches(float x, float goal, int ge) { return ge ? x >= goal : x > goal; }

template <typename T>
__device__ Pivot find(const Weights<T>& w, u32 v, float goal, int ge, Pivot fallback, float* scratch) {
    if (!reaches(masked_sum(w, v, 0u, 0, 0, 0u, scratch), goal, ge)) return fallback;
    u32 k = 0;
    for (int bit = 31; bit >= 0; bit--) {
        const u32 cand = k | (1u << bit);
        if (reaches(masked_sum(w, v, cand, 0, 0, 0u, scratch), goal, ge)) k = cand;
    }
    const float before = k == 0xFFFFFFFFu ? 0.0f : masked_sum(w, v, k, 1, 0, 0u, scratch);
    // largest J in [0, v] such that the ties below index J do not reach the goal: element J is the pivot
    u32 jj = 0, top = 1;
    while (top <= v) top <<= 1;
    for (u32 bit = top; bit > 0; bit >>= 1) {
        const u32 cand = jj + bit;
        if (cand <= v && !reaches(before + masked_sum(w, v, k, 0, 1, cand, scratch), goal, ge)) jj = cand;
    }
    if (jj >= v) return fallback;
    return Pivot{k, jj};
}

template <typename T>
__device__ __forceinline__ void sample_t(int* __restrict__ out, const T* __restrict__ logits, const int* __restrict__ steps, SampleParams p) {
    __shared__ float scratch[32];
    __shared__ float sv[256];
    __shared__ u32 si[256];
    const u32 i = blockIdx.x;
    if (i >= p.n) return;
    const T* row = logits + (unsigned long long)i * p.v;
    // argmax, lowest index on ties, NaN skipped
    float best = NEG_INF;
    u32 bi = 0xFFFFFFFFu;
    for (u32 j = threadIdx.x; j < p.v; j += blockDim.x) {
        const float x = ld(row, j);
        if (x == x && (bi == 0xFFFFFFFFu || x > best)) {
            best = x;
            bi = j;
        }
    }
    sv[threadIdx.x] = best;
    si[threadIdx.x] = bi;
    __syncthreads();
    for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            const float ov = sv[threadIdx.x + s];
            const u32 oi = si[threadIdx.x + s];
            const u32 mi = si[threadIdx.x];
            if (oi != 0xFFFFFFFFu && (mi == 0xFFFFFFFFu || ov > sv[threadIdx.x] || (ov == sv[threadIdx.x] && oi < mi))) {
                sv[threadIdx.x] = ov;
                si[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    const u32 arg = si[0] == 0xFFFFFFFFu ? 0u : si[0];
    if (p.temperature <= 0.0f) {
        if (threadIdx.x == 0) out[i] = (int)arg;
        return;
    }
    const Pivot all = {0u, 0xFFFFFFFFu};
    Weights<T> w = {row, sv[0], p.temperature, 1, all};
    Pivot kcut = all;
    if (p.top_k != 0 && p.top_k < p.v) kcut = find(w, p.v, (float)p.top_k, 1, all, scratch);
    w.counting = 0;
    w.c = kcut;
    Pivot pcut = kcut;
    if (p.top_p < 1.0f) {
        const float total = masked_sum(w, p.v, 0u, 0, 0, 0u, scratch);
        pcut = find(w, p.v, p.top_p * total, 1, kcut, scratch);
    }
    w.c = pcut;
    const float mass = masked_sum(w, p.v, 0u, 0, 0, 0u, scratch);
    const float u = uniform_draw(((unsigned long long)p.seed_hi << 32) | p.seed_lo, (u32)steps[p.step_at], i);
    const Pivot pick = find(w, p.v, u * mass, 0, pcut, scratch);
    if (threadIdx.x == 0) out[i] = (int)(pick.idx == 0xFFFFFFFFu ? arg : pick.idx);
}

extern "C" __global__ void sample(int* __restrict__ out, const float* __restrict__ logits, const int* __restrict__ steps, SampleParams p) {
    sample_t(out, logits, steps, p);
}
extern "C" __global__ void sample_bf16(int* __restrict__ out, const bf16* __restrict__ logits, const int* __restrict__ steps, SampleParams p) {
    sample_t(out, logits, steps, p);
}

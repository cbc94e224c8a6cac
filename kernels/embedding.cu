// Embedding gather. Forward: out[i, :] (+)= table[ids[i], :], out [n, c], table [vocab, c]
// (accumulate 1 adds learned positions on top of tokens). Backward: dtable[ids[i], :] += dout[i, :]
// (a parameter gradient: accumulates). Saved for backward: only the ids.
// embedding_fwd launch: grid n (one block per token row), block 256, threads over channels.
// embedding_bwd launch: grid (ceil(c / 256), S), block 256, S = min(64, vocab) vocabulary slices:
// thread (j, s) owns column j of the table rows whose id % S == s and walks the tokens in order,
// so every element has one writer and the CPU's summation order (token order; deterministic, no
// atomics); each dout row is read by one block row only, loads coalesced across the block.
#include "common.cuh"

extern "C" __global__ void embedding_fwd(float* __restrict__ out, const int* __restrict__ ids, const float* __restrict__ table, EmbeddingParams p) {
    const unsigned long long i = blockIdx.x;
    if (i >= p.n) return;
    const long long id = ids[i];
    if (id < 0 || id >= (long long)p.vocab) return;
    const float* src = table + id * p.c;
    float* dst = out + i * p.c;
    for (u32 j = threadIdx.x; j < p.c; j += blockDim.x) dst[j] = p.accumulate ? dst[j] + src[j] : src[j];
}

extern "C" __global__ void embedding_bwd(float* __restrict__ dtable, const float* __restrict__ dout, const int* __restrict__ ids, EmbeddingParams p) {
    const u32 j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= p.c) return;
    for (u32 i = 0; i < p.n; i++) {
        const int id = ids[i];
        if (id < 0 || (u32)id >= p.vocab || (u32)id % gridDim.y != blockIdx.y) continue;
        dtable[(unsigned long long)id * p.c + j] += dout[(unsigned long long)i * p.c + j];
    }
}

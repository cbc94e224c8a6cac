// Embedding gather. Forward: out[i, :] (+)= table[ids[i], :], out [n, c], table [vocab, c]
// (accumulate 1 adds learned positions on top of tokens). Backward: dtable[ids[i], :] += dout[i, :]
// (a parameter gradient: accumulates). Saved for backward: only the ids.
// embedding_fwd launch: grid n (one block per token row), block 256, threads over channels.
// embedding_bwd launch: grid (ceil(c / 256), S), block 256, S vocabulary slices, at least 64 and
// enough for 264 blocks (twice an H100's SMs; c = 768: S = 88), at most vocab (the host's choice):
// thread (j, s) owns column j of the table rows whose id % S == s and walks the tokens in order,
// so every element has one writer and the CPU's summation order (token order; deterministic, no
// atomics); each dout row is read by one block row only, loads coalesced across the block.
// Entries NAME (f32) and NAME_bf16 (bf16 out/table/dout/dtable, summed in f32, rounded per store).
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void embedding_fwd_t(T* out, const int* ids, const T* table, EmbeddingParams p) {
    const unsigned long long i = blockIdx.x;
    if (i >= p.n) return;
    const long long id = ids[i];
    if (id < 0 || id >= (long long)p.vocab) return;
    const T* src = table + id * p.c;
    T* dst = out + i * p.c;
    for (u32 j = threadIdx.x; j < p.c; j += blockDim.x) st(dst, j, p.accumulate ? ld(dst, j) + ld(src, j) : ld(src, j));
}
extern "C" __global__ void embedding_fwd(float* __restrict__ out, const int* __restrict__ ids, const float* __restrict__ table, EmbeddingParams p) {
    embedding_fwd_t(out, ids, table, p);
}
extern "C" __global__ void embedding_fwd_bf16(bf16* __restrict__ out, const int* __restrict__ ids, const bf16* __restrict__ table, EmbeddingParams p) {
    embedding_fwd_t(out, ids, table, p);
}

// bf16: every token's addition is rounded to bf16 (as the CPU reference adding bf16 gradients row by row)
template <typename T>
__device__ __forceinline__ void embedding_bwd_t(T* dtable, const T* dout, const int* ids, EmbeddingParams p) {
    const u32 j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= p.c) return;
    for (u32 i = 0; i < p.n; i++) {
        const int id = ids[i];
        if (id < 0 || (u32)id >= p.vocab || (u32)id % gridDim.y != blockIdx.y) continue;
        const unsigned long long at = (unsigned long long)id * p.c + j;
        st(dtable, at, ld(dtable, at) + ld(dout, (unsigned long long)i * p.c + j));
    }
}
extern "C" __global__ void embedding_bwd(float* __restrict__ dtable, const float* __restrict__ dout, const int* __restrict__ ids, EmbeddingParams p) {
    embedding_bwd_t(dtable, dout, ids, p);
}
extern "C" __global__ void embedding_bwd_bf16(bf16* __restrict__ dtable, const bf16* __restrict__ dout, const int* __restrict__ ids, EmbeddingParams p) {
    embedding_bwd_t(dtable, dout, ids, p);
}

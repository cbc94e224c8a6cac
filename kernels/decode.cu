// decode_advance: the rollout engine's bookkeeping of one decode step on the device
// (DecodeAdvanceParams; the reference is src/backend/cpu/decode.rs), so that decode steps follow
// one another without reading the sampled ids back (and can be captured as a CUDA graph).
//
// Per row r < n (a slot appears at most once per step, so rows never race):
//   s = cache_rows[r] / t_max, st = state[4 s ..] = [len, resp_len, finish, last]
//   finished (finish != 0): record_rows[r] = dump_row, nothing else changes
//   running:  history[s stride + resp_len] = id = sampled[r]; len += 1; resp_len += 1; last = id
//             finish = 1 (stop) if id in stop_ids[..n_stop], else 2 (max_new) if resp_len >= max_new,
//             else 3 (context) if len + 1 >= max_len, else 0
//             tokens[r] = id, positions[r] = len, cache_rows[r] = s t_max + len,
//             record_rows[r] = s stride + resp_len, or dump_row once finished
// A row whose slot is outside `slots` or whose history is full is skipped.
// The sampling step counter state[4 slots] (the step key of kernels/sample.cu) += 1, by thread 0
// (no row touches it), so a chunk of decode steps is the same launches every step (a CUDA graph).
// Shapes: state [slots, 4] + 1 (the counter), history [slots, stride], the row buffers [n], stop_ids [n_stop].
// Nothing is saved for backward (integer bookkeeping, no gradient).
// Launch: 1-D over n rows, block 64 (grid-stride).
#include "common.cuh"

extern "C" __global__ void decode_advance(int* __restrict__ state, int* __restrict__ history, int* __restrict__ tokens, int* __restrict__ positions,
                                          int* __restrict__ cache_rows, int* __restrict__ record_rows, const int* __restrict__ sampled,
                                          const int* __restrict__ stop_ids, DecodeAdvanceParams p) {
    if (gtid() == 0) state[4ull * p.slots] += 1;
    if (p.t_max == 0) return;
    for (unsigned long long e = gtid(); e < p.n; e += gstride()) {
        const u32 r = (u32)e;
        const int row = cache_rows[r];
        if (row < 0 || (u32)row / p.t_max >= p.slots) continue;
        const u32 s = (u32)row / p.t_max;
        int* st = state + 4 * s;
        if (st[2] != 0) {
            record_rows[r] = (int)p.dump_row;
            continue;
        }
        const int resp0 = st[1];
        if (resp0 < 0 || (u32)resp0 >= p.stride) continue;
        const int id = sampled[r];
        history[(unsigned long long)s * p.stride + resp0] = id;
        const int len = st[0] + 1;
        const int resp = resp0 + 1;
        int finish = 0;
        for (u32 j = 0; j < p.n_stop; j++) {
            if (stop_ids[j] == id) finish = 1;
        }
        if (finish == 0 && (u32)resp >= p.max_new) finish = 2;
        if (finish == 0 && (u32)(len + 1) >= p.max_len) finish = 3;
        st[0] = len;
        st[1] = resp;
        st[2] = finish;
        st[3] = id;
        tokens[r] = id;
        positions[r] = len;
        cache_rows[r] = (int)(s * p.t_max) + len;
        record_rows[r] = finish == 0 ? (int)(s * p.stride) + resp : (int)p.dump_row;
    }
}

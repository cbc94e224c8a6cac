// Kernels for the emulator's own tests (tests/cuda_emu/main.rs): correct uses of the warp and
// block primitives with known results, and one kernel per defect the emulator must report. Built
// into the emulator beside kernels/ and compiled by NVRTC like them.
#include "common.cuh"

// out[t] for t < blockDim.x: the block sum of t (block_sum), a warp's xor / up / down shuffles
// and its ballot of odd lanes; out[blockDim.x + t] = the dynamic shared memory word t as first seen.
extern "C" __global__ void emu_primitives(float* out, unsigned* bits, u32 n) {
    __shared__ float scratch[32];
    extern __shared__ float dyn[];
    const u32 t = threadIdx.x, lane = t & 31;
    bits[4 * blockDim.x + t] = __float_as_uint(dyn[t]);
    const float s = block_sum((float)t, scratch);
    out[t] = s;
    bits[t] = (u32)__shfl_xor_sync(FULL_MASK, (int)t, 3);
    bits[blockDim.x + t] = (u32)__shfl_up_sync(FULL_MASK, (int)t, 2);
    bits[2 * blockDim.x + t] = (u32)__shfl_down_sync(FULL_MASK, (int)t, 5);
    bits[3 * blockDim.x + t] = __ballot_sync(FULL_MASK, lane & 1);
    (void)n;
}

// Every thread writes its index to out[0]: the last thread to run wins (shows the order).
extern "C" __global__ void emu_last_writer(int* out) { out[0] = (int)threadIdx.x; }

// A warp waits at a shuffle for lane 5, which waits at __syncthreads: a deadlock.
extern "C" __global__ void emu_deadlock(int* out) {
    int x = (int)threadIdx.x;
    if (threadIdx.x == 5) __syncthreads();
    else x = __shfl_xor_sync(FULL_MASK, x, 1);
    out[threadIdx.x] = x;
}

// The two halves of the block wait at different __syncthreads.
extern "C" __global__ void emu_divergent_barrier(int* out) {
    if (threadIdx.x < 32) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}

// The second warp exits; the first waits at __syncthreads.
extern "C" __global__ void emu_barrier_after_exit(int* out) {
    if (threadIdx.x >= 32) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

// Lanes 0..15 shuffle from lane 20, outside their mask.
extern "C" __global__ void emu_shuffle_outside_mask(int* out) {
    if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(0x0000ffffu, (int)threadIdx.x, 20);
}

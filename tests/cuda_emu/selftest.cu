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

// ---- the tensor-core wrappers of common.cuh (tests/cuda_emu/tensor_core.rs), one warp each
// unless said otherwise; matrices are row-major bf16, products f32.

// d[16][8] = a[16][16] b[16][8] + c[16][8], every lane loading its fragments straight from
// global memory by the layout documented in common.cuh (checks mma alone).
extern "C" __global__ void tc_mma(float* d, const bf16* a, const bf16* b, const float* c) {
    const int l = threadIdx.x, g = l >> 2, t = l & 3;
    auto pair = [](bf16 lo, bf16 hi) { return (u32)lo.bits | (u32)hi.bits << 16; };
    u32 fa[4], fb[2];
    float fc[4], fd[4];
    for (int r = 0; r < 4; r++) {
        const int row = g + (r & 1) * 8, col = 2 * t + (r >> 1) * 8;
        fa[r] = pair(a[row * 16 + col], a[row * 16 + col + 1]);
    }
    for (int r = 0; r < 2; r++) {
        const int k = 2 * t + r * 8;
        fb[r] = pair(b[k * 8 + g], b[(k + 1) * 8 + g]);
    }
    for (int i = 0; i < 4; i++) fc[i] = c[(g + (i >> 1) * 8) * 8 + 2 * t + (i & 1)];
    mma_bf16_16816(fd, fa, fb, fc);
    for (int i = 0; i < 4; i++) d[(g + (i >> 1) * 8) * 8 + 2 * t + (i & 1)] = fd[i];
}

// d[32][16] = a[32][32] b[32][16] with 2 warps (64 threads): both operands staged into shared
// memory by cp.async, A fragments by ldmatrix_x4, B fragments by ldmatrix_x2_trans (B is
// row-major [k][n]: its 8x8 blocks transposed), warp w computing rows 16 w .. 16 w + 15.
extern "C" __global__ void tc_gemm(float* d, const bf16* a, const bf16* b) {
    __shared__ __align__(16) bf16 sa[32 * 32];
    __shared__ __align__(16) bf16 sb[32 * 16];
    const int tid = threadIdx.x, l = tid & 31, w = tid >> 5;
    for (int q = tid; q < 32 * 32 / 8; q += 64) cp_async16(sa + 8 * q, a + 8 * q, true);
    for (int q = tid; q < 32 * 16 / 8; q += 64) cp_async16(sb + 8 * q, b + 8 * q, true);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    float acc[2][4] = {};
    for (int k0 = 0; k0 < 32; k0 += 16) {
        u32 fa[4];
        const int m = l >> 3, i = l & 7;
        ldmatrix_x4(fa, sa + (16 * w + i + (m & 1) * 8) * 32 + k0 + (m >> 1) * 8);
        for (int n = 0; n < 2; n++) {
            u32 fb[2];
            ldmatrix_x2_trans(fb, sb + (k0 + i + (m & 1) * 8) * 16 + 8 * n);
            mma_bf16_16816(acc[n], fa, fb, acc[n]);
        }
    }
    const int g = l >> 2, t = l & 3;
    for (int n = 0; n < 2; n++)
        for (int i = 0; i < 4; i++) d[(16 * w + g + (i >> 1) * 8) * 16 + 8 * n + 2 * t + (i & 1)] = acc[n][i];
}

// r[4 * 32 * 4]: what every lane receives from ldmatrix_x4 and ldmatrix_x4_trans over the four
// 8x8 matrices m[4][8][8] (bits), and from ldmatrix_x2 / _x2_trans over the first two.
extern "C" __global__ void tc_ldmatrix(u32* r, const unsigned short* m) {
    __shared__ __align__(16) unsigned short s[4 * 64];
    const int l = threadIdx.x;
    for (int e = l; e < 4 * 64; e += 32) s[e] = m[e];
    __syncthreads();
    const unsigned short* row = s + (l >> 3) * 64 + (l & 7) * 8;
    u32 x[4];
    ldmatrix_x4(x, row);
    for (int i = 0; i < 4; i++) r[l * 4 + i] = x[i];
    ldmatrix_x4_trans(x, row);
    for (int i = 0; i < 4; i++) r[128 + l * 4 + i] = x[i];
    ldmatrix_x2(x, row);
    for (int i = 0; i < 2; i++) r[256 + l * 2 + i] = x[i];
    ldmatrix_x2_trans(x, row);
    for (int i = 0; i < 2; i++) r[320 + l * 2 + i] = x[i];
}

// The emulator's model of cp.async (32 threads, 1 KiB of dynamic shared memory): out[t] = the
// shared word read before the wait (still the NaN fill), out[32 + t] = after the wait and a
// barrier (the copy of src, another thread's), out[64 + t] = a zero-filled copy (valid = false).
extern "C" __global__ void emu_cp_async_lands_at_the_wait(u32* out, const u32* src) {
    extern __shared__ float dyn[];
    u32* s = reinterpret_cast<u32*>(dyn);
    u32* z = s + 32 * 4;
    const int t = threadIdx.x;
    cp_async16(s + 4 * t, src + 4 * t, true);
    cp_async16(z + 4 * t, src + 4 * t, false);
    cp_async_commit();
    out[t] = s[4 * t];
    cp_async_wait<0>();
    __syncthreads();
    out[32 + t] = s[4 * ((t + 1) & 31)];
    out[64 + t] = z[4 * t + 1];
}

// The CUDA C++ dialect on the host: included before a kernels/*.cu file so that g++ -std=c++20
// compiles it unchanged. Execution-space keywords vanish, threadIdx/blockIdx/blockDim/gridDim read
// the emulator's current fiber and block (runtime.h), __syncthreads and the warp intrinsics call
// into the block scheduler (each call site's file:line comes along through source_location, so
// a deadlock or a divergent barrier names the line), atomics are std::atomic_ref, and the vector
// types, bit casts, math intrinsics and __nv_bfloat16 are plain C++.
//
// Shared memory: `__shared__` becomes `thread_local`. At block scope that is a static per OS
// thread, and one OS thread runs one block at a time, so a static `__shared__` array is per block.
// `extern __shared__ T name[]` becomes a block-scope extern declaration of a `static thread_local`
// array that the generated wrapper of each kernel file defines before including it (see
// install.rs): the launch's dynamic shared memory, filled with NaN bytes (0xff) at block start.
#pragma once

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <source_location>
#include <type_traits>

#include "runtime.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __constant__
#define __managed__
#define __shared__ thread_local
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __CUDA_ARCH__ 900
// kernels/common.cuh picks the C++ models of the tensor-core instructions under this name
#define RLHF_CUDA_EMU 1

constexpr int warpSize = 32;

// ---- vector types (the alignment of CUDA's)
struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x = 1, y = 1, z = 1; };
#define EMU_VEC2(T, N, A) struct alignas(A) N##2 { T x, y; }; inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }
#define EMU_VEC4(T, N, A) struct alignas(A) N##4 { T x, y, z, w; }; inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }
EMU_VEC2(float, float, 8)
EMU_VEC4(float, float, 16)
EMU_VEC2(int, int, 8)
EMU_VEC4(int, int, 16)
EMU_VEC2(unsigned int, uint, 8)
EMU_VEC4(unsigned int, uint, 16)
EMU_VEC2(double, double, 16)
EMU_VEC2(long long, longlong, 16)
EMU_VEC2(unsigned long long, ulonglong, 16)
EMU_VEC4(unsigned short, ushort, 8)
EMU_VEC4(unsigned char, uchar, 4)
#undef EMU_VEC2
#undef EMU_VEC4
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }

// ---- built-in variables: the current fiber (thread) and the block of this OS thread
#define threadIdx (emu::cur_thread->tid)
#define blockIdx (emu::cur_block.bid)
#define blockDim (emu::cur_block.bdim)
#define gridDim (emu::cur_block.gdim)

// ---- barriers and warp operations (file:line of the call for the error reports)
using emu_loc = std::source_location;
inline void __syncthreads(emu_loc l = emu_loc::current()) { emu::sync_block(l.file_name(), l.line()); }
inline int __syncthreads_count(int p, emu_loc l = emu_loc::current()) { return emu::sync_block_reduce(emu::Reduce::Count, p, l.file_name(), l.line()); }
inline int __syncthreads_and(int p, emu_loc l = emu_loc::current()) { return emu::sync_block_reduce(emu::Reduce::And, p, l.file_name(), l.line()); }
inline int __syncthreads_or(int p, emu_loc l = emu_loc::current()) { return emu::sync_block_reduce(emu::Reduce::Or, p, l.file_name(), l.line()); }
inline void __syncwarp(unsigned mask = 0xffffffffu, emu_loc l = emu_loc::current()) { emu::warp_op(emu::WarpKind::Sync, mask, 0, 0, 32, l.file_name(), l.line()); }

template <typename T>
inline T emu_shfl(emu::WarpKind k, unsigned mask, T v, int arg, int width, const emu_loc& l) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move values of at most 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = emu::warp_op(k, mask, bits, arg, width, l.file_name(), l.line());
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}
template <typename T> inline T __shfl_sync(unsigned m, T v, int src, int w = 32, emu_loc l = emu_loc::current()) { return emu_shfl(emu::WarpKind::Idx, m, v, src, w, l); }
template <typename T> inline T __shfl_xor_sync(unsigned m, T v, int x, int w = 32, emu_loc l = emu_loc::current()) { return emu_shfl(emu::WarpKind::Xor, m, v, x, w, l); }
template <typename T> inline T __shfl_up_sync(unsigned m, T v, unsigned d, int w = 32, emu_loc l = emu_loc::current()) { return emu_shfl(emu::WarpKind::Up, m, v, (int)d, w, l); }
template <typename T> inline T __shfl_down_sync(unsigned m, T v, unsigned d, int w = 32, emu_loc l = emu_loc::current()) { return emu_shfl(emu::WarpKind::Down, m, v, (int)d, w, l); }
inline unsigned __ballot_sync(unsigned m, int p, emu_loc l = emu_loc::current()) { return (unsigned)emu::warp_op(emu::WarpKind::Ballot, m, p != 0, 0, 32, l.file_name(), l.line()); }
inline int __any_sync(unsigned m, int p, emu_loc l = emu_loc::current()) { return emu::warp_op(emu::WarpKind::Ballot, m, p != 0, 0, 32, l.file_name(), l.line()) != 0; }
inline int __all_sync(unsigned m, int p, emu_loc l = emu_loc::current()) {
    return (unsigned)emu::warp_op(emu::WarpKind::Ballot, m, p != 0, 0, 32, l.file_name(), l.line()) == (m & emu::active_mask());
}
inline unsigned __activemask() { return emu::active_mask(); }

// ---- what the tensor-core instructions of kernels/common.cuh are modelled with
// The lane of the calling thread in its warp (linear thread index mod 32).
inline int emu_lane() { return (int)((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31u); }
// Every lane of the warp posts `v`; returns all 32 lanes' values (see emu::warp_collect).
template <typename T>
inline const T* emu_warp_collect(const T& v, emu_loc l = emu_loc::current()) {
    static_assert(sizeof(T) <= emu::MAX_COLLECT_BYTES && std::is_trivially_copyable_v<T>, "a fragment of at most 64 bytes");
    return static_cast<const T*>(emu::warp_collect(0xffffffffu, &v, (int)sizeof(T), l.file_name(), l.line()));
}
// cp.async: queued per thread, performed (oldest first) by the wait that covers its group.
inline void emu_cp_async(void* dst, const void* src, unsigned bytes, unsigned src_bytes, emu_loc l = emu_loc::current()) {
    emu::ThreadState& t = *emu::cur_thread;
    if (t.n_async == emu::MAX_ASYNC_COPIES) emu::fail_thread("more cp.async copies pending than the emulator holds (wait for some first)", l.file_name(), l.line());
    t.async[t.n_async++] = emu::AsyncCopy{dst, src, bytes, src_bytes, t.async_committed};
}
inline void emu_cp_async_commit() { emu::cur_thread->async_committed++; }
// cp.async.wait_group n: every committed group but the newest n has landed.
inline void emu_cp_async_wait(unsigned n) {
    emu::ThreadState& t = *emu::cur_thread;
    const unsigned done_below = t.async_committed > n ? t.async_committed - n : 0;
    int kept = 0;
    for (int i = 0; i < t.n_async; i++) {
        const emu::AsyncCopy c = t.async[i];
        if (c.group < done_below) {
            std::memcpy(c.dst, c.src, c.src_bytes);
            std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
        } else t.async[kept++] = c;
    }
    t.n_async = kept;
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---- atomics (blocks run on several OS threads at once)
template <typename T> inline T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <typename T> inline T atomicSub(T* p, T v) { return std::atomic_ref<T>(*p).fetch_sub(v); }
template <typename T> inline T atomicExch(T* p, T v) { return std::atomic_ref<T>(*p).exchange(v); }
template <typename T> inline T atomicAnd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_and(v); }
template <typename T> inline T atomicOr(T* p, T v) { return std::atomic_ref<T>(*p).fetch_or(v); }
template <typename T> inline T atomicXor(T* p, T v) { return std::atomic_ref<T>(*p).fetch_xor(v); }
template <typename T> inline T atomicCAS(T* p, T expected, T desired) {
    std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
    return expected;
}
template <typename T, typename F> inline T emu_atomic_update(T* p, F f) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (!a.compare_exchange_weak(old, f(old))) {}
    return old;
}
template <typename T> inline T atomicMax(T* p, T v) { return emu_atomic_update(p, [v](T o) { return o < v ? v : o; }); }
template <typename T> inline T atomicMin(T* p, T v) { return emu_atomic_update(p, [v](T o) { return v < o ? v : o; }); }
inline unsigned atomicInc(unsigned* p, unsigned v) { return emu_atomic_update(p, [v](unsigned o) { return o >= v ? 0u : o + 1; }); }
inline unsigned atomicDec(unsigned* p, unsigned v) { return emu_atomic_update(p, [v](unsigned o) { return (o == 0 || o > v) ? v : o - 1; }); }

// ---- bit casts and integer intrinsics
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(int x) { return std::countl_zero((unsigned)x); }
inline int __clzll(long long x) { return std::countl_zero((unsigned long long)x); }
inline int __ffs(int x) { return x == 0 ? 0 : std::countr_zero((unsigned)x) + 1; }
inline int __ffsll(long long x) { return x == 0 ? 0 : std::countr_zero((unsigned long long)x) + 1; }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) { return (unsigned long long)(((unsigned __int128)a * b) >> 64); }
template <typename T> inline T __ldg(const T* p) { return *p; }

// ---- min / max as CUDA overloads them (mixed signedness goes unsigned, as CUDA's headers do)
#define EMU_MINMAX(T)                                   \
    inline T min(T a, T b) { return b < a ? b : a; } \
    inline T max(T a, T b) { return a < b ? b : a; }
EMU_MINMAX(int)
EMU_MINMAX(unsigned int)
EMU_MINMAX(long long)
EMU_MINMAX(unsigned long long)
EMU_MINMAX(long)
EMU_MINMAX(unsigned long)
#undef EMU_MINMAX
inline unsigned min(int a, unsigned b) { return min((unsigned)a, b); }
inline unsigned min(unsigned a, int b) { return min(a, (unsigned)b); }
inline unsigned max(int a, unsigned b) { return max((unsigned)a, b); }
inline unsigned max(unsigned a, int b) { return max(a, (unsigned)b); }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// ---- math intrinsics: the fast forms compute the precise value here
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline void __sincosf(float x, float* s, float* c) { sincosf(x, s, c); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __saturatef(float x) { return x != x ? 0.0f : fminf(fmaxf(x, 0.0f), 1.0f); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float exp10f(float x) { return powf(10.0f, x); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }

// ---- bfloat16 (cuda_bf16.h's type and conversions; round to nearest even, NaN kept)
struct __nv_bfloat16 {
    unsigned short __x;
};
struct __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
inline float __bfloat162float(__nv_bfloat16 h) { return std::bit_cast<float>((unsigned)h.__x << 16); }
inline __nv_bfloat16 __float2bfloat16(float f) {
    const unsigned u = std::bit_cast<unsigned>(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(unsigned short)((u >> 16) | 0x40u)};
    return __nv_bfloat16{(unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return __nv_bfloat162{__float2bfloat16(a), __float2bfloat16(b)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return float2{__bfloat162float(h.x), __bfloat162float(h.y)}; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short x) { return __nv_bfloat16{x}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }

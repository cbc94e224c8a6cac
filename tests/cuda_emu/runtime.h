// The emulator's runtime interface: what the compiled kernels see (the current thread and block,
// the barrier and warp-operation entry points) and how a kernel file registers its entry points
// (name, parameter sizes, an invoker that unpacks cuLaunchKernel's `kernelParams`).
//
// Model: every CUDA thread of a block is a fiber (fiber.h) on one OS thread; `cur_thread` is the
// fiber running now and `cur_block` the block of this OS thread. Blocks of a grid are spread over
// worker threads (scheduler.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <type_traits>

namespace emu {

struct Dim {
    unsigned int x, y, z;
};

// A cp.async copy issued but not yet performed: it lands when a cp.async.wait_group covers its
// group (a kernel that reads the destination before that sees the old bytes, as on a GPU).
struct AsyncCopy {
    void* dst;
    const void* src;
    unsigned bytes, src_bytes, group;
};
constexpr int MAX_ASYNC_COPIES = 128;

struct ThreadState {
    Dim tid;
    int n_async = 0;              // pending copies in async[0 .. n_async), oldest first
    unsigned async_committed = 0; // groups committed so far (the open group's number)
    AsyncCopy async[MAX_ASYNC_COPIES];
};

struct BlockState {
    Dim bid, bdim, gdim;
};

extern thread_local ThreadState* cur_thread;
extern thread_local BlockState cur_block;

enum class WarpKind : int { Sync, Idx, Xor, Up, Down, Ballot, Collect };
enum class Reduce : int { None, Count, And, Or };

// Block barrier (all threads of the block at the same __syncthreads).
void sync_block(const char* file, unsigned line);
// Block barrier that also reduces a predicate over the block (__syncthreads_count/and/or).
int sync_block_reduce(Reduce r, int pred, const char* file, unsigned line);
// A warp operation over the lanes of `mask`: waits for them all, returns this lane's result
// (the shuffled bits, the ballot, or 0 for __syncwarp).
unsigned long long warp_op(WarpKind k, unsigned mask, unsigned long long value, int arg, int width, const char* file, unsigned line);
// Every lane of `mask` posts `bytes` (at most MAX_COLLECT_BYTES) at `mine`; returns a snapshot of
// the lanes' bytes, lane l at offset l * bytes (lanes outside the mask: zero), valid until this
// lane's next warp operation. The tensor-core instructions of kernels/common.cuh are built on it.
constexpr int MAX_COLLECT_BYTES = 64;
const void* warp_collect(unsigned mask, const void* mine, int bytes, const char* file, unsigned line);
// Stops the block with a defect report for the current thread (never returns to it).
[[noreturn]] void fail_thread(const char* what, const char* file, unsigned line);
// The lanes of the current warp that have not exited.
unsigned active_mask();

// ---- registration of kernels
constexpr int MAX_PARAMS = 32;

struct Kernel {
    const char* name;
    int n_params;
    unsigned short param_size[MAX_PARAMS];
    unsigned short param_align[MAX_PARAMS];
    // calls the kernel with the parameters at `args[i]` (copies of the launch's values)
    void (*invoke)(void* fn, void* const* args);
    void* fn;
    // this OS thread's dynamic shared memory of the kernel's file (nullptr: it has none)
    void* (*dyn_smem)();
};

template <typename... A, std::size_t... I>
void invoke_with(void* fn, void* const* args, std::index_sequence<I...>) {
    reinterpret_cast<void (*)(A...)>(fn)(*static_cast<std::remove_cvref_t<A>*>(args[I])...);
}

template <typename... A>
void invoke(void* fn, void* const* args) {
    invoke_with<A...>(fn, args, std::index_sequence_for<A...>{});
}

template <typename... A>
Kernel describe(const char* name, void (*fn)(A...), void* (*dyn_smem)()) {
    static_assert(sizeof...(A) <= MAX_PARAMS, "too many kernel parameters");
    Kernel k{name, (int)sizeof...(A), {(unsigned short)sizeof(std::remove_cvref_t<A>)...}, {(unsigned short)alignof(std::remove_cvref_t<A>)...},
             &invoke<A...>, reinterpret_cast<void*>(fn), dyn_smem};
    return k;
}

// Adds kernels to the process-wide table (called by the generated wrapper of each kernel file).
void register_kernels(const char* family, const Kernel* kernels, int count);
const Kernel* find_kernel(const char* name);

// The largest dynamic shared memory a launch may ask for (an H100's opt-in maximum).
constexpr std::size_t MAX_DYN_SMEM = 232448;

}  // namespace emu

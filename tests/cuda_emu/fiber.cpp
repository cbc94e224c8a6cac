// x86-64 System V fiber switch (see fiber.h). Frame of a switched-out fiber, from its sp upward:
// [mxcsr | x87 cw] r15 r14 r13 r12 rbx rbp return-address. A new fiber's return address is
// `emu_fiber_start`, which calls r13(r12) with a 16-byte aligned stack.
#include "fiber.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#if !defined(__x86_64__)
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif

asm(R"(
    .text
    .globl emu_switch
    .hidden emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch

    .globl emu_fiber_start
    .hidden emu_fiber_start
    .type emu_fiber_start, @function
emu_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size emu_fiber_start, .-emu_fiber_start
)");

extern "C" void emu_fiber_start();

namespace emu {

void allocate_stacks(Fiber* fibers, int count, std::size_t size) {
    const std::size_t page = 4096, slot = size + page;
    char* base = static_cast<char*>(mmap(nullptr, slot * count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (base == MAP_FAILED) {
        std::fprintf(stderr, "cuda emulator: cannot map %d fiber stacks of %zu bytes\n", count, size);
        std::abort();
    }
    for (int i = 0; i < count; i++) {
        char* lo = base + i * slot;
        mprotect(lo, page, PROT_NONE);  // overflow faults instead of corrupting the next stack
        fibers[i].stack = lo + page;
        fibers[i].size = size;
    }
}

void prepare(Fiber& f, void (*entry)(void*), void* arg) {
    auto top = reinterpret_cast<std::uintptr_t>(f.stack + f.size) & ~std::uintptr_t(15);
    auto* w = reinterpret_cast<std::uint64_t*>(top) - 8;
    w[0] = 0x1f80ull | (0x037full << 32);  // default mxcsr, x87 control word
    w[1] = 0;                                // r15
    w[2] = 0;                                // r14
    w[3] = reinterpret_cast<std::uint64_t>(entry);  // r13
    w[4] = reinterpret_cast<std::uint64_t>(arg);    // r12
    w[5] = 0;                                // rbx
    w[6] = 0;                                // rbp
    w[7] = reinterpret_cast<std::uint64_t>(&emu_fiber_start);
    f.sp = w;
}

}  // namespace emu

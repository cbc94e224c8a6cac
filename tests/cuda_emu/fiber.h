// Fibers: a stack and a saved stack pointer, switched by a hand-written x86-64 routine that saves
// only the callee-saved registers and the SSE/x87 control words (no syscall, unlike swapcontext).
// A fiber starts in `entry(arg)`; `entry` must never return (it switches away for the last time).
#pragma once

#include <cstddef>

namespace emu {

struct Fiber {
    void* sp = nullptr;        // saved stack pointer while switched out
    char* stack = nullptr;     // lowest usable address (a guard page lies below)
    std::size_t size = 0;
};

// Saves the current context into *save_sp and resumes the one at `to_sp`.
extern "C" __attribute__((visibility("hidden"))) void emu_switch(void** save_sp, void* to_sp);

// Allocates `count` fiber stacks of `size` bytes each (guard pages between them, memory committed
// on first touch). Aborts the process when the address space is exhausted.
void allocate_stacks(Fiber* fibers, int count, std::size_t size);
// Points the fiber at a fresh frame that calls entry(arg) when first switched to.
void prepare(Fiber& f, void (*entry)(void*), void* arg);

}  // namespace emu

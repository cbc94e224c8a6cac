// Running a grid: blocks spread over worker threads, the threads of a block as fibers on one of
// them, scheduled in the order RLHF_CUDA_EMU_ORDER names (forward, reverse, or random at every
// barrier, seeded by RLHF_CUDA_EMU_SEED). A deadlock, a divergent barrier or an out-of-mask
// shuffle stops the grid and comes back as the error text (naming the kernel, block, thread and
// file:line); an empty string means the grid ran.
#pragma once

#include <string>

#include "runtime.h"

namespace emu {

struct Grid {
    Dim grid, block;
    unsigned dyn_smem;
};

std::string run_grid(const Kernel& k, const Grid& g, void* const* args);

// Why the RLHF_CUDA_EMU_* settings are unusable, or empty.
std::string config_error();

// Overrides RLHF_CUDA_EMU_ORDER ("forward", "reverse", "random"; nullptr: back to the
// environment's); false for another name.
bool set_order(const char* name);

}  // namespace emu

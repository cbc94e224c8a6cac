// Between the block scheduler (scheduler.cpp) and the grid's workers (grid.cpp): a runner holds
// the fibers of one block at a time and is bound to the OS thread that took it.
#pragma once

#include <string>

#include "scheduler.h"

namespace emu {

struct BlockRunner;

// A runner for this OS thread (reused: mapping 1024 fiber stacks is costly), and back.
BlockRunner* take_runner();
void give_back(BlockRunner* r);

// Runs block `bid` of `g` on `r` (taken by this OS thread): the error text, or empty.
std::string run_block(BlockRunner& r, const Kernel& k, const Grid& g, Dim bid, void* const* args, unsigned long long seed);

// RLHF_CUDA_EMU_SEED and RLHF_CUDA_EMU_THREADS (default: every core).
unsigned long long order_seed();
int worker_count();

}  // namespace emu

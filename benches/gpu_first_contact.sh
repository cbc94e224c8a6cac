#!/usr/bin/env bash
# What a first run on a GPU machine does, in under 5 minutes of machine time: `rlhf info` (the
# device, the driver, NVRTC and cuBLAS versions and where they were loaded from), the CUDA op
# parity suite (every op against the CPU, f32 and bf16), the whole-model CUDA checks (fixtures'
# log-probs, an SFT and a PPO step, every command, graphs, streams, epilogues on and off), and one
# bf16 `rlhf bench` of GPT-2 124M (training, and decode at 64 slots), then a one-screen summary.
# OUT (default ./gpu-out) receives only summary.txt and session.log; runs go to /tmp.
#
#   bash benches/gpu_session.sh prepare          # where cargo is: builds the binaries into .gpu/
#   bash benches/gpu_first_contact.sh [OUT]      # on the GPU machine, from the repository root
#
# Run it before anything else on a GPU, read its summary, then the full `gpu_session.sh run` in
# its two halves (`tests`, `bench`), and record what they show in docs/benchmarks.md.
set -u
exec bash "$(dirname "$0")/gpu_session.sh" run "${1:-$(cd "$(dirname "$0")/.." && pwd)/gpu-out}" first

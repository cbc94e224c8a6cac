#!/usr/bin/env bash
# The GPU checks and benchmarks of the CUDA and wgpu backends in one pass, for a machine with an
# NVIDIA GPU but no Rust toolchain (binaries are built elsewhere and carried over).
#
#   bash benches/gpu_session.sh prepare     # where cargo is: builds, strips and copies into .gpu/
#   bash benches/gpu_session.sh run [OUT]   # on the GPU machine, from the repository root
#   bash benches/gpu_session.sh run OUT tests | bench   # one half (each well under 10 minutes)
#   bash benches/gpu_session.sh run OUT first           # the first contact (benches/gpu_first_contact.sh)
#
# `prepare` builds the release binary and the three GPU test binaries (tests/cuda_ops: every op
# against the CPU, in f32 and bf16; tests/gpu_model/: fixtures, SFT step, PPO step, every
# command in f32 (f32_model::) and whole models in bf16 storage against f32 (bf16_model::)) and puts stripped
# copies (~35 MB) into .gpu/ (ignored by git).
# `run` finds NVRTC and cuBLAS (the CUDA toolkit, or the nvidia-* Python wheels next to PyTorch),
# runs the parity suites, then `rlhf bench` on GPT-2 124M (B=16, T=1024) with the decode sweep
# at 1/64/256 slots and the fused-kernel table in the default bf16 storage (--precision auto),
# the decode sweep again without CUDA graphs (RLHF_CUDA_GRAPHS=0), training and decode at 64
# slots with no cuBLASLt epilogue and with the GELU ones too (RLHF_CUDA_EPILOGUES=0 / all; the
# default fuses the biases only), then in f32 storage (plain,
# and with tf32 tensor-core matmuls), the demo's SFT -> RM -> PPO pipeline on the GPU with and
# without streams for PPO's scoring phase (RLHF_CUDA_STREAMS=0; the mean scoring time per step of
# each goes to the summary), PyTorch's torch.compile baseline (bf16 autocast, and f32) on the
# same shape (tests/fixtures/bench_pytorch.py), and `rlhf bench --backend wgpu` when a Vulkan
# driver is there. Every step's output goes to OUT (default ./gpu-out) in session.log, and summary.txt
# lists each step's exit status and time; a failing step does not stop the others.
# Budget: about 9-11 minutes on an H100 in all: past a 10-minute limit per command, run the two
# halves (`tests`, then `bench`) as two commands.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

prepare() {
    set -e
    cargo build --release --bin rlhf --test cuda_ops --test gpu_model
    mkdir -p .gpu
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
    cp target/release/rlhf .gpu/rlhf
    for t in cuda_ops gpu_model; do
        # the newest test executable of that name (cargo appends a hash)
        exe=$(ls -t target/release/deps/"$t"-* | grep -v '\.d$' | head -1)
        cp "$exe" .gpu/"$t"
    done
    strip .gpu/rlhf .gpu/cuda_ops .gpu/gpu_model
    # the test binaries look for the repository and the rlhf binary where they were built
    echo "$root" >.gpu/built_at
    du -sh .gpu
}

# Puts the folders of NVRTC, cuBLAS and cuBLASLt (the CUDA toolkit's, else the nvidia-* Python
# wheels') on the library path as they are: a library copied or linked elsewhere no longer finds
# its companions (libnvrtc-builtins next to libnvrtc, libcublasLt next to libcublas).
find_cuda_libs() {
    local lib found dirs=""
    for lib in nvrtc cublas cublasLt; do
        found=$(ls /usr/local/cuda/lib64/lib"$lib".so.* 2>/dev/null | head -1)
        if [ -z "$found" ]; then
            found=$(python3 - "$lib" <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
hits = [h for r in roots for h in glob.glob(os.path.join(r, "nvidia", "**", f"lib{sys.argv[1]}.so.*"), recursive=True)]
print(sorted(hits)[-1] if hits else "")
EOF
)
        fi
        if [ -n "$found" ]; then
            echo "lib$lib: $found"
            case ":$dirs:" in *":$(dirname "$found"):"*) ;; *) dirs="${dirs:+$dirs:}$(dirname "$found")" ;; esac
        fi
    done
    export LD_LIBRARY_PATH="${dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    if [ -d /usr/local/cuda/include ]; then
        export RLHF_CUDA_INCLUDE=/usr/local/cuda/include
    fi
}

step() { # step NAME CMD...: runs CMD, appends its output to $out/session.log, records the status
    local name=$1 log=/tmp/rlhf-gpu-step.log
    shift
    echo "== $name: $*" | tee -a "$out/summary.txt"
    local t0=$SECONDS
    "$@" >"$log" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
    { echo "===== $name (rc=$rc): $*"; cat "$log"; } >>"$out/session.log"
    tail -25 "$log"
}

scoring_times() { # scoring_times DEMO_OUT...: mean scoring_s of each demo's PPO and GRPO steps
    python3 - "$@" <<'PY' || true
import json, os, sys
for d in sys.argv[1:]:
    for stage in ("ppo", "grpo"):
        path = os.path.join(d, stage, "metrics.jsonl")
        if os.path.exists(path):
            rows = [json.loads(l) for l in open(path) if l.strip()]
            times = [r["scoring_s"] for r in rows[1:] if "scoring_s" in r]  # the first step compiles
            if times:
                print(f"   {path}: scoring {1e3 * sum(times) / len(times):.2f} ms/step over {len(times)} steps")
PY
}

run() { # run OUT [tests|bench|first]: everything, the test suites, the benchmarks, or the first contact
    out=${1:-$root/gpu-out}
    part=${2:-all}
    runs=$(mktemp -d /tmp/rlhf-gpu-runs.XXXXXX)
    mkdir -p "$out"
    rm -f "$out/session.log"
    [ -x .gpu/rlhf ] || { echo "no .gpu/rlhf: run 'bash benches/gpu_session.sh prepare' where cargo is, and carry .gpu" >&2; exit 2; }
    built_at=$(cat .gpu/built_at)
    if [ "$built_at" != "$root" ] && [ ! -e "$built_at" ]; then
        mkdir -p "$(dirname "$built_at")" && ln -s "$root" "$built_at"
    fi
    mkdir -p "$built_at/target/release" && cp .gpu/rlhf "$built_at/target/release/rlhf"
    find_cuda_libs
    { date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1; } >"$out/summary.txt"
    cat "$out/summary.txt"
    local rlhf=.gpu/rlhf bench=(bench --model gpt2-124m --vocab 50257 --batch-size 16 --seq-len 1024 --steps 5)
    step info $rlhf info
    if [ "$part" = first ]; then
        # the first contact with a GPU (under 5 minutes): correctness, then one benchmark
        step cuda_ops .gpu/cuda_ops --test-threads=1
        step gpu_model_cuda .gpu/gpu_model f32_model::cuda:: f32_model::cuda_graphs:: f32_model::cuda_streams:: f32_model::cuda_epilogues:: --test-threads=1
        step bench_cuda_bf16 $rlhf "${bench[@]}" --steps 3 --backend cuda --precision bf16 --decode-batches 64
        echo
        echo "==== first contact: summary ($out/summary.txt; logs in $out/session.log)"
        cat "$out/summary.txt"
        grep -E "^test result|FAILED|panicked|tokens/s|MFU|roofline" "$out/session.log" | head -40
        return
    fi
    if [ "$part" != bench ]; then
        step cuda_ops .gpu/cuda_ops --test-threads=1
        step gpu_model_cuda .gpu/gpu_model f32_model::cuda:: f32_model::cuda_graphs:: f32_model::cuda_streams:: f32_model::cuda_epilogues:: --test-threads=1
        step bf16_model_cuda .gpu/gpu_model bf16_model::cuda:: --test-threads=1
    fi
    if [ "$part" = tests ]; then
        echo "logs in $out"
        return
    fi
    step bench_cuda $rlhf "${bench[@]}" --backend cuda --decode-batches 1,64,256 --kernels --attention 16,1024,12,64 --sampling
    # attention on tensor cores (the default in bf16) against the SIMT kernels, and PyTorch's flash sdpa
    step bench_attention_simt env RLHF_CUDA_ATTENTION=simt $rlhf "${bench[@]}" --backend cuda --steps 3 --attention 16,1024,12,64
    step bench_pytorch_attention env PYTHONUNBUFFERED=1 python3 tests/fixtures/bench_pytorch.py --device cuda --dtype bf16 --attention 16,1024,12,64 \
        --steps 10 --warmup 3
    step bench_cuda_no_graphs env RLHF_CUDA_GRAPHS=0 $rlhf "${bench[@]}" --backend cuda --decode-batches 1,64,256
    # cuBLASLt epilogues: none (bias and GELU as kernels of their own), and the GELU fused too,
    # beside the default (the bias only): training, and decode at 64 slots
    step bench_cuda_no_epilogues env RLHF_CUDA_EPILOGUES=0 $rlhf "${bench[@]}" --backend cuda --decode-batches 64
    step bench_cuda_all_epilogues env RLHF_CUDA_EPILOGUES=all $rlhf "${bench[@]}" --backend cuda --decode-batches 64
    step bench_cuda_f32 $rlhf "${bench[@]}" --backend cuda --precision f32 --decode-batches 1,64,256
    step bench_cuda_f32_tf32 $rlhf "${bench[@]}" --backend cuda --precision f32 --matmul-precision tf32
    # the demo pipeline on the GPU, and PPO's scoring phase with and without streams of its own
    # (RLHF_CUDA_STREAMS=0: everything on one stream)
    # (runs go to $runs, so that OUT holds only summary.txt and session.log)
    step demo_cuda $rlhf demo --backend cuda --quick --out "$runs/demo"
    step demo_cuda_one_stream env RLHF_CUDA_STREAMS=0 $rlhf demo --backend cuda --quick --out "$runs/demo-one-stream"
    scoring_times "$runs/demo" "$runs/demo-one-stream" | tee -a "$out/summary.txt"
    step bench_pytorch env PYTHONUNBUFFERED=1 python3 tests/fixtures/bench_pytorch.py --device cuda --dtype bf16 --compile --attn sdpa \
        --layers 12 --hidden 768 --heads 12 --vocab 50257 --batch 16 --seq 1024 --steps 10 --warmup 5
    step bench_pytorch_f32 env PYTHONUNBUFFERED=1 python3 tests/fixtures/bench_pytorch.py --device cuda --dtype f32 --compile --attn sdpa \
        --layers 12 --hidden 768 --heads 12 --vocab 50257 --batch 16 --seq 1024 --steps 10 --warmup 5
    if ls .gl/*.deb >/dev/null 2>&1; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    # a GPU adapter through Vulkan (not a CPU driver such as lavapipe)
    if $rlhf info 2>&1 | grep -i "vulkan" | grep -qvi "(cpu"; then
        step bench_wgpu env RLHF_WGPU_ADAPTER=NVIDIA $rlhf "${bench[@]}" --backend wgpu
        step gpu_model_wgpu env RLHF_WGPU_ADAPTER=NVIDIA .gpu/gpu_model f32_model::wgpu:: --test-threads=1
    else
        echo "== bench_wgpu: skipped (no Vulkan adapter; see the device notes on carrying the loader)" | tee -a "$out/summary.txt"
    fi
    echo "logs in $out"
}

case "${1:-}" in
prepare) prepare ;;
run) run "${2:-}" "${3:-all}" ;;
*)
    echo "usage: bash benches/gpu_session.sh prepare | run [OUT [tests|bench|first]]" >&2
    exit 2
    ;;
esac

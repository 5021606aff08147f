#!/usr/bin/env bash
# The one check to run on a GPU machine (one H100/H200; under 8 minutes), with the binary that
# scripts/build-cuda.sh built here: CUDA against CPU logits on the fixtures (f32 within 1e-4, bf16
# and f16 within 2e-2 of the largest logit), 20 training steps on the fixture on CUDA against the
# CPU, then `glmtune bench train` at ChatGLM-6B's shape (fp16, bf16, int4; with and without gradient
# checkpointing). Prints one table (scripts/gpu_check.py; python3, standard library only).
#
#   scripts/gpu-check.sh [--bin PATH] [--device cuda:N] [...]   on the GPU machine
#   scripts/gpu-check.sh --device cpu --bin PATH                a dry run: the same comparisons, cpu
#                                                               against cpu, no bench (tested by
#                                                               server/tests/device.rs)
# The binary links no CUDA library: it needs the driver's libcuda and cuBLAS/cuRAND on
# LD_LIBRARY_PATH. When cuBLAS is not found there, the lib folders of pip's nvidia packages in the
# Pythons on this machine are added (PyTorch's wheels bring them).
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
if [[ " $* " != *" --bin "* ]]; then
    bin="${GLMTUNE_BIN:-${GLMTUNE_CACHE:-$HOME/.cache/glmtune}/cuda-release-target/release/glmtune}"
    [[ -x "$bin" ]] || bin="./glmtune"
    args+=(--bin "$bin")
fi
if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libcublas\.so' \
    && [[ ":${LD_LIBRARY_PATH:-}:" != *nvidia*cublas* ]]; then
    found=""
    for python in python3 /opt/*/.venv/bin/python3 /opt/*/bin/python3; do
        command -v "$python" >/dev/null 2>&1 || continue
        site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null) || continue
        for lib in "$site"/nvidia/*/lib; do
            [[ -d "$lib" ]] && found="$found${found:+:}$lib"
        done
    done
    if [[ -n "$found" ]]; then
        echo "gpu-check: LD_LIBRARY_PATH += pip's nvidia lib folders ($found)" >&2
        export LD_LIBRARY_PATH="$found${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
exec python3 scripts/gpu_check.py "${args[@]}"

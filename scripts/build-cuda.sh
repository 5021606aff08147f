#!/usr/bin/env bash
# Builds the `glmtune` binary with CUDA (`--device cuda[:N]`) on a machine without a GPU: NVIDIA's
# nvcc comes from PyPI (scripts/cuda-env.sh pins the CUDA 13.0 wheels and installs them once under
# ~/.cache/glmtune). The binary links no CUDA library: on the GPU machine it dlopens libcuda (the
# driver's), cuBLAS and cuRAND, found on LD_LIBRARY_PATH (see the README, "Training and inference
# on a GPU"). Kernels are built for sm_90a (H100, H200; CUDA_COMPUTE_CAP overrides). A cold release
# build took 13 minutes on 2 cores (55 MiB). Prints the binary's path on stdout.
#   scripts/build-cuda.sh [extra cargo build flags]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=cuda-env.sh
source scripts/cuda-env.sh
# Outside the clone, so that it survives a fresh checkout and never mixes with the CPU build's.
export CARGO_TARGET_DIR="${GLMTUNE_CUDA_TARGET:-${GLMTUNE_CACHE:-$HOME/.cache/glmtune}/cuda-release-target}"
cargo build --release -p glmtune --features cuda "$@" >&2
echo "$CARGO_TARGET_DIR/release/glmtune"

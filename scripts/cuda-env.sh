#!/usr/bin/env bash
# Sourced by scripts/build-cuda.sh and .ci/run: installs NVIDIA's nvcc from PyPI into a venv (once;
# reused while the pinned versions are there) and exports what candle's CUDA build reads. No CUDA
# library is needed to build: the `cuda` feature dlopens them at run time (vendor/candle-core/PATCHED.md).
# Pinned to CUDA 13.0: a newer nvcc emits PTX that a CUDA 13.0 driver may refuse to load.
cuda_wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
    nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88)
cuda_venv="${GLMTUNE_CACHE:-$HOME/.cache/glmtune}/cuda-venv"
# The venv records what it holds, so that changing a pin above reinstalls.
if [[ ! -x "$cuda_venv/bin/python" || "$(cat "$cuda_venv/.glmtune-wheels" 2>/dev/null)" != "${cuda_wheels[*]}" ]]; then
    echo "cuda-env: installing ${cuda_wheels[*]} into $cuda_venv" >&2
    python3 -m venv "$cuda_venv" >&2
    "$cuda_venv/bin/pip" install -q "${cuda_wheels[@]}" >&2
    echo "${cuda_wheels[*]}" >"$cuda_venv/.glmtune-wheels"
fi
cuda_site=$("$cuda_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export CUDA_HOME="$cuda_site/nvidia/cu13"
export CUDA_PATH="$CUDA_HOME"
export PATH="$CUDA_HOME/bin:$PATH"
# sm_90a kernels: H100 and H200.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
# cudarc's bindings for CUDA 13.0, and the versioned library names it dlopens (libcublas.so.13).
export CUDARC_CUDA_VERSION=13000
# candle-kernels links `-lcudart`; the wheel has only the static library under another name.
mkdir -p "$cuda_venv/link"
ln -sf "$CUDA_HOME/lib/libcudart_static.a" "$cuda_venv/link/libcudart.a"
export LIBRARY_PATH="$cuda_venv/link${LIBRARY_PATH:+:$LIBRARY_PATH}"
# Compressed kernels halve the binary (51 → 25 MiB), which matters when it is copied to a GPU machine.
export NVCC_APPEND_FLAGS="--compress-mode=size${NVCC_APPEND_FLAGS:+ $NVCC_APPEND_FLAGS}"

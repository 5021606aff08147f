#!/usr/bin/env bash
# Decode tokens/s of a ChatGLM-6B-shaped model with random q4_0 weights (embeddings q8_0, as
# `glmtune quantize --bits 4` writes them) on the wgpu backend, next to the bound set by the weight
# bytes read per token over the device's buffer-copy bandwidth, measured in the same run.
#
#   scripts/bench-gpu-6b.sh             builds the bench here (cargo bench --features gpu) and runs it
#   scripts/bench-gpu-6b.sh --build     only builds it, printing the binary's path (to carry it to a
#                                       GPU machine that has no Rust toolchain)
#   scripts/bench-gpu-6b.sh --run BIN   runs a binary built that way
#
# Needs about 30 GB of RAM (the random model is drawn at f32, then quantized) and 4 GB of GPU
# memory; on NVIDIA, wgpu uses the driver's Vulkan ICD. WGPU_BACKEND / WGPU_ADAPTER_NAME pick
# another adapter.
set -euo pipefail
cd "$(dirname "$0")/.."
build() {
    cargo bench -p glmtune-engine --features gpu --bench inference --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "inference" and m.get("executable"):
        print(m["executable"])'
}
case "${1:-}" in
    --build) build; exit ;;
    --run) bin="$2" ;;
    *) bin="$(build)" ;;
esac
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
GLMTUNE_BENCH_SHAPE="${GLMTUNE_BENCH_SHAPE:-6b}" GLMTUNE_BENCH_BACKEND=wgpu \
    GLMTUNE_BENCH_WEIGHTS="${GLMTUNE_BENCH_WEIGHTS:-q4_0}" "$bin" --bench

#!/usr/bin/env bash
# The main job: builds the dashboard (web/build.sh: wasm target and a pinned wasm-bindgen CLI are
# installed when missing) and starts `glmtune serve` with its embedded defaults (SQLite under
# ./glmtune-data, http://127.0.0.1:8080) and the bundled tiny demo model. Extra arguments go to
# `glmtune serve`, e.g. `./run.sh --model chatglm-6b=/path/to/chatglm-6b`.
set -euo pipefail
cd "$(dirname "$0")"
web/build.sh
exec cargo run --release --bin glmtune -- serve --web-dir www \
    --model tiny=tests/fixtures/chatglm6b-tiny/model "$@"

#!/usr/bin/env bash
# The main job: builds the dashboard (web/build.sh: wasm target and a pinned wasm-bindgen CLI are
# installed when missing) and starts `glmtune serve` with its embedded defaults (SQLite under
# ./glmtune-data, http://127.0.0.1:8080), the bundled tiny demo model, and its q4_0 copy (made once)
# for the dashboard's "In this browser" chat. Extra arguments go to `glmtune serve`, e.g.
# `./run.sh --model chatglm-6b=/path/to/chatglm-6b`.
set -euo pipefail
cd "$(dirname "$0")"
web/build.sh
cargo build --release --bin glmtune
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
glmtune="$target_dir/release/glmtune"
demo=tests/fixtures/chatglm6b-tiny/model
quantized=glmtune-data/models/tiny-q4
[[ -f "$quantized/model.gguf" ]] || "$glmtune" quantize --model "$demo" --bits 4 --out "$quantized" >/dev/null
exec "$glmtune" serve --web-dir www --model "tiny=$demo" --model "tiny-q4=$quantized" "$@"

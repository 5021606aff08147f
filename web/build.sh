#!/usr/bin/env bash
# Builds the dashboard into www/pkg: the leptos app for wasm32, bound with wasm-bindgen. Installs
# the wasm target and the wasm-bindgen CLI (pinned to the crate's version) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
version="0.2.130"
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
if [[ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $version" ]]; then
    echo "web/build.sh: installing wasm-bindgen-cli $version (about 3 minutes, once)" >&2
    cargo install wasm-bindgen-cli --version "$version" >&2
fi
profile="${WEB_PROFILE:-release}"
cargo build -p glmtune-web --lib --target wasm32-unknown-unknown --profile "$profile" >&2
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
out_dir="$profile"; [[ "$profile" == "dev" ]] && out_dir="debug"
wasm-bindgen --target web --no-typescript --out-dir www/pkg \
    "$target_dir/wasm32-unknown-unknown/$out_dir/glmtune_web.wasm"
# Served as is to browsers that accept gzip (a quarter of the size): glmtune serve picks the .gz.
gzip -9 -k -f www/pkg/glmtune_web_bg.wasm www/pkg/glmtune_web.js
echo "web/build.sh: dashboard built in www/pkg" >&2

#!/usr/bin/env bash
# Runs every test of the workspace (unit, fixture parity, CLI and training tests), checks that the
# engine still builds for wasm32, and ends with one summary line: "tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --lib --bins --tests "$@" 2>&1 | tee "$log" || status=$?
# The engine also runs in browsers: it must keep building for wasm32.
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
cargo build -p glmtune-engine --lib --target wasm32-unknown-unknown || status=$?
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed"
exit "$status"

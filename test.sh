#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, fixture parity tests and CLI tests.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace "$@"
# The engine also runs in browsers: it must keep building for wasm32.
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
cargo build -p glmtune-engine --lib --target wasm32-unknown-unknown

#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, fixture parity tests and CLI tests.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace "$@"

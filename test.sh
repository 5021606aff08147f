#!/usr/bin/env bash
# Runs every test of the workspace (unit, fixture parity, CLI, training and server tests), checks
# that the engine still builds for wasm32, and ends with one summary line: "tests: N passed, M failed".
#
# The server tests run on SQLite and on PostgreSQL, with the official `openai` Python package and
# in headless Chromium: tests/setup-deps.sh installs what is missing (postgresql, chromium, openai,
# playwright-core) and builds the dashboard; this script starts a throwaway PostgreSQL cluster
# (unless GLMTUNE_TEST_POSTGRES already names one).
set -euo pipefail
cd "$(dirname "$0")"
log="$(mktemp)"
cluster=""
# Every test's scratch files (std::env::temp_dir() follows TMPDIR) go in one folder, removed at the
# end; GLMTUNE_KEEP_TMP=1 keeps it to look at a failure.
scratch="$(mktemp -d /tmp/glmtune-tests.XXXXXX)"
cleanup() {
    rm -f "$log"
    if [[ -n "$cluster" ]]; then tests/postgres-cluster.sh stop "$cluster"; fi
    if [[ -z "${GLMTUNE_KEEP_TMP:-}" ]]; then rm -rf "$scratch"; else echo "scratch files kept in $scratch" >&2; fi
}
trap cleanup EXIT
# Always run: it builds the dashboard, so the browser tests never see a bundle older than the
# sources, even with a Python given in GLMTUNE_TEST_PYTHON (which it then hands back).
GLMTUNE_TEST_PYTHON="$(tests/setup-deps.sh)"
export GLMTUNE_TEST_PYTHON
if [[ -z "${GLMTUNE_TEST_POSTGRES:-}" ]]; then
    cluster="$(mktemp -d /tmp/glmtune-pg.XXXXXX)"
    chmod 755 "$cluster"
    GLMTUNE_TEST_POSTGRES="$(tests/postgres-cluster.sh start "$cluster")"
    export GLMTUNE_TEST_POSTGRES
fi
# Mesa warns on stderr without a runtime folder.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$scratch/runtime}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
status=0
TMPDIR="$scratch" cargo test --workspace --exclude glmtune-web --no-fail-fast --lib --bins --tests "$@" 2>&1 | tee "$log" || status=$?
# The engine also runs in browsers: it must keep building for wasm32.
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
cargo check -p glmtune-engine --lib --target wasm32-unknown-unknown || status=$?
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed"
exit "$status"

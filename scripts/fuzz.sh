#!/usr/bin/env bash
# Runs the libFuzzer targets in fuzz/ (cargo fuzz, nightly toolchain) for a set time each.
#
#   scripts/fuzz.sh [--seconds N] [TARGET ...]      # default: 60 s each, every target
#   scripts/fuzz.sh --smoke                         # CI: 10 s each from the committed seed corpus
#
# Each target starts from fuzz/corpus/TARGET (committed seeds, read-only here) and grows its own
# corpus in fuzz/target/corpus/TARGET. A crash stops the run and leaves its input in
# fuzz/artifacts/TARGET/; fix it, then add the input to fuzz/corpus/TARGET so every smoke pass
# replays it. Installs cargo-fuzz when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
targets=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --smoke) seconds=10; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked >&2
fi
if [[ ${#targets[@]} -eq 0 ]]; then
    # Listed into a variable first: a failure inside `< <(…)` would go unnoticed by set -e and
    # leave an empty list.
    listed="$(cd fuzz && cargo +nightly fuzz list)"
    mapfile -t targets < <(printf '%s\n' "$listed" | sed '/^[[:space:]]*$/d')
fi
# Nothing fuzzed is no pass: a run with no target must not look like a clean one.
if [[ ${#targets[@]} -eq 0 ]]; then
    echo "scripts/fuzz.sh: no fuzz targets to run (cargo fuzz list named none)" >&2
    exit 1
fi
cargo +nightly fuzz build -O --fuzz-dir fuzz >&2
summary=()
for target in "${targets[@]}"; do
    work="fuzz/target/corpus/$target"
    mkdir -p "$work"
    log="$(mktemp)"
    # Scratch files of this run alone (server_requests keeps its server's data folder there), so
    # that two runs side by side never remove each other's.
    scratch="$(mktemp -d)"
    # -rss_limit_mb: an input that makes the process reserve gigabytes is a bug too.
    if TMPDIR="$scratch" cargo +nightly fuzz run -O --fuzz-dir fuzz "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=262144 -timeout=20 >"$log" 2>&1; then
        runs=$(grep -aEo 'Done [0-9]+ runs' "$log" | tail -1 | awk '{print $2}')
        summary+=("$target: ok, ${runs:-?} runs in ${seconds}s")
    else
        tail -40 "$log" >&2
        summary+=("$target: FAILED (see fuzz/artifacts/$target)")
        status=1
    fi
    rm -rf "$log" "$scratch"
done
printf '%s\n' "${summary[@]}"
exit "${status:-0}"

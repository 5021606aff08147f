#!/usr/bin/env bash
# Installs what the tests need beside Rust, once per machine: Mesa's lavapipe (the wgpu tests),
# Debian's PostgreSQL server
# (the tests start their own throwaway cluster), a Python with the official `openai` package,
# Debian's Chromium with playwright-core and a CJK font (the dashboard test), and builds the dashboard.
# Prints the Python to use on stdout: GLMTUNE_TEST_PYTHON when set (the venv is then left alone),
# else the venv's.
set -euo pipefail
cd "$(dirname "$0")/.."
apt_install() {
    echo "setup: installing Debian's $*" >&2
    local sudo=""
    [[ $(id -u) == 0 ]] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 \
        || { $sudo apt-get update -q >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; }
}
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
[[ -x /usr/bin/chromium ]] || apt_install chromium
# The wgpu backend's tests run on Mesa's lavapipe (Vulkan on the CPU) where there is no GPU.
[[ -f /usr/share/vulkan/icd.d/lvp_icd.x86_64.json || -n "$(ls /usr/share/vulkan/icd.d/lvp_icd.*.json 2>/dev/null)" ]] || apt_install mesa-vulkan-drivers
# Chinese glyphs in the dashboard screenshots (the fixtures' records are Chinese).
[[ -d /usr/share/fonts/truetype/wqy ]] || apt_install fonts-wqy-zenhei
if [[ ! -d tests/e2e/node_modules/playwright-core ]]; then
    echo "setup: npm install in tests/e2e (playwright-core; no browser download)" >&2
    (cd tests/e2e && npm install --no-audit --no-fund >&2)
fi
# Always: a bundle built from older sources would test the old dashboard.
web/build.sh
# CI's check of the CUDA build needs nvcc: the pinned wheels, installed once (scripts/cuda-env.sh).
# Asked for by .ci/run only, as ./test.sh never builds with CUDA.
if [[ -n "${GLMTUNE_SETUP_CUDA:-}" ]]; then
    (source scripts/cuda-env.sh) >&2
fi
# A Python chosen by the caller (GLMTUNE_TEST_PYTHON) is used as it is.
if [[ -n "${GLMTUNE_TEST_PYTHON:-}" ]]; then
    echo "$GLMTUNE_TEST_PYTHON"
    exit 0
fi
venv="${GLMTUNE_CACHE:-$HOME/.cache/glmtune}/venv"
openai_version="1.109.1"
if ! "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$openai_version')" 2>/dev/null; then
    echo "setup: installing openai==$openai_version into $venv" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q "openai==$openai_version" >&2
fi
echo "$venv/bin/python"

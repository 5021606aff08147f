#!/usr/bin/env bash
# Installs what the server tests need beside Rust, once per machine: Debian's PostgreSQL server
# (the tests start their own throwaway cluster) and a Python with the official `openai` package.
# Prints the Python to use on stdout.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "setup: installing Debian's postgresql" >&2
    if [[ $(id -u) == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
            || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
    else
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
    fi
fi
venv="${GLMTUNE_CACHE:-$HOME/.cache/glmtune}/venv"
openai_version="1.109.1"
if ! "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$openai_version')" 2>/dev/null; then
    echo "setup: installing openai==$openai_version into $venv" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q "openai==$openai_version" >&2
fi
echo "$venv/bin/python"

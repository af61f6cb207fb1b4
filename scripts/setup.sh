#!/usr/bin/env bash
# Create .venv and install unisub-hub with the given extras (default: test).
# torch==2.13.0 first: it is the CPU build this machine has; an unpinned torch pulls CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e ".[${extras}]"

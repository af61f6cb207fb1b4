#!/usr/bin/env bash
# Set up (scripts/setup.sh with the demo extra) and run the whole demo on built-in example models.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
. .venv/bin/activate
unisub-hub demo --report unisub-demo "$@"

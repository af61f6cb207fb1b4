#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
python -m ruff check unisub_hub tests bench   # rule set in pyproject.toml
python -m ruff format --check unisub_hub tests bench
python -m mypy                                # the package; settings in pyproject.toml
python -m pytest "$@"

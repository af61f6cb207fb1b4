#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# The web view's browser tests drive Debian's chromium through chromedriver (no browser download).
# Where they can be had (present, or installable as root: CI), the browser tests must run, and
# a browser missing after all fails them instead of skipping them.
export UNISUB_REQUIRE_BROWSER=1
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "note: chromium and chromedriver are missing; the browser tests will be skipped" >&2
        unset UNISUB_REQUIRE_BROWSER
    fi
fi
. .venv/bin/activate
python -m ruff check unisub_hub tests bench   # rule set in pyproject.toml
python -m ruff format --check unisub_hub tests bench
python -m mypy                                # the package; settings in pyproject.toml
python -m pytest "$@"

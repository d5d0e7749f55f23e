#!/usr/bin/env bash
# Set up, then run the whole test suite (tests that need ../shared/data skip without it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# Debian's chromium for the real-browser UI test; without apt/root the browser tests skip
bash scripts/install_browser.sh >/dev/null 2>&1 || echo "notice: chromium could not be installed; tests/test_serve_browser.py will skip"
. .venv/bin/activate
python -m pytest -p no:cacheprovider "$@"

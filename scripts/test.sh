#!/usr/bin/env bash
# Set up, then run the whole test suite (tests that need ../shared/data skip without it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# Debian's chromium for the real-browser UI test; without apt/root the browser tests skip
[ -x /usr/bin/chromium ] || echo "setup: installing Debian's chromium for the browser UI test (about 30 s on a first run)" >&2
bash scripts/install_browser.sh >/dev/null 2>&1 || echo "notice: chromium could not be installed; tests/test_serve_browser.py will skip"
. .venv/bin/activate
echo "setup: done; running the test suite (about 3 minutes on 2 cores)" >&2
python -m pytest -p no:cacheprovider "$@"

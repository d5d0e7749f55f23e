#!/usr/bin/env bash
# Set up, then run the whole test suite (tests that need ../shared/data skip without it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
python -m pytest -p no:cacheprovider "$@"

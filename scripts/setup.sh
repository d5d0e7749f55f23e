#!/usr/bin/env bash
# Create (or reuse) .venv and install anyseg into it. Needs only Python 3.11 and pip.
# torch is installed first, pinned, so that the later install sees it satisfied and never
# pulls a CUDA build (on machines with a local CPU wheel of 2.13.0 this takes that file).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-}
step() { echo "setup: $*" >&2; }
if [ ! -x .venv/bin/python ]; then
  step "creating the virtual environment .venv (a few seconds)"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
step "upgrading pip (a few seconds)"
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! python -c "import torch" 2>/dev/null; then
  step "installing PyTorch ${ANYSEG_TORCH_VERSION:-2.13.0}, CPU build (about 1 minute on a first run)"
  python -m pip install -q "torch==${ANYSEG_TORCH_VERSION:-2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
fi
step "installing anyseg${EXTRAS:+[$EXTRAS]} and its dependencies: transformers, OpenCV, scikit-image, FastAPI ... (about 1 minute on a first run, seconds after)"
python -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import anyseg, torch; print(f'anyseg {anyseg.__version__} with torch {torch.__version__} in .venv')"

#!/usr/bin/env bash
# Set up, then run the main job on the bundled example image (a coffee cup on its saucer, CC0):
# promptable segmentation from a box. With no SAM-family weights present it
# uses the classical engine (and says so); put weights in place (`anyseg models pull NAME`)
# and the same command uses the best one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
OUT=${1:-out/demo}
echo "demo: the models anyseg knows, and which are present on this machine" >&2
anyseg models list
echo "demo: segmenting the bundled example from a box" >&2
anyseg segment src/anyseg/data/coffee.jpg --box 75,12,482,392 --multimask --out "$OUT"
echo "masks, overlays and JSON written to $OUT/"

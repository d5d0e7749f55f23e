#!/usr/bin/env python
"""The classical engine on phantom volumes: the three prompt protocols of ``anyseg eval volume``.

No real labelled volume is available, so this writes ``--cases`` phantoms
(``tests/phantoms.py``: an ellipsoid, label 1, and a drifting tube, label 2, in HU with
Gaussian noise, anisotropic spacing and an oblique direction; a different seed and noise per
case) as ``images/CASE.nii.gz`` + ``labels/CASE.nii.gz`` and runs

    anyseg eval volume --model classical --data DIR --prompt-protocol P --window ct-abdomen --json

for P = first-slice, middle-slice and box3d, printing the summary of each (Dice, IoU, NSD at
2 mm, HD95, ASSD per object and overall).

    python bench/volume_phantoms.py [--cases 4] [--shape 32,64,64] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
PROTOCOLS = ("first-slice", "middle-slice", "box3d")


def write_cases(root: Path, cases: int, shape: tuple[int, int, int]) -> None:
    import nibabel as nib
    import numpy as np
    from phantoms import ellipsoid_phantom

    from anyseg.volume.io import save_labels

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for c in range(cases):
        vol, labels = ellipsoid_phantom(shape=shape, noise=15.0 + 5.0 * c, seed=c)
        # the image in HU (int16; save_labels writes label volumes only), the same geometry (RAS affine)
        nib.save(nib.Nifti1Image(np.asarray(vol.array).transpose(2, 1, 0), vol.affine_ras()),
                 str(root / "images" / f"case{c}.nii.gz"))
        save_labels(labels, vol, root / "labels" / f"case{c}.nii.gz")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--shape", default="32,64,64", help="K,J,I of each phantom")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    from anyseg.cli import main as cli

    shape = tuple(int(v) for v in args.shape.split(","))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "phantoms"
        write_cases(root, args.cases, shape)
        for p in PROTOCOLS:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                code = cli(["eval", "volume", "--model", "classical", "--data", str(root), "--prompt-protocol", p,
                            "--window", "ct-abdomen", "--out", str(Path(tmp) / p), "--json"])
            if code != 0:
                return code
            out[p] = json.loads(buf.getvalue().strip().splitlines()[-1])["summary"]
            print(p, json.dumps({k: v for k, v in out[p].items() if not isinstance(v, (dict, list))}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""A 512 x 512 x 600 CT-sized volume, prompted on one slice and propagated: peak memory and seconds per slice.

Writes a synthetic CT-like int16 NIfTI of ``--slices`` slices of 512 x 512 (uncompressed, so
nibabel reads it lazily, slice by slice: about 300 MB on disk for 600 slices) holding a tube
(an organ-like object through every slice) on a noisy body-like background, then runs
``anyseg volume VOLUME --prompt MID:box=... --model classical --no-overlay`` in a fresh process
and reports that process's peak resident memory (``getrusage(RUSAGE_CHILDREN)``), its seconds
per slice, and, side by side, the bytes the whole volume would take in memory as float32 (the
obvious approach: load it, window it, keep every slice).

    python bench/volume_memory.py [--slices 600] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_volume(path: Path, slices: int, side: int = 512) -> tuple[int, int, int, int]:
    """The synthetic CT, written slice block by slice block (bounded memory here too); returns the
    middle slice's tube box ``(x0, y0, x1, y1)``."""
    import nibabel as nib

    yy, xx = np.mgrid[:side, :side]
    body = ((yy - side / 2) / (0.42 * side)) ** 2 + ((xx - side / 2) / (0.47 * side)) ** 2 < 1
    affine = np.diag([-0.8, -0.8, 1.5, 1.0])
    img = nib.Nifti1Image(np.zeros((1, 1, 1), np.int16), affine)  # the header only; the data are streamed below
    img.header.set_data_dtype(np.int16)
    img.header.set_data_shape((side, side, slices))
    img.header.set_zooms((0.8, 0.8, 1.5))
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    rng = np.random.default_rng(0)
    offset = 352
    with open(path, "wb") as f:
        img.header.set_data_offset(offset)
        img.header.write_to(f)
        f.write(b"\0" * (offset - f.tell()))
        for k in range(slices):
            cx = side / 2 + 60 * np.sin(k / slices * np.pi)
            tube = (yy - side / 2 + 40) ** 2 + (xx - cx) ** 2 < 35 ** 2
            s = np.where(body, 40, -1000).astype(np.float32) + rng.normal(0, 12, (side, side))
            s[tube] = 180 + rng.normal(0, 12, tube.sum())
            # NIfTI stores i fastest: slice k is the (j, i) array written row by row
            f.write(np.clip(s, -1024, 3071).astype("<i2").tobytes())
    k = slices // 2
    cx = side / 2 + 60 * np.sin(k / slices * np.pi)
    return int(cx - 38), int(side / 2 - 40 - 38), int(cx + 38), int(side / 2 - 40 + 38)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=600)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        vol = Path(tmp) / "ct.nii"
        box = write_volume(vol, args.slices)
        mid = args.slices // 2
        cmd = [str(Path(sys.executable).parent / "anyseg"), "volume", str(vol), "--prompt", f"{mid}:box={','.join(map(str, box))}",
               "--model", "classical", "--window", "ct-abdomen", "--no-overlay", "--out", str(Path(tmp) / "out"),
               "--json"]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            print(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode, file=sys.stderr)
            return 1
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        record = json.loads(proc.stdout.strip().splitlines()[-1])
    out = {"shape": [args.slices, 512, 512], "seconds": round(seconds, 1),
           "seconds_per_slice": round(seconds / args.slices, 3), "peak_rss_mb": round(peak_mb, 1),
           "whole_volume_float32_mb": round(args.slices * 512 * 512 * 4 / 2**20, 1),
           "objects": record.get("objects", record.get("results"))}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Encode one DAVIS 2016 sequence with anyseg's H.264 writer and with OpenCV's mp4v: time, size, PSNR.

    python bench/overlay_encode.py blackswan [--data ../shared/data/davis2016]

Not a test: timings depend on the machine. Results in docs/BENCHMARKS.md ("Overlay video").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sequence")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/davis2016"))
    args = ap.parse_args(argv)
    import av

    from anyseg.io.images import load_image
    from anyseg.io.video import H264Writer, Mp4vWriter

    files = sorted((Path(args.data) / "JPEGImages/480p" / args.sequence).glob("*.jpg"))
    if not files:
        print(f"no frames for {args.sequence} under {args.data}", file=sys.stderr)
        return 2
    frames = [load_image(f) for f in files]
    h, w = frames[0].shape[:2]
    for cls in (H264Writer, Mp4vWriter):
        path = os.path.join(tempfile.mkdtemp(), f"{cls.__name__}.mp4")
        t = time.perf_counter()
        with cls(path, (h, w), fps=24) as writer:
            for f in frames:
                writer.write(f)
            info = writer.close()
        dt = time.perf_counter() - t
        with av.open(path) as c:
            got = [f.to_ndarray(format="rgb24")[:h, :w] for f in c.decode(video=0)]
        mse = np.mean([np.mean((a.astype(float) - b.astype(float)) ** 2) for a, b in zip(frames, got)])
        print(f"{cls.__name__}: {args.sequence} {len(frames)} frames {w}x{h}: {dt:.2f} s ({len(frames) / dt:.0f} fps), "
              f"{os.path.getsize(path) / 1e6:.2f} MB, PSNR {10 * np.log10(255**2 / mse):.1f} dB, codec {info.codec}, "
              f"decoded {len(got)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

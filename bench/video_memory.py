#!/usr/bin/env python
"""Long-video memory: RSS while a SAM 2 tracker propagates through a synthetic 480p video.

A synthetic 854 x 480 video (a textured disc moving over a textured background, frames made
on demand, never stored) is tracked forward from a box on frame 0 with a random-weight SAM 2
video model loaded through anyseg's normal path. Current RSS (and the peak so far) is sampled
at the requested frames; the target is under 10 % growth from frame 500 to frame 5000.

    python bench/video_memory.py --config tiny --frames 5000 --at 500,2500,5000 --json video_rss.json
    python bench/video_memory.py --config sam2.1-hiera-tiny --frames 300 --at 50,150,300

``--config tiny`` is the test suite's tiny SAM 2 video configuration (same code paths and
per-frame bookkeeping, small tensors: 5000 frames take minutes on 2 CPU cores);
``--config sam2.1-hiera-tiny`` is the real-size architecture (``Sam2VideoConfig()`` defaults,
random weights), about 1-3 s per frame on 2 CPU cores, so use fewer frames there.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def synthetic_video(n: int, h: int = 480, w: int = 854, seed: int = 0):
    """Frames on demand: a textured disc (radius 60) moving on a Lissajous path over texture."""
    from anyseg.video.frames import SyntheticFrames

    rng = np.random.default_rng(seed)
    bg = (rng.random((h, w, 3)) * 120 + 40).astype(np.uint8)
    disc_tex = (rng.random((h, w, 3)) * 80 + 150).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]

    def centre(i: int) -> tuple[float, float]:
        return w / 2 + (w / 2 - 80) * np.sin(i / 40.0), h / 2 + (h / 2 - 80) * np.sin(i / 57.0)

    def make(i: int) -> np.ndarray:
        cx, cy = centre(i)
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= 60 ** 2
        frame = bg.copy()
        frame[inside] = disc_tex[inside]
        return frame

    return SyntheticFrames(make, n, (h, w), fps=24.0), centre


def build(config: str, folder: Path) -> Path:
    import torch
    import transformers

    if config == "tiny":
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_video import build_sam2_video

        return build_sam2_video(folder)
    torch.manual_seed(0)
    model = transformers.Sam2VideoModel(transformers.Sam2VideoConfig())
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny", choices=["tiny", "sam2.1-hiera-tiny"])
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--at", default="500,2500,5000", help="frames (1-based counts) at which to record RSS")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from anyseg.eval.perf import current_rss_mb, peak_rss_mb
    from anyseg.video.sam2 import load_video_tracker
    from anyseg.video.session import VideoSession

    if args.threads:
        torch.set_num_threads(args.threads)
    marks = sorted({int(v) for v in args.at.split(",") if v.strip()})
    frames, centre = synthetic_video(args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(args.config, Path(tmp) / "sam2")
        tracker = load_video_tracker("sam2.1-hiera-tiny", weights=str(folder), device="cpu")
    cx, cy = centre(0)
    session = VideoSession(tracker, frames)
    session.add_prompt(0, 1, box=[cx - 60, cy - 60, cx + 60, cy + 60])
    rows, t0 = [], time.perf_counter()
    start_rss = current_rss_mb()
    for count, (index, masks) in enumerate(session.propagate(), start=1):
        if count in marks:
            rows.append({"frames": count, "rss_mb": round(current_rss_mb(), 1), "peak_rss_mb": round(peak_rss_mb(), 1),
                         "seconds": round(time.perf_counter() - t0, 1), "mask_area": int(masks.masks.sum())})
            print(json.dumps(rows[-1]), flush=True)
        if count >= args.frames:
            break
    session.close()
    growth = None
    if len(rows) >= 2:
        growth = round(100.0 * (rows[-1]["rss_mb"] - rows[0]["rss_mb"]) / rows[0]["rss_mb"], 2)
    result = {"config": args.config, "frames": args.frames, "size": [480, 854], "torch_threads": torch.get_num_threads(),
              "rss_after_load_mb": round(start_rss, 1), "rows": rows, "growth_first_to_last_pct": growth}
    print(f"RSS growth from {rows[0]['frames'] if rows else '-'} to {rows[-1]['frames'] if rows else '-'} frames: "
          f"{growth} %")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

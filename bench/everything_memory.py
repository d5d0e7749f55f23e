"""Peak memory of segment-everything on a large image (default 4000 x 3000, crop layers 1).

Builds the real-size architecture with random weights (memory and speed do not depend on
the weight values), runs :func:`anyseg.tasks.everything.generate` and reports the peak RSS of
the process (sampled every 20 ms) and of the run itself, the number of masks and the time.
With random weights the default quality thresholds keep almost nothing, so by default the
thresholds are 0 (``--keep-all``): the worst case, where every candidate survives the
filters and must be upscaled, tested and encoded.

    python bench/everything_memory.py --arch sam2.1-hiera-tiny --size 3000x4000 --crop-layers 1 --points-per-side 16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sam2.1-hiera-tiny", choices=["sam2.1-hiera-tiny", "sam-vit-base"])
    ap.add_argument("--size", default="3000x4000", help="HxW")
    ap.add_argument("--crop-layers", type=int, default=1)
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--default-thresholds", action="store_true", help="use the family's thresholds instead of 0")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch
    import transformers

    from anyseg.eval.perf import RSSMonitor, current_rss_mb
    from anyseg.models import load_model
    from anyseg.tasks.everything import EverythingParams, generate

    h, w = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    # a smooth random image (large blobs), not white noise
    small = rng.integers(0, 256, (h // 100 + 1, w // 100 + 1, 3), dtype=np.uint8)
    import cv2

    image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        cfg = transformers.Sam2Config() if args.arch.startswith("sam2") else transformers.SamConfig()
        cls = transformers.Sam2Model if args.arch.startswith("sam2") else transformers.SamModel
        cls(cfg).save_pretrained(tmp)
        model = load_model(args.arch, weights=tmp, device="cpu")
        overrides = {} if args.default_thresholds else {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
        params = EverythingParams.for_family(model.family, points_per_side=args.points_per_side,
                                             crop_n_layers=args.crop_layers, **overrides)
        before = current_rss_mb()
        t = time.perf_counter()
        with RSSMonitor(interval_s=0.02) as mon:
            masks = generate(model, image, params, progress=True)
        seconds = time.perf_counter() - t
    result = {
        "arch": args.arch, "image": [h, w], "crop_layers": args.crop_layers, "points_per_side": args.points_per_side,
        "thresholds": "family defaults" if args.default_thresholds else "0 (keep all)",
        "masks": len(masks), "seconds": round(seconds, 1),
        "rss_before_mb": round(before, 1), "peak_rss_mb": round(mon.peak_mb, 1),
        "run_delta_mb": round(mon.peak_mb - before, 1),
        "result_masks_mb": round(masks.masks.nbytes / 2**20, 1),
        "naive_batch_float_mb": round(3 * params.points_per_batch * h * w * 4 / 2**20, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

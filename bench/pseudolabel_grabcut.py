"""Pseudo-label quality on GrabCut from 1, 2 and 3 clicks per object (issue 20), classical engine.

    .venv/bin/python bench/pseudolabel_grabcut.py [--data ../shared/data/grabcut] [--out /tmp/pl_grabcut]
        [--points 1,2,3] [--limit N] [--model classical]

Clicks come from the full masks (:func:`anyseg.finetune.pseudolabel.sample_sparse_from_masks`,
seed 0: the distance-transform maximum, then random interior points); the pseudo-masks (original
+ hflip, vflip, scale0.75, scale1.25; all views agree and entropy <= 0.5 bit) are compared with the
full masks (GrabCut's 128 band excluded), next to the single-view mask of the same clicks.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from anyseg.finetune.pseudolabel import pseudolabel, sample_sparse_from_masks
from anyseg.models import load_model

KEYS = ("images", "miou_kept", "miou_all", "precision", "recall", "accuracy_kept", "kept",
        "msingle_iou", "single_precision", "single_recall", "single_accuracy")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "grabcut"))
    ap.add_argument("--out", default="/tmp/pl_grabcut")
    ap.add_argument("--points", default="1,2,3")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--model", default="classical")
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    model = load_model(args.model)
    rows = {}
    for k in [int(v) for v in args.points.split(",")]:
        sparse = out / f"points_{k}.json"
        out.mkdir(parents=True, exist_ok=True)
        sample_sparse_from_masks(data / "masks", sparse, points=k, seed=0)
        t = time.perf_counter()
        summary = pseudolabel(model, data / "images", sparse, out / f"pl_{k}", gt_dir=data / "masks",
                              progress=False, limit=args.limit)
        q = summary["quality"]
        q["seconds_per_image"] = (time.perf_counter() - t) / max(1, summary["images"])
        rows[k] = q
        print(f"{k} point(s): " + ", ".join(f"{key} {q[key]:.3f}" for key in KEYS[1:]) + f", {q['images']} images, "
              f"{q['seconds_per_image']:.2f} s/image", flush=True)
    (out / "quality.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Benchmark the ``classical`` engine on the GrabCut data set with box prompts.

Protocol: for each of the images (``images/NAME.{jpg,bmp,JPG}`` paired by stem with
``masks/NAME.bmp``; mask 0 = background, 255 = object, 128 = unlabeled band), the prompt is
the tight box of the 255 pixels (x1/y1 exclusive); IoU is computed ignoring the 128 pixels.
Prints a per-image table, then the mean/median/min IoU and the timings (embed + predict).

    python bench/classical_grabcut.py [--data ../shared/data/grabcut] [--max-side N]
                                      [--iterations K] [--multimask] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from anyseg.io.images import load_image
from anyseg.models.classical import DEFAULT_ITERATIONS, DEFAULT_MAX_SIDE, ClassicalPredictor
from anyseg.types import Prompt

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "grabcut"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".bmp", ".png"}


def pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    """``(stem, image, mask)`` for every image that has a mask, sorted by stem."""
    out = []
    for img in sorted((folder / "images").iterdir()):
        mask = folder / "masks" / f"{img.stem}.bmp"
        if img.suffix.lower() in IMAGE_SUFFIXES and mask.is_file():
            out.append((img.stem, img, mask))
    return out


def tight_box(gt: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(gt == 255)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def iou_ignoring(pred: np.ndarray, gt: np.ndarray) -> float:
    valid, obj = gt != 128, gt == 255
    union = ((pred | obj) & valid).sum()
    return float((pred & obj & valid).sum() / union) if union else 1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"data folder (default {DEFAULT_DATA})")
    ap.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, help=f"working resolution, 0 = full (default {DEFAULT_MAX_SIDE})")
    ap.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help=f"GrabCut iterations (default {DEFAULT_ITERATIONS})")
    ap.add_argument("--multimask", action="store_true", help="also report each candidate's IoU and the oracle")
    ap.add_argument("--json", type=Path, help="write the per-image results and the summary here")
    args = ap.parse_args(argv)

    if not (args.data / "images").is_dir() or not (args.data / "masks").is_dir():
        print(f"classical_grabcut: error: data folder {args.data} not found (expected images/ and masks/ in it)", file=sys.stderr)
        return 2
    items = pairs(args.data)
    if not items:
        print(f"classical_grabcut: error: no image/mask pairs in {args.data}", file=sys.stderr)
        return 2

    predictor = ClassicalPredictor(max_side=args.max_side or None, iterations=args.iterations)
    rows = []
    for stem, img_path, mask_path in tqdm(items, desc="grabcut", unit="img", file=sys.stderr):
        image = load_image(img_path)
        gt = np.asarray(Image.open(mask_path).convert("L"))
        t0 = time.perf_counter()
        emb = predictor.embed(image)
        res = predictor.predict(emb, Prompt(box=tight_box(gt)), multimask=args.multimask)
        seconds = time.perf_counter() - t0
        row = {"image": stem, "size": f"{gt.shape[1]}x{gt.shape[0]}", "iou": iou_ignoring(res.masks[0], gt),
               "score": float(res.scores[0]), "variant": str(res.data["variant"][0]), "seconds": seconds}
        if args.multimask:
            row["candidates"] = {str(v): {"iou": iou_ignoring(m, gt), "score": float(s)}
                                 for v, m, s in zip(res.data["variant"], res.masks, res.scores)}
        rows.append(row)

    print(f"{'image':12s} {'size':>9s} {'IoU':>6s} {'score':>6s} {'variant':>10s} {'time s':>7s}")
    for r in rows:
        print(f"{r['image']:12s} {r['size']:>9s} {r['iou']:6.3f} {r['score']:6.3f} {r['variant']:>10s} {r['seconds']:7.3f}")
    ious = np.array([r["iou"] for r in rows])
    scores = np.array([r["score"] for r in rows])
    total = float(sum(r["seconds"] for r in rows))
    summary = {
        "images": len(rows), "max_side": args.max_side, "iterations": args.iterations,
        "mean_iou": float(ious.mean()), "median_iou": float(np.median(ious)), "min_iou": float(ious.min()),
        "score_iou_correlation": float(np.corrcoef(scores, ious)[0, 1]) if len(rows) > 1 and scores.std() > 0 else None,
        "total_seconds": total, "seconds_per_image": total / len(rows),
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs, Python {platform.python_version()}",
    }
    if args.multimask:
        # the engine returns only distinct candidates (1 to 3 per image): each variant's mean is
        # over the images that returned it, with their count
        for v in sorted({v for r in rows for v in r["candidates"]}):
            have = [r["candidates"][v]["iou"] for r in rows if v in r["candidates"]]
            summary[f"mean_iou_{v}"] = float(np.mean(have))
            summary[f"images_{v}"] = len(have)
        summary["mean_iou_oracle"] = float(np.mean([max(c["iou"] for c in r["candidates"].values()) for r in rows]))
    print()
    print(f"images {len(rows)}  max_side {args.max_side}  iterations {args.iterations}")
    print(f"IoU  mean {summary['mean_iou']:.4f}  median {summary['median_iou']:.4f}  min {summary['min_iou']:.4f}")
    if summary["score_iou_correlation"] is not None:
        print(f"score/IoU Pearson correlation {summary['score_iou_correlation']:.3f}")
    if args.multimask:
        print("  ".join(f"{k[9:]} {v:.4f}" + (f" ({summary['images_' + k[9:]]} images)" if "images_" + k[9:] in summary else "")
                        for k, v in summary.items() if k.startswith("mean_iou_")))
    print(f"time total {total:.1f} s  per image {summary['seconds_per_image']:.3f} s (embed + predict)")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "images": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

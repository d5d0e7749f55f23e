#!/usr/bin/env python
"""The classical discovery baseline on GrabCut as single-object saliency: IoU, and whether its score means something.

Runs ``anyseg.discover.classical.ClassicalNCut`` (objects mode, one object) on every image of
``../shared/data/grabcut`` (the 128 band ignored), on the seeded tuning / held-out split of
``bench/classical_clicks.py`` (``--split tune|held|all``), and prints per split the mean IoU, the
mean score, the Spearman correlation of score and IoU, and the mean absolute gap between them.
``--fit`` refits :data:`~anyseg.discover.classical.OBJECT_SCORE_WEIGHTS` by least squares of the
IoU on the score's terms (``contrast``, ``border_touch``, ``separation``, ``background``) over the
tuning half only, and prints the weights to paste (then rerun to check them on the held-out half).

    python bench/discover_classical.py [--split all] [--fit] [--limit N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
DATA = REPO.parent / "shared" / "data" / "grabcut"
TERMS = ("contrast", "border_touch", "separation", "background", "single_segment")


def run(split: str, limit: int | None) -> list[dict]:
    from classical_clicks import iou, mask_items

    from anyseg.discover.classical import ClassicalNCut

    method = ClassicalNCut()
    rows = []
    for name, image, gt, ignore in mask_items(DATA, split, limit):
        t = time.perf_counter()
        out = method.discover(image)
        seconds = time.perf_counter() - t
        pred = out.masks[0] if len(out) else np.zeros(gt.shape, bool)
        terms = {k: float(out.data[k][0]) if len(out) else 0.0 for k in TERMS}
        rows.append({"name": name, "iou": iou(pred, gt, ignore), "score": float(out.scores[0]) if len(out) else 0.0,
                     "seconds": seconds, **terms})
    return rows


def summary(rows: list[dict]) -> dict:
    from scipy.stats import spearmanr

    ious, scores = np.array([r["iou"] for r in rows]), np.array([r["score"] for r in rows])
    rho = float(spearmanr(scores, ious)[0]) if len(rows) > 2 else float("nan")
    return {"images": len(rows), "mean_iou": round(float(ious.mean()), 4), "mean_score": round(float(scores.mean()), 4),
            "spearman": round(rho, 3), "mean_abs_gap": round(float(np.abs(scores - ious).mean()), 3),
            "overconfident": [r["name"] for r in rows if r["score"] - r["iou"] > 0.35],
            "seconds_per_image": round(float(np.mean([r["seconds"] for r in rows])), 3)}


def fit(rows: list[dict]) -> list[float]:
    X = np.c_[np.ones(len(rows)), [[r[k] for k in TERMS] for r in rows]]
    w, *_ = np.linalg.lstsq(X, np.array([r["iou"] for r in rows]), rcond=None)
    return [round(float(v), 3) for v in w]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="all", choices=["all", "tune", "held"])
    ap.add_argument("--fit", action="store_true", help="refit the score weights on the tuning half")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent", file=sys.stderr)
        return 0
    out: dict = {}
    if args.fit:
        rows = run("tune", args.limit)
        out["fitted_weights"] = fit(rows)
        out["tune"] = summary(rows)
    else:
        rows = run(args.split, args.limit)
        out[args.split] = summary(rows)
        if args.split == "all":  # the same seeded split as bench/classical_clicks.py
            tune_names = set(split_names("tune"))
            out["tune"] = summary([r for r in rows if r["name"] in tune_names])
            out["held"] = summary([r for r in rows if r["name"] not in tune_names])
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": out, "rows": rows}, indent=2))
    return 0


def split_names(split: str) -> list[str]:
    from classical_clicks import grabcut_split

    stems = sorted(p.stem for p in (DATA / "images").iterdir())
    tune, held = grabcut_split(stems)
    return tune if split == "tune" else held


if __name__ == "__main__":
    raise SystemExit(main())

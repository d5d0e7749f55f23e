#!/usr/bin/env python
"""The fine-tuning machinery on real data: a tiny random SAM and SAM 2 learn Kvasir polyps and GrabCut.

No pretrained weights exist here, so this shows the machinery, not a real model's gain: a tiny
random-weight SAM and SAM 2 (``tests/tiny_models.py``'s builders, 256 px frame) are fine-tuned with
:func:`anyseg.finetune.train` on ``../shared/data/kvasir`` and ``../shared/data/grabcut``, each split
into train / val by file-name order (every ``--val-every``-th image to val). The validation IoU
(exact box prompt) is measured by the trainer before training and every ``--val-interval`` steps;
the train IoU before / after is the same measurement on the training split (``anyseg eval box``'s
protocol: :func:`anyseg.eval.runners.run_box`). Curves: ``OUT/DATASET-MODEL/curves.png``
(:func:`anyseg.finetune.report.plot_curves`).

    python bench/finetune_curves.py [--models sam,sam2] [--datasets kvasir,grabcut] [--steps 300]
                                    [--method full] [--batch 2] [--out runs/bench/finetune_curves]
                                    [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "tests"))


def split(src: Path, dst: Path, every: int) -> tuple[Path, Path]:
    """``dst/train`` and ``dst/val`` (``images/`` + ``masks/`` of symlinks): every ``every``-th image to val."""
    from anyseg.eval.datasets import read_mask_folder

    samples = read_mask_folder(src)
    for part in ("train", "val"):
        for sub in ("images", "masks"):
            (dst / part / sub).mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(samples):
        part = "val" if i % every == every - 1 else "train"
        for sub, path in (("images", s.image_path), ("masks", s.mask_path)):
            link = dst / part / sub / path.name
            if not link.exists():
                os.symlink(path.resolve(), link)
    return dst / "train", dst / "val"


def box_iou(model_dir: Path, data: Path, out: Path) -> float:
    """Mean IoU of ``anyseg eval box``'s protocol (the exact GT box) of ``model_dir`` on ``data``."""
    from anyseg.eval.datasets import read_mask_folder
    from anyseg.eval.runners import run_box
    from anyseg.eval.store import ResultStore
    from anyseg.models import load_model

    store = ResultStore(out, {"kind": "box", "model": str(model_dir), "data": str(data)}, fresh=True)
    _, summary = run_box(load_model(str(model_dir)), read_mask_folder(data), store)
    return float(summary["mean_iou"])


def one_run(model: str, dataset: str, args: argparse.Namespace, root: Path) -> dict:
    import tiny_models

    from anyseg.finetune import FinetuneConfig, train
    from anyseg.finetune.report import plot_curves

    run_dir = root / f"{dataset}-{model}"
    base = tiny_models.BUILDERS[model](run_dir / "base")
    tr, va = split(DATA / dataset, run_dir / "data", args.val_every)
    before = {"train": box_iou(base, tr, run_dir / "eval-train-before"), "val": box_iou(base, va, run_dir / "eval-val-before")}
    cfg = FinetuneConfig(method=args.method, loss=args.loss, steps=args.steps, batch=args.batch,
                         prompts=tuple(args.prompts.split(",")), rounds=args.rounds,
                         checkpoint_every=max(1, args.steps // 2), val_every=args.val_interval, seed=0, lr=args.lr)
    t = time.perf_counter()
    result = train(str(base), tr, run_dir / "train", cfg, val_dir=va, resume=False, progress=False)
    seconds = time.perf_counter() - t
    after = {"train": box_iou(result.model_dir, tr, run_dir / "eval-train-after"),
             "val": box_iou(result.model_dir, va, run_dir / "eval-val-after")}
    png = plot_curves(result.history, result.val, run_dir / "curves.png", title=f"tiny {model} on {dataset}")
    n_train, n_val = len(list((tr / "images").iterdir())), len(list((va / "images").iterdir()))
    return {"model": model, "dataset": dataset, "method": args.method, "loss": args.loss, "steps": result.steps, "seconds": round(seconds, 1),
            "train_images": n_train, "val_images": n_val, "iou_before": before, "iou_after": after,
            "val_curve": [(v.get("step"), round(v["iou"], 4)) for v in result.val], "curves": str(png)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="sam,sam2")
    ap.add_argument("--datasets", default="kvasir,grabcut")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--method", default="full")
    ap.add_argument("--prompts", default="box,point", help="prompt kinds sampled from the masks")
    ap.add_argument("--rounds", type=int, default=3, help="iterative prompt rounds per step")
    ap.add_argument("--loss", default="sam", choices=["sam", "medsam"],
                    help="sam: 20:1 focal + dice; medsam: 1:1 dice + cross-entropy (MedSAM's)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3, help="(tiny random models learn from scratch: larger than SAM's)")
    ap.add_argument("--val-every", type=int, default=4, help="every N-th image goes to the val split")
    ap.add_argument("--val-interval", type=int, default=50, help="validation IoU every N steps")
    ap.add_argument("--out", default=str(REPO / "runs" / "bench" / "finetune_curves"))
    ap.add_argument("--json", default=None, metavar="OUT")
    args = ap.parse_args(argv)
    rows = []
    for dataset in args.datasets.split(","):
        for model in args.models.split(","):
            row = one_run(model, dataset, args, Path(args.out))
            rows.append(row)
            print(f"{dataset:8s} {model:5s} {row['steps']:4d} steps {row['seconds']:7.1f} s  "
                  f"train IoU {row['iou_before']['train']:.3f} -> {row['iou_after']['train']:.3f}  "
                  f"val IoU {row['iou_before']['val']:.3f} -> {row['iou_after']['val']:.3f}  ({row['curves']})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"bench": "finetune_curves", "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

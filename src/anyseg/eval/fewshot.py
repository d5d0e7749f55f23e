"""``anyseg eval fewshot``: few-shot segmentation scored with the field's protocols.

Each episode (:mod:`anyseg.eval.fewshot_data`) fits the method on its K supports
(:meth:`anyseg.fewshot.Segmenter.fit`; consecutive episodes with the same supports - a DAVIS
sequence's frame 0, a PerSeg class's ``00.jpg`` - reuse the fitted state) and segments its
query alone; the prediction is the union of the masks returned (``--instances all``, the
default of the ``episodes`` layout, where a class's mask holds every instance; ``one`` elsewhere).
Each finished episode is one row of the resumable store: its foreground and background
intersection and union (ignored pixels left out of both, as HSNet's ``Evaluator`` does),
areas, IoU, score and time.

The summary (:func:`fewshot_summary`) is HSNet's ``AverageMeter``:

* ``mIoU``: per-class IoU = the sum of the class's intersections over the sum of its unions,
  over its episodes (not the mean of per-episode IoUs), then the mean over classes;
* ``FB-IoU``: the mean of the foreground IoU and the background IoU, each summed over every
  episode;
* ``mean_episode_IoU``: the plain mean of per-episode IoUs, for comparison (it differs: large
  objects weigh more in the accumulated IoU);
* ``mAcc``: the mean over classes of the found share of the class's pixels (intersection over
  ground-truth area, accumulated likewise), PerSAM's ``eval_miou.py`` "Acc"; per class in
  ``per_class`` (the report's "accuracy" column).

An episode whose ground truth and prediction are both empty (an object absent from a DAVIS
2017 frame) has IoU 1; a class with no pixels in any episode, on either side, has no IoU
and is left out of the mean. HSNet averages over the fold's classes with the union floored
at 1 (a class never sampled counts 0); here only the classes of the plan's episodes count.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anyseg.errors import InputError
from anyseg.eval.fewshot_data import DEFAULT_EPISODES, Episode, FewshotData, plan_episodes, read_fewshot

__all__ = ["MAX_SHOTS", "MAX_EPISODES", "MAX_SEED", "MAX_STRIDE", "FewshotPlan", "plan_from_args",
           "segmenter_from_args", "episode_counts", "fewshot_summary", "run_fewshot"]

MAX_SHOTS = 64
MAX_EPISODES = 1_000_000
MAX_SEED = 2**32 - 1
MAX_STRIDE = 10_000


@dataclass(frozen=True)
class FewshotPlan:
    """The data, the episodes to score, the instances setting and the header naming the run."""

    data: FewshotData
    episodes: list[Episode]
    instances: str
    header: dict


def _bounded(value: int | None, name: str, lo: int, hi: int) -> None:
    if value is not None and not lo <= value <= hi:
        raise InputError(f"{name} must be in {lo}..{hi}; got {value}")


def plan_from_args(args: argparse.Namespace) -> FewshotPlan:
    """Check the options, read ``--data`` and draw the episodes (errors before anything is written)."""
    _bounded(args.shots, "--shots", 1, MAX_SHOTS)
    _bounded(args.episodes, "--episodes", 1, MAX_EPISODES)
    _bounded(args.seed, "--seed", 0, MAX_SEED)
    _bounded(args.stride, "--stride", 1, MAX_STRIDE)
    if args.fold is not None and args.fold < 0:
        raise InputError(f"--fold must be a fold number, 0 or more; got {args.fold}")
    data = read_fewshot(args.data, args.layout, resolution=args.resolution)
    drawn = data.fixed is None and data.layout in ("fss", "episodes")
    if args.seed is not None and not drawn:
        raise InputError(f"--seed applies to drawn episodes (the fss and episodes layouts); the {data.layout} "
                         "layout's episodes are fixed" + (f" by {Path(args.data) / 'fewshot.json'}"
                                                          if data.fixed is not None else ""))
    episodes = plan_episodes(data, shots=args.shots, fold=args.fold, episodes=args.episodes,
                             seed=args.seed or 0, stride=args.stride)
    instances = args.instances or ("all" if data.layout == "episodes" else "one")
    header: dict[str, Any] = {"data": str(Path(args.data).resolve()), "layout": data.layout, "shots": args.shots,
                              "fold": args.fold, "instances": instances}
    if drawn:
        n = args.episodes or (DEFAULT_EPISODES if data.layout == "episodes" else None)
        header.update(episodes=n if n is not None else "every image", seed=args.seed or 0)
    if data.layout == "davis":
        header.update(stride=args.stride, resolution=args.resolution)
    return FewshotPlan(data, episodes, instances, header)


def segmenter_from_args(args: argparse.Namespace, instances: str) -> Any:
    """The :class:`anyseg.fewshot.Segmenter` of ``--method`` / ``--model`` / ``--features`` / ``--device``."""
    from anyseg.fewshot import Segmenter

    return Segmenter(method=args.method, model=args.model, features=args.features, instances=instances,
                     device=args.device)


# -- scoring -----------------------------------------------------------------------------------


def episode_counts(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> dict[str, int]:
    """Foreground and background intersection and union of one query (``ignore``d pixels left out)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    keep = ~ignore if ignore is not None else np.ones(gt.shape, bool)
    p, g = pred & keep, gt & keep
    bp, bg = ~pred & keep, ~gt & keep
    return {"fg_inter": int((p & g).sum()), "fg_union": int((p | g).sum()), "bg_inter": int((bp & bg).sum()),
            "bg_union": int((bp | bg).sum()), "gt_area": int(g.sum()), "pred_area": int(p.sum())}


def _ratio(a: float, b: float, empty: float | None = 1.0) -> float | None:
    return a / b if b else empty


def _class_ratios(records: Sequence[dict]) -> dict[str, tuple[float | None, float | None, int]]:
    """Class -> (IoU, Acc, episodes): intersections over unions (and over ground-truth areas),
    each summed over the class's episodes; ``None`` where the sum below is 0."""
    sums: dict[str, list[int]] = {}
    for r in records:
        s = sums.setdefault(r["class"], [0, 0, 0, 0])
        s[0] += r["fg_inter"]
        s[1] += r["fg_union"]
        s[2] += r["gt_area"]
        s[3] += 1
    return {name: (_ratio(i, u, None), _ratio(i, g, None), n) for name, (i, u, g, n) in sums.items()}


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(float(np.mean(kept)), 4) if kept else None


def _rounded(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def fewshot_summary(records: Sequence[dict]) -> dict[str, Any]:
    """mIoU (class-accumulated), FB-IoU, the mean per-episode IoU and times (module docstring)."""
    if not records:
        return {"num_episodes": 0}
    classes = _class_ratios(records)
    fg = _ratio(sum(r["fg_inter"] for r in records), sum(r["fg_union"] for r in records))
    bg = _ratio(sum(r["bg_inter"] for r in records), sum(r["bg_union"] for r in records))
    fits = [r["fit_seconds"] for r in records if r.get("fitted")]
    out: dict[str, Any] = {
        "mIoU": _mean([iou for iou, _, _ in classes.values()]),
        "FB-IoU": round((fg + bg) / 2, 4), "fg_IoU": round(fg, 4), "bg_IoU": round(bg, 4),
        "mean_episode_IoU": round(float(np.mean([r["iou"] for r in records])), 4),
        "mAcc": _mean([acc for _, acc, _ in classes.values()]),
        "num_episodes": len(records), "num_classes": len(classes),
        "seconds_per_query": round(float(np.mean([r["seconds"] for r in records])), 4),
        "fits": len(fits), "seconds_per_fit": round(float(np.mean(fits)), 4) if fits else 0.0,
    }
    missing = sum(iou is None for iou, _, _ in classes.values())
    if missing:
        out["classes_without_pixels"] = missing
    out["per_class"] = {name: {"IoU": _rounded(iou), "Acc": _rounded(acc), "episodes": n}
                        for name, (iou, acc, n) in classes.items()}
    return out


def _references(shots: Sequence[Any]) -> list[Any]:
    from anyseg.fewshot import Reference

    refs = []
    for s in shots:
        mask, _ = s.load_mask()
        refs.append(Reference(s.load_image(), mask, name=str(s.mask)))
    return refs


def _query(e: Episode) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    image = e.query.load_image()
    gt, ignore = e.query.load_mask()
    if gt.shape != image.shape[:2]:
        raise InputError(f"mask {e.query.mask} is {gt.shape[1]}x{gt.shape[0]} but its image {e.query.image} is "
                         f"{image.shape[1]}x{image.shape[0]}")
    return image, gt, ignore


def _progress(items: Sequence[Any]) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc="fewshot", unit="episode", dynamic_ncols=True, leave=False, disable=None)  # (none off a TTY)


def run_fewshot(segmenter: Any, episodes: Sequence[Episode], store: Any) -> tuple[list[dict], dict]:
    """Score the episodes not yet in ``store`` (fit the supports, predict the query) and summarise all."""
    fitted_for: tuple | None = None
    for e in _progress([e for e in episodes if e.name not in store]):
        fit_seconds = 0.0
        fitted = e.supports != fitted_for
        if fitted:
            refs = _references(e.supports)
            t = time.perf_counter()
            segmenter.fit(refs)
            fit_seconds = time.perf_counter() - t
            fitted_for = e.supports
        image, gt, ignore = _query(e)
        t = time.perf_counter()
        masks = segmenter.predict(image)
        seconds = time.perf_counter() - t
        pred = masks.masks.any(axis=0) if masks.masks.shape[0] else np.zeros(gt.shape, bool)
        counts = episode_counts(pred, gt, ignore)
        score = float(np.max(masks.scores)) if masks.scores is not None and len(masks.scores) else 0.0
        store.add({"name": e.name, "class": e.cls, "query": e.query.name, "supports": [s.name for s in e.supports],
                   **counts, "iou": round(_ratio(counts["fg_inter"], counts["fg_union"]), 6),
                   "score": round(score, 6), "masks": int(masks.masks.shape[0]), "seconds": round(seconds, 4),
                   "fitted": fitted, "fit_seconds": round(fit_seconds, 4)})
    by_name = {r["name"]: r for r in store.records()}
    records = [by_name[e.name] for e in episodes if e.name in by_name]
    return records, fewshot_summary(records)

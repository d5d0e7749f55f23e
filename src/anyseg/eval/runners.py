"""Evaluation runners: interactive (NoC), box, video (J&F), semantic (mIoU) and stored masks.

Each runner walks a data set with a progress bar, scores each item, appends it to a
resumable :class:`~anyseg.eval.store.ResultStore`, and returns ``(records, summary)``.
The predictor side is pluggable: promptable runners take any
:class:`~anyseg.models.base.Predictor`; video and semantic engines are looked up by name in
:data:`VIDEO_ENGINES` / :data:`SEMANTIC_ENGINES`, which :mod:`anyseg.eval.engines` fills from
the public loaders (tests and plugins may add their own).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from anyseg.errors import InputError
from anyseg.eval.datasets import MaskSample, SemanticSample, VideoSample, read_object_ids, read_prediction_mask
from anyseg.eval.store import ResultStore

#: A video engine: ``(sample, first-frame object masks {id: (H, W) bool}) -> iterator of
#: (frame index, {id: (H, W) bool})`` for every frame. Factories take the model name and the
#: keywords ``weights`` and ``device`` (``--weights``, ``--device``; ``None`` = the defaults).
VideoEngine = Callable[[VideoSample, dict[int, np.ndarray]], Iterable[tuple[int, dict[int, np.ndarray]]]]
VIDEO_ENGINES: dict[str, Callable[..., VideoEngine]] = {}

#: value a semantic engine writes for pixels it leaves unlabeled (counted as misses)
UNLABELED = 255

#: A semantic engine: ``image -> (H, W) int class ids`` over the given class names, or
#: :data:`UNLABELED` where it declines to label. Factories take the model name, the class names
#: and the keywords ``weights`` and ``device``.
SemanticEngine = Callable[[np.ndarray], np.ndarray]
SEMANTIC_ENGINES: dict[str, Callable[..., SemanticEngine]] = {}


def register_video_engine(name: str, factory: Callable[..., VideoEngine]) -> None:
    VIDEO_ENGINES[name] = factory


def register_semantic_engine(name: str, factory: Callable[..., SemanticEngine]) -> None:
    SEMANTIC_ENGINES[name] = factory


def _progress(items: Sequence[Any], desc: str) -> Iterator[Any]:
    from tqdm import tqdm

    return iter(tqdm(items, desc=desc, unit="item", dynamic_ncols=True, leave=False))


def _check_size(what: str, a: np.ndarray, b: np.ndarray, path: Any) -> None:
    if a.shape[:2] != b.shape[:2]:
        raise InputError(f"{what} {path} is {a.shape[1]}x{a.shape[0]} but the ground truth is {b.shape[1]}x{b.shape[0]}")


def _pending_masks(samples: Sequence[MaskSample], store: ResultStore, desc: str
                   ) -> Iterator[tuple[MaskSample, np.ndarray, np.ndarray, np.ndarray | None]]:
    """``(sample, image, gt, ignore)`` for the samples not yet in ``store``, checked, with a progress bar."""
    for s in _progress([s for s in samples if s.name not in store], desc):
        image = s.load_image()
        gt, ignore = s.load_gt()
        _check_size("image", image, gt, s.image_path)
        if not gt.any():
            raise InputError(f"ground truth {s.mask_path} is empty: nothing to prompt with")
        yield s, image, gt, ignore


def _records(store: ResultStore, names: Iterable[str]) -> list[dict]:
    wanted = set(names)
    return [r for r in store.records() if r["name"] in wanted]


def tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


# -- interactive -------------------------------------------------------------------------------


def run_interactive(predictor, samples: Sequence[MaskSample], store: ResultStore, max_clicks: int = 20,
                    thresholds: Sequence[float] = (0.85, 0.90)) -> tuple[list[dict], dict]:
    """NoC / mIoU@k with the standard click simulator (see :mod:`anyseg.eval.clicker`)."""
    from anyseg.eval.clicker import InteractiveResult, noc, simulate, summarize

    for s, image, gt, ignore in _pending_masks(samples, store, "interactive"):
        t = time.perf_counter()
        res = simulate(predictor, image, gt, ignore=ignore, max_clicks=max_clicks)
        store.add({
            "name": s.name, "ious": [round(float(v), 6) for v in res.ious],
            "clicks": [[float(x), float(y), bool(p)] for x, y, p in res.clicks],
            **{f"NoC@{round(t_ * 100)}": noc(res.ious, t_, max_clicks) for t_ in thresholds},
            "seconds": round(time.perf_counter() - t, 3),
        })
    records = _records(store, (s.name for s in samples))
    results = [InteractiveResult(ious=list(r["ious"]), clicks=[tuple(c) for c in r["clicks"]]) for r in records]
    summary = summarize(results, thresholds=tuple(thresholds), max_clicks=max_clicks) if results else {}
    return records, summary


# -- box ---------------------------------------------------------------------------------------


def run_box(predictor, samples: Sequence[MaskSample], store: ResultStore) -> tuple[list[dict], dict]:
    """One prompt per image: the tight box of the ground truth (ignored pixels excluded)."""
    from anyseg.eval.metrics import dice, iou
    from anyseg.types import Prompt

    for s, image, gt, ignore in _pending_masks(samples, store, "box"):
        box = tight_box(gt)
        t = time.perf_counter()
        masks = predictor.predict(predictor.embed(image), Prompt(box=box))
        seconds = time.perf_counter() - t
        pred = masks.masks[0]
        store.add({"name": s.name, "box": box, "iou": round(iou(pred, gt, ignore), 6),
                   "dice": round(dice(pred, gt, ignore), 6), "score": round(float(masks.scores[0]), 6),
                   "seconds": round(seconds, 3)})
    records = _records(store, (s.name for s in samples))
    return records, _mean_summary(records, ("iou", "dice", "seconds"))


def _mean_summary(records: list[dict], keys: Sequence[str]) -> dict:
    if not records:
        return {"num_images": 0}
    out: dict[str, Any] = {"num_images": len(records)}
    for k in keys:
        v = np.array([r[k] for r in records], dtype=float)
        out[f"mean_{k}"] = round(float(v.mean()), 4)
        if k != "seconds":
            out[f"median_{k}"] = round(float(np.median(v)), 4)
            out[f"min_{k}"] = round(float(v.min()), 4)
    return out


# -- video -------------------------------------------------------------------------------------


def _object_masks(ids: np.ndarray) -> dict[int, np.ndarray]:
    return {int(i): ids == i for i in np.unique(ids) if i not in (0, 255)}


def score_video(name: str, gt_ids: np.ndarray, pred_ids: np.ndarray, skip_first_last: bool = True) -> dict:
    """DAVIS J&F of one sequence from ``(T, H, W)`` object-id stacks (255 = void in the GT)."""
    from anyseg.eval.metrics import evaluate_video_object

    void = gt_ids == 255
    objects = sorted(set(np.unique(gt_ids).tolist()) - {0, 255})
    if not objects:
        raise InputError(f"sequence {name}: the ground truth has no objects")
    per_object = {}
    for obj in objects:
        res = evaluate_video_object(gt_ids == obj, pred_ids == obj, void=void if void.any() else None,
                                    skip_first_last=skip_first_last)
        per_object[str(obj)] = {k: (np.asarray(v).round(6).tolist() if isinstance(v, np.ndarray) else v)
                                for k, v in res.items()}
    return {"name": name, "objects": per_object, "frames": int(gt_ids.shape[0])}


def video_summary(records: list[dict]) -> dict:
    from anyseg.eval.metrics import jf_summary

    per_object = [dict(o) for r in records for o in r["objects"].values()]
    if not per_object:
        return {"num_sequences": 0}
    out = {k: round(float(v), 4) for k, v in jf_summary(per_object).items()}
    out["num_sequences"] = len(records)
    out["num_objects"] = len(per_object)
    return out


def run_video(engine: VideoEngine, samples: Sequence[VideoSample], store: ResultStore,
              skip_first_last: bool = True) -> tuple[list[dict], dict]:
    """Semi-supervised VOS: the first frame's masks are given, J&F on the rest (DAVIS toolkit)."""
    for s in _progress([s for s in samples if s.name not in store], "video"):
        gt = s.load_annotations()
        first = _object_masks(gt[0])
        pred = np.zeros_like(gt)
        t = time.perf_counter()
        seen = set()
        for index, objs in engine(s, first):
            seen.add(index)
            for obj_id, m in objs.items():
                pred[index][m] = obj_id
        seconds = time.perf_counter() - t
        if len(seen) != len(s):
            missing = sorted(set(range(len(s))) - seen)[:3]
            raise InputError(f"the video engine returned no masks for frames {missing} of {s.name}")
        rec = score_video(s.name, gt, pred, skip_first_last)
        rec["fps"] = round(len(s) / max(seconds, 1e-9), 3)
        store.add(rec)
    records = _records(store, (s.name for s in samples))
    return records, video_summary(records)


# -- semantic ----------------------------------------------------------------------------------


def run_semantic(engine: SemanticEngine, samples: Sequence[SemanticSample], classes: Sequence[str],
                 store: ResultStore) -> tuple[list[dict], dict]:
    """Confusion-matrix mIoU and pixel accuracy over the data set (void pixels ignored).

    Predicted :data:`UNLABELED` pixels count as misses of their gt class (false negatives).
    """
    from anyseg.eval.metrics import ConfusionMatrix

    n = len(classes)
    for s in _progress([s for s in samples if s.name not in store], "semantic"):
        image = s.load_image()
        labels = s.load_labels()
        t = time.perf_counter()
        pred = np.asarray(engine(image))
        seconds = time.perf_counter() - t
        _check_size("prediction for", pred, labels, s.image_path)
        cm = ConfusionMatrix(n, ignore_index=s.void_id, unlabeled=UNLABELED if n <= UNLABELED else None)
        cm.update(pred, labels)
        store.add({"name": s.name, "confusion": cm.matrix.astype(int).tolist(), "missed": cm.missed.astype(int).tolist(),
                   "seconds": round(seconds, 3)})
    records = _records(store, (s.name for s in samples))
    return records, semantic_summary(records, classes)


def semantic_summary(records: list[dict], classes: Sequence[str]) -> dict:
    from anyseg.eval.metrics import ConfusionMatrix

    total = ConfusionMatrix(len(classes))
    for r in records:
        total.matrix += np.asarray(r["confusion"], dtype=total.matrix.dtype)
        total.missed += np.asarray(r.get("missed", 0), dtype=total.missed.dtype)
    out = total.to_dict(list(classes))
    out["num_images"] = len(records)
    return out


# -- stored masks (any tool) ---------------------------------------------------------------------


def score_mask_files(pairs: Sequence[tuple[str, Any, MaskSample]], store: ResultStore) -> tuple[list[dict], dict]:
    """Binary masks written by any tool vs ground truth: IoU, Dice, boundary F per image."""
    from anyseg.eval.metrics import db_eval_boundary, dice, iou

    for name, pred_path, sample in _progress([p for p in pairs if p[0] not in store], "masks"):
        gt, ignore = sample.load_gt()
        pred = read_prediction_mask(pred_path, sample.object_id, size=gt.shape, reference="the ground truth")
        store.add({"name": name, "iou": round(iou(pred, gt, ignore), 6), "dice": round(dice(pred, gt, ignore), 6),
                   "boundary_f": round(float(db_eval_boundary(gt, pred, ignore)), 6)})
    records = _records(store, (p[0] for p in pairs))
    return records, _mean_summary(records, ("iou", "dice", "boundary_f"))


def split_by_predictions(pred_root, samples: Sequence[VideoSample],
                         require_all: bool = False) -> tuple[list[VideoSample], list[str]]:
    """``(present, missing names)``: the sequences with at least one PNG in ``pred_root/SEQ/``, and the others.

    No sequence present, or (with ``require_all``) any missing, is a one-line :class:`InputError`.
    """
    from pathlib import Path

    pred_root = Path(pred_root)
    present, missing = [], []
    for s in samples:
        folder = pred_root / s.name
        if folder.is_dir() and any(p.suffix.lower() == ".png" for p in folder.iterdir()):
            present.append(s)
        else:
            missing.append(s.name)
    if missing and (require_all or not present):
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise InputError(f"no predictions in {pred_root} for {len(missing)} of {len(samples)} sequences ({shown}; "
                         "expected PRED/SEQ/NNNNN.png)" + ("; drop --require-all to score the others"
                                                           if present else ""))
    return present, missing


def score_video_files(pred_root, samples: Sequence[VideoSample], store: ResultStore, skip_first_last: bool = True,
                      require_all: bool = False) -> tuple[list[dict], dict]:
    """DAVIS-format results (``PRED/SEQ/NNNNN.png``, object ids as values) vs DAVIS annotations.

    Sequences without predictions (no PNG in ``PRED/SEQ/``) are left out and listed in the
    summary's ``missing_sequences``; with ``require_all`` any is an :class:`InputError`, as is
    no sequence at all. Within a scored sequence every frame needs its prediction.
    """
    from pathlib import Path

    pred_root = Path(pred_root)
    present, missing = split_by_predictions(pred_root, samples, require_all)
    for s in _progress([s for s in present if s.name not in store], "videos"):
        gt = s.load_annotations()
        pred = np.zeros_like(gt)
        for t, frame in enumerate(s.frames):
            path = next((p for p in (pred_root / s.name).glob(f"{frame.stem}.*") if p.suffix.lower() == ".png"), None)
            if path is None:
                raise InputError(f"missing prediction {pred_root / s.name / (frame.stem + '.png')} for frame {t} of {s.name}")
            pred[t] = read_object_ids(path, size=gt.shape[1:], reference="the ground truth")
        store.add(score_video(s.name, gt, pred, skip_first_last))
    records = _records(store, (s.name for s in present))
    summary = video_summary(records)
    summary["num_sequences_missing"] = len(missing)
    summary["missing_sequences"] = missing
    return records, summary

"""Pseudo-masks from sparse labels, WS-SAM style: train on what several augmented views agree on.

Follows the pseudo-labelling half of WS-SAM (He et al., "Weakly-Supervised Concealed Object
Segmentation with SAM-based Pseudo Labeling and Multi-scale Feature Grouping", NeurIPS 2023,
Sec. 3.1): the sparse labels of each object (points, a box, or points sampled from scribbles) are
SAM's prompt; the image is segmented in its original view and in K augmented views (flips,
rescalings), the prompts transformed with the image and each prediction mapped back; the
foreground probabilities (sigmoid of the logits) are averaged ("multi-augmentation result
fusion"); the binary entropy of the mean marks the unreliable pixels ("entropy-based pixel-level
weighting") and the mean entropy of an image can reject it ("entropy-based image-level
selection"). The reference repository (ChunmingHe/WS-SAM) releases only the segmenter's training
on its released pseudo-masks, not the pseudo-labelling code, so this follows the paper's text.
The scribble format is WS-SAM's training data's (S-COD: 0 unlabeled, 1 foreground, 2 background).

Where it differs:

* WS-SAM *weights* each pixel's loss by ``1 - entropy``; here a pixel is *kept* or *ignored*
  (written as :data:`IGNORE` = 128 for the fine-tuner, whose masks ignore 128): kept where at
  least ``agreement`` of the views are on the majority side of 0.5 (default 1.0: all) **and** the
  mean's binary entropy, in bits, is at most ``entropy_threshold`` (default 0.5: mean outside
  about [0.11, 0.89]). ``agreement=0.5`` leaves only the entropy rule, ``entropy_threshold=1``
  only the vote.
* Image-level selection is off by default (``max_uncertainty=None``); with a value, images whose
  objects' mean entropy (over the pixels some view calls foreground) exceeds it are listed with
  ``"selected": false`` and no mask is written for them.
* Several objects per image are written as their union (foreground where any object's kept
  foreground is, else ignored where any object is unsure, else background), since the
  fine-tuner takes one binary mask per image; ``per_object=True`` also writes
  ``masks_objects/NAME_K.png``.
* Predictors without SAM's logit upscaling (the classical engine, runtimes) get their logits
  from the full-size mask: its signed distance in working-resolution pixels (what the classical
  engine's own ``Masks.logits`` are), so the sign always agrees with the returned mask.
* A single click (no box) is decoded with ``multimask=True``, the best-scored mask kept (SAM's
  advice for one ambiguous click); views choose on their own, so a disagreement becomes ignored pixels.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from anyseg.errors import InputError
from anyseg.io.atomic import atomic_open, write_json
from anyseg.types import Embedding, Masks, Prompt

__all__ = ["pseudolabel", "sample_sparse_from_masks", "load_sparse", "parse_augment", "View", "SparseObject",
           "fuse_views", "IGNORE", "FOREGROUND", "BACKGROUND", "DEFAULT_AUGMENT"]

FOREGROUND, BACKGROUND, IGNORE = 255, 0, 128
DEFAULT_AUGMENT = ("hflip", "vflip", "scale0.75", "scale1.25")
DEFAULT_AGREEMENT = 1.0
DEFAULT_ENTROPY = 0.5
#: at most this many objects per image, points per object and augmented views (bounded work)
MAX_OBJECTS, MAX_POINTS, MAX_VIEWS = 64, 64, 16
#: scale factors of the ``scaleS`` augmentations must lie in this range
SCALE_RANGE = (0.25, 2.0)
#: scribble pixels sampled per object (foreground) and per image (background)
SCRIBBLE_POINTS = 3
SPARSE_FORM = 'points.json maps image names to lists of {"points": [[x, y], ...], "labels": [1, 0, ...]} and/or {"box": [x0, y0, x1, y1]}'


# -- augmentations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """One augmented view: flips, then a rescaling by ``scale`` (the identity when all are off)."""

    name: str
    flip_x: bool = False
    flip_y: bool = False
    scale: float = 1.0

    def size(self, size: tuple[int, int]) -> tuple[int, int]:
        h, w = size
        return max(1, round(h * self.scale)), max(1, round(w * self.scale))

    def image(self, image: np.ndarray) -> np.ndarray:
        """The view of an ``(H, W, ...)`` image (flipped, then resized with cv2's pixel-centre alignment)."""
        out = image[:, ::-1] if self.flip_x else image
        out = out[::-1] if self.flip_y else out
        if self.scale != 1.0:
            h, w = self.size(image.shape[:2])
            interp = cv2.INTER_AREA if self.scale < 1 else cv2.INTER_LINEAR
            out = cv2.resize(np.ascontiguousarray(out), (w, h), interpolation=interp)
        return np.ascontiguousarray(out)

    def prompt(self, prompt: Prompt, size: tuple[int, int]) -> Prompt:
        """``prompt`` (on an ``(H, W)`` image) in this view's pixel coordinates.

        Points are mirrored pixel for pixel (the pixel a point falls in, ``floor(x)``, goes to
        ``W - 1 - floor(x)`` with the same sub-pixel offset: exact for integer clicks and an
        involution), then scaled about pixel centres (``(x + 0.5) s - 0.5``); box edges are
        mirrored (``W - x``) and scaled (``x s``) as edges.
        """
        h, w = size
        nh, nw = self.size(size)
        sx, sy = nw / w, nh / h
        points = box = None
        if prompt.points is not None:
            points = prompt.points.copy()
            for axis, flip, n in ((0, self.flip_x, w), (1, self.flip_y, h)):
                if flip:
                    whole = np.floor(points[:, axis])
                    points[:, axis] = (n - 1 - whole) + (points[:, axis] - whole)
            if self.scale != 1.0:
                points[:, 0] = np.clip((points[:, 0] + 0.5) * sx - 0.5, 0, nw - 1)
                points[:, 1] = np.clip((points[:, 1] + 0.5) * sy - 0.5, 0, nh - 1)
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            if self.flip_x:
                x0, x1 = w - x1, w - x0
            if self.flip_y:
                y0, y1 = h - y1, h - y0
            box = np.clip(np.array([x0 * sx, y0 * sy, x1 * sx, y1 * sy]), 0, [nw, nh, nw, nh])
        return Prompt(points=points, labels=prompt.labels, box=box)

    def back(self, values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A per-pixel map of this view mapped back onto the ``(H, W)`` original (the inverse of :meth:`image`)."""
        h, w = size
        out = values
        if self.scale != 1.0:
            out = cv2.resize(np.ascontiguousarray(out), (w, h), interpolation=cv2.INTER_LINEAR)
        out = out[::-1] if self.flip_y else out
        out = out[:, ::-1] if self.flip_x else out
        return np.ascontiguousarray(out)


def parse_augment(names: Iterable[str] | str | None) -> list[View]:
    """The original view followed by one :class:`View` per name: ``hflip``, ``vflip``,
    ``hvflip`` (both) or ``scaleS`` (``S`` in :data:`SCALE_RANGE`, e.g. ``scale0.75``)."""
    if names is None:
        names = ()
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    views = [View("original")]
    for raw in names:
        name = str(raw).strip().lower()
        if name in ("hflip", "vflip", "hvflip"):
            views.append(View(name, flip_x=name != "vflip", flip_y=name != "hflip"))
            continue
        try:
            scale = float(name[5:]) if name.startswith("scale") else None
        except ValueError:
            scale = None
        if scale is None or not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
            raise InputError(f"unknown augmentation {raw!r}: expected hflip, vflip, hvflip or scaleS with S in "
                             f"[{SCALE_RANGE[0]}, {SCALE_RANGE[1]}], e.g. scale0.75")
        views.append(View(name, scale=scale))
    if len(views) > MAX_VIEWS:
        raise InputError(f"{len(views) - 1} augmentations given; at most {MAX_VIEWS - 1} are allowed")
    return views


# -- sparse labels ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SparseObject:
    """The sparse label of one object: points (XY pixels, labels 1/0) and/or a box."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None

    def prompt(self) -> Prompt:
        return Prompt(points=self.points, labels=self.labels, box=self.box)


def _numbers(value: Any, count: int) -> list[float] | None:
    ok = isinstance(value, (list, tuple)) and len(value) == count and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)
    return [float(v) for v in value] if ok else None


def _sparse_object(item: Any, where: str) -> SparseObject:
    """One object of ``points.json``, validated; errors name ``where`` (file, image, object)."""
    if not isinstance(item, dict) or not ({"points", "box"} & set(item)):
        raise InputError(f"{where}: expected an object with \"points\" and/or \"box\"; got {str(item)[:60]}")
    unknown = set(item) - {"points", "labels", "box", "id", "name"}
    if unknown:
        raise InputError(f"{where}: unknown key {sorted(unknown)[0]!r} (expected points, labels, box)")
    points = labels = box = None
    if "points" in item:
        raw = item["points"]
        if not isinstance(raw, list) or not raw or len(raw) > MAX_POINTS:
            raise InputError(f"{where}: \"points\" must be a list of 1 to {MAX_POINTS} [x, y] pairs")
        pairs = [_numbers(p, 2) for p in raw]
        if any(p is None for p in pairs):
            bad = raw[[p is None for p in pairs].index(True)]
            raise InputError(f"{where}: point {str(bad)[:40]} is not an [x, y] pair of numbers")
        points = np.array(pairs, dtype=np.float64)
        labels = np.ones(len(points), dtype=np.int64)
        if "labels" in item:
            lab = item["labels"]
            if not isinstance(lab, list) or len(lab) != len(points) or any(v not in (0, 1) or isinstance(v, bool)
                                                                          for v in lab):
                raise InputError(f"{where}: \"labels\" must be a list of {len(points)} values 1 (positive) or 0 (negative)")
            labels = np.array(lab, dtype=np.int64)
        if not (labels == 1).any() and "box" not in item:
            raise InputError(f"{where}: needs a positive point (label 1) or a box; all its points are negative")
    elif "labels" in item:
        raise InputError(f"{where}: \"labels\" given without \"points\"")
    if "box" in item:
        b = _numbers(item["box"], 4)
        if b is None or b[2] <= b[0] or b[3] <= b[1]:
            raise InputError(f"{where}: \"box\" must be [x0, y0, x1, y1] numbers with x1 > x0 and y1 > y0; got "
                             f"{str(item['box'])[:60]}")
        box = np.array(b, dtype=np.float64)
    return SparseObject(points, labels, box)


def load_points_json(path: str | os.PathLike, stems: dict[str, Path]) -> dict[str, list[SparseObject]]:
    """``{image stem: objects}`` from a ``points.json`` whose keys are image file names or stems."""
    from anyseg.eval.datasets import read_json

    path = Path(path)
    data = read_json(path, "sparse-label file (points.json)")
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object; {SPARSE_FORM}")
    by_name = {p.name: s for s, p in stems.items()}
    out: dict[str, list[SparseObject]] = {}
    for key, objects in data.items():
        stem = by_name.get(key, key if key in stems else None)
        if stem is None:
            raise InputError(f"{path}: image {key!r} is not in the images folder (keys are file names or stems)")
        if stem in out:
            raise InputError(f"{path}: image {key!r} is given twice (by file name and by stem)")
        if isinstance(objects, dict):
            objects = [objects]
        if not isinstance(objects, list) or not objects or len(objects) > MAX_OBJECTS:
            raise InputError(f"{path}: image {key!r}: expected a list of 1 to {MAX_OBJECTS} objects; {SPARSE_FORM}")
        out[stem] = [_sparse_object(o, f"{path}: image {key!r}, object {k}") for k, o in enumerate(objects)]
    return out


def _farthest_points(yx: np.ndarray, k: int, first: int) -> list[int]:
    """Indices of ``k`` rows of ``yx`` by farthest-point sampling from row ``first`` (deterministic)."""
    chosen = [first]
    dist = np.linalg.norm(yx - yx[first], axis=1)
    while len(chosen) < min(k, len(yx)):
        nxt = int(np.argmax(dist))
        if dist[nxt] <= 0:
            break
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(yx - yx[nxt], axis=1))
    return chosen


def _stroke_points(stroke: np.ndarray, k: int) -> np.ndarray:
    """``k`` XY points spread over a scribble: its most interior pixel, then farthest-point sampling."""
    yx = np.argwhere(stroke)
    depth = cv2.distanceTransform(stroke.astype(np.uint8), cv2.DIST_L2, 3)[stroke]
    idx = _farthest_points(yx.astype(np.float64), k, int(np.argmax(depth)))
    return yx[idx][:, ::-1].astype(np.float64)


def scribble_objects(path: Path, size: tuple[int, int], points: int = SCRIBBLE_POINTS) -> list[SparseObject]:
    """The objects of one scribble PNG: each 8-connected foreground stroke is an object prompted by
    ``points`` positive points on it and ``points`` negative points on the background strokes.

    Values: S-COD / WS-SAM's 0 = unlabeled, 1 = foreground, 2 = background; or grey 0 = unlabeled,
    255 = foreground, 128 = background. Anything else is a one-line error naming the file.
    """
    from anyseg.eval.datasets import open_mask

    im = open_mask(path, size, "its image")
    with im:
        arr = np.asarray(im.convert("L") if im.mode not in ("L", "P") else im)
    values = set(np.unique(arr).tolist())
    if values <= {0, 1, 2}:
        fg, bg = arr == 1, arr == 2
    elif values <= {0, 128, 255}:
        fg, bg = arr == 255, arr == 128
    else:
        raise InputError(f"scribble {path} has values {sorted(values)[:8]}: expected 0 unlabeled / 1 foreground / "
                         "2 background (S-COD), or 0 / 255 foreground / 128 background")
    count, comp = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
    if count <= 1:
        raise InputError(f"scribble {path} has no foreground stroke (value 1, or 255)")
    if count - 1 > MAX_OBJECTS:
        raise InputError(f"scribble {path} has {count - 1} separate foreground strokes; at most {MAX_OBJECTS} allowed")
    neg = _stroke_points(bg, points) if bg.any() else np.zeros((0, 2))
    objects = []
    for k in range(1, count):
        pos = _stroke_points(comp == k, points)
        pts = np.concatenate([pos, neg])
        objects.append(SparseObject(pts, np.r_[np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)]))
    return objects


def load_sparse(sparse: str | os.PathLike, stems: dict[str, Path]) -> dict[str, Any]:
    """``{stem: objects}`` from a ``points.json`` file, or ``{stem: scribble path}`` from a scribble folder
    (read lazily by :func:`scribble_objects` once the image size is known)."""
    from anyseg.eval.datasets import files_by_stem

    path = Path(sparse)
    if path.is_dir():
        scribbles = files_by_stem(path, "scribble")
        extra = sorted(set(scribbles) - set(stems))
        if extra:
            raise InputError(f"scribble {scribbles[extra[0]].name} has no image in the images folder (matched by stem)")
        return dict(scribbles)
    if not path.exists():
        raise InputError(f"sparse labels not found: {path} (give points.json or a scribbles/ folder)")
    return load_points_json(path, stems)


# -- fusing the views ------------------------------------------------------------------------


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return (-(q * np.log2(q) + (1 - q) * np.log2(1 - q))).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The sigmoid in float32, on the same side of 0.5 as ``x`` of 0 (tiny logits round to 0.5)."""
    p = (1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))).astype(np.float32)
    return np.where(x > 0, np.maximum(p, np.nextafter(np.float32(0.5), np.float32(1))), np.minimum(p, 0.5))


def view_probability(model: Any, embedding: Embedding, masks: Masks) -> np.ndarray:
    """``(H, W)`` foreground probability of the first mask of ``masks`` at the embedded image's size.

    SAM-family predictors: the sigmoid of their low-res logits upscaled as their masks are (so
    ``p > 0.5`` is exactly the mask); others: the sigmoid of the mask's signed distance in
    working-resolution pixels (the classical engine's own logit definition).
    """
    h, w = embedding.original_size
    if masks.logits is not None and hasattr(model, "upscale_logits") and hasattr(model, "geometry"):
        try:
            import torch

            with torch.inference_mode():
                up = model.upscale_logits(torch.from_numpy(masks.logits[:1]), model.geometry((h, w)))
            logit = up.float().cpu().numpy().reshape(h, w)
            return _sigmoid(logit)
        except (TypeError, AttributeError, RuntimeError, ValueError):
            pass  # a runtime without torch tensors: fall back to the mask
    from anyseg.models.classical_cut import signed_distance

    sd = signed_distance(masks.masks[0])
    work = getattr(embedding, "input_size", None) or (h, w)
    ratio = min(1.0, max(work) / max(h, w))
    return _sigmoid(sd * ratio)


def fuse_views(probs: np.ndarray, agreement: float = DEFAULT_AGREEMENT, entropy_threshold: float = DEFAULT_ENTROPY
               ) -> dict[str, Any]:
    """WS-SAM's fusion of ``(V, H, W)`` per-view probabilities (view 0 = the original).

    Returns ``mean``, ``entropy`` (bits), ``kept`` (the vote share on the majority side is at
    least ``agreement`` and the entropy at most ``entropy_threshold``), ``fg`` (kept and mean >
    0.5), ``single`` (view 0 > 0.5: the unfiltered single-view mask) and the object's scores:
    ``stability`` (mean IoU of each view's mask with the fused one; 0 when it is empty),
    ``uncertainty`` (mean entropy over the pixels some view calls foreground; 1 if none does) and
    ``kept`` fraction of the image.
    """
    binary = probs > 0.5
    mean = probs.mean(axis=0)
    share = binary.mean(axis=0)
    share = np.maximum(share, 1 - share)
    entropy = _entropy_bits(mean)
    kept = (share >= agreement - 1e-6) & (entropy <= entropy_threshold)
    fused = mean > 0.5
    fg = kept & fused
    ious = [float((b & fused).sum() / max(1, (b | fused).sum())) for b in binary]
    support = binary.any(axis=0)
    stability = float(np.mean(ious)) if fused.any() else 0.0
    uncertainty = float(entropy[support].mean()) if support.any() else 1.0
    return {"mean": mean, "entropy": entropy, "kept": kept, "fg": fg, "single": binary[0],
            "stability": stability, "uncertainty": uncertainty, "kept_fraction": float(kept.mean())}


def _decode(model: Any, image: np.ndarray, prompts: list[Prompt]) -> list[tuple[np.ndarray, float]]:
    """``(probability, score)`` of each prompt on one view (the best of three for a single click)."""
    emb = model.embed(image)
    out = []
    for p in prompts:
        multimask = p.box is None and len(p.points) == 1  # SAM's advice: three masks for one ambiguous click
        masks = model.predict(emb, p, multimask=multimask)
        if len(masks) == 0:
            out.append((np.zeros(image.shape[:2], np.float32), 0.0))
            continue
        best = masks[int(np.argmax(masks.scores))] if multimask and len(masks) > 1 else masks[0]
        out.append((view_probability(model, emb, best), float(best.scores[0])))
    return out


def pseudolabel_image(model: Any, image: np.ndarray, objects: Sequence[SparseObject], views: Sequence[View],
                      agreement: float = DEFAULT_AGREEMENT, entropy_threshold: float = DEFAULT_ENTROPY
                      ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The 0/128/255 union pseudo-mask of one image and each object's fusion (:func:`fuse_views`)."""
    size = image.shape[:2]
    prompts = [o.prompt() for o in objects]
    for k, p in enumerate(prompts):
        outside = p.first_outside(size)
        if outside:
            raise InputError(f"object {k}: its {outside[0]} {np.round(np.asarray(outside[1], float), 1).tolist()} is "
                             f"outside the {size[1]}x{size[0]} image")
    per_view = []
    for view in views:
        decoded = _decode(model, view.image(image), [view.prompt(p, size) for p in prompts])
        per_view.append([(view.back(prob, size), score) for prob, score in decoded])
    results = []
    for k in range(len(objects)):
        fused = fuse_views(np.stack([pv[k][0] for pv in per_view]), agreement, entropy_threshold)
        fused["model_score"] = float(np.mean([pv[k][1] for pv in per_view]))
        results.append(fused)
    label = np.full(size, BACKGROUND, np.uint8)
    label[np.logical_or.reduce([~r["kept"] for r in results])] = IGNORE
    label[np.logical_or.reduce([r["fg"] for r in results])] = FOREGROUND
    return label, results


# -- quality against full masks --------------------------------------------------------------


def quality(label: np.ndarray, single: np.ndarray, gt: np.ndarray, gt_void: np.ndarray | None) -> dict[str, float]:
    """Pseudo-mask (0/128/255) and single-view mask against the ground truth, over non-void pixels.

    ``iou_kept``: ignored pixels excluded; ``iou_all``: ignored pixels counted as wrong (a
    foreground pixel ignored is missed, a background one a false alarm); ``precision`` and
    ``recall`` on the kept pixels; ``accuracy_kept`` the kept pixels' accuracy; ``kept`` the kept
    fraction; ``single_*`` the same for the unfiltered single-view mask (all pixels kept).
    """
    valid = np.ones(gt.shape, bool) if gt_void is None else ~gt_void
    kept, fg = (label != IGNORE) & valid, (label == FOREGROUND) & valid
    gt = gt & valid
    tp = int((fg & gt).sum())
    fp_kept, fn_kept = int((fg & ~gt).sum()), int((kept & ~fg & gt).sum())
    ignored = valid & ~kept
    fp_all, fn_all = fp_kept + int((ignored & ~gt).sum()), fn_kept + int((ignored & gt).sum())
    s = single & valid
    stp, sfp, sfn = int((s & gt).sum()), int((s & ~gt).sum()), int((~s & gt & valid).sum())
    n = max(1, int(valid.sum()))

    def ratio(a: int, b: int, empty: float = 1.0) -> float:
        return float(a / b) if b else empty

    return {"iou_kept": ratio(tp, tp + fp_kept + fn_kept), "iou_all": ratio(tp, tp + fp_all + fn_all),
            "precision": ratio(tp, tp + fp_kept, float(not gt.any())), "recall": ratio(tp, tp + fn_kept),
            "accuracy_kept": ratio(int(kept.sum()) - fp_kept - fn_kept, int(kept.sum())), "kept": float(kept.sum() / n),
            "single_iou": ratio(stp, stp + sfp + sfn), "single_precision": ratio(stp, stp + sfp, float(not gt.any())),
            "single_recall": ratio(stp, stp + sfn), "single_accuracy": float((n - sfp - sfn) / n)}


def _mean_quality(rows: list[dict[str, float]]) -> dict[str, Any]:
    keys = list(rows[0]) if rows else []
    return {"images": len(rows), **{("m" + k if "iou" in k else k): float(np.mean([r[k] for r in rows])) for k in keys}}


# -- the command -----------------------------------------------------------------------------


def _place_image(src: Path, dst: Path, copy: bool) -> None:
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        if not copy:
            return os.symlink(src.resolve(), dst)
    except OSError:
        pass  # no symlinks here (Windows without the privilege, some file systems): copy
    shutil.copy2(src, dst)


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_open(path, "wb") as f:
        Image.fromarray(array, mode="L").save(f, format="PNG")


def _check_options(agreement: float, entropy_threshold: float, max_uncertainty: float | None) -> None:
    if not 0.5 <= float(agreement) <= 1.0:
        raise InputError(f"agreement must be between 0.5 and 1 (the share of views on the majority side); got {agreement}")
    if not 0.0 <= float(entropy_threshold) <= 1.0:
        raise InputError(f"entropy_threshold must be between 0 and 1 bit; got {entropy_threshold}")
    if max_uncertainty is not None and not 0.0 <= float(max_uncertainty) <= 1.0:
        raise InputError(f"max_uncertainty must be between 0 and 1 bit; got {max_uncertainty}")


def _record(label: np.ndarray, results: list[dict[str, Any]], max_uncertainty: float | None) -> dict[str, Any]:
    uncertainty = float(np.mean([r["uncertainty"] for r in results]))
    return {"kept": float((label != IGNORE).mean()), "ignored": float((label == IGNORE).mean()),
            "foreground": float((label == FOREGROUND).mean()), "uncertainty": uncertainty,
            "selected": bool((label == FOREGROUND).any()) and (max_uncertainty is None or uncertainty <= max_uncertainty),
            "objects": [{"score": r["stability"], "stability": r["stability"], "uncertainty": r["uncertainty"],
                         "model_score": r["model_score"], "kept": r["kept_fraction"],
                         "area": int(r["fg"].sum())} for r in results]}


def pseudolabel(model: Any, images_dir: str | os.PathLike, sparse: str | os.PathLike, out_dir: str | os.PathLike,
                augment: Iterable[str] | str | None = DEFAULT_AUGMENT, agreement: float = DEFAULT_AGREEMENT,
                entropy_threshold: float = DEFAULT_ENTROPY, progress: bool = True, gt_dir: str | os.PathLike | None = None,
                max_uncertainty: float | None = None, per_object: bool = False, copy_images: bool = False,
                limit: int | None = None) -> dict[str, Any]:
    """Write WS-SAM pseudo-masks for the images that have sparse labels; return the summary.

    ``model``: a promptable predictor or a name / folder for :func:`anyseg.models.load_model`.
    ``sparse``: ``points.json`` or a scribble folder (see :func:`load_sparse`). Writes
    ``out_dir/images/`` (symlinks, or copies with ``copy_images``), ``out_dir/masks/NAME.png``
    (255 foreground, 0 background, 128 ignored; none for an image with no kept foreground, which
    the fine-tuner refuses, or rejected by ``max_uncertainty``) and ``out_dir/pseudolabels.json`` (the options,
    one record per image, and with ``gt_dir`` - a folder of full masks matched by stem, GrabCut's
    128 band ignored - the quality of the pseudo-masks next to the single-view masks).
    """
    from tqdm import tqdm

    from anyseg.eval.datasets import files_by_stem, read_binary_mask
    from anyseg.io.images import load_image

    _check_options(agreement, entropy_threshold, max_uncertainty)
    views = parse_augment(augment)
    if isinstance(model, (str, os.PathLike)):
        from anyseg.models import load_model

        model = load_model(model)
    stems = files_by_stem(Path(images_dir), "image")
    labels = load_sparse(sparse, stems)
    gts = files_by_stem(Path(gt_dir), "ground-truth mask") if gt_dir is not None else {}
    out = Path(out_dir)
    for sub in ("images", "masks") + (("masks_objects",) if per_object else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    names = [s for s in stems if s in labels][: limit or None]
    records: dict[str, Any] = {}
    rows: list[dict[str, float]] = []
    for stem in tqdm(names, desc="pseudolabel", unit="image", disable=not progress or None, leave=False):
        image, entry = load_image(stems[stem]), labels[stem]
        objects = scribble_objects(entry, image.shape[:2]) if isinstance(entry, Path) else list(entry)
        try:
            label, results = pseudolabel_image(model, image, objects, views,
                                               agreement, entropy_threshold)
        except InputError as e:
            raise InputError(f"image {stems[stem].name}: {e}") from None
        records[stem] = rec = _record(label, results, max_uncertainty)
        if stem in gts:
            gt, void = read_binary_mask(gts[stem], size=image.shape[:2], reference=f"image {stems[stem].name}")
            single = np.logical_or.reduce([r["single"] for r in results])
            rec["quality"] = quality(label, single, gt, void)
            rows.append(rec["quality"])
        if not rec["selected"]:
            continue
        _place_image(stems[stem], out / "images" / stems[stem].name, copy_images)
        _write_png(out / "masks" / f"{stem}.png", label)
        for k, r in enumerate(results if per_object else ()):
            obj = np.where(r["fg"], FOREGROUND, np.where(r["kept"], BACKGROUND, IGNORE)).astype(np.uint8)
            _write_png(out / "masks_objects" / f"{stem}_{k}.png", obj)
    summary = {"model": getattr(model, "model_id", str(model)), "augment": [v.name for v in views[1:]],
               "agreement": agreement, "entropy_threshold": entropy_threshold, "max_uncertainty": max_uncertainty,
               "images": len(records), "selected": sum(r["selected"] for r in records.values()),
               "unlabeled_images": len(stems) - len(labels), "records": records}
    if gt_dir is not None:
        summary["quality"] = _mean_quality(rows)
    write_json(out / "pseudolabels.json", summary)
    return summary


# -- sparse labels from full masks (to measure the pseudo-labels) -----------------------------


def sample_sparse_from_masks(masks_dir: str | os.PathLike, out_path: str | os.PathLike | None = None,
                             points: int = 1, seed: int = 0, ignore_value: int | None | str = "auto",
                             margin: float = 0.3) -> dict[str, list[dict[str, Any]]]:
    """A ``points.json`` of ``points`` positive clicks per mask (one object per mask file), keyed by stem.

    The first click is the mask's most interior pixel (its distance-transform maximum, the
    clicker protocol's first click); the others are drawn at random (``seed``) among the pixels at
    least ``margin`` times that depth from the boundary. Void pixels (GrabCut's 128 band) are not
    the object. Written to ``out_path`` when given; masks with no foreground are skipped.
    """
    from anyseg.eval.datasets import files_by_stem, read_binary_mask

    if not 1 <= int(points) <= MAX_POINTS:
        raise InputError(f"points must be between 1 and {MAX_POINTS}; got {points}")
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict[str, Any]]] = {}
    for stem, path in files_by_stem(Path(masks_dir), "mask").items():
        fg, _ = read_binary_mask(path, ignore_value)
        if not fg.any():
            continue
        depth = cv2.distanceTransform(np.pad(fg, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        clicks = [[int(x), int(y)]]
        pool = np.argwhere(depth >= margin * depth.max())
        pool = pool[(pool[:, 0] != y) | (pool[:, 1] != x)]
        if len(pool) and points > 1:
            pick = rng.choice(len(pool), size=min(points - 1, len(pool)), replace=False)
            clicks += [[int(c[1]), int(c[0])] for c in pool[pick]]
        out[stem] = [{"points": clicks, "labels": [1] * len(clicks)}]
    if out_path is not None:
        write_json(Path(out_path), out)
    return out

"""The interactive-segmentation protocol: simulated clicks, NoC@85/90, NoF and mIoU@k.

This follows the standard click simulator of RITM (Sofiiuk et al., "Reviving Iterative
Training with Mask Guidance for Interactive Segmentation", ``isegm/inference/clicker.py``
and ``isegm/inference/utils.py``), which SAM, SAM-HQ, SimpleClick and FocSAM report with:

* the next click goes into the larger error region: the false negatives (``gt & ~pred``) or
  the false positives (``~gt & pred``), ignore pixels removed from both; each region is padded
  with a 1-pixel zero border, so that the image border counts as region boundary, and its
  exact Euclidean distance transform is taken (``cv2.distanceTransform(m, DIST_L2, 0)``);
* the click is positive iff ``max_dt(FN) > max_dt(FP)`` (a tie gives a negative click, as in
  the reference) and lies at the first pixel, in row-major order, that attains the maximum;
  pixels clicked before are not clicked again (RITM's ``not_clicked_map``);
* NoC@t is the number of clicks needed to reach IoU >= t, or ``max_clicks`` when it is never
  reached; IoU is computed with the ignore pixels excluded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from anyseg.errors import InputError
from anyseg.models.base import Predictor, check_image
from anyseg.types import Prompt

__all__ = ["Click", "InteractiveResult", "next_click", "simulate", "noc", "reached", "summarize"]

#: ``(x, y, is_positive)``: ``x`` the column and ``y`` the row of the clicked pixel.
Click = tuple[float, float, bool]


def _mask(a: object, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2-D (H, W) mask; got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise InputError(f"{name} must have the shape {shape} of the ground truth; got {arr.shape}")
    if arr.dtype != bool:
        if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
            raise InputError(f"{name} must be a binary mask (bool or 0/1); got values other than 0 and 1")
        arr = arr.astype(bool)
    return arr


def _max_dt(region: np.ndarray, padding: bool) -> np.ndarray:
    m = region.astype(np.uint8)
    if padding:
        m = np.pad(m, 1)
    dt = cv2.distanceTransform(m, cv2.DIST_L2, 0)
    return dt[1:-1, 1:-1] if padding else dt


def next_click(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None, padding: bool = True,
               clicked: np.ndarray | None = None) -> Click | None:
    """RITM's next simulated click for the prediction ``pred`` of the object ``gt``.

    Args:
        pred, gt: ``(H, W)`` bool masks.
        ignore: ``(H, W)`` bool, pixels that are neither clicked nor counted as errors.
        padding: pad the error masks with a zero border (the reference's default), so a
            region touching the image border is clicked away from that border.
        clicked: ``(H, W)`` bool, pixels clicked before; they are never chosen again.

    Returns:
        ``(x, y, is_positive)`` with ``x``/``y`` the column/row of the pixel as floats (usable
        as ``Prompt(points=[[x, y]])``), or ``None`` when no clickable error is left.
    """
    gt = _mask(gt, "gt")
    pred = _mask(pred, "pred", gt.shape)
    valid = ~_mask(ignore, "ignore", gt.shape) if ignore is not None else np.ones_like(gt)
    fn_dt = _max_dt(gt & ~pred & valid, padding)
    fp_dt = _max_dt(~gt & pred & valid, padding)
    if clicked is not None:
        free = ~_mask(clicked, "clicked", gt.shape)
        fn_dt, fp_dt = fn_dt * free, fp_dt * free
    fn_max, fp_max = float(fn_dt.max()), float(fp_dt.max())
    if fn_max <= 0 and fp_max <= 0:
        return None
    positive = fn_max > fp_max
    dt, best = (fn_dt, fn_max) if positive else (fp_dt, fp_max)
    row, col = np.argwhere(dt == best)[0]
    return float(col), float(row), bool(positive)


def _iou(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    union = np.count_nonzero((pred | gt) & valid)
    return float(np.count_nonzero(pred & gt & valid) / union) if union else 1.0


@dataclass
class InteractiveResult:
    """One image's simulated session.

    Attributes:
        ious: IoU after click 1..max_clicks (``ious[k - 1]`` after ``k`` clicks); after an early
            stop the last IoU is repeated up to ``max_clicks``.
        clicks: the clicks actually made, ``(x, y, is_positive)``.
        mask: the last prediction, ``(H, W)`` bool.
        stopped_early: whether the session ended before ``max_clicks`` clicks (``stop_at``
            reached, or no clickable error left).
    """

    ious: list[float]
    clicks: list[Click] = field(default_factory=list)
    mask: np.ndarray | None = None
    stopped_early: bool = False

    @property
    def num_clicks(self) -> int:
        return len(self.clicks)

    def iou_at(self, k: int) -> float:
        """IoU after ``k`` clicks (1-based); the last value beyond the recorded ones."""
        if k < 1:
            raise InputError(f"k must be >= 1; got {k}")
        return float(self.ious[min(k, len(self.ious)) - 1])

    def noc(self, threshold: float, max_clicks: int = 20) -> int:
        return noc(self.ious, threshold, max_clicks)

    def reached(self, threshold: float, max_clicks: int = 20) -> bool:
        return reached(self.ious, threshold, max_clicks)


def simulate(predictor: Predictor, image: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None,
             max_clicks: int = 20, use_prev_logits: bool = True, stop_at: float | None = None,
             multimask_first: bool = True, padding: bool = True) -> InteractiveResult:
    """Run the click simulator against ``predictor`` on one object.

    The image is embedded once. Click ``k`` is :func:`next_click` on prediction ``k - 1``
    (an empty mask before the first click, so the first click is the interior point of
    ``gt`` farthest from its boundary); all clicks so far form one prompt, with the previous
    prediction's logits as ``mask_logits`` when ``use_prev_logits`` (SAM's iterative
    refinement). The first click is predicted with ``multimask=True`` and the candidate with
    the highest score is kept (SAM's convention for the ambiguous single click; off with
    ``multimask_first=False``), later clicks with ``multimask=False``.

    All ``max_clicks`` clicks are made, so mIoU@k is defined for every ``k``, unless
    ``stop_at`` is given: then the session stops once IoU >= ``stop_at`` (as RITM does for
    NoC-only runs) and the last IoU is repeated for the remaining clicks. The session also
    stops when no clickable error is left (a perfect prediction), repeating its IoU.
    """
    image = check_image(image)
    gt = _mask(gt, "gt")
    if gt.shape != image.shape[:2]:
        raise InputError(f"gt must have the image's shape {image.shape[:2]}; got {gt.shape}")
    valid = ~_mask(ignore, "ignore", gt.shape) if ignore is not None else np.ones_like(gt)
    if not (gt & valid).any():
        raise InputError("gt is empty (no object pixel outside the ignore region); nothing to click on")
    if isinstance(max_clicks, bool) or not isinstance(max_clicks, (int, np.integer)) or max_clicks < 1:
        raise InputError(f"max_clicks must be an integer >= 1; got {max_clicks!r}")
    if stop_at is not None and not 0.0 < stop_at <= 1.0:
        raise InputError(f"stop_at must be in (0, 1]; got {stop_at}")

    embedding = predictor.embed(image)
    pred = np.zeros_like(gt)
    clicked = np.zeros_like(gt)
    logits: np.ndarray | None = None
    result = InteractiveResult(ious=[], mask=pred)
    for k in range(1, int(max_clicks) + 1):
        click = next_click(pred, gt, ~valid, padding=padding, clicked=clicked)
        if click is None:
            break
        result.clicks.append(click)
        clicked[int(click[1]), int(click[0])] = True
        prompt = Prompt(points=[c[:2] for c in result.clicks], labels=[int(c[2]) for c in result.clicks],
                        mask_logits=logits if use_prev_logits else None)
        first = k == 1 and multimask_first
        out = predictor.predict(embedding, prompt, multimask=first)
        if len(out) == 0:
            raise InputError(f"{type(predictor).__name__}.predict returned no mask for click {k}")
        best = int(np.argmax(out.scores)) if first else 0
        pred = out.masks[best]
        if pred.shape != gt.shape:
            raise InputError(f"the predicted mask has shape {pred.shape}, not the image's {gt.shape}")
        logits = None if out.logits is None else out.logits[best]
        result.ious.append(_iou(pred, gt, valid))
        result.mask = pred
        if stop_at is not None and result.ious[-1] >= stop_at:
            break
    if not result.ious:  # unreachable: gt has a clickable pixel before the first click
        raise InputError("no click could be made")
    result.stopped_early = len(result.ious) < max_clicks
    result.ious.extend([result.ious[-1]] * (int(max_clicks) - len(result.ious)))
    return result


def _curve(ious: Sequence[float], max_clicks: int) -> np.ndarray:
    arr = np.asarray(ious, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise InputError("an IoU sequence is empty")
    if max_clicks < 1:
        raise InputError(f"max_clicks must be >= 1; got {max_clicks}")
    arr = arr[:max_clicks]
    return np.concatenate([arr, np.full(max_clicks - arr.size, arr[-1])])


def noc(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks to reach IoU >= ``threshold`` (RITM); ``max_clicks`` when never reached."""
    hit = _curve(ious, max_clicks) >= threshold
    return int(np.argmax(hit)) + 1 if hit.any() else int(max_clicks)


def reached(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> bool:
    """Whether IoU >= ``threshold`` within ``max_clicks`` clicks (a failure for NoF when not)."""
    return bool((_curve(ious, max_clicks) >= threshold).any())


def _pct(t: float) -> str:
    return f"{t * 100:g}"


def summarize(results: Sequence[InteractiveResult | Sequence[float]], thresholds: Sequence[float] = (0.85, 0.90),
              max_clicks: int = 20, k_values: Sequence[int] = (1, 3, 5, 10)) -> dict:
    """Dataset metrics over per-image sessions (``InteractiveResult`` or plain IoU sequences).

    Returns ``{"NoC@85": mean NoC, "NoF@85": number of images that never reach 85 % IoU
    within ``max_clicks``, ... per threshold, "mIoU@k": mean IoU after ``k`` clicks for each
    ``k <= max_clicks`` of ``k_values``, "num_images", "max_clicks", "iou_curve": mean IoU
    after click 1..max_clicks}``. NoF counts images that never reach the threshold; RITM's
    table counts ``NoC == max_clicks``, which also includes reaching it at the last click.
    """
    if not results:
        raise InputError("summarize needs at least one result")
    curves = np.stack([_curve(r.ious if isinstance(r, InteractiveResult) else r, max_clicks) for r in results])
    out: dict = {}
    for t in thresholds:
        nocs = [noc(c, t, max_clicks) for c in curves]
        out[f"NoC@{_pct(t)}"] = float(np.mean(nocs))
        out[f"NoF@{_pct(t)}"] = int(sum(not reached(c, t, max_clicks) for c in curves))
    mean_curve = curves.mean(axis=0)
    for k in k_values:
        if 1 <= k <= max_clicks:
            out[f"mIoU@{k}"] = float(mean_curve[k - 1])
    out["num_images"] = len(curves)
    out["max_clicks"] = int(max_clicks)
    out["iou_curve"] = [float(v) for v in mean_curve]
    return out

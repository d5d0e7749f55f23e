"""Segmentation metrics that reproduce the field's reference implementations.

* Binary masks: :func:`iou`, :func:`dice`, :func:`pixel_accuracy`, with an optional
  ``ignore`` mask of pixels left out of every count.
* Semantic segmentation: :class:`ConfusionMatrix`, accumulated over a data set as
  mmsegmentation's ``IoUMetric`` / the Cityscapes scripts do (global counts, not a mean of
  per-image scores; ``ignore_index`` pixels skipped; classes whose union is 0 get NaN and
  are left out of the mean).
* Video object segmentation (DAVIS 2017, ``davis2017-evaluation``): region similarity
  ``J`` (:func:`db_eval_iou`), boundary accuracy ``F`` (:func:`db_eval_boundary`, with
  David Martin's ``seg2bmap`` boundaries), :func:`db_statistics` (mean, recall, decay),
  :func:`evaluate_video_object` (one object of one sequence, semi-supervised protocol)
  and :func:`jf_summary` (the toolkit's global table).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import cv2
import numpy as np
from skimage.morphology import disk

from anyseg.errors import InputError

__all__ = [
    "iou", "dice", "pixel_accuracy", "ConfusionMatrix",
    "seg2bmap", "db_eval_iou", "db_eval_boundary", "db_statistics",
    "evaluate_video_object", "jf_summary",
]


def _shape(a: Any) -> str:
    return "x".join(str(s) for s in np.shape(a)) or "scalar"


def _binary(a: Any, name: str, ndims: tuple[int, ...] = (2,)) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim not in ndims:
        want = " or ".join({2: "(H, W)", 3: "(T, H, W)"}[n] for n in ndims)
        raise InputError(f"{name} must have shape {want}; got {_shape(arr)}")
    return arr if arr.dtype == bool else arr != 0


def _pair(pred: Any, gt: Any, ignore: Any, ndims: tuple[int, ...] = (2,), names: tuple[str, str] = ("pred", "gt"),
          ignore_name: str = "ignore") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    p, g = _binary(pred, names[0], ndims), _binary(gt, names[1], ndims)
    if p.shape != g.shape:
        raise InputError(f"{names[0]} and {names[1]} must have the same shape; got {_shape(p)} and {_shape(g)}")
    ign = None
    if ignore is not None:
        ign = _binary(ignore, ignore_name, ndims)
        if ign.shape != g.shape:
            raise InputError(f"{ignore_name} must have the shape of {names[1]} {_shape(g)}; got {_shape(ign)}")
    return p, g, ign


# -- binary masks ------------------------------------------------------------------------
def iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Intersection over union of two binary ``(H, W)`` masks (non-zero = set).

    Pixels where ``ignore`` is set are left out of both counts. An empty union (both masks
    empty outside ``ignore``) gives ``1.0``: the prediction is exactly right, the DAVIS
    toolkit's convention (``db_eval_iou``). Unlike :func:`anyseg.masks.boxes.mask_iou`
    (pairwise, float32, empty union -> 0 as used for matching), this is a float64 score.
    """
    p, g, ign = _pair(pred, gt, ignore)
    if ign is not None:
        p, g = p & ~ign, g & ~ign
    union = np.count_nonzero(p | g)
    return 1.0 if union == 0 else np.count_nonzero(p & g) / union


def dice(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Dice coefficient ``2|P & G| / (|P| + |G|)`` of binary masks; both empty -> ``1.0``."""
    p, g, ign = _pair(pred, gt, ignore)
    if ign is not None:
        p, g = p & ~ign, g & ~ign
    total = np.count_nonzero(p) + np.count_nonzero(g)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(p & g) / total


def pixel_accuracy(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Fraction of pixels (outside ``ignore``) where the binary masks agree; NaN if none is counted."""
    p, g, ign = _pair(pred, gt, ignore)
    agree = p == g
    if ign is not None:
        agree = agree[~ign]
    return float("nan") if agree.size == 0 else np.count_nonzero(agree) / agree.size


# -- semantic segmentation -----------------------------------------------------------------
class ConfusionMatrix:
    """A ``(num_classes, num_classes)`` confusion matrix (rows = gt, columns = prediction).

    The counts are summed over all images before any ratio is taken, as mmsegmentation's
    ``IoUMetric`` (``total_area_intersect / total_area_union``) and the Cityscapes scripts.
    Ground-truth pixels equal to ``ignore_index`` (``None``: none) are skipped, whatever
    was predicted there; any other gt value outside ``[0, num_classes)``, and any predicted
    value outside it, is an :class:`InputError` naming the values, except ``unlabeled``: a
    prediction that declines to label a pixel (open-vocabulary maps, ``anyseg semantic``'s
    255) counts as a miss of the gt class (a false negative, and a wrong pixel for ``aAcc``)
    and as a false positive of no class. Those pixels are kept in :attr:`missed`.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, unlabeled: int | None = None) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise InputError(f"num_classes must be a positive int; got {num_classes!r}")
        self.num_classes = int(num_classes)
        # an ignore_index inside [0, num_classes) is allowed, as mmseg: that class is then never
        # counted in gt (IoU 0 if predicted, NaN otherwise)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.unlabeled = None if unlabeled is None else int(unlabeled)
        if self.unlabeled is not None and 0 <= self.unlabeled < self.num_classes:
            raise InputError(f"unlabeled ({self.unlabeled}) must not be a class id in [0, {self.num_classes})")
        #: ``(C,)`` gt pixels of each class that the prediction left unlabeled
        self.missed = np.zeros(self.num_classes, dtype=np.int64)

    def _labels(self, labels: Any, name: str) -> np.ndarray:
        arr = np.asarray(labels)
        if arr.ndim != 2:
            raise InputError(f"{name} must be an (H, W) label map; got shape {_shape(arr)}")
        if arr.dtype.kind not in "iub":
            raise InputError(f"{name} must hold integer class labels; got dtype {arr.dtype}")
        return arr.astype(np.int64)

    def update(self, pred_labels: np.ndarray, gt_labels: np.ndarray) -> "ConfusionMatrix":
        """Add one image: ``(H, W)`` integer predicted and ground-truth label maps."""
        pred, gt = self._labels(pred_labels, "pred_labels"), self._labels(gt_labels, "gt_labels")
        if pred.shape != gt.shape:
            raise InputError(f"pred_labels and gt_labels must have the same shape; got {_shape(pred)} and {_shape(gt)}")
        keep = np.ones(gt.shape, dtype=bool) if self.ignore_index is None else gt != self.ignore_index
        g, p = gt[keep], pred[keep]
        bad = (g < 0) | (g >= self.num_classes)
        if bad.any():
            values = np.unique(g[bad])[:10].tolist()
            ign = "" if self.ignore_index is None else f" or the ignore_index {self.ignore_index}"
            raise InputError(f"gt_labels must be in [0, {self.num_classes}){ign}; got values {values}")
        n = self.num_classes
        if self.unlabeled is not None:
            skipped = p == self.unlabeled
            self.missed += np.bincount(g[skipped], minlength=n)
            g, p = g[~skipped], p[~skipped]
        bad_pred = (p < 0) | (p >= self.num_classes)
        if bad_pred.any():
            values = np.unique(p[bad_pred])[:10].tolist()
            extra = "" if self.unlabeled is None else f" or unlabeled ({self.unlabeled})"
            raise InputError(f"pred_labels must be in [0, {self.num_classes}){extra}; got values {values}")
        self.matrix += np.bincount(g * n + p, minlength=n * n).reshape(n, n)
        return self

    def reset(self) -> None:
        self.matrix[:] = 0
        self.missed[:] = 0

    def _gt_pixels(self) -> np.ndarray:
        return self.matrix.sum(1) + self.missed

    def _ratio(self, num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1), np.nan)

    def iou_per_class(self) -> np.ndarray:
        """``(C,)`` IoU ``TP / (TP + FP + FN)``; NaN for a class absent from both gt and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self._gt_pixels() - tp
        return self._ratio(tp, union)

    def miou(self) -> float:
        """Mean IoU over the classes with a non-empty union (``nanmean``, mmseg/Cityscapes); NaN if none."""
        ious = self.iou_per_class()
        return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")

    def accuracy_per_class(self) -> np.ndarray:
        """``(C,)`` recall ``TP / gt pixels`` of each class; NaN for a class absent from gt."""
        return self._ratio(np.diag(self.matrix).astype(np.float64), self._gt_pixels())

    def pixel_accuracy(self) -> float:
        """Overall accuracy (mmseg's ``aAcc``): correct pixels / counted pixels; NaN if none."""
        total = self.matrix.sum() + self.missed.sum()
        return float("nan") if total == 0 else float(np.trace(self.matrix) / total)

    def mean_class_accuracy(self) -> float:
        """Mean of :meth:`accuracy_per_class` over classes present in gt (mmseg's ``mAcc``)."""
        acc = self.accuracy_per_class()
        return float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready summary: ``mIoU``, ``aAcc``, ``mAcc`` and ``per_class`` ``{name: {"IoU", "Acc"}}``.

        NaN (undefined) values are written as ``None``.
        """
        names = [str(i) for i in range(self.num_classes)] if class_names is None else [str(c) for c in class_names]
        if len(names) != self.num_classes:
            raise InputError(f"class_names must have {self.num_classes} names; got {len(names)}")

        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        ious, accs = self.iou_per_class(), self.accuracy_per_class()
        return {
            "mIoU": num(self.miou()),
            "aAcc": num(self.pixel_accuracy()),
            "mAcc": num(self.mean_class_accuracy()),
            "per_class": {n: {"IoU": num(i), "Acc": num(a)} for n, i, a in zip(names, ious, accs)},
        }


# -- DAVIS 2017 ----------------------------------------------------------------------------
def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary ``(H, W)`` mask (David Martin's ``seg2bmap``).

    A pixel is a boundary pixel when it differs from its east, south or south-east
    neighbour; the last row only compares east, the last column only south, and the
    bottom-right pixel is never a boundary: the boundary is offset half a pixel towards the
    origin, exactly as in ``davis2017-evaluation``'s ``_seg2bmap`` (no resizing).
    """
    seg = _binary(seg, "seg")
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def db_eval_iou(annotation: np.ndarray, segmentation: np.ndarray,
                void_pixels: np.ndarray | None = None) -> float | np.ndarray:
    """Region similarity ``J`` (Jaccard index) of ``(H, W)`` or ``(T, H, W)`` binary masks.

    As ``davis2017-evaluation``: void pixels are removed from intersection and union, an
    empty union gives ``1``; a stack gives a ``(T,)`` float array, one value per frame.
    """
    seg, gt, void = _pair(segmentation, annotation, void_pixels, (2, 3), ("segmentation", "annotation"), "void_pixels")
    valid = np.ones_like(gt) if void is None else ~void
    inter = np.count_nonzero(seg & gt & valid, axis=(-2, -1))
    union = np.count_nonzero((seg | gt) & valid, axis=(-2, -1))
    j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return float(j) if j.ndim == 0 else j.astype(np.float64)


def _f_measure(fg: np.ndarray, gt: np.ndarray, void: np.ndarray | None, bound_th: float) -> float:
    bound_pix = bound_th if bound_th >= 1 else math.ceil(bound_th * float(np.linalg.norm(fg.shape)))
    if void is not None:
        fg, gt = fg & ~void, gt & ~void
    fg_b, gt_b = seg2bmap(fg), seg2bmap(gt)
    kernel = disk(bound_pix).astype(np.uint8)
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), kernel) > 0
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel) > 0
    n_fg, n_gt = np.count_nonzero(fg_b), np.count_nonzero(gt_b)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.count_nonzero(fg_b & gt_dil) / n_fg
        recall = np.count_nonzero(gt_b & fg_dil) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def db_eval_boundary(annotation: np.ndarray, segmentation: np.ndarray, void_pixels: np.ndarray | None = None,
                     bound_th: float = 0.008) -> float | np.ndarray:
    """Boundary accuracy ``F`` of ``(H, W)`` or ``(T, H, W)`` binary masks (DAVIS ``f_measure``).

    Boundaries come from :func:`seg2bmap` of each mask with void pixels cleared; a boundary
    pixel is matched when it lies within ``bound_pix`` of the other boundary, that is inside
    its dilation by ``skimage.morphology.disk(bound_pix)``, where ``bound_pix = bound_th`` if
    ``bound_th >= 1`` else ``ceil(bound_th * ||(H, W)||)`` (0.008 of the image diagonal:
    8 px at 480x854). Precision = matched predicted / predicted boundary pixels, recall =
    matched gt / gt boundary pixels, F = their harmonic mean (0 when both are 0). Empty
    boundaries as the toolkit: none predicted but some in gt -> P 1, R 0 (F 0); some
    predicted, none in gt -> P 0, R 1 (F 0); both empty -> F 1.
    """
    seg, gt, void = _pair(segmentation, annotation, void_pixels, (2, 3), ("segmentation", "annotation"), "void_pixels")
    if not (isinstance(bound_th, (int, float, np.number)) and bound_th > 0):
        raise InputError(f"bound_th must be a positive number; got {bound_th!r}")
    if gt.ndim == 2:
        return float(_f_measure(seg, gt, void, float(bound_th)))
    return np.array([_f_measure(seg[t], gt[t], None if void is None else void[t], float(bound_th))
                     for t in range(gt.shape[0])], dtype=np.float64)


def db_statistics(per_frame_values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """``(mean, recall, decay)`` of per-frame J or F values, as ``davis2017-evaluation``'s utils.

    * mean = ``nanmean(values)``;
    * recall = ``mean(values > 0.5)`` (a NaN frame counts as a miss, as the toolkit's
      ``nanmean`` over booleans);
    * decay: 4 bins with edges ``ids = round(linspace(1, T, 5) + 1e-10) - 1``, bin ``i`` =
      ``values[ids[i] : ids[i+1] + 1]`` (neighbouring bins share their edge frame); decay =
      ``nanmean(bin 0) - nanmean(bin 3)``.

    The toolkit casts ``ids`` to ``uint8`` (wrong beyond 256 frames); plain ints are used
    here, identical for every DAVIS sequence. An empty sequence gives NaNs.
    """
    x = np.asarray(per_frame_values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(x))
        recall = float(np.mean(x > 0.5))
        ids = (np.round(np.linspace(1, len(x), 5) + 1e-10) - 1).astype(np.int64)
        bins = [x[ids[i]: ids[i + 1] + 1] for i in range(4)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def evaluate_video_object(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None,
                          skip_first_last: bool = True, bound_th: float = 0.008) -> dict[str, Any]:
    """J and F of one object over a sequence of ``(T, H, W)`` binary masks.

    ``skip_first_last`` is the DAVIS 2017 semi-supervised protocol: the first frame (whose
    mask is given to the method) and the last frame are not scored, the toolkit evaluates
    frames ``1 .. T-2`` (``all_gt_masks[:, 1:-1]``); it needs ``T >= 3``. Turn it off for
    the unsupervised / interactive protocols, which score every frame.

    Returns ``J`` and ``F`` ``(T',)`` arrays, ``frames`` (the indices scored), and the floats
    ``J_mean``, ``J_recall``, ``J_decay``, ``F_mean``, ``F_recall``, ``F_decay`` and
    ``JF_mean`` (see :func:`db_statistics`).
    """
    g, p, v = _pair(gt, pred, void, (3,), ("gt", "pred"), "void")
    frames = np.arange(g.shape[0])
    if skip_first_last:
        if g.shape[0] < 3:
            raise InputError(f"skip_first_last needs at least 3 frames (the first and last are not scored); got {g.shape[0]}")
        frames = frames[1:-1]
    g, p = g[frames], p[frames]
    v = None if v is None else v[frames]
    j = np.atleast_1d(db_eval_iou(g, p, v))
    f = np.atleast_1d(db_eval_boundary(g, p, v, bound_th))
    jm, jr, jd = db_statistics(j)
    fm, fr, fd = db_statistics(f)
    return {"J": j, "F": f, "frames": frames, "J_mean": jm, "J_recall": jr, "J_decay": jd,
            "F_mean": fm, "F_recall": fr, "F_decay": fd, "JF_mean": (jm + fm) / 2}


def jf_summary(per_object: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The DAVIS global table: means over all objects (of all sequences) of each statistic.

    ``J&F-Mean = (mean J_mean + mean F_mean) / 2`` as the toolkit's ``evaluation_method.py``.
    Takes the dicts of :func:`evaluate_video_object`; an empty list is an error.
    """
    if len(per_object) == 0:
        raise InputError("jf_summary needs at least one object result; got an empty list")
    keys = ("J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay")
    missing = [k for k in keys if any(k not in o for o in per_object)]
    if missing:
        raise InputError(f"per-object results must have the keys {list(keys)}; missing {missing}")
    m = {k: float(np.mean([o[k] for o in per_object])) for k in keys}
    return {
        "J&F-Mean": (m["J_mean"] + m["F_mean"]) / 2,
        "J-Mean": m["J_mean"], "J-Recall": m["J_recall"], "J-Decay": m["J_decay"],
        "F-Mean": m["F_mean"], "F-Recall": m["F_recall"], "F-Decay": m["F_decay"],
    }

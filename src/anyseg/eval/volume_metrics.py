"""Volume (and 2D) segmentation metrics with the voxel spacing: Dice, IoU, NSD, HD95, ASSD.

Every function takes a binary prediction and ground truth of the same 2D or 3D shape and
``spacing``: the voxel size in mm **per array axis**, in the arrays' own axis order (MONAI's
convention). A :class:`~anyseg.volume.base.Volume` stores ``(si, sj, sk)`` for an array indexed
``[k, j, i]``, so its masks take ``spacing=volume.spacing[::-1]`` (:func:`array_spacing`).

What each follows (MONAI 1.6, ``monai.metrics``; the tests check equality to 1e-6 relative):

* **Dice / IoU**: ``compute_dice`` / ``compute_iou``. An empty ground truth gives NaN with
  ``ignore_empty=True`` (MONAI's default); with ``ignore_empty=False`` it gives 1 when the
  prediction is empty too and 0 otherwise.
* **Surfaces** (``get_mask_edges`` with ``spacing=None``, i.e. ``use_subvoxels=False``): the
  boundary of a mask is its voxels that a binary erosion with the cross-shaped structuring
  element (4-connected in 2D, 6-connected in 3D; scipy's default) removes, outside the array
  counting as background (MONAI crops with a one-voxel zero margin).
* **Distances** (``get_surface_distance``, Euclidean): from each boundary voxel of one mask to
  the nearest boundary voxel of the other, in mm (voxel centres scaled by ``spacing``), found
  with a KD-tree over the boundary voxels, as MONAI does on the CPU.
* **NSD** (normalised surface Dice, Nikolov et al. 2021; ``compute_surface_dice`` with
  ``use_subvoxels=False``): the fraction of both boundaries' voxels within ``tolerance`` mm of
  the other boundary. Voxels are counted, not weighted by surfel area as DeepMind's
  ``surface-distance`` (and MedSAM's evaluation script) do, so the numbers differ slightly from
  those. The comparison ``d <= tolerance`` is made in float32, as MONAI's float32 distances are.
* **HD95**: ``compute_hausdorff_distance(percentile=95)``: the larger of the two directed 95th
  percentiles (linear interpolation, ``torch.quantile``'s default).
* **ASSD**: ``compute_average_surface_distance(symmetric=True)``: the mean of both directions'
  distances pooled together.

Empty masks (MONAI's outcomes): both empty: NSD, HD95 and ASSD are NaN; exactly one empty: NSD
is 0, ASSD and the Hausdorff distance ``inf``. Summaries (:func:`finite_mean`) average the finite
values and report how many were not finite, never an average of infinities.

Where this differs: distances are float64 (MONAI returns float32; the results agree to about
3e-7 relative, so the tests compare with ``rtol=atol=1e-6``). With exactly one mask empty MONAI
fills both directions with ``inf`` and its ``torch.quantile`` of infinities gives HD95 = NaN;
here the empty mask's direction is simply empty and HD95 is ``inf``, like MONAI's maximum
(``percentile=None``) and its ASSD: a missed object is infinitely far, not undefined. Either way
the value is not finite and is counted, not averaged. Bounded work:
everything runs on the bounding box of ``pred | gt`` with a one-voxel margin (MONAI's crop),
and the KD-tree holds only boundary voxels. No padding by the tolerance is needed: both
boundaries lie inside that box and the distance between two voxels does not depend on the crop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from anyseg.errors import InputError

__all__ = ["ObjectScores", "array_spacing", "check_spacing", "check_tolerance", "crop_to_union", "mask_edges",
           "surface_distances", "dice", "iou", "surface_dice", "hausdorff_distance", "average_surface_distance",
           "score_object", "finite_mean"]


def array_spacing(volume: Any) -> tuple[float, ...]:
    """The spacing per array axis of a :class:`~anyseg.volume.base.Volume`'s ``[k, j, i]`` array: ``(sk, sj, si)``."""
    return tuple(float(v) for v in reversed(volume.spacing))


def _masks(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred), np.asarray(gt)
    if p.shape != g.shape:
        raise InputError(f"the prediction has shape {p.shape} but the ground truth {g.shape}")
    if p.ndim not in (2, 3) or p.size == 0:
        raise InputError(f"masks must be 2D or 3D and not empty arrays; got shape {p.shape}")
    return p.astype(bool, copy=False), g.astype(bool, copy=False)


def check_spacing(spacing: Sequence[float] | float | None, ndim: int) -> np.ndarray:
    """``spacing`` as ``ndim`` positive finite floats (a number: isotropic; ``None``: 1 mm)."""
    if spacing is None:
        return np.ones(ndim)
    s = np.atleast_1d(np.asarray(spacing, dtype=np.float64)).ravel()
    if s.size == 1:
        s = np.repeat(s, ndim)
    if s.size != ndim or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(f"spacing must be {ndim} positive numbers (mm per array axis); got {spacing}")
    return s


def check_tolerance(tolerance: float) -> float:
    """The NSD tolerance in mm: finite and >= 0 (MONAI's rule for ``class_thresholds``)."""
    t = float(tolerance)
    if not np.isfinite(t) or t < 0:
        raise InputError(f"the NSD tolerance must be a finite number of mm >= 0; got {tolerance}")
    return t


def crop_to_union(pred: np.ndarray, gt: np.ndarray, margin: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``gt`` cut to the bounding box of ``pred | gt`` grown by ``margin`` voxels
    (clipped to the array; outside it counts as background anyway). Both empty: returned as they are."""
    union = pred | gt
    if not union.any():
        return pred, gt
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(0, int(hits[0]) - margin), min(union.shape[axis], int(hits[-1]) + 1 + margin)))
    return pred[tuple(box)], gt[tuple(box)]


def mask_edges(mask: np.ndarray) -> np.ndarray:
    """The boundary voxels of ``mask``: those a cross-shaped binary erosion removes (outside = background)."""
    from scipy.ndimage import binary_erosion

    mask = np.asarray(mask, dtype=bool)
    return mask & ~binary_erosion(mask, border_value=0)


def _directed(from_edges: np.ndarray, to_edges: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance in mm from each voxel of ``from_edges`` to the nearest voxel of ``to_edges`` (``inf`` if none)."""
    from scipy.spatial import cKDTree

    src = np.argwhere(from_edges).astype(np.float64) * spacing
    if len(src) == 0:
        return np.zeros(0)
    dst = np.argwhere(to_edges).astype(np.float64) * spacing
    if len(dst) == 0:
        return np.full(len(src), np.inf)
    return cKDTree(dst, leafsize=32).query(src, k=1)[0]


def surface_distances(pred: Any, gt: Any, spacing: Sequence[float] | float | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(pred -> gt, gt -> pred)``: each boundary voxel's distance in mm to the other mask's boundary.

    An empty mask has no boundary voxels (an empty array); a boundary facing an empty mask has
    ``inf`` distances.
    """
    p, g = _masks(pred, gt)
    s = check_spacing(spacing, p.ndim)
    p, g = crop_to_union(p, g)
    ep, eg = mask_edges(p), mask_edges(g)
    return _directed(ep, eg, s), _directed(eg, ep, s)


def _overlap(pred: Any, gt: Any) -> tuple[int, int, int]:
    p, g = _masks(pred, gt)
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p)), int(np.count_nonzero(g))


def _dice_from(inter: int, n_pred: int, n_gt: int, ignore_empty: bool) -> float:
    if n_gt == 0:
        return float("nan") if ignore_empty else float(n_pred == 0)
    return 2.0 * inter / (n_pred + n_gt)


def _iou_from(inter: int, n_pred: int, n_gt: int, ignore_empty: bool) -> float:
    if n_gt == 0:
        return float("nan") if ignore_empty else float(n_pred == 0)
    return inter / (n_pred + n_gt - inter)


def dice(pred: Any, gt: Any, ignore_empty: bool = True) -> float:
    """Dice ``2|P & G| / (|P| + |G|)``; an empty ground truth as MONAI's ``ignore_empty`` (module docstring)."""
    return _dice_from(*_overlap(pred, gt), ignore_empty)


def iou(pred: Any, gt: Any, ignore_empty: bool = True) -> float:
    """IoU ``|P & G| / |P | G|``; an empty ground truth as MONAI's ``ignore_empty`` (module docstring)."""
    return _iou_from(*_overlap(pred, gt), ignore_empty)


def _nsd_from(d_pg: np.ndarray, d_gp: np.ndarray, tolerance: float) -> float:
    total = len(d_pg) + len(d_gp)
    if total == 0:
        return float("nan")
    tol = np.float32(tolerance)
    good = np.count_nonzero(d_pg.astype(np.float32) <= tol) + np.count_nonzero(d_gp.astype(np.float32) <= tol)
    return float(good) / total


def _hd_from(d_pg: np.ndarray, d_gp: np.ndarray, percentile: float | None) -> float:
    if len(d_pg) == 0 and len(d_gp) == 0:
        return float("nan")
    if len(d_pg) == 0 or len(d_gp) == 0:
        return float("inf")
    if percentile is None:
        return float(max(d_pg.max(), d_gp.max()))
    return float(max(np.percentile(d_pg, percentile), np.percentile(d_gp, percentile)))


def _assd_from(d_pg: np.ndarray, d_gp: np.ndarray) -> float:
    if len(d_pg) == 0 and len(d_gp) == 0:
        return float("nan")
    if len(d_pg) == 0 or len(d_gp) == 0:
        return float("inf")
    return float((d_pg.sum() + d_gp.sum()) / (len(d_pg) + len(d_gp)))


def surface_dice(pred: Any, gt: Any, tolerance: float, spacing: Sequence[float] | float | None = None) -> float:
    """Normalised surface Dice at ``tolerance`` mm (MONAI ``compute_surface_dice``, ``use_subvoxels=False``)."""
    return _nsd_from(*surface_distances(pred, gt, spacing), check_tolerance(tolerance))


def hausdorff_distance(pred: Any, gt: Any, spacing: Sequence[float] | float | None = None,
                       percentile: float | None = 95.0) -> float:
    """The symmetric Hausdorff distance in mm at ``percentile`` (95: HD95; ``None``: the maximum)."""
    if percentile is not None and not 0 <= percentile <= 100:
        raise InputError(f"percentile must be in 0..100; got {percentile}")
    return _hd_from(*surface_distances(pred, gt, spacing), percentile)


def average_surface_distance(pred: Any, gt: Any, spacing: Sequence[float] | float | None = None) -> float:
    """ASSD in mm: the mean of both directions' boundary distances pooled (MONAI, ``symmetric=True``)."""
    return _assd_from(*surface_distances(pred, gt, spacing))


@dataclass(frozen=True)
class ObjectScores:
    """One object's scores (module docstring); NaN / ``inf`` where MONAI gives them."""

    dice: float
    iou: float
    nsd: float
    hd95: float
    assd: float
    pred_voxels: int
    gt_voxels: int

    def to_record(self, digits: int = 6) -> dict[str, Any]:
        """JSON-safe: floats rounded, a non-finite value as ``None`` (``pred_voxels`` / ``gt_voxels`` say why)."""
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            out[k] = (round(float(v), digits) if np.isfinite(v) else None) if isinstance(v, float) else v
        return out


def score_object(pred: Any, gt: Any, spacing: Sequence[float] | float | None = None, tolerance: float = 2.0,
                 ignore: Any = None, ignore_empty: bool = False) -> ObjectScores:
    """Every metric of one object from one pass over its boundaries.

    ``ignore`` (optional, same shape) marks voxels left out of both masks, as MONAI's
    ``ignore_index`` masking does. ``ignore_empty=False`` (the default here) scores a false
    positive on an empty ground truth as Dice / IoU 0 instead of NaN.
    """
    p, g = _masks(pred, gt)
    tol = check_tolerance(tolerance)
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        p, g = p & keep, g & keep
    inter, n_pred, n_gt = int(np.count_nonzero(p & g)), int(np.count_nonzero(p)), int(np.count_nonzero(g))
    d_pg, d_gp = surface_distances(p, g, spacing)
    return ObjectScores(dice=_dice_from(inter, n_pred, n_gt, ignore_empty),
                        iou=_iou_from(inter, n_pred, n_gt, ignore_empty), nsd=_nsd_from(d_pg, d_gp, tol),
                        hd95=_hd_from(d_pg, d_gp, 95.0), assd=_assd_from(d_pg, d_gp),
                        pred_voxels=n_pred, gt_voxels=n_gt)


def finite_mean(values: Iterable[Any]) -> tuple[float | None, int]:
    """``(mean of the finite values or None, how many were not finite)``; ``None`` counts as not finite."""
    vals = [float(v) if v is not None else float("nan") for v in values]
    finite = [v for v in vals if np.isfinite(v)]
    return (float(np.mean(finite)) if finite else None), len(vals) - len(finite)

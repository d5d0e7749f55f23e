"""The settings of segment-everything: :class:`EverythingParams` and the bounds of the work it may ask for.

Split from :mod:`anyseg.tasks.everything` (which re-exports every name here): the parameter
table, the per-family defaults and the intended differences from the originals are documented
there. This module only validates: each field is checked when the frozen dataclass is built,
and a value outside its bound is a one-line :class:`~anyseg.errors.InputError` naming the
bound, so the CLI, the service and the Python API refuse the same values with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from anyseg.errors import InputError
from anyseg.masks.amg import build_all_layer_point_grids
from anyseg.models.families import EVERYTHING, families_with, find_family

__all__ = ["EverythingParams", "GRANULARITIES", "GRANULARITY_INDEX", "MAX_POINTS_PER_SIDE", "MAX_POINTS_PER_BATCH",
           "MAX_CROP_LAYERS", "MAX_DOWNSCALE_FACTOR"]

#: the bounds of the parameters that scale the work (the CLI and the service check these)
MAX_POINTS_PER_SIDE = 128
MAX_POINTS_PER_BATCH = 1024
MAX_CROP_LAYERS = 2
MAX_DOWNSCALE_FACTOR = 64

GRANULARITIES = ("whole", "part", "subpart", "all")
#: granularity -> position of the multimask output (SAM's decoder order: small to large)
GRANULARITY_INDEX = {"subpart": 0, "part": 1, "whole": 2}


def _fail(name: str, expected: str, value: Any) -> InputError:
    return InputError(f"EverythingParams.{name} must be {expected}; got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_int(name: str, v: Any, lo: int, hi: int | None) -> None:
    """An integer in ``lo..hi`` (``hi=None``: no upper bound), or a one-line error naming the bound."""
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        raise _fail(name, f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}", v)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) and np.isfinite(v)


@dataclass(frozen=True)
class EverythingParams:
    """Settings of :func:`generate` (see the module docstring for each one's origin and defaults).

    Attributes:
        points_per_side: grid points per side at layer 0 (``None``: give ``point_grids``).
        point_grids: explicit grids, one ``(K, 2)`` array of XY in ``[0, 1]`` per crop layer
            (``crop_n_layers + 1`` of them); exclusive with ``points_per_side``.
        points_per_batch: points per batch: decoded, filtered and upscaled together (on the
            CPU decoded in calls of 4 to 7 points; see the module docstring).
        pred_iou_thresh: keep masks whose predicted IoU is ``>`` this (0 disables).
        stability_score_thresh: keep masks whose stability score is ``>=`` this (0 disables).
        stability_score_offset: the stability score compares thresholds ``t +- offset``.
        mask_threshold: logit threshold ``t`` that binarises masks.
        box_nms_thresh: box IoU above which a lower-IoU mask of the same crop is dropped.
        crop_n_layers: crop layers beyond the whole image.
        crop_nms_thresh: box IoU above which a mask from a larger crop is dropped.
        crop_overlap_ratio: overlap of layer-1 crops as a fraction of the short side.
        crop_n_points_downscale_factor: layer ``i`` uses ``points_per_side / f**i`` points per side.
        min_mask_region_area: fill holes and remove islands smaller than this (pixels; 0 disables).
        use_m2m: refine every candidate once with its own low-res logits as the mask prompt.
        granularity: which multimask outputs to keep: ``"subpart"`` (decoder output 0),
            ``"part"`` (1), ``"whole"`` (2) or ``"all"`` (the originals' behaviour).
    """

    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    mask_threshold: float = 0.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    use_m2m: bool = False
    granularity: str = "all"
    point_grids: tuple | None = None

    @classmethod
    def for_family(cls, family: str, **overrides: Any) -> "EverythingParams":
        """The reference defaults for ``family``, with overrides: SAM's, updated by the family record's
        ``everything_defaults`` (SAM 2's ``pred_iou_thresh`` 0.8 for ``sam2``/``edgetam``/``sam3_tracker``)."""
        record = find_family(family)
        if record is None or not record.has(EVERYTHING):
            known = ", ".join(f.name for f in families_with(EVERYTHING))
            raise InputError(f"unknown model family {family!r}: expected one of {known}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise InputError(f"unknown EverythingParams fields {unknown}: expected some of {sorted(names)}")
        return cls(**{**record.everything_defaults, **overrides})

    def __post_init__(self) -> None:
        if self.points_per_side is not None:
            _check_int("points_per_side", self.points_per_side, 1, MAX_POINTS_PER_SIDE)
        if (self.points_per_side is None) == (self.point_grids is None):
            raise InputError("EverythingParams needs exactly one of points_per_side and point_grids; "
                             f"got points_per_side={self.points_per_side!r} and "
                             f"point_grids={'None' if self.point_grids is None else 'a list'}")
        _check_int("points_per_batch", self.points_per_batch, 1, MAX_POINTS_PER_BATCH)
        _check_int("crop_n_points_downscale_factor", self.crop_n_points_downscale_factor, 1, MAX_DOWNSCALE_FACTOR)
        _check_int("crop_n_layers", self.crop_n_layers, 0, MAX_CROP_LAYERS)
        _check_int("min_mask_region_area", self.min_mask_region_area, 0, None)
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
            v = getattr(self, name)
            if not _is_num(v) or not 0.0 <= v <= 1.0:
                raise _fail(name, "a number in [0, 1]", v)
        if not _is_num(self.stability_score_offset) or self.stability_score_offset < 0:
            raise _fail("stability_score_offset", "a number >= 0", self.stability_score_offset)
        if not _is_num(self.mask_threshold):
            raise _fail("mask_threshold", "a finite number", self.mask_threshold)
        if not _is_num(self.crop_overlap_ratio) or not 0.0 <= self.crop_overlap_ratio < 1.0:
            raise _fail("crop_overlap_ratio", "a number in [0, 1)", self.crop_overlap_ratio)
        if not isinstance(self.use_m2m, (bool, np.bool_)):
            raise _fail("use_m2m", "True or False", self.use_m2m)
        if self.granularity not in GRANULARITIES:
            raise _fail("granularity", f"one of {', '.join(GRANULARITIES)}", self.granularity)
        if self.points_per_side is not None:
            last = int(self.points_per_side / self.crop_n_points_downscale_factor ** self.crop_n_layers)
            if last < 1:
                raise InputError(
                    f"EverythingParams: crop layer {self.crop_n_layers} would get no points: points_per_side "
                    f"{self.points_per_side} / crop_n_points_downscale_factor {self.crop_n_points_downscale_factor}"
                    f"**{self.crop_n_layers} < 1; expected at least 1 point per side in every layer"
                )
        else:
            object.__setattr__(self, "point_grids", self._check_grids(self.point_grids))

    def _check_grids(self, grids: Any) -> tuple:
        if not isinstance(grids, (list, tuple)) or len(grids) != self.crop_n_layers + 1:
            n = len(grids) if isinstance(grids, (list, tuple)) else type(grids).__name__
            raise _fail("point_grids", f"a list of {self.crop_n_layers + 1} grids (one per crop layer)", n)
        out = []
        for i, g in enumerate(grids):
            n = len(g) if hasattr(g, "__len__") else 0
            if n > MAX_POINTS_PER_SIDE ** 2:
                raise InputError(f"EverythingParams.point_grids[{i}] has {n} points; expected at most "
                                 f"{MAX_POINTS_PER_SIDE ** 2} (MAX_POINTS_PER_SIDE**2) per crop layer")
            arr = np.asarray(g, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0 or not np.isfinite(arr).all() \
                    or arr.min() < 0 or arr.max() > 1:
                raise InputError(f"EverythingParams.point_grids[{i}] must be (K, 2) XY in [0, 1] with K >= 1; "
                                 f"got shape {'x'.join(map(str, arr.shape))}")
            out.append(tuple(map(tuple, arr.tolist())))
        return tuple(out)

    def grids(self) -> list[np.ndarray]:
        """The normalised point grid of every crop layer."""
        if self.point_grids is not None:
            return [np.asarray(g, dtype=np.float64) for g in self.point_grids]
        return build_all_layer_point_grids(self.points_per_side, self.crop_n_layers, self.crop_n_points_downscale_factor)

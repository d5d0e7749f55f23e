"""Automatic mask generation ("segment everything") with SAM-family models.

:func:`generate` has the semantics of segment-anything's ``SamAutomaticMaskGenerator`` and of
SAM 2's ``SAM2AutomaticMaskGenerator``: prompt the model with a grid of single positive clicks
(on the whole image and, optionally, on layers of overlapping crops), keep each click's
multimask candidates that pass the quality filters, and remove duplicates with box NMS. The
pure helpers (grids, crop boxes, stability, edge filter, small-region cleanup) live in
:mod:`anyseg.masks.amg`. A ``classical`` predictor is dispatched to
:func:`anyseg.tasks.everything_classical.generate_classical`.

Per crop (layer 0 = the whole image; layer ``i``: ``2**i x 2**i`` crops overlapping by
``int(crop_overlap_ratio * min(H, W) * 2 / 2**i)`` pixels): embed the crop once; decode its
grid points in batches of ``points_per_batch`` with 3 masks per point; keep the granularity's
candidates; optionally refine each with its own logits (``use_m2m``); keep predicted IoU
``> pred_iou_thresh``; upscale the logits to the crop; keep stability ``>=
stability_score_thresh``; threshold at ``mask_threshold``; drop masks whose box lies within 20
px of a crop edge that is not an image edge; RLE-encode; box NMS (``box_nms_thresh``, scores =
predicted IoU). Then NMS across crops preferring smaller crops (``crop_nms_thresh``, score =
``1 / crop area``) and, with ``min_mask_region_area > 0``, hole filling + island removal then
NMS preferring unchanged masks (``max(box_nms_thresh, crop_nms_thresh)``). A filter whose
threshold is 0 is skipped, as in the originals.

Parameters (``EverythingParams``; defaults per family come from :meth:`EverythingParams.for_family`):

=============================  ========  ========  ===========================================
parameter                      SAM       SAM 2     origin / meaning
=============================  ========  ========  ===========================================
points_per_side                32        32        both; grid is ``n x n`` per layer-0 crop
point_grids                    None      None      both; explicit normalised grids per layer
points_per_batch               64        64        both; points per batch (CPU: see below)
pred_iou_thresh                0.88      0.8       both; keep predicted IoU ``>`` this
stability_score_thresh         0.95      0.95      both; keep stability ``>=`` this
stability_score_offset         1.0       1.0       both; logit offset of the stability score
mask_threshold                 0.0       0.0       SAM 2 (SAM: the model's fixed 0.0)
box_nms_thresh                 0.7       0.7       both; NMS within a crop
crop_n_layers                  0         0         both
crop_nms_thresh                0.7       0.7       both; NMS across crops
crop_overlap_ratio             512/1500  512/1500  both
crop_n_points_downscale_factor 1         1         both; layer ``i`` has ``n / f**i`` per side
min_mask_region_area           0         0         SAM's postprocess_small_regions (see below)
use_m2m                        False     False     SAM 2; allowed for every family here
granularity                    "all"     "all"     anyseg; which multimask outputs to keep
=============================  ========  ========  ===========================================

Bounds (the parameters that scale the work; the CLI and the service validate against the same
constants, here): ``points_per_side`` 1..:data:`MAX_POINTS_PER_SIDE` (128: 16,384 clicks per
crop), explicit ``point_grids`` at most ``MAX_POINTS_PER_SIDE**2`` points per layer,
``points_per_batch`` 1..:data:`MAX_POINTS_PER_BATCH` (1024), ``crop_n_layers``
0..:data:`MAX_CROP_LAYERS` (2: at most 21 crops, as the service), ``crop_n_points_downscale_factor``
1..:data:`MAX_DOWNSCALE_FACTOR`, and ``min_mask_region_area`` at most the image's pixel count
(checked by :func:`generate`). A value outside its bound is a one-line :class:`InputError`
that names the bound. :func:`generate` calls :func:`anyseg.cancel.check` before every crop and
every batch, so a cancelled job stops within one batch.

SAM 2 defaults apply where the family record says so (``sam2``, ``edgetam``, ``sam3_tracker``);
SAM's elsewhere. ``granularity`` picks decoder outputs by position: ``"subpart"`` = output 0,
``"part"`` = 1, ``"whole"`` = 2 (the order SAM's three multimask tokens learned: small to large;
a tendency of the trained models, not a guarantee), ``"all"`` = all three, as the originals.

Intended differences from the originals:

* Memory: the originals upscale all ``3 * points_per_batch`` logits of a batch to the crop size
  before filtering (``192 x H x W`` float32: 9 GB for a 12-megapixel image). Here the
  predicted-IoU filter runs on the low-resolution outputs (the IoU does not depend on the
  upscaling, so the result is the same) and only survivors are upscaled, a few at a time
  (at most 8 and ~256 MiB of float32 per chunk), then thresholded, filtered, RLE-encoded and
  freed. Peak working memory is therefore about: the model and one crop's embedding, the
  decoder's batch (``points_per_batch`` copies of the image embedding, as the originals: ~270
  MB for SAM with 64 points), one chunk (~256 MiB float32 plus ~1 byte/pixel per mask of bool
  temporaries), one ``H x W`` byte buffer for RLE encoding, and the RLEs. The returned ``Masks``
  holds ``N x H x W`` bools (e.g. 100 masks of a 4000 x 3000 image = 1.2 GB); decode it per
  mask from RLE (:mod:`anyseg.masks.rle`) if that is too much.
* ``min_mask_region_area``: SAM 2's generator passes it to its image predictor as
  ``max_hole_area``/``max_sprinkle_area`` (applied to the low-resolution logits, with areas in
  low-resolution pixels, and only when its CUDA extension is built) and never calls
  ``postprocess_small_regions``. anyseg applies segment-anything's ``postprocess_small_regions``
  (full resolution, areas in image pixels) for every family.
* SAM-HQ: sam-hq's own generator gets one mask per point (its decoder, in multimask mode,
  returns the best-scoring SAM mask plus the HQ mask); transformers' SAM-HQ returns the three
  candidates sorted by score, and anyseg keeps the first, which is that same mask. Because
  the decoder order is lost, SAM-HQ accepts only ``granularity="all"``.
* ``use_m2m`` works with every family (the mask input is clamped to +-32 as SAM 2 does); SAM 2's
  ``multimask_output=False`` mode is not exposed (``granularity`` selects outputs instead).
* Speed: on the CPU each batch of ``points_per_batch`` clicks is decoded in calls of 4 to 7
  points (the decoder copies the image embedding per click, so large calls are memory-bound;
  this makes the decoder ~1.4x faster on CPU). The clicks are decoded independently either
  way; float32 results equal those of one call per batch, or differ in the last bits (see
  ``_decode``). ``points_per_batch`` remains the unit of filtering and upscaling.
* The stability score of a mask with nothing above ``mask_threshold - offset`` is 0, not NaN.
* NMS ties are broken by index (stable sort); boxes are compared in the originals' inclusive
  convention, but the returned ``Masks.boxes`` use anyseg's pixel edges (x1 = last column + 1),
  ``data["crop_box"]`` is XYXY (the originals report XYWH), and the masks are sorted by area
  (or score) instead of being left in NMS order.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from anyseg import cancel
from anyseg.errors import InputError
from anyseg.masks.amg import (
    boxes_inclusive, build_all_layer_point_grids, generate_crop_boxes, is_box_near_crop_edge,
    postprocess_small_regions, stability_score, uncrop_boxes, uncrop_points,
)
from anyseg.masks.boxes import box_area, nms
from anyseg.models.base import GridDecoder, Predictor, check_image
from anyseg.models.families import EVERYTHING, GRID, families_with, find_family
from anyseg.types import Masks

__all__ = ["EverythingParams", "generate", "write_everything", "record_params", "GRANULARITIES",
           "GRANULARITY_INDEX", "SORT_KEYS", "MAX_POINTS_PER_SIDE", "MAX_POINTS_PER_BATCH",
           "MAX_CROP_LAYERS", "MAX_DOWNSCALE_FACTOR"]

#: the bounds of the parameters that scale the work (the CLI and the service check these)
MAX_POINTS_PER_SIDE = 128
MAX_POINTS_PER_BATCH = 1024
MAX_CROP_LAYERS = 2
MAX_DOWNSCALE_FACTOR = 64

GRANULARITIES = ("whole", "part", "subpart", "all")
#: granularity -> position of the multimask output (SAM's decoder order: small to large)
GRANULARITY_INDEX = {"subpart": 0, "part": 1, "whole": 2}
SORT_KEYS = ("area", "score")
#: float32 bytes of upscaled logits per chunk, and the most masks per chunk
_CHUNK_BYTES = 256 << 20
_MAX_CHUNK = 8
#: SAM 2 clamps the low-res logits it returns (and feeds back with ``use_m2m``) to +-32
_M2M_CLAMP = 32.0
#: most points per decoder call on the CPU (see the module docstring: same results, less time)
_CPU_DECODE_POINTS = 4


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


class _Found:
    """Masks kept so far (columns), RLEs in the full-image frame."""

    def __init__(self) -> None:
        self.rles: list[dict] = []
        self.cols: dict[str, list[np.ndarray]] = {k: [] for k in ("boxes", "iou", "stability", "points", "index", "crop")}

    def add(self, rles: list[dict], **cols: np.ndarray) -> None:
        self.rles.extend(rles)
        for k, v in cols.items():
            self.cols[k].append(v)

    def arrays(self) -> dict[str, np.ndarray]:
        empty = {"boxes": (0, 4), "points": (0, 2), "crop": (0, 4)}
        return {k: np.concatenate(v) if v else np.zeros(empty.get(k, (0,))) for k, v in self.cols.items()}


def _select(rles: list[dict], cols: dict[str, np.ndarray], keep: np.ndarray) -> tuple[list[dict], dict[str, np.ndarray]]:
    return [rles[i] for i in keep], {k: v[keep] for k, v in cols.items()}


def generate(predictor: Predictor, image: np.ndarray, params: EverythingParams | None = None,
             progress: bool = False, sort_by: str = "area") -> Masks:
    """Segment everything in ``image`` with a SAM-family ``predictor`` (see the module docstring).

    Args:
        predictor: a loaded SAM-family model (``anyseg.models.load_model``), or ``classical``
            (dispatched to :func:`anyseg.tasks.everything_classical.generate_classical` with
            ``min_mask_region_area`` and ``granularity``).
        image: ``(H, W, 3)`` RGB.
        params: settings; ``None`` takes the reference defaults of the predictor's family
            (:meth:`EverythingParams.for_family`).
        progress: show a tqdm bar over the decoder batches (stderr).
        sort_by: ``"area"`` (descending) or ``"score"`` (predicted IoU, descending); stable.

    Returns:
        :class:`Masks` over the full image: ``scores`` = predicted IoU; ``data`` columns
        ``"stability_score"`` ``(N,)``, ``"point_coords"`` ``(N, 2)`` (the click, image pixels),
        ``"crop_box"`` ``(N, 4)`` XYXY and ``"multimask_index"`` ``(N,)`` (decoder output 0-2).
    """
    if sort_by not in SORT_KEYS:
        raise InputError(f"sort_by must be one of {', '.join(SORT_KEYS)}; got {sort_by!r}")
    family = getattr(predictor, "family", "")
    record = find_family(family)  # None: a family the registry does not know (then its methods decide)
    capable = record is not None and record.has(EVERYTHING)
    if params is not None and not isinstance(params, EverythingParams):
        raise InputError(f"params must be an EverythingParams; got {type(params).__name__}")
    params = params or EverythingParams.for_family(family if capable else "sam")
    image = check_image(image)
    h, w = image.shape[:2]
    if params.min_mask_region_area > h * w:
        raise InputError(f"EverythingParams.min_mask_region_area must be at most the image's {w}x{h} = {h * w} pixels; "
                         f"got {params.min_mask_region_area}")
    if capable and record.baseline and not record.has(GRID):  # a no-weights engine: its own regions
        from anyseg.tasks.everything_classical import generate_classical

        return generate_classical(image, min_area=params.min_mask_region_area, granularity=params.granularity,
                                  progress=progress, sort_by=sort_by)
    if not (record.has(GRID) if record is not None else isinstance(predictor, GridDecoder)):
        raise InputError(f"segment everything needs a SAM-family model or 'classical'; got {getattr(predictor, 'name', family)!r}")
    if _sorted_multimask(predictor) and params.granularity != "all":
        raise InputError(f"granularity={params.granularity!r} is not available for SAM-HQ (its decoder returns one "
                         "mask per point, not the three ordered outputs); expected 'all'")
    crop_boxes, layers = generate_crop_boxes((h, w), params.crop_n_layers, params.crop_overlap_ratio)
    grids = params.grids()
    n_batches = sum(-(-len(grids[layer]) // params.points_per_batch) for layer in layers)
    from tqdm import tqdm

    found = _Found()
    buf = np.zeros((h, w), dtype=np.uint8, order="F")  # one full-frame mask, reused for RLE encoding
    with tqdm(total=n_batches, desc="segment everything", disable=not progress, leave=False, dynamic_ncols=True) as bar:
        for crop_box, layer in zip(crop_boxes, layers):
            cancel.check()
            _process_crop(predictor, image, crop_box, grids[layer], params, found, buf, bar)
    rles, cols = found.rles, found.arrays()
    if len(crop_boxes) > 1 and rles:  # duplicates across crops: prefer masks from smaller crops
        keep = nms(cols["boxes"].astype(np.float32), 1.0 / box_area(cols["crop"].astype(np.float32)), params.crop_nms_thresh)
        rles, cols = _select(rles, cols, keep)
    if params.min_mask_region_area > 0 and rles:
        keep, rles, boxes = postprocess_small_regions(
            rles, params.min_mask_region_area, max(params.box_nms_thresh, params.crop_nms_thresh))
        cols["boxes"] = boxes
        rles, cols = _select(rles, cols, keep)
    return _to_masks(rles, cols, (h, w), sort_by)


def _sorted_multimask(predictor: Any) -> bool:
    """The family's multimask candidates come sorted by score, not in the decoder's order (SAM-HQ)."""
    return "sorted_multimask" in getattr(find_family(getattr(predictor, "family", "")), "traits", ())


def _process_crop(predictor: Any, image: np.ndarray, crop_box: list[int], grid: np.ndarray, p: EverythingParams,
                  found: _Found, buf: np.ndarray, bar: Any) -> None:
    """Embed one crop, decode its grid, filter, NMS within the crop, and add the survivors."""
    x0, y0, x1, y1 = crop_box
    crop = image[y0:y1, x0:x1]
    emb = predictor.embed(crop)
    geo = predictor.geometry(crop.shape[:2])
    points = grid * np.array([[x1 - x0, y1 - y0]], dtype=np.float64)  # crop pixels
    part = _Found()
    try:
        for s in range(0, len(points), p.points_per_batch):
            cancel.check()  # one batch per step: a cancelled job stops here
            _process_batch(predictor, emb, geo, points[s:s + p.points_per_batch], p, crop_box, part, buf)
            bar.update(1)
    finally:
        buf[y0:y1, x0:x1] = 0
    del emb
    rles, cols = part.rles, part.arrays()
    if not rles:
        return
    cols.pop("crop")  # set below, once the crop's own NMS is done
    keep = nms(cols["boxes"].astype(np.float32), cols["iou"], p.box_nms_thresh)
    rles, cols = _select(rles, cols, keep)
    cols["boxes"] = uncrop_boxes(cols["boxes"], crop_box)
    cols["points"] = uncrop_points(cols["points"], crop_box)
    cols["crop"] = np.tile(np.asarray(crop_box, dtype=np.float32), (len(rles), 1))
    found.add(rles, **cols)


def _process_batch(predictor: Any, emb: Any, geo: Any, points: np.ndarray, p: EverythingParams,
                   crop_box: Sequence[int], part: _Found, buf: np.ndarray) -> None:
    """One batch of clicks: decode, filter by IoU (low-res), then upscale, filter and encode in chunks."""
    import torch

    sel = list(range(3)) if p.granularity == "all" else [GRANULARITY_INDEX[p.granularity]]
    if _sorted_multimask(predictor):
        sel = [0]  # transformers sorts SAM-HQ's candidates by score; sam-hq's generator keeps the best one
    low, iou = _decode(predictor, emb, points)  # (B, 3, h, w), (B, 3)
    low, iou = low[:, sel].flatten(0, 1), iou[:, sel].flatten(0, 1)
    pts = np.repeat(points, len(sel), axis=0)
    index = np.tile(np.asarray(sel, dtype=np.int64), len(points))
    if p.use_m2m:  # SAM 2's refine_with_m2m: each candidate re-decoded with its own logits, one mask out
        lows, ious = [], []
        for s in range(0, len(low), p.points_per_batch):
            chunk_in = low[s:s + p.points_per_batch].clamp(-_M2M_CLAMP, _M2M_CLAMP)
            l2, i2 = predictor.decode_points(emb, pts[s:s + p.points_per_batch], multimask=False, mask_inputs=chunk_in)
            lows.append(l2[:, 0])
            ious.append(i2[:, 0])
        low, iou = torch.cat(lows), torch.cat(ious)
    iou_np = iou.cpu().numpy().astype(np.float32)
    keep = np.flatnonzero(iou_np > p.pred_iou_thresh) if p.pred_iou_thresh > 0 else np.arange(len(iou_np))
    crop_h, crop_w = geo.original_size
    x0, y0, x1, y1 = crop_box
    image_box = [0, 0, buf.shape[1], buf.shape[0]]
    chunk = int(max(1, min(_MAX_CHUNK, _CHUNK_BYTES // (4 * crop_h * crop_w))))
    with torch.inference_mode():
        for s in range(0, len(keep), chunk):
            idx = keep[s:s + chunk]
            up = predictor.upscale_logits(low[torch.as_tensor(idx, device=low.device)], geo)  # (c, crop_h, crop_w)
            if up.device.type == "cpu":
                up = up.numpy()  # numpy's comparisons and counts are much faster on CPU (zero copy)
            stab = np.asarray(_cpu(stability_score(up, p.mask_threshold, p.stability_score_offset)), dtype=np.float32)
            ok = stab >= p.stability_score_thresh if p.stability_score_thresh > 0 else np.ones(len(idx), dtype=bool)
            if not ok.any():
                continue
            masks = up > p.mask_threshold
            del up
            masks_np = _cpu(masks)[ok]
            del masks
            boxes = boxes_inclusive(masks_np)
            inner = ~is_box_near_crop_edge(boxes, crop_box, image_box)
            if not inner.any():
                continue
            rles = []
            for j in np.flatnonzero(inner):
                buf[y0:y1, x0:x1] = masks_np[j]
                rles.append(mask_utils.encode(buf))
            chosen = idx[ok][inner]
            part.add(rles, boxes=boxes[inner], iou=iou_np[chosen], stability=stab[ok][inner].astype(np.float32),
                     points=pts[chosen], index=index[chosen])
            del masks_np


def _decode(predictor: Any, emb: Any, points: np.ndarray) -> tuple[Any, Any]:
    """``decode_points`` of one batch; on the CPU in calls of ``_CPU_DECODE_POINTS`` to 2x that many points.

    Each click is decoded independently (the decoder copies the image embedding, and SAM 2's
    high-resolution features, once per point), so splitting a batch does not change what is
    computed; on the CPU those per-point copies (4-12 MB each) make large calls memory-bound,
    and calls of a few points are ~1.4x faster. The float32 kernels may still depend on the
    call's size: calls of 4 to 32 points gave outputs bit-identical to one call of 64 for the
    real-size SAM ViT-B and SAM 2.1 Hiera-T and the tiny SAM 2 test config, and within a few
    ulps for the tiny SAM config; calls of 1-2 points differed in the last bits more often, so
    a remainder of fewer than ``_CPU_DECODE_POINTS`` points joins the previous call.
    """
    import torch

    n = len(points)
    step = _CPU_DECODE_POINTS if str(getattr(predictor, "device", "cpu")).startswith("cpu") else n
    if n < 2 * step:
        return predictor.decode_points(emb, points, multimask=True)
    bounds = list(range(0, n - n % step, step)) + [n]  # a remainder joins the last call
    parts = [predictor.decode_points(emb, points[a:b], multimask=True) for a, b in zip(bounds[:-1], bounds[1:])]
    return torch.cat([lo for lo, _ in parts]), torch.cat([io for _, io in parts])


def _cpu(x: Any) -> np.ndarray:
    return x.cpu().numpy() if hasattr(x, "cpu") else x


#: pycocotools' ``area`` of a list builds ``np.array((n,), dtype=np.uint8)``, which NumPy 2
#: rejects for ``n >= 256`` (OverflowError): call it on at most 255 RLEs at a time
_AREA_CALL = 255


def _rle_areas(rles: list[dict]) -> np.ndarray:
    """``(N,)`` int64 pixel counts of pycocotools RLEs."""
    parts = [np.asarray(mask_utils.area(rles[s:s + _AREA_CALL]), dtype=np.int64) for s in range(0, len(rles), _AREA_CALL)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _to_masks(rles: list[dict], cols: dict[str, np.ndarray], size: tuple[int, int], sort_by: str) -> Masks:
    """Decode the kept RLEs (one at a time) into a sorted :class:`Masks`."""
    h, w = size
    n = len(rles)
    if n == 0:
        data = {"stability_score": np.zeros(0, np.float32), "point_coords": np.zeros((0, 2)),
                "crop_box": np.zeros((0, 4), np.float32), "multimask_index": np.zeros(0, np.int64)}
        return Masks(np.zeros((0, h, w), dtype=bool), scores=np.zeros(0, np.float32), data=data)
    areas = _rle_areas(rles)
    key = areas if sort_by == "area" else cols["iou"]
    order = np.argsort(-key, kind="stable")
    masks = np.empty((n, h, w), dtype=bool)
    for k, i in enumerate(order):
        masks[k] = mask_utils.decode(rles[i])
    xywh = np.asarray(mask_utils.toBbox([rles[i] for i in order]), dtype=np.float32).reshape(n, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return Masks(
        masks=masks,
        scores=cols["iou"][order].astype(np.float32),
        boxes=boxes,
        data={
            "stability_score": cols["stability"][order].astype(np.float32),
            "point_coords": cols["points"][order].astype(np.float64),
            "crop_box": cols["crop"][order].astype(np.float32),
            "multimask_index": cols["index"][order].astype(np.int64),
        },
    )


def write_everything(masks: Masks, image: np.ndarray, out_dir: str | Path, stem: str, model: str,
                     params: EverythingParams, image_path: str | None = None, seconds: float | None = None,
                     per_mask: bool = False, classes: Sequence[Any] | None = None) -> tuple[dict[str, Any], Path]:
    """Write a segment-everything result: indexed PNG, overlay, COCO JSON with RLE, run record.

    Files (all staged, then moved into place with the JSON record last): ``STEM_ids.png``
    (palette PNG, mask ``i`` has value ``i + 1``; only with at most 255 masks, where smaller
    masks are drawn over larger ones), ``STEM_overlay.png``
    (:func:`anyseg.masks.overlay.overlay_regions`: each pixel in the colour of its smallest
    mask, one blend, thin outlines; masks covering more than 95 % of the image left out),
    ``STEM_coco.json`` (COCO instances with RLE, ``score`` = predicted IoU),
    ``STEM_maskI.png`` per mask with ``per_mask`` (or when there are more than 255 masks),
    and ``STEM.json``: model, parameters, timing, ``overlay`` (``{"drawn": D,
    "skipped_whole_image": K}``) and per-mask score, stability, area and box. The record's
    ``params`` are the settings the generator used (:func:`record_params`).
    With ``classes`` (masks labelled by :func:`anyseg.tasks.text.label_masks` with ``keep_all``)
    the COCO categories are the classes plus ``unlabeled`` (id ``C + 1``) for masks CLIP gave no
    class, and each mask's record has ``label``, ``class_id`` and ``class_prob``.
    """
    from anyseg.version import __version__
    from anyseg.io.atomic import staged_dir, write_json
    from anyseg.io.export import save_coco, save_indexed_png, save_mask_pngs, save_region_overlay_png, to_coco

    out_dir = Path(out_dir)
    files: dict[str, Any] = {}
    areas = masks.areas  # once: the property sums every mask
    with staged_dir(out_dir) as stage:
        if 0 < len(masks) <= 255:
            # indexed PNG: smaller masks on top, so parts stay visible inside wholes
            by_area = np.argsort(areas, kind="stable")[::-1]
            ranks = np.empty(len(masks), dtype=np.float32)
            ranks[by_area] = np.arange(len(masks), dtype=np.float32)
            save_indexed_png(masks.with_columns(scores=ranks), stage / f"{stem}_ids.png")
            files["ids_png"] = f"{stem}_ids.png"
        if per_mask or len(masks) > 255:
            files["mask_pngs"] = [p.name for p in save_mask_pngs(masks, stage, stem)]
        _, overlay_info = save_region_overlay_png(image, masks, stage / f"{stem}_overlay.png")
        files["overlay_png"] = f"{stem}_overlay.png"
        categories, cat_ids = _categories(masks, classes)
        save_coco(to_coco(masks, image_id=1, file_name=Path(image_path or stem).name, categories=categories,
                          category_ids=cat_ids), stage / f"{stem}_coco.json")
        files["coco_json"] = f"{stem}_coco.json"
        record = {
            "anyseg_version": __version__, "image": image_path, "image_size": list(masks.image_size),
            "model": model, "task": "everything", "params": record_params(params, model, masks.image_size),
            "seconds": round(seconds, 3) if seconds is not None else None, "num_masks": len(masks),
            "overlay": overlay_info, "files": files, "masks": _mask_records(masks, areas),
        }
        if classes is not None:
            record["classes"] = [list(c.names) for c in classes]
        write_json(stage / f"{stem}.json", record)
    return record, out_dir / f"{stem}.json"


def record_params(params: EverythingParams, model: str, image_size: tuple[int, int]) -> dict[str, Any]:
    """The ``params`` of a run record: what the generator of ``model`` used on an ``image_size`` image.

    SAM-family models: the fields of ``params`` (``point_grids`` left out). ``classical`` (or
    ``classical+CLIP``): :func:`anyseg.tasks.everything_classical.classical_params`, with
    ``min_area`` and ``granularity`` from ``params`` (the only two fields it reads).
    """
    from dataclasses import asdict

    if str(model).split("+")[0] == "classical":
        from anyseg.tasks.everything_classical import classical_params

        return classical_params(image_size, min_area=params.min_mask_region_area, granularity=params.granularity)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(params).items() if k != "point_grids"}


def _mask_records(masks: Masks, areas: np.ndarray) -> list[dict[str, Any]]:
    stability = masks.data.get("stability_score")
    return [{"index": i, "score": round(float(masks.scores[i]), 6),
             "stability_score": None if stability is None else round(float(stability[i]), 6),
             "area": int(areas[i]), "box": [round(float(v), 2) for v in masks.boxes[i]], **_label_fields(masks, i)}
            for i in range(len(masks))]


def _categories(masks: Masks, classes: Sequence[Any] | None) -> tuple[list[dict] | None, list[int] | None]:
    if classes is None or "class_id" not in masks.data:
        return None, None
    cats = [{"id": k + 1, "name": c.label} for k, c in enumerate(classes)] + [{"id": len(classes) + 1, "name": "unlabeled"}]
    ids = [int(c) + 1 if c >= 0 else len(classes) + 1 for c in masks.data["class_id"]]
    return cats, ids


def _label_fields(masks: Masks, i: int) -> dict[str, Any]:
    if "class_id" not in masks.data:
        return {}
    prob = masks.data.get("class_prob")
    return {"label": str(masks.labels[i]) if masks.labels is not None else "", "class_id": int(masks.data["class_id"][i]),
            "class_prob": None if prob is None else round(float(prob[i]), 6)}

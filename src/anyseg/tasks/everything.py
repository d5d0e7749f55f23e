"""Automatic mask generation ("segment everything") with SAM-family models.

:func:`generate` has the semantics of segment-anything's ``SamAutomaticMaskGenerator`` and of
SAM 2's ``SAM2AutomaticMaskGenerator``: prompt the model with a grid of single positive clicks
(on the whole image and, optionally, on layers of overlapping crops), keep each click's
multimask candidates that pass the quality filters, and remove duplicates with box NMS. The
pure helpers (grids, crop boxes, stability, edge filter, small-region cleanup) live in
:mod:`anyseg.masks.amg`. A ``classical`` predictor is dispatched to
:func:`anyseg.tasks.everything_classical.generate_classical`. :class:`EverythingParams` and the
bounds are defined in :mod:`anyseg.tasks.everything_params`, :func:`write_everything` and
:func:`record_params` in :mod:`anyseg.tasks.everything_write`; all are re-exported here.

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
constants, re-exported here): ``points_per_side`` 1..:data:`MAX_POINTS_PER_SIDE` (128: 16,384 clicks per
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

from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from anyseg import cancel
from anyseg.errors import InputError
from anyseg.masks.amg import (
    boxes_inclusive, generate_crop_boxes, is_box_near_crop_edge, postprocess_small_regions, stability_score,
    uncrop_boxes, uncrop_points,
)
from anyseg.masks.boxes import box_area, nms
from anyseg.models.base import GridDecoder, Predictor, check_image
from anyseg.models.families import EVERYTHING, GRID, find_family
# the settings and the writer live in their own modules; re-exported so that this stays the one import
from anyseg.tasks.everything_params import (
    GRANULARITIES, GRANULARITY_INDEX, MAX_CROP_LAYERS, MAX_DOWNSCALE_FACTOR, MAX_POINTS_PER_BATCH,
    MAX_POINTS_PER_SIDE, EverythingParams,
)
from anyseg.tasks.everything_write import record_params, write_everything
from anyseg.types import Masks

__all__ = ["EverythingParams", "generate", "write_everything", "record_params", "GRANULARITIES",
           "GRANULARITY_INDEX", "SORT_KEYS", "MAX_POINTS_PER_SIDE", "MAX_POINTS_PER_BATCH",
           "MAX_CROP_LAYERS", "MAX_DOWNSCALE_FACTOR"]

#: the orders :func:`generate` can sort its masks in (descending)
SORT_KEYS = ("area", "score")
#: float32 bytes of upscaled logits per chunk, and the most masks per chunk
_CHUNK_BYTES = 256 << 20
_MAX_CHUNK = 8
#: SAM 2 clamps the low-res logits it returns (and feeds back with ``use_m2m``) to +-32
_M2M_CLAMP = 32.0
#: most points per decoder call on the CPU (see the module docstring: same results, less time)
_CPU_DECODE_POINTS = 4


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

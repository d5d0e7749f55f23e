"""Pure helpers of automatic mask generation ("segment everything"), as segment-anything's.

These reproduce the semantics of ``segment_anything/utils/amg.py`` (shared unchanged by
``sam2/utils/amg.py``), written for anyseg's numpy/pycocotools data:

* :func:`build_point_grid` / :func:`build_all_layer_point_grids`: ``n x n`` points in
  ``[0, 1]^2`` offset ``1 / (2n)`` from the edges, row-major (x varies fastest); layer ``i``
  has ``int(n / downscale**i)`` points per side.
* :func:`generate_crop_boxes`: layer 0 is the whole image; layer ``i >= 1`` is a
  ``2**i x 2**i`` grid of overlapping crops (XYXY, integer pixels, x1/y1 exclusive), listed
  column by column (x outer, y inner) as the reference does.
* :func:`stability_score`: IoU of the masks thresholded at ``t + offset`` and ``t - offset``.
* :func:`boxes_inclusive`: the reference's ``batched_mask_to_box`` convention (x1/y1 are the
  last set column/row, *inclusive*; ``[0, 0, 0, 0]`` for an empty mask). The generator keeps
  these for its filters and NMS so that its decisions match the reference's; the ``Masks`` it
  returns use anyseg's pixel-edge boxes (x1 = last column + 1).
* :func:`is_box_near_crop_edge`: a box within ``atol`` pixels of a crop edge that is not an
  image edge.
* :func:`postprocess_small_regions`: fill small holes, then remove small islands, then box
  NMS that prefers the masks that needed no change (``postprocess_small_regions``).
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from anyseg.masks.boxes import nms
from anyseg.masks.cleanup import remove_small_regions

__all__ = [
    "build_point_grid", "build_all_layer_point_grids", "generate_crop_boxes", "stability_score",
    "boxes_inclusive", "is_box_near_crop_edge", "uncrop_boxes", "uncrop_points", "rle_encode",
    "postprocess_small_regions", "EDGE_ATOL",
]

#: pixels within which a box counts as touching a crop edge (``is_box_near_crop_edge``'s atol)
EDGE_ATOL = 20.0


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``(n*n, 2)`` XY points in ``[0, 1]^2``: ``linspace(1/(2n), 1 - 1/(2n), n)`` per axis, x fastest."""
    n = int(n_per_side)
    offset = 1.0 / (2 * n)
    side = np.linspace(offset, 1.0 - offset, n)
    xs = np.tile(side[None, :], (n, 1))
    ys = np.tile(side[:, None], (1, n))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One normalised grid per crop layer ``0..n_layers``: ``int(n_per_side / scale_per_layer**i)`` per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer ** i))) for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (XYXY, exclusive ends) and their layer indices for an ``(H, W)`` image.

    Layer ``i >= 1`` has ``n = 2**i`` crops per side, overlapping by
    ``int(overlap_ratio * min(H, W) * 2 / n)`` pixels; a crop is
    ``ceil((overlap * (n - 1) + length) / n)`` long and crop ``j`` starts at
    ``int((crop_len - overlap) * j)``, clipped to the image at its far end.
    """
    im_h, im_w = int(im_size[0]), int(im_size[1])
    short_side = min(im_h, im_w)
    boxes: list[list[int]] = [[0, 0, im_w, im_h]]
    layers: list[int] = [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(int(n_layers)):
        n_crops = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops))
        crop_w = crop_len(im_w, n_crops, overlap)
        crop_h = crop_len(im_h, n_crops, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_crops)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_crops)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers


def stability_score(logits: Any, mask_threshold: float, offset: float) -> Any:
    """Stability of ``(..., H, W)`` mask logits (torch tensor or numpy array) -> ``(...)`` float32.

    ``|logits > t + offset| / |logits > t - offset|`` (the first mask is inside the second,
    so this is their IoU). Differs from the reference only for an empty union (nothing above
    ``t - offset``): 0.0 here, NaN there; both are dropped by any threshold > 0.
    """
    if isinstance(logits, np.ndarray):
        lead = logits.shape[:-2]
        flat = logits.reshape(-1, *logits.shape[-2:])
        # np.count_nonzero per mask is much faster than a bool sum over axes
        inter = np.array([np.count_nonzero(m > mask_threshold + offset) for m in flat], dtype=np.int64)
        union = np.array([np.count_nonzero(m > mask_threshold - offset) for m in flat], dtype=np.int64)
        score = np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)
        return score.reshape(lead)
    import torch

    inter = (logits > mask_threshold + offset).sum(dim=(-1, -2))
    union = (logits > mask_threshold - offset).sum(dim=(-1, -2))
    score = inter.double() / union.clamp(min=1).double()
    return torch.where(union > 0, score, torch.zeros_like(score)).float()


def _first_last(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First and last True index along the last axis of ``(N, L)`` bools, and which rows have any."""
    any_ = profile.any(axis=1)
    first = np.argmax(profile, axis=1)
    last = profile.shape[1] - 1 - np.argmax(profile[:, ::-1], axis=1)
    return first, last, any_


def boxes_inclusive(masks: Any) -> np.ndarray:
    """``(N, 4)`` float32 boxes of ``(N, H, W)`` bool masks (torch or numpy), last row/column inclusive.

    The convention of the reference's ``batched_mask_to_box``: ``[x0, y0, x1, y1]`` with
    ``x1``/``y1`` the last set column/row, ``[0, 0, 0, 0]`` for an empty mask.
    """
    if hasattr(masks, "detach"):  # torch: reduce on the tensor's device, move only the profiles
        rows = masks.any(dim=-1).cpu().numpy()
        cols = masks.any(dim=-2).cpu().numpy()
    else:
        m = np.asarray(masks, dtype=bool)
        rows, cols = m.any(axis=-1), m.any(axis=-2)
    n = rows.shape[0]
    out = np.zeros((n, 4), dtype=np.float32)
    if n == 0 or rows.shape[1] == 0 or cols.shape[1] == 0:
        return out
    y0, y1, has = _first_last(rows)
    x0, x1, _ = _first_last(cols)
    out[has] = np.stack([x0, y0, x1, y1], axis=1)[has]
    return out


def uncrop_boxes(boxes: np.ndarray, crop_box: Sequence[int]) -> np.ndarray:
    """Boxes from crop pixels to image pixels (add the crop's top-left corner)."""
    x0, y0 = crop_box[0], crop_box[1]
    return np.asarray(boxes, dtype=np.float32) + np.array([x0, y0, x0, y0], dtype=np.float32)


def uncrop_points(points: np.ndarray, crop_box: Sequence[int]) -> np.ndarray:
    """Points from crop pixels to image pixels."""
    return np.asarray(points, dtype=np.float64) + np.array([crop_box[0], crop_box[1]], dtype=np.float64)


def is_box_near_crop_edge(boxes: np.ndarray, crop_box: Sequence[int], orig_box: Sequence[int],
                          atol: float = EDGE_ATOL) -> np.ndarray:
    """``(N,)`` bool: the box (crop pixels, inclusive ends) is within ``atol`` of a crop edge that is not an image edge.

    Each coordinate is compared with the same coordinate of the crop box and of the image box
    (``|a - b| <= atol``), as the reference's ``torch.isclose(..., rtol=0)``.
    """
    b = uncrop_boxes(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), crop_box)
    crop = np.asarray(crop_box, dtype=np.float32)[None, :]
    orig = np.asarray(orig_box, dtype=np.float32)[None, :]
    near_crop = np.abs(b - crop) <= atol
    near_image = np.abs(b - orig) <= atol
    return np.any(near_crop & ~near_image, axis=1)


def rle_encode(mask: np.ndarray) -> dict:
    """pycocotools RLE (``bytes`` counts) of one ``(H, W)`` mask."""
    return mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))


def postprocess_small_regions(rles: list[dict], min_area: int, nms_thresh: float
                              ) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """Clean masks as the reference's ``postprocess_small_regions``, one mask in memory at a time.

    Each mask gets its holes smaller than ``min_area`` filled, then its islands smaller than
    ``min_area`` removed (:func:`anyseg.masks.cleanup.remove_small_regions`); a mask that either
    step changed scores 0, an unchanged one 1, and box NMS (boxes of the cleaned masks,
    ``nms_thresh``) then removes new duplicates preferring unchanged masks.

    Returns:
        ``(keep, rles, boxes)``: the indices kept (in NMS order), the RLEs with the changed
        masks re-encoded, and the inclusive boxes of the cleaned masks (all ``N`` of them).
    """
    n = len(rles)
    new_rles = list(rles)
    boxes = np.zeros((n, 4), dtype=np.float32)
    scores = np.zeros(n, dtype=np.float32)
    for i, rle in enumerate(rles):
        mask = mask_utils.decode(rle).astype(bool)
        mask, changed_holes = remove_small_regions(mask, min_area, "holes")
        mask, changed_islands = remove_small_regions(mask, min_area, "islands")
        unchanged = not (changed_holes or changed_islands)
        scores[i] = float(unchanged)
        boxes[i] = boxes_inclusive(mask[None])[0]
        if not unchanged:
            new_rles[i] = rle_encode(mask)
    keep = nms(boxes, scores, nms_thresh) if n else np.zeros(0, dtype=np.int64)
    return keep, new_rles, boxes

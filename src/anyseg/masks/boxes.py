"""Box and mask geometry: areas, IoU, format conversion and non-maximum suppression.

Boxes are ``(N, 4)`` XYXY in pixel-edge coordinates (as :func:`anyseg.types.masks_to_boxes`).
NMS follows ``torchvision.ops.nms`` exactly (pure numpy; torchvision is not a dependency).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anyseg.errors import InputError
from anyseg.types import Masks, masks_to_boxes

__all__ = [
    "box_area", "box_iou", "mask_iou", "clip_boxes", "xyxy_to_xywh", "xywh_to_xyxy",
    "nms", "batched_nms", "mask_nms",
]

#: bytes of float32 copies that :func:`mask_iou` makes per chunk of pixels
_IOU_CHUNK_BYTES = 256 << 20
#: most pixels per chunk: a chunk's counts stay exact in float32 (<= 2**24)
_IOU_CHUNK_PIXELS = 1 << 24


def _shape(a: Any) -> str:
    return "x".join(str(s) for s in np.shape(a)) or "scalar"


def _boxes(boxes: Any, name: str = "boxes") -> np.ndarray:
    arr = np.asarray(boxes)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InputError(f"{name} must have shape (N, 4); got {_shape(arr)}")
    return arr if arr.dtype.kind == "f" else arr.astype(np.float32)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """``(N,)`` areas of XYXY boxes (``(x1 - x0) * (y1 - y0)``, as torchvision)."""
    b = _boxes(boxes)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of XYXY boxes; pairs with an empty union get 0."""
    a, b = _boxes(a, "a").astype(np.float64), _boxes(b, "b").astype(np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou.astype(np.float32)


def _mask_stack(masks: Any, name: str) -> np.ndarray:
    arr = masks.masks if isinstance(masks, Masks) else np.asarray(masks)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{name} must have shape (N, H, W); got {_shape(arr)}")
    return arr if arr.dtype == bool else arr != 0


def mask_iou(a: np.ndarray | Masks, b: np.ndarray | Masks) -> np.ndarray:
    """``(N, M)`` IoU of ``(N, H, W)`` and ``(M, H, W)`` masks; an empty union gives 0.

    Intersections are matrix products of the flattened masks, taken over chunks of pixels
    so that the float32 copies stay under ~256 MiB and every partial count is exact.
    """
    a, b = _mask_stack(a, "a"), _mask_stack(b, "b")
    if a.shape[1:] != b.shape[1:]:
        raise InputError(f"mask_iou needs masks of one size; got {_shape(a[0])} and {_shape(b[0])}")
    n, m = a.shape[0], b.shape[0]
    pixels = a.shape[1] * a.shape[2]
    fa, fb = a.reshape(n, pixels), b.reshape(m, pixels)
    inter = np.zeros((n, m), dtype=np.float64)
    if n and m:
        chunk = int(min(_IOU_CHUNK_PIXELS, max(4096, _IOU_CHUNK_BYTES // (4 * (n + m)))))
        for start in range(0, pixels, chunk):
            stop = start + chunk
            ca = fa[:, start:stop].astype(np.float32)
            cb = fb[:, start:stop].astype(np.float32)
            inter += ca @ cb.T
    union = fa.sum(axis=1, dtype=np.int64)[:, None] + fb.sum(axis=1, dtype=np.int64)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou.astype(np.float32)


def clip_boxes(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """A copy of XYXY boxes clipped to an ``(H, W)`` image: ``0 <= x <= W``, ``0 <= y <= H``."""
    b = _boxes(boxes).copy()
    try:
        h, w = (float(v) for v in image_size)
    except (TypeError, ValueError):
        raise InputError(f"image_size must be (H, W); got {image_size!r}") from None
    b[:, 0::2] = np.clip(b[:, 0::2], 0, w)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, h)
    return b


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``[x0, y0, x1, y1]`` -> ``[x0, y0, width, height]`` (COCO)."""
    b = _boxes(boxes).copy()
    b[:, 2:] -= b[:, :2]
    return b


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``[x0, y0, width, height]`` (COCO) -> ``[x0, y0, x1, y1]``."""
    b = _boxes(boxes).copy()
    b[:, 2:] += b[:, :2]
    return b


def _scores(scores: Any, n: int) -> np.ndarray:
    s = np.asarray(scores)
    if s.shape != (n,):
        raise InputError(f"scores must have shape ({n},) to match {n} boxes; got {_shape(s)}")
    return s


def _greedy(order: np.ndarray, iou_row: Any, iou_threshold: float) -> np.ndarray:
    """Greedy suppression over ``order``; ``iou_row(i, rest)`` gives IoU of ``i`` with ``rest``."""
    suppressed = np.zeros(int(order.max()) + 1 if order.size else 0, dtype=bool)
    keep: list[int] = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(int(i))
        rest = order[pos + 1 :]
        rest = rest[~suppressed[rest]]
        if rest.size:
            suppressed[rest[iou_row(i, rest) > iou_threshold]] = True
    return np.asarray(keep, dtype=np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, in descending score order.

    Same semantics as ``torchvision.ops.nms``: boxes are visited by decreasing score (a stable
    sort, so equal scores keep the lower index first) and a box is dropped when its IoU with
    an already kept box is strictly greater than ``iou_threshold``. IoU is computed in the
    boxes' float dtype, like torchvision; degenerate pairs (0/0) never suppress.
    """
    b = _boxes(boxes)
    s = _scores(scores, len(b))
    if len(b) == 0:
        return np.zeros(0, dtype=np.int64)
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    def iou_row(i: int, rest: np.ndarray) -> np.ndarray:
        w = np.maximum(0, np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]))
        h = np.maximum(0, np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]))
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            return inter / (areas[i] + areas[rest] - inter)

    order = np.argsort(-s, kind="stable")
    return _greedy(order, iou_row, float(iou_threshold))


def batched_nms(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS done independently per category ``idxs``, as ``torchvision.ops.batched_nms``.

    Equivalent to torchvision's coordinate-offset trick (boxes of different categories never
    overlap), but computed per category, so it stays exact for any coordinates. The kept
    indices are returned in descending score order (stable: equal scores by index).
    """
    b = _boxes(boxes)
    s = _scores(scores, len(b))
    ids = np.asarray(idxs)
    if ids.shape != (len(b),):
        raise InputError(f"idxs must have shape ({len(b)},) to match {len(b)} boxes; got {_shape(ids)}")
    keep_parts = [np.zeros(0, dtype=np.int64)]
    for cat in np.unique(ids):
        members = np.flatnonzero(ids == cat)
        keep_parts.append(members[nms(b[members], s[members], iou_threshold)])
    keep = np.concatenate(keep_parts)
    return keep[np.lexsort((keep, -s[keep]))] if keep.size else keep


def mask_nms(masks: Masks, iou_threshold: float) -> Masks:
    """Greedy NMS on mask IoU: the masks kept, sorted by descending score (stable).

    A mask is dropped when its IoU with a kept higher-scoring mask is strictly greater than
    ``iou_threshold`` (torchvision semantics, with mask IoU instead of box IoU).
    """
    if not isinstance(masks, Masks):
        raise InputError(f"mask_nms expects a Masks; got {type(masks).__name__}")
    if len(masks) == 0:
        return masks
    order = np.argsort(-masks.scores, kind="stable")
    stack = masks.masks
    areas = stack.sum(axis=(1, 2), dtype=np.int64)
    tight = masks_to_boxes(stack).astype(np.int64)  # intersections only inside mask i's box

    def iou_row(i: int, rest: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = tight[i]
        inter = (stack[rest, y0:y1, x0:x1] & stack[i, y0:y1, x0:x1]).sum(axis=(1, 2), dtype=np.int64)
        union = areas[i] + areas[rest] - inter
        return np.where(union > 0, inter / np.maximum(union, 1), 0.0)

    return masks[_greedy(order, iou_row, float(iou_threshold))]

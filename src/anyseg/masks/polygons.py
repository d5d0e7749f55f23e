"""Mask <-> polygon conversion in COCO's continuous pixel coordinates.

Coordinates follow COCO: pixel ``(col, row)`` covers the square ``[col, col+1) x [row, row+1)``,
so the outline of a single pixel at ``(2, 3)`` is ``(2, 3) -> (3, 3) -> (3, 4) -> (2, 4)``.

:func:`mask_to_polygons` traces the *pixel-edge* outline (not the chain of boundary pixel
centres that ``cv2.findContours`` returns on the mask itself), so that rasterizing the
polygons with pycocotools (:func:`polygons_to_mask`, COCO's ``annToMask``) gives back the
mask pixel for pixel, holes aside. It does so by running ``cv2.findContours`` on the grid of
pixel corners of the mask upsampled by 2 (a corner is set when a pixel touching it is set).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from anyseg.errors import InputError
from anyseg.masks.rle import check_size, pixel_limit
from anyseg.masks.rle import decode as rle_decode
from anyseg.masks.rle import validate as rle_validate

__all__ = [
    "mask_to_polygons", "polygons_to_mask", "polygons_to_rle", "polygon_area", "clip_polygon",
    "segmentation_to_rle", "segmentation_to_mask",
    "MAX_POLYGON_VERTICES", "MAX_POLYGON_PERIMETER", "MAX_TOTAL_PERIMETER",
]

_UPSAMPLE = 2  # corner grid at half-pixel steps: concave corners stay exact


def _as_mask(mask: Any) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        shape = "x".join(str(s) for s in arr.shape) or "scalar"
        raise InputError(f"expected a 2-D (H, W) mask; got shape {shape}")
    return arr if arr.dtype == bool else arr != 0


def polygon_area(polygon: Sequence[float]) -> float:
    """Area (shoelace formula) of a flat ``[x0, y0, x1, y1, ...]`` polygon."""
    pts = _as_polygon(polygon, 0)
    if len(pts) < 3:
        return 0.0
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0, min_area: float = 1.0) -> list[list[float]]:
    """Outer outlines of a mask's connected parts as flat ``[x0, y0, x1, y1, ...]`` lists.

    Args:
        mask: ``(H, W)`` mask (non-zero = set).
        tolerance: maximum distance in pixels of the simplified outline from the exact one
            (``cv2.approxPolyDP``); ``0`` keeps the exact pixel-edge outline (only collinear
            points are dropped).
        min_area: polygons with a smaller area (in pixels) are dropped; so are polygons with
            fewer than 3 points.

    Returns:
        One polygon per 8-connected part, largest first. Holes are **not** represented (the
        contours are ``RETR_EXTERNAL``, so a hole is filled): COCO and YOLO polygons cannot
        express holes, so polygon export is lossy for masks with holes; use RLE for those.
        Parts touching only at a corner are traced as one polygon through that corner.
    """
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0 pixels; got {tolerance}")
    m = _as_mask(mask)
    ys = np.flatnonzero(m.any(axis=1))
    if ys.size == 0:
        return []
    xs = np.flatnonzero(m.any(axis=0))
    y0, x0 = int(ys[0]), int(xs[0])
    crop = m[y0 : ys[-1] + 1, x0 : xs[-1] + 1].astype(np.uint8)
    k = _UPSAMPLE
    up = np.pad(np.repeat(np.repeat(crop, k, axis=0), k, axis=1), 1)
    # corner (X, Y) of the upsampled grid is set when one of the 4 pixels around it is set
    corners = up[:-1, :-1] | up[:-1, 1:] | up[1:, :-1] | up[1:, 1:]
    contours, _ = cv2.findContours(np.ascontiguousarray(corners), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons: list[tuple[float, list[float]]] = []
    for contour in contours:
        if tolerance > 0:
            contour = cv2.approxPolyDP(contour, tolerance * k, True)
        pts = contour.reshape(-1, 2).astype(np.float64) / k + (x0, y0)
        if len(pts) < 3:
            continue
        flat = pts.ravel().tolist()
        poly_area = polygon_area(flat)
        if poly_area < min_area or poly_area == 0:
            continue
        polygons.append((poly_area, flat))
    polygons.sort(key=lambda item: -item[0])
    return [p for _, p in polygons]


# -- polygons to masks ---------------------------------------------------------------------------

#: Most vertices accepted in one segmentation (all its polygons together).
MAX_POLYGON_VERTICES = 1 << 22
#: Longest outline accepted for one polygon, in pixels (sum over the edges of max(|dx|, |dy|)):
#: pycocotools' rasterizer allocates about 100 bytes per pixel of outline (~210 MB here).
MAX_POLYGON_PERIMETER = 1 << 21
#: Longest outline accepted for all polygons of one segmentation together (bounds the work).
MAX_TOTAL_PERIMETER = 1 << 24
#: Longest side of a canvas polygons are rasterized on: pycocotools scales the coordinates
#: (up to 3 sides, see :func:`clip_polygon`) by 5 into C ints.
MAX_POLYGON_SIDE = 1 << 26


def _as_polygon(poly: Any, i: int) -> np.ndarray:
    """Polygon ``i`` as ``(K, 2)`` float64 vertices: finite numbers, an even count."""
    try:
        arr = np.asarray(poly)
    except (TypeError, ValueError):
        arr = np.asarray(None)
    if arr.dtype.kind not in "iuf" or (arr.ndim != 1 and not (arr.ndim == 2 and arr.shape[1] == 2)):
        raise InputError(f"polygon {i} must be a flat list of numbers x0,y0,x1,y1,... (or (K, 2) points); "
                         f"got {type(poly).__name__} of {arr.dtype} values, shape {arr.shape}")
    flat = arr.astype(np.float64).reshape(-1)
    if flat.size % 2:
        raise InputError(f"polygon {i} must have an even number of coordinates x0,y0,x1,y1,...; got {flat.size}")
    if not np.isfinite(flat).all():
        raise InputError(f"polygon {i} has non-finite coordinates (NaN or infinity)")
    return flat.reshape(-1, 2)


def _clip_side(pts: np.ndarray, axis: int, bound: float, keep_below: bool) -> np.ndarray:
    """One Sutherland-Hodgman step: ``pts`` clipped to one side of the line ``pts[:, axis] = bound``."""
    if pts.size == 0:
        return pts
    inside = pts[:, axis] <= bound if keep_below else pts[:, axis] >= bound
    if inside.all():
        return pts
    prev = np.roll(pts, 1, axis=0)
    crosses = inside != np.roll(inside, 1)
    denom = pts[:, axis] - prev[:, axis]
    t = np.divide(bound - prev[:, axis], denom, out=np.zeros(len(pts)), where=crosses & (denom != 0))
    cut = prev + t[:, None] * (pts - prev)
    cut[:, axis] = bound
    out = np.stack([cut, pts], axis=1).reshape(-1, 2)
    keep = np.stack([crosses, inside], axis=1).reshape(-1)
    return out[keep]


def clip_polygon(points: np.ndarray, height: int, width: int, margin: float | None = None) -> np.ndarray:
    """``(K, 2)`` polygon clipped to the canvas grown by ``margin`` pixels on every side.

    ``margin`` defaults to the canvas' longer side. A polygon inside that area is returned as
    it is (so that pycocotools rasterizes it exactly as COCO does); the part of one reaching
    beyond it is cut off (Sutherland-Hodgman), which bounds the coordinates and the outline
    pycocotools has to walk; one entirely outside gives ``(0, 2)``.
    """
    margin = float(max(height, width)) if margin is None else float(margin)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    for axis, lo, hi in ((0, -margin, width + margin), (1, -margin, height + margin)):
        pts = _clip_side(_clip_side(pts, axis, lo, keep_below=False), axis, hi, keep_below=True)
    return pts


def _outline(pts: np.ndarray) -> float:
    """Sum over the edges of ``max(|dx|, |dy|)``: what pycocotools' rasterizer walks (over 5)."""
    d = np.abs(np.roll(pts, -1, axis=0) - pts)
    return float(d.max(axis=1).sum()) if len(pts) else 0.0


def _polygon_list(polygons: Any) -> list:
    if isinstance(polygons, np.ndarray) and polygons.ndim == 2 and polygons.shape[1] == 2:
        return [polygons]
    if isinstance(polygons, (str, bytes, Mapping)) or not isinstance(polygons, (Sequence, np.ndarray)):
        raise InputError(f"polygons must be a list of [x0, y0, x1, y1, ...] lists; got {type(polygons).__name__}")
    if len(polygons) and all(isinstance(v, (int, float, np.number)) for v in polygons[:6]):
        raise InputError("polygons must be a list of [x0, y0, x1, y1, ...] lists; got a flat list of numbers "
                         "(wrap a single polygon in a list)")
    if len(polygons) > MAX_POLYGON_VERTICES // 3:
        raise InputError(f"{len(polygons)} polygons are more than the {MAX_POLYGON_VERTICES // 3} accepted")
    size = sum(len(p) if isinstance(p, (Sequence, np.ndarray)) else 1 for p in polygons)
    if size > 2 * MAX_POLYGON_VERTICES:
        raise InputError(f"polygons with {size} values are more than the {MAX_POLYGON_VERTICES} vertices accepted")
    return list(polygons)


def _clean_polygons(polygons: Any, height: int, width: int) -> list[np.ndarray]:
    """Validated polygons clipped to the canvas, as flat float64 arrays; fewer than 3 points are dropped."""
    out, total, vertices = [], 0.0, 0
    for i, poly in enumerate(_polygon_list(polygons)):
        pts = _as_polygon(poly, i)
        vertices += len(pts)
        if vertices > MAX_POLYGON_VERTICES:
            raise InputError(f"polygons have more than the {MAX_POLYGON_VERTICES} vertices accepted")
        if len(pts) < 3:  # fewer than 3 points enclose nothing (and 4 numbers read as a box)
            continue
        pts = clip_polygon(pts, height, width)
        outline = _outline(pts)
        if outline > MAX_POLYGON_PERIMETER:
            raise InputError(f"polygon {i} has an outline of {outline:.0f} pixels inside the {height}x{width} "
                             f"canvas, over the limit of {MAX_POLYGON_PERIMETER}")
        total += outline
        if total > MAX_TOTAL_PERIMETER:
            raise InputError(f"polygons have outlines of more than {MAX_TOTAL_PERIMETER} pixels in all")
        if len(pts) >= 3:
            out.append(np.ascontiguousarray(pts.reshape(-1)))
    return out


def _canvas(height: Any, width: Any, max_pixels: int | None) -> tuple[int, int]:
    h, w = check_size((height, width), "height and width")
    limit = pixel_limit(max_pixels)
    if h * w > limit or max(h, w) > limit:
        raise InputError(f"a {h}x{w} canvas is {h * w / 1e6:.1f} megapixels, over the limit of {limit / 1e6:g} "
                         "megapixels (raise it with --max-pixels or ANYSEG_MAX_PIXELS)")
    if max(h, w) > MAX_POLYGON_SIDE:
        raise InputError(f"a {h}x{w} canvas is too long to rasterize polygons on (at most {MAX_POLYGON_SIDE} "
                         "pixels a side)")
    return h, w


def polygons_to_rle(polygons: Any, height: int, width: int, max_pixels: int | None = None) -> dict:
    """Compressed COCO RLE ``{"size": [H, W], "counts": str}`` of the union of polygons, without a dense mask.

    Polygons are flat ``[x0, y0, x1, y1, ...]`` lists or ``(K, 2)`` arrays of finite numbers;
    polygons with fewer than 3 points are ignored; the parts of polygons more than the
    canvas' longer side outside it are clipped off first (:func:`clip_polygon`: polygons
    within that margin are rasterized exactly as COCO's ``annToMask`` does). The canvas must
    be within ``max_pixels`` (default ``ANYSEG_MAX_PIXELS`` or 40 MP) and the polygons within
    :data:`MAX_POLYGON_VERTICES`, :data:`MAX_POLYGON_PERIMETER` and :data:`MAX_TOTAL_PERIMETER`;
    anything else is a one-line :class:`InputError`.
    """
    h, w = _canvas(height, width, max_pixels)
    polys = _clean_polygons(polygons, h, w)
    if not polys or h * w == 0:
        return rle_validate({"size": [h, w], "counts": [h * w]}, max_pixels=max(h * w, 1))
    merged = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    return {"size": [h, w], "counts": merged["counts"].decode("ascii")}


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int,
                     max_pixels: int | None = None) -> np.ndarray:
    """Rasterize polygons (flat lists, or ``(K, 2)`` arrays) into one ``(H, W)`` bool mask.

    Uses pycocotools (``frPyObjects`` + ``merge`` + ``decode``), i.e. exactly COCO's
    ``annToMask`` rasterization; the union of all polygons is returned. Polygons with fewer
    than 3 points are ignored; the checks and the clipping are those of :func:`polygons_to_rle`.
    """
    rle = polygons_to_rle(polygons, height, width, max_pixels)
    h, w = rle["size"]
    if h * w == 0:
        return np.zeros((h, w), dtype=bool)
    return mask_utils.decode({"size": [h, w], "counts": rle["counts"].encode("ascii")}).astype(bool)


def segmentation_to_rle(segmentation: Any, height: int, width: int, max_pixels: int | None = None) -> dict:
    """Canonical compressed RLE of a COCO ``segmentation`` on an ``height`` x ``width`` image.

    ``segmentation`` is polygons (a list of flat ``[x0, y0, ...]`` lists, see
    :func:`polygons_to_rle`) or an RLE dict (compressed or uncompressed, whose size must be
    ``[height, width]``, see :func:`anyseg.masks.rle.validate`). Raises a one-line
    :class:`InputError` for anything else.
    """
    if isinstance(segmentation, Mapping):
        return rle_validate(segmentation, size=(height, width), max_pixels=max_pixels)
    if isinstance(segmentation, (list, tuple)):
        return polygons_to_rle(segmentation, height, width, max_pixels)
    raise InputError("a segmentation must be polygons (a list of [x0, y0, x1, y1, ...] lists) or an RLE dict "
                     f"with 'size' and 'counts'; got {type(segmentation).__name__}")


def segmentation_to_mask(segmentation: Any, height: int, width: int, max_pixels: int | None = None) -> np.ndarray:
    """``(H, W)`` bool mask of a COCO ``segmentation`` (checks of :func:`segmentation_to_rle`)."""
    rle = segmentation_to_rle(segmentation, height, width, max_pixels)
    h, w = rle["size"]
    return rle_decode(rle, max_pixels=max(1, h * w))  # (the size was checked against max_pixels)

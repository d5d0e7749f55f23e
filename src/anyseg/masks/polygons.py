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

from typing import Any, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from anyseg.errors import InputError

__all__ = ["mask_to_polygons", "polygons_to_mask", "polygon_area"]

_UPSAMPLE = 2  # corner grid at half-pixel steps: concave corners stay exact


def _as_mask(mask: Any) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        shape = "x".join(str(s) for s in arr.shape) or "scalar"
        raise InputError(f"expected a 2-D (H, W) mask; got shape {shape}")
    return arr if arr.dtype == bool else arr != 0


def polygon_area(polygon: Sequence[float]) -> float:
    """Area (shoelace formula) of a flat ``[x0, y0, x1, y1, ...]`` polygon."""
    pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
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


def _clean_polygons(polygons: Any) -> list[list[float]]:
    if isinstance(polygons, np.ndarray) and polygons.ndim == 2 and polygons.shape[1] == 2:
        polygons = [polygons]
    out = []
    for i, poly in enumerate(polygons):
        flat = np.asarray(poly, dtype=np.float64).reshape(-1)
        if flat.size % 2:
            raise InputError(f"polygon {i} must have an even number of coordinates x0,y0,x1,y1,...; got {flat.size}")
        if not np.isfinite(flat).all():
            raise InputError(f"polygon {i} has non-finite coordinates")
        if flat.size >= 6:  # fewer than 3 points enclose nothing (and 4 numbers read as a box)
            out.append(flat.tolist())
    return out


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterize polygons (flat lists, or ``(K, 2)`` arrays) into one ``(H, W)`` bool mask.

    Uses pycocotools (``frPyObjects`` + ``merge`` + ``decode``), i.e. exactly COCO's
    ``annToMask`` rasterization; the union of all polygons is returned. Polygons with fewer
    than 3 points are ignored.
    """
    h, w = int(height), int(width)
    if h < 0 or w < 0:
        raise InputError(f"height and width must be >= 0; got {h}x{w}")
    polys = _clean_polygons(polygons)
    if not polys or h * w == 0:
        return np.zeros((h, w), dtype=bool)
    rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    return mask_utils.decode(rle).astype(bool)

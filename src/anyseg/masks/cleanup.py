"""Mask cleanup: fill small holes and drop small islands, as segment-anything does.

:func:`remove_small_regions` reproduces ``segment_anything.utils.amg.remove_small_regions``
(used by ``SamAutomaticMaskGenerator(min_mask_region_area=...)``) with the same results.
"""

from __future__ import annotations

import numpy as np

from anyseg.errors import InputError
from anyseg.types import Masks, masks_to_boxes

__all__ = ["remove_small_regions", "clean_masks"]

_MODES = ("holes", "islands")


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill small holes or remove small islands of one ``(H, W)`` mask.

    Semantics of segment-anything's ``remove_small_regions``: the 8-connected components
    (``cv2.connectedComponentsWithStats``) of the mask (``"islands"``) or of its complement
    (``"holes"``) with fewer than ``area_thresh`` pixels are removed (islands) or filled
    (holes). Note that with ``"holes"`` every small background component counts, including
    one touching the image border. In ``"islands"`` mode, when every island is small the
    largest one is kept.

    Returns:
        ``(mask, changed)``: the new bool mask and whether any region was small (``changed``
        is True as soon as one region is below the threshold, as in the reference).
    """
    import cv2

    if mode not in _MODES:
        raise InputError(f"mode must be 'holes' or 'islands'; got {mode!r}")
    m = np.asarray(mask)
    if m.ndim != 2:
        shape = "x".join(str(s) for s in m.shape) or "scalar"
        raise InputError(f"expected a 2-D (H, W) mask; got shape {shape}")
    m = m if m.dtype == bool else m != 0
    correct_holes = mode == "holes"
    working = (correct_holes ^ m).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[:, -1][1:]  # row 0 is the background label
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return m, False
    fill_labels = [0] + small
    if not correct_holes:
        fill_labels = [i for i in range(n_labels) if i not in fill_labels]
        if not fill_labels:  # every island is small: keep the largest
            fill_labels = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill_labels), True


def clean_masks(masks: Masks, min_area: int) -> Masks:
    """Fill holes then remove islands smaller than ``min_area`` pixels in every mask.

    As segment-anything's ``postprocess_small_regions`` (without its NMS): boxes are
    recomputed from the cleaned masks; scores, logits, labels, ids and data are kept.
    ``min_area <= 0`` returns the masks unchanged.
    """
    if not isinstance(masks, Masks):
        raise InputError(f"clean_masks expects a Masks; got {type(masks).__name__}")
    if min_area <= 0 or len(masks) == 0:
        return masks
    cleaned = np.empty_like(masks.masks)
    for i, m in enumerate(masks.masks):
        m, _ = remove_small_regions(m, min_area, "holes")
        cleaned[i], _ = remove_small_regions(m, min_area, "islands")
    return masks.with_columns(masks=cleaned, boxes=masks_to_boxes(cleaned))

"""Visualisation: a deterministic palette, mask overlays and prompt drawing (RGB uint8).

:func:`overlay` and :func:`overlay_regions` share one drawing (the style of the SAM demos):
every pixel takes the colour of the **smallest** mask that covers it, the colours are blended
over the image **once** with one ``alpha`` (a pixel inside five nested masks is tinted exactly
as much as a pixel inside one), and each mask's outline is drawn as a thin line just inside
it (1 px up to 4 megapixels, then ``floor(sqrt(megapixels))``), white at 60 % opacity; pixels
outside every drawn mask are left as they are. Masks covering more than ``max_area_fraction``
of the image (the whole-image masks of segment everything) can be left out. Memory: one ``(H, W)`` int32 index map plus a few ``(H, W, 3)`` uint8 images; the
per-mask work is done inside each mask's box, so hundreds of small masks stay cheap.
"""

from __future__ import annotations

import colorsys
from typing import Any, Sequence

import cv2
import numpy as np

from anyseg.errors import InputError
from anyseg.types import Masks, Prompt

__all__ = ["palette", "overlay", "overlay_regions", "draw_labels", "draw_prompt",
           "REGION_ALPHA", "WHOLE_IMAGE_FRACTION"]

_GOLDEN = 0.618033988749895
_POSITIVE = (0, 200, 0)
_NEGATIVE = (230, 0, 0)
_RIM = (255, 255, 255)
_BOX = (0, 160, 255)
#: outlines: white, blended at this opacity over the tinted image
_CONTOUR = np.array([255, 255, 255], dtype=np.uint8)
_CONTOUR_ALPHA = 0.6
#: the defaults of :func:`overlay_regions` (segment everything)
REGION_ALPHA = 0.45
WHOLE_IMAGE_FRACTION = 0.95


def palette(n: int, seed: int = 0) -> np.ndarray:
    """``(n, 3)`` uint8 RGB colours, visually distinct and deterministic.

    Hues step by the golden ratio from a start fixed by ``seed``; saturation and value
    alternate a little so that neighbours differ in more than hue.
    """
    if n < 0:
        raise InputError(f"palette size must be >= 0; got {n}")
    start = (seed * _GOLDEN * 7.0 + 0.55) % 1.0  # cyan first: rare in natural images
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        hue = (start + i * _GOLDEN) % 1.0
        sat = (0.85, 0.65, 0.75)[i % 3]
        val = (0.95, 0.85)[(i // 3) % 2]
        out[i] = [round(c * 255) for c in colorsys.hsv_to_rgb(hue, sat, val)]
    return out


def _rgb(image: Any) -> np.ndarray:
    """A writable uint8 RGB copy of ``image`` ((H, W), (H, W, 3) or (H, W, 4) uint8)."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise InputError(f"expected a uint8 image; got dtype {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim != 3 or img.shape[2] != 3:
        shape = "x".join(str(s) for s in img.shape) or "scalar"
        raise InputError(f"expected an (H, W, 3) RGB image; got shape {shape}")
    return np.ascontiguousarray(img).copy()


def _thickness(h: int, w: int) -> int:
    """Line width of prompt boxes (and their point rims)."""
    return max(1, round(min(h, w) / 400))


def _contour_thickness(h: int, w: int) -> int:
    """Mask outlines: 1 px up to 4 megapixels, then ``floor(sqrt(megapixels))`` (3 px at 12 MP)."""
    return max(1, int((h * w / 1e6) ** 0.5))


def _check_inputs(image: Any, masks: Any, alpha: float, max_area_fraction: float | None) -> np.ndarray:
    """The RGB copy of ``image``, after checking that the masks and the options fit it."""
    img = _rgb(image)
    if not isinstance(masks, Masks):
        raise InputError(f"overlay expects a Masks; got {type(masks).__name__}")
    h, w = img.shape[:2]
    if masks.image_size != (h, w):
        mh, mw = masks.image_size
        raise InputError(f"masks are {mh}x{mw} but the image is {h}x{w}; they must have the same size")
    if not isinstance(alpha, (int, float, np.number)) or not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be a number in [0, 1]; got {alpha!r}")
    if max_area_fraction is not None and (not isinstance(max_area_fraction, (int, float, np.number))
                                          or not 0.0 < max_area_fraction <= 1.0):
        raise InputError(f"max_area_fraction must be None or a number in (0, 1]; got {max_area_fraction!r}")
    return img


def _colors(colors: Any, n: int) -> np.ndarray:
    """``(n, 3)`` uint8 colours: :func:`palette` by default, one ``(3,)`` colour for all, or one per mask."""
    if colors is None:
        return palette(n)
    cols = np.asarray(colors)
    if cols.shape == (3,):
        cols = np.tile(cols, (n, 1))
    if cols.ndim != 2 or cols.shape[1] != 3 or len(cols) < n:
        got = "x".join(map(str, cols.shape)) or "scalar"
        raise InputError(f"colors must have shape ({n}, 3) or (3,); got {got}")
    return np.clip(cols[:n], 0, 255).astype(np.uint8)


def _windows(masks: Masks, areas: np.ndarray) -> np.ndarray:
    """``(N, 4)`` int XYXY windows that hold every pixel of each mask.

    Each mask's box rounded outwards and clipped to the image, or the whole image where that
    box misses some of the mask's pixels (``Masks.boxes`` may come from a detector).
    """
    h, w = masks.image_size
    b = np.nan_to_num(np.asarray(masks.boxes, dtype=np.float64), nan=0.0)
    win = np.stack([np.floor(b[:, 0]), np.floor(b[:, 1]), np.ceil(b[:, 2]), np.ceil(b[:, 3])], axis=1)
    win = np.clip(win, 0, [w, h, w, h]).astype(np.int64)
    for i, (x0, y0, x1, y1) in enumerate(win):
        if np.count_nonzero(masks.masks[i, y0:y1, x0:x1]) != areas[i]:
            win[i] = (0, 0, w, h)
    return win


def _index_map(masks: Masks, drawn: np.ndarray, areas: np.ndarray, win: np.ndarray) -> np.ndarray:
    """``(H, W)`` int32: the index of the smallest drawn mask covering each pixel, -1 where none.

    Masks are painted from the largest to the smallest (equal areas: the lower index on top).
    """
    index = np.full(masks.image_size, -1, dtype=np.int32)
    ids = np.flatnonzero(drawn)
    for i in ids[np.lexsort((-ids, -areas[ids]))]:
        x0, y0, x1, y1 = win[i]
        index[y0:y1, x0:x1][masks.masks[i, y0:y1, x0:x1]] = i
    return index


def _outlines(masks: Masks, drawn: np.ndarray, win: np.ndarray, thickness: int) -> np.ndarray:
    """``(H, W)`` bool: each drawn mask's outline (holes included), ``thickness`` px wide, inside the mask."""
    edges = np.zeros(masks.image_size, dtype=bool)
    for i in np.flatnonzero(drawn):
        x0, y0, x1, y1 = win[i]
        crop = np.ascontiguousarray(masks.masks[i, y0:y1, x0:x1], dtype=np.uint8)
        found, _ = cv2.findContours(crop, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        if not found:
            continue
        lines = np.zeros_like(crop)
        cv2.drawContours(lines, found, -1, 1, 2 * thickness - 1)  # centred on the boundary pixels...
        lines &= crop  # ...and kept inside the mask: ``thickness`` px
        edges[y0:y1, x0:x1] |= lines.view(bool)
    return edges


def _draw(img: np.ndarray, masks: Masks, alpha: float, cols: np.ndarray, contours: bool,
          max_area_fraction: float | None) -> tuple[np.ndarray, dict[str, int]]:
    """The shared drawing (module docstring) on ``img``; returns it and ``{"drawn", "skipped_whole_image"}``."""
    h, w = img.shape[:2]
    n = len(masks)
    areas = np.fromiter((np.count_nonzero(m) for m in masks.masks), dtype=np.int64, count=n)
    drawn = areas > 0
    whole = drawn & (areas > max_area_fraction * h * w) if max_area_fraction is not None else np.zeros(n, bool)
    drawn &= ~whole
    info = {"drawn": int(drawn.sum()), "skipped_whole_image": int(whole.sum())}
    if not drawn.any():
        return img, info
    win = _windows(masks, areas)
    index = _index_map(masks, drawn, areas, win)
    covered = index >= 0
    tint = np.take(cols, index, axis=0, mode="clip")  # -1 (no mask) -> colour 0, restored below
    del index
    out = cv2.addWeighted(img, 1.0 - float(alpha), tint, float(alpha), 0.0)
    del tint
    np.copyto(out, img, where=~covered[:, :, None])
    if contours:
        edges = _outlines(masks, drawn, win, _contour_thickness(h, w))
        line = out[edges].astype(np.float32) * (1.0 - _CONTOUR_ALPHA) + _CONTOUR.astype(np.float32) * _CONTOUR_ALPHA
        out[edges] = np.clip(np.rint(line), 0, 255).astype(np.uint8)
    return out, info


def overlay(
    image: np.ndarray,
    masks: Masks,
    alpha: float = 0.5,
    colors: np.ndarray | None = None,
    contours: bool = True,
    max_area_fraction: float | None = None,
) -> np.ndarray:
    """A copy of ``image`` with the masks drawn on it (see the module docstring).

    Args:
        image: ``(H, W, 3)`` uint8 RGB (grayscale and RGBA are accepted too); not modified.
        masks: masks over the same ``H x W``.
        alpha: opacity of the mask colour, in ``[0, 1]``, applied once per pixel.
        colors: ``(N, 3)`` (or one ``(3,)``) RGB colours, mask ``i`` gets ``colors[i]``;
            default :func:`palette`.
        contours: draw each mask's outline (holes included), thin and white.
        max_area_fraction: leave out masks covering more than this fraction of the image
            (``None``: draw every mask).

    Where masks overlap, the smallest one's colour shows, so parts stay visible inside
    wholes; the outlines of the larger ones are still drawn.
    """
    img = _check_inputs(image, masks, alpha, max_area_fraction)
    out, _ = _draw(img, masks, alpha, _colors(colors, len(masks)), contours, max_area_fraction)
    return out


def overlay_regions(
    image: np.ndarray,
    masks: Masks,
    alpha: float = REGION_ALPHA,
    contours: bool = True,
    max_area_fraction: float = WHOLE_IMAGE_FRACTION,
    colors: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """The overlay of a segment-everything result, and what it drew.

    :func:`overlay` with the defaults of the SAM demos' "show all masks": alpha 0.45 and masks
    covering more than 95 % of the image (whole-image masks) left out.

    Returns:
        ``(vis, info)``: the ``(H, W, 3)`` uint8 image, and ``{"drawn": D,
        "skipped_whole_image": K}`` (``D`` non-empty masks drawn, ``K`` left out as
        whole-image masks).
    """
    img = _check_inputs(image, masks, alpha, max_area_fraction)
    return _draw(img, masks, alpha, _colors(colors, len(masks)), contours, max_area_fraction)


def draw_labels(image: np.ndarray, masks: Masks, labels: Sequence[Any], colors: np.ndarray | None = None) -> np.ndarray:
    """A copy of ``image`` with ``labels[i]`` written at the top-left corner of mask ``i``'s box.

    Each text sits on a filled tag of the mask's colour (default :func:`palette`), in black or
    white, whichever contrasts more; empty masks get no tag. Sizes scale with the image. The
    font is OpenCV's Hershey font: ASCII only (other characters show as ``?``).
    """
    img = _check_inputs(image, masks, 0.0, None)
    n = len(masks)
    texts = None if isinstance(labels, str) or not hasattr(labels, "__len__") else [str(t) for t in labels]
    if texts is None or len(texts) != n:
        got = f"{len(texts)} labels" if texts is not None else type(labels).__name__
        raise InputError(f"labels must be a list of {n} texts, one per mask; got {got}")
    cols = _colors(colors, n)
    h, w = img.shape[:2]
    scale = max(0.35, min(h, w) / 900)
    weight = max(1, round(scale * 1.5))
    for i in range(n):
        if not texts[i] or not masks.masks[i].any():
            continue
        x0, y0 = (int(max(0, v)) for v in masks.boxes[i][:2])
        (tw, th), base = cv2.getTextSize(texts[i], cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
        x0, y0 = min(x0, max(0, w - tw - 4)), min(y0, max(0, h - th - base - 4))
        color = tuple(int(c) for c in cols[i])
        cv2.rectangle(img, (x0, y0), (x0 + tw + 4, y0 + th + base + 4), color, -1)
        ink = (0, 0, 0) if 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] > 140 else (255, 255, 255)
        cv2.putText(img, texts[i], (x0 + 2, y0 + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, weight, cv2.LINE_AA)
    return img


def draw_prompt(image: np.ndarray, prompt: Prompt) -> np.ndarray:
    """A copy of ``image`` with the prompt's points and box drawn on it.

    Positive points are green discs, negative points red discs, both with a white rim; the
    box is a rectangle. Sizes scale with the image. The input image is not modified.
    """
    img = _rgb(image)
    if not isinstance(prompt, Prompt):
        raise InputError(f"draw_prompt expects a Prompt; got {type(prompt).__name__}")
    h, w = img.shape[:2]
    radius = max(3, round(min(h, w) / 80))
    rim = max(1, radius // 3)
    if prompt.box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
        cv2.rectangle(img, (x0, y0), (x1, y1), _BOX, max(2, _thickness(h, w) * 2), cv2.LINE_AA)
    if prompt.points is not None:
        for (x, y), label in zip(prompt.points, prompt.labels):
            center = (int(round(x)), int(round(y)))
            cv2.circle(img, center, radius + rim, _RIM, -1, cv2.LINE_AA)
            cv2.circle(img, center, radius, _POSITIVE if label == 1 else _NEGATIVE, -1, cv2.LINE_AA)
    return img

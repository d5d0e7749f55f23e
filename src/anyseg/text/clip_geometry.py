"""The pure numpy / OpenCV side of CLIP: mask crops, sliding windows and votes inside masks.

Split from :mod:`anyseg.text.clip` (which re-exports every public name here and documents the
recipes): these functions take arrays and return arrays, need no model and no torch, and are
what :class:`~anyseg.text.clip.ClipModel` uses to cut what CLIP sees (:func:`mask_crop`,
:func:`sliding_windows`) and to turn dense scores into per-mask ones (:func:`vote_in_masks`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from anyseg.errors import InputError
from anyseg.types import Masks

__all__ = ["crop_box", "mask_crop", "sliding_windows", "vote_in_masks", "resize_image", "as_mask_stack",
           "BLUR_SIGMA", "BACKGROUNDS"]

#: Gaussian blur standard deviation for ``background="blur"``, as a fraction of the square crop's side
BLUR_SIGMA = 0.05
#: background treatments accepted by :meth:`~anyseg.text.clip.ClipModel.classify_masks`
BACKGROUNDS = ("blur", "grey", "none")


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``(h, w[, c])`` array to ``size = (H, W)``: area when shrinking, bicubic when enlarging.

    CLIP's own pre-processing resizes bicubically; area interpolation when shrinking avoids the
    aliasing of a bicubic downscale. float32 inputs (mask alphas) are clipped back to ``[0, 1]``.
    """
    import cv2

    h, w = image.shape[:2]
    if (h, w) == tuple(size):
        return image
    shrink = size[0] * size[1] < h * w
    out = cv2.resize(image, (int(size[1]), int(size[0])), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    if image.dtype == np.float32:
        out = np.clip(out, 0.0, 1.0)  # bicubic overshoots; masks are alpha values in [0, 1]
    return out


def crop_box(mask: np.ndarray, margin: float = 0.1) -> tuple[int, int, int, int] | None:
    """Integer XYXY pixel box (``x1``, ``y1`` exclusive) of a mask's tight box enlarged by ``margin``.

    Each side moves out by ``margin`` times the box's width (left/right) or height (top/bottom),
    rounded outwards, then the box is clipped to the image. ``None`` for an empty mask.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    h, w = mask.shape
    return (max(0, math.floor(x0 - dx)), max(0, math.floor(y0 - dy)),
            min(w, math.ceil(x1 + dx)), min(h, math.ceil(y1 + dy)))


def mask_crop(image: np.ndarray, mask: np.ndarray, background: str = "blur", margin: float = 0.1,
              size: int | None = None, fill: Sequence[int] = (123, 117, 104)) -> np.ndarray | None:
    """The square crop of one mask that :meth:`~anyseg.text.clip.ClipModel.classify_masks` shows CLIP.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` bool.
        background: ``"blur"``, ``"grey"`` or ``"none"``: what the pixels outside the mask become.
        margin: context around the mask's box, as a fraction of the box's width / height per side.
        size: side of the returned square in pixels; ``None`` keeps the crop's resolution
            (the square's side is then the crop's longest side).
        fill: uint8 RGB colour of the padding (and of the background for ``"grey"``):
            the model's normalisation mean.

    Returns:
        ``(side, side, 3)`` uint8: the box of :func:`crop_box`, padded to a square with ``fill``
        (centred: ``(side - h) // 2`` rows above, the rest below; likewise for columns), resized
        to ``size``, with the background treated. ``None`` for an empty mask.
    """
    import cv2

    if background not in BACKGROUNDS:
        raise InputError(f"unknown background {background!r}; expected one of {', '.join(BACKGROUNDS)}")
    box = crop_box(mask, margin)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    crop = image[y0:y1, x0:x1]
    alpha = mask[y0:y1, x0:x1].astype(np.float32)
    h, w = crop.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = np.empty((side, side, 3), dtype=np.uint8)
    square[:] = np.asarray(fill, dtype=np.uint8)
    square[top:top + h, left:left + w] = crop
    a = np.zeros((side, side), dtype=np.float32)
    a[top:top + h, left:left + w] = alpha
    if size is not None:
        square, a = resize_image(square, (size, size)), resize_image(a, (size, size))
    if background == "none":
        return square
    if background == "grey":
        back = np.empty_like(square)
        back[:] = np.asarray(fill, dtype=np.uint8)
    else:  # blur
        sigma = max(1.0, BLUR_SIGMA * square.shape[0])
        back = cv2.GaussianBlur(square, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    a = a[..., None]
    out = a * square.astype(np.float32) + (1.0 - a) * back.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def sliding_windows(height: int, width: int, size: int, stride: int) -> list[tuple[int, int, int, int]]:
    """``(y0, x0, y1, x1)`` windows of ``min(size, height) x min(size, width)`` pixels every ``stride``.

    As mmseg's ``slide_inference`` (used by SCLIP): ``1 + ceil((L - size) / stride)`` windows
    per axis, the last one shifted back to end at the edge, so the windows cover every pixel.
    """
    def starts(length: int) -> list[int]:
        n = max(length - size + stride - 1, 0) // stride + 1
        return sorted({max(min(i * stride + size, length) - size, 0) for i in range(n)})

    wh, ww = min(size, height), min(size, width)
    return [(y, x, y + wh, x + ww) for y in starts(height) for x in starts(width)]


def as_mask_stack(masks: Masks | np.ndarray, size: tuple[int, int], what: str = "masks") -> np.ndarray:
    """``(N, H, W)`` bool from a :class:`Masks` or an array, checked against the image size.

    A single ``(H, W)`` mask becomes a stack of one; non-bool arrays are ``> 0``. A wrong shape
    is a one-line :class:`InputError` naming ``what`` and both sizes.
    """
    arr = masks.masks if isinstance(masks, Masks) else np.asarray(masks)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{what} must have shape (N, H, W); got {'x'.join(map(str, arr.shape))}")
    if tuple(arr.shape[1:]) != tuple(size):
        raise InputError(f"{what} are {arr.shape[2]}x{arr.shape[1]} but the image is {size[1]}x{size[0]} (W x H)")
    return arr if arr.dtype == bool else arr > 0


def vote_in_masks(logits: np.ndarray, masks: Masks | np.ndarray) -> np.ndarray:
    """Dense class scores made constant inside each mask: ``(C, H, W)`` float32.

    Every pixel of a mask gets the mask's mean score per class (the mean over all of the
    mask's pixels of the input ``logits``). Masks are painted from the largest to the smallest
    area, so where masks overlap the smallest mask's mean wins (the most specific region);
    pixels in no mask, and empty masks, leave the input scores unchanged. The input is not
    modified.
    """
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 3:
        raise InputError(f"logits must have shape (C, H, W); got {'x'.join(map(str, logits.shape))}")
    m = as_mask_stack(masks, logits.shape[1:])
    areas = m.sum(axis=(1, 2))
    owner = np.full(logits.shape[1:], -1, dtype=np.int64)
    for i in np.argsort(-areas, kind="stable"):
        if areas[i]:
            owner[m[i]] = i
    means = np.zeros((logits.shape[0], len(m)), dtype=np.float32)
    for i in np.flatnonzero(areas):
        means[:, i] = logits[:, m[i]].mean(axis=1)
    inside = owner >= 0
    out = logits.copy()
    out[:, inside] = means[:, owner[inside]]
    return out

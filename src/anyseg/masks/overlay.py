"""Visualisation: a deterministic palette, mask overlays and prompt drawing (RGB uint8)."""

from __future__ import annotations

import colorsys
from typing import Any

import cv2
import numpy as np

from anyseg.errors import InputError
from anyseg.types import Masks, Prompt

__all__ = ["palette", "overlay", "draw_prompt"]

_GOLDEN = 0.618033988749895
_POSITIVE = (0, 200, 0)
_NEGATIVE = (230, 0, 0)
_RIM = (255, 255, 255)
_BOX = (0, 160, 255)


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
    return max(1, round(min(h, w) / 400))


def overlay(
    image: np.ndarray,
    masks: Masks,
    alpha: float = 0.5,
    colors: np.ndarray | None = None,
    contours: bool = True,
) -> np.ndarray:
    """Blend each mask's colour over a copy of ``image`` and draw its outline.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (grayscale and RGBA are accepted too).
        masks: masks over the same ``H x W``.
        alpha: opacity of the mask colour, in ``[0, 1]``.
        colors: ``(N, 3)`` (or one ``(3,)``) RGB colours, mask ``i`` gets ``colors[i]``;
            default :func:`palette`.
        contours: draw each mask's outline (holes included) in its colour.

    Larger masks are drawn first so that small ones stay visible on top.
    """
    img = _rgb(image)
    if not isinstance(masks, Masks):
        raise InputError(f"overlay expects a Masks; got {type(masks).__name__}")
    h, w = img.shape[:2]
    if masks.image_size != (h, w):
        mh, mw = masks.image_size
        raise InputError(f"masks are {mh}x{mw} but the image is {h}x{w}; they must have the same size")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1]; got {alpha}")
    n = len(masks)
    if colors is None:
        cols = palette(n)
    else:
        cols = np.asarray(colors)
        if cols.shape == (3,):
            cols = np.tile(cols, (n, 1))
        if cols.ndim != 2 or cols.shape[1] != 3 or len(cols) < n:
            raise InputError(f"colors must have shape ({n}, 3); got {'x'.join(map(str, cols.shape))}")
        cols = np.clip(cols, 0, 255).astype(np.uint8)
    thickness = _thickness(h, w)
    order = np.argsort(-masks.masks.sum(axis=(1, 2), dtype=np.int64), kind="stable")
    out = img.astype(np.float32)
    for i in order:
        m = masks.masks[i]
        color = cols[i].astype(np.float32)
        out[m] = out[m] * (1.0 - alpha) + color * alpha
        if contours:
            found, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
            if found:
                canvas = np.zeros((h, w), dtype=np.uint8)
                cv2.drawContours(canvas, found, -1, 255, thickness)
                out[canvas > 0] = color
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


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

"""GrabCut and its helpers for the classical engines (image and video): the degenerate-colour
guard, the deterministic GrabCut loop, geodesic distances and signed-distance logits.

Why the guard exists, and what it costs, is in :mod:`anyseg.models.classical`'s docstring
("Bounded work").
"""

from __future__ import annotations

import cv2
import numpy as np

from anyseg import cancel
from anyseg.errors import InputError
from anyseg.models.classical_score import prune

__all__ = ["DEGENERATE_PIXELS", "degenerate_pixels", "dither_degenerate", "geodesic", "grabcut", "signed_distance"]

#: an exact colour on at least this many pixels gets the dither (:func:`dither_degenerate`)
DEGENERATE_PIXELS = 4096
_DITHER_SEED = 12345
MIN_SAMPLES = 16  # GrabCut's k-means needs a few samples per colour model
_PRUNE_OVERLAP = 0.5  # Bhattacharyya coefficient above which a foreground component is dropped
_CONVERGED = 1e-3  # stop iterating when fewer than this fraction of the pixels changed
LOGIT_CLIP = 20.0


def degenerate_pixels(image: np.ndarray, count: int = DEGENERATE_PIXELS) -> np.ndarray:
    """``(H, W)`` bool: the pixels of ``(H, W, 3)`` uint8 ``image`` whose exact colour is on at
    least ``count`` pixels: one-colour areas large enough to make GrabCut's cut slow (see the
    module docstring)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 image; got {image.dtype} {image.shape}")
    flat = image.reshape(-1, 3).astype(np.int32)
    key = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    popular = counts >= max(1, int(count))
    return popular[inverse.reshape(-1)].reshape(image.shape[:2])


def dither_degenerate(image: np.ndarray) -> tuple[np.ndarray, int]:
    """``(image, n)``: ``image`` with a deterministic +-1 dither per channel on its
    :func:`degenerate_pixels` (clipped to 0..255; the image itself when there are none), and
    how many pixels that is. The guard every GrabCut input of the classical engines goes through."""
    where = degenerate_pixels(image)
    n = int(where.sum())
    if n == 0:
        return image, 0
    noise = np.random.default_rng(_DITHER_SEED).integers(-1, 2, size=image.shape, dtype=np.int16)
    out = image.astype(np.int16)
    out[where] += noise[where]
    return np.clip(out, 0, 255).astype(np.uint8), n


def grabcut(work: np.ndarray, labels: np.ndarray, iterations: int, prune_iters: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run GrabCut on a label map; returns the final labels and the (1, 65) GMMs.

    Deterministic (fixed OpenCV RNG seed). Stops early, keeping the labels so far, when one
    side has too few pixels to fit a colour model or OpenCV refuses the input.
    """
    cv2.setRNGSeed(12345)
    mask = labels.copy()
    if (mask & 1).sum() >= mask.size - MIN_SAMPLES:  # no background to learn from: use the image border
        border = np.ones(mask.shape, bool)
        border[1:-1, 1:-1] = False
        mask[border & (mask == cv2.GC_PR_FGD)] = cv2.GC_PR_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    prev = None
    for it in range(iterations):
        fg = (mask & 1).astype(bool)
        n_fg = int(fg.sum())
        if n_fg < MIN_SAMPLES or mask.size - n_fg < MIN_SAMPLES:
            break
        if prev is not None and it > prune_iters and int((fg != prev).sum()) <= _CONVERGED * mask.size:
            break  # converged
        prev = fg
        cancel.check()  # one cut per step: a cancelled job stops here
        try:
            if it < prune_iters:
                cv2.grabCut(work, mask.copy(), None, bgd, fgd, 0, cv2.GC_INIT_WITH_MASK)
                prune(bgd, fgd, _PRUNE_OVERLAP)
                cv2.grabCut(work, mask, None, bgd, fgd, 1, cv2.GC_EVAL_FREEZE_MODEL)
            else:
                cv2.grabCut(work, mask, None, bgd, fgd, 1, cv2.GC_INIT_WITH_MASK if it == 0 else cv2.GC_EVAL)
        except cv2.error:
            break
    return mask, bgd, fgd


def geodesic(cost: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Geodesic distance from seed pixels ``(K, 2)`` XY over a cost image (inf without seeds)."""
    if len(seeds) == 0:
        return np.full(cost.shape, np.inf, np.float32)
    from skimage.graph import MCP_Geometric

    dist, _ = MCP_Geometric(cost.astype(np.float64), fully_connected=True).find_costs([(int(y), int(x)) for x, y in seeds])
    return dist.astype(np.float32)


def signed_distance(fg: np.ndarray) -> np.ndarray:
    """Logits: distance to the boundary, positive inside, negative outside, in +-[0.5, 20]."""
    m = fg.astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 3) if m.any() else np.zeros(m.shape, np.float32)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3) if not m.all() else np.zeros(m.shape, np.float32)
    out = np.where(fg, inside - 0.5, 0.5 - outside)
    if not m.any():
        out[:] = -LOGIT_CLIP
    elif m.all():
        out[:] = LOGIT_CLIP
    return np.clip(out, -LOGIT_CLIP, LOGIT_CLIP).astype(np.float32)

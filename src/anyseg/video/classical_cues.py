"""The mask and flow cues of the ``classical`` video engine (:mod:`anyseg.video.classical`).

Pure functions on working-resolution arrays, no state: structuring discs, the connected
components a refined mask keeps (:func:`keep_overlapping`), the motion cue
(:func:`motion_score`, by normalised convolution of the backward flow, :func:`normalized_conv`),
the colour cue (:func:`colour_candidates`) and the split of pixels claimed by several objects
(:func:`resolve_overlaps`). The method they serve is described in :mod:`anyseg.video.classical`.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["disc", "keep_overlapping", "normalized_conv", "motion_score", "colour_candidates", "resolve_overlaps"]

_MOTION_DEPTH = 3.0  # pixels this deep inside (outside) the mask count fully for the object (background)
_MOTION_FIT = 0.5  # a pixel's flow must be within this fraction of the separation from one of the motions


def disc(r: int) -> np.ndarray:
    """An elliptic structuring element of radius ``r`` (``2 r + 1`` pixels across)."""
    r = max(0, int(r))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def keep_overlapping(mask: np.ndarray, warped: np.ndarray) -> np.ndarray:
    """The connected components of ``mask`` that overlap ``warped`` (the largest one if none does)."""
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    keep = np.bincount(comp[warped], minlength=n) > 0
    keep[0] = False
    if not keep.any():
        keep[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))] = True
    return keep[comp]


def normalized_conv(flow: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Weighted Gaussian average of a 2-channel field (the global weighted mean where no weight is near)."""
    den = cv2.GaussianBlur(weight, (0, 0), sigma)
    num = cv2.GaussianBlur(flow * weight[..., None], (0, 0), sigma)
    out = num / np.maximum(den, 1e-6)[..., None]
    far = den < 1e-3
    if far.any():
        total = float(weight.sum())
        out[far] = (flow * weight[..., None]).reshape(-1, 2).sum(0) / total if total > 0 else 0.0
    return out


def motion_score(back: np.ndarray, warped: np.ndarray, sigma: float, min_sep: float, ring: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(z, ok)``: whether each pixel's flow is the object's (``z`` near +1) or the nearby
    background's (near -1); ``ok`` where those two motions differ by more than ``min_sep`` and
    the pixel's flow is close to one of them."""
    w8 = warped.astype(np.uint8)
    depth_in = cv2.distanceTransform(w8, cv2.DIST_L2, 3)
    depth_out = cv2.distanceTransform(1 - w8, cv2.DIST_L2, 3)
    w_obj = np.minimum(depth_in / _MOTION_DEPTH, 1.0).astype(np.float32)
    w_bg = (np.clip((depth_out - 1) / _MOTION_DEPTH, 0, 1) * (depth_out < ring)).astype(np.float32)
    f_obj, f_bg = normalized_conv(back, w_obj, sigma), normalized_conv(back, w_bg, sigma)
    sep = np.hypot(*(f_obj - f_bg).transpose(2, 0, 1))
    d_obj = np.hypot(*(back - f_obj).transpose(2, 0, 1))
    d_bg = np.hypot(*(back - f_bg).transpose(2, 0, 1))
    z = (d_bg - d_obj) / np.maximum(sep, 1e-6)
    ok = (sep > min_sep) & (np.minimum(d_obj, d_bg) < _MOTION_FIT * sep)
    return z, ok


def colour_candidates(bgr: np.ndarray, warped: np.ndarray, labels: np.ndarray, fgd: np.ndarray, bgd: np.ndarray,
                       reach: int, min_llr: float) -> np.ndarray:
    """Background-labelled pixels up to ``reach`` outside the warped mask whose colour is much
    likelier under the prompt frame's foreground model than its background one (log-likelihood
    ratio > ``min_llr``) and that connect to the warped mask through such pixels."""
    from anyseg.models.classical_score import loglik

    zone = cv2.dilate(warped.astype(np.uint8), disc(reach)).astype(bool)
    zone &= (labels == cv2.GC_BGD) | (labels == cv2.GC_PR_BGD)
    if not zone.any():
        return zone
    pix = bgr[zone].astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        llr = np.nan_to_num(loglik(fgd, pix) - loglik(bgd, pix), nan=0.0)
    cand = np.zeros_like(warped)
    cand[zone] = llr > min_llr
    if not cand.any():
        return cand
    n, comp = cv2.connectedComponents((cand | warped).astype(np.uint8), connectivity=8)
    touch = np.zeros(n, bool)
    touch[np.unique(comp[warped])] = True
    touch[0] = False
    return cand & touch[comp]


def resolve_overlaps(masks: dict[int, np.ndarray], soft: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Disjoint masks: a pixel claimed by several objects goes to the highest warped soft mask
    there, ties broken by the depth inside the mask."""
    if len(masks) < 2:
        return masks
    ids = list(masks)
    if np.sum([masks[i] for i in ids], axis=0).max() <= 1:
        return masks
    conf = []
    for i in ids:
        depth = cv2.distanceTransform(masks[i].astype(np.uint8), cv2.DIST_L2, 3)
        conf.append(np.where(masks[i], soft[i] + 0.001 * np.minimum(depth, 100), -1.0))
    best = np.argmax(np.stack(conf), 0)
    return {i: masks[i] & (best == k) for k, i in enumerate(ids)}

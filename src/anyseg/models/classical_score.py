"""The classical engine's colour models, evidence and scores: how much a candidate looks like an object.

Every candidate mask of :class:`~anyseg.models.classical.ClassicalPredictor` gets the
:data:`EVIDENCE` columns (``Masks.data["evidence"]``), all measured on the image and the mask at
the working resolution, none on the ground truth:

* ``contrast``: the mean GrabCut edge weight ``1 - exp(-beta |dI|^2)`` across the mask's boundary
  (1 = the boundary follows strong edges), :func:`contrast`;
* ``separation``: the mean posterior, under the candidate's final colour models, of the label
  each undecided pixel got, :func:`separation` (0 without colour models);
* ``ring_separation``: the Bhattacharyya distance between the colour histograms of the mask and
  of a ring around it, :func:`ring_separation` (0 when its surroundings look like it: a piece of
  a larger region, or a region that leaked into the background);
* ``log_area``: the log of the mask's fraction of the image;
* ``border``: the fraction of the image's border pixels inside the mask (the background touches
  the border far more often than a clicked object);
* ``agreement``: the fraction of the GrabCut runs of this prompt (different starts) that ended at
  this mask (IoU > 0.9): stability under a change of the initialisation;
* ``prior_iou``: IoU with the mask prompt (0 without one): a correction stays close to it;
* ``tightness``: (fraction of the box's rows) x (fraction of its columns) the mask crosses (1
  without a box);
* ``solidity``: the mask's area over its convex hull's (a region that leaked along the road or
  into the next car is ragged; most objects are nearly convex), :func:`solidity`;
* ``interior_contrast``: the mean edge weight inside the mask, away from its boundary
  (:func:`interior_contrast`): a leak swallows the object's own strong boundary, a flat piece of
  background has none.

Scores. A box: ``contrast x separation x tightness`` (unchanged; its rank correlation with the
true IoU is in ``docs/RESULTS.md``). Clicks alone, and a mask prompt with or without clicks:
:func:`logistic_score`, a logistic model of the IoU over the evidence, with the weights
:data:`CLICK_WEIGHTS` and :data:`EDIT_WEIGHTS` fitted by ``bench/classical_clicks.py --fit`` (cross-
entropy to the IoU at the working resolution, on every candidate of simulated sessions:
``EDIT_WEIGHTS`` on the GrabCut tuning split's later clicks; ``CLICK_WEIGHTS`` on the first
clicks of that split and of CamVid's tuning frames, each set weighing the same
(``--fit-from``), so that the first click's score does not learn GrabCut's object sizes alone;
``docs/RESULTS.md`` gives the splits and the held-out checks), times a gate on
the boundary's *excess* contrast over the image's mean edge weight, so that a mask whose
boundary follows no edge stronger than the rest of the image (a flat image, pure texture)
scores low whatever the other evidence says.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = ["EVIDENCE", "CLICK_WEIGHTS", "EDIT_WEIGHTS", "contrast", "evidence", "interior_contrast", "iou",
           "logistic_score", "loglik", "prune", "ring_separation", "separation", "solidity", "tightness", "unpack_gmm"]

#: names of the evidence columns (``Masks.data["evidence"]``)
EVIDENCE = ("contrast", "separation", "ring_separation", "log_area", "border", "agreement", "prior_iou", "tightness",
            "solidity", "interior_contrast")
#: logistic weights over :data:`EVIDENCE`, then the bias: clicks alone (the first click)
CLICK_WEIGHTS = np.array([0.484, 2.202, 2.075, 0.443, -3.887, -0.344, 0.0, 0.0, -0.725, 3.033, -2.152])
#: the same with a mask prompt (the later clicks of a session)
EDIT_WEIGHTS = np.array([-0.011, -1.42, 0.497, 0.674, -4.102, 0.732, 2.207, 0.0, 0.0, 0.0, 1.66])
#: width of the ring a mask's colours are compared with, / sqrt(mask area)
RING = 0.25
#: the score is scaled down below this excess boundary contrast
CONTRAST_FLOOR = 0.3
_MIN_SAMPLES = 16


def evidence(feats: dict[str, Any], fg: np.ndarray, agreement: float, separation: float,
             prior: np.ndarray | None = None, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The :data:`EVIDENCE` columns of the ``(h, w)`` bool mask ``fg`` (zeros for an empty one).

    ``feats`` are the embedding's features (``bgr``, ``contrast_h``, ``contrast_v``),
    ``agreement`` and ``separation`` are computed by the caller (they need the other runs and
    the colour models), ``prior`` is the mask prompt and ``box`` the box prompt
    ``(x0, y0, x1, y1)`` at the working resolution.
    """
    if not fg.any():
        return np.zeros(len(EVIDENCE), np.float32)
    border = np.concatenate([fg[0], fg[-1], fg[:, 0], fg[:, -1]]).mean()
    return np.array([contrast(feats, fg), separation, ring_separation(feats["bgr"], fg), np.log(max(float(fg.mean()), 1e-4)),
                     border, agreement, 0.0 if prior is None else iou(fg, prior), tightness(fg, box), solidity(fg),
                     interior_contrast(feats, fg)], np.float32)


def logistic_score(weights: np.ndarray, columns: np.ndarray, feats: dict[str, Any]) -> float:
    """The logistic model ``weights`` (over :data:`EVIDENCE`, then the bias) of the evidence
    ``columns``, gated by the excess boundary contrast (see the module docstring)."""
    z = float(np.dot(weights[:-1], columns) + weights[-1])
    typical = float((feats["contrast_h"].sum() + feats["contrast_v"].sum())
                    / max(1, feats["contrast_h"].size + feats["contrast_v"].size))
    excess = (float(columns[0]) - typical) / max(1e-6, 1.0 - typical)
    return float(1.0 / (1.0 + np.exp(-z)) * min(1.0, max(0.0, excess) / CONTRAST_FLOOR))


def ring_separation(image: np.ndarray, fg: np.ndarray) -> float:
    """Bhattacharyya distance between the colour histograms (8 levels a channel) of a mask and
    of the ring around it, :data:`RING` ``* sqrt(area)`` wide (at least 3 pixels)."""
    n = int(fg.sum())
    width = max(3, round(RING * np.sqrt(n)))
    ring = ~fg & (cv2.distanceTransform((~fg).astype(np.uint8), cv2.DIST_L2, 3) <= width)
    m = int(ring.sum())
    if n < _MIN_SAMPLES or m < _MIN_SAMPLES:
        return 0.0
    q = (image // 32).astype(np.int32)
    key = (q[..., 0] << 6) | (q[..., 1] << 3) | q[..., 2]
    inner, outer = np.bincount(key[fg], minlength=512) / n, np.bincount(key[ring], minlength=512) / m
    return float(1.0 - np.sqrt(inner * outer).sum())


def unpack_gmm(model: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's GrabCut GMM layout ``(1, 65)``: 5 weights, 5x3 means, 5x3x3 covariances."""
    m = model.reshape(-1)
    return m[:5], m[5:20].reshape(5, 3), m[20:65].reshape(5, 3, 3)


def prune(bgd: np.ndarray, fgd: np.ndarray, max_overlap: float) -> None:
    """Zero (in place) the weights of the foreground GMM's components whose Bhattacharyya
    coefficient with a background component exceeds ``max_overlap`` (the model stays as it is
    when that would be all of them)."""
    wb, mb, cb = unpack_gmm(bgd)
    wf, mf, cf = unpack_gmm(fgd)
    eye = np.eye(3) * 1e-3
    overlap = np.zeros(5)
    for k in np.flatnonzero(wf > 0):
        for j in np.flatnonzero(wb > 0):
            s1, s2 = cf[k] + eye, cb[j] + eye
            s = (s1 + s2) / 2
            d = mf[k] - mb[j]
            dist = d @ np.linalg.solve(s, d) / 8 + 0.5 * np.log(np.linalg.det(s) / np.sqrt(max(np.linalg.det(s1) * np.linalg.det(s2), 1e-300)))
            overlap[k] = max(overlap[k], float(np.exp(-dist)))
    keep = (wf > 0) & (overlap <= max_overlap)
    if not keep.any():
        return
    fgd[0, :5] = np.where(keep, wf, 0.0) / wf[keep].sum()


def loglik(model: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """Log density of ``(n, 3)`` colours under a GrabCut GMM (``-inf`` for an empty model)."""
    weights, means, covs = unpack_gmm(model)
    terms = []
    for k in np.flatnonzero(weights > 0):
        cov = covs[k] + np.eye(3) * 1e-2
        d = pix - means[k]
        q = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
        terms.append(np.log(weights[k]) - 0.5 * (q + np.log(np.linalg.det(cov)) + 3 * np.log(2 * np.pi)))
    if not terms:
        return np.full(len(pix), -np.inf)
    t = np.stack(terms)
    top = t.max(0)
    return top + np.log(np.exp(t - top).sum(0))


def separation(work: np.ndarray, labels: np.ndarray, fg: np.ndarray, bgd: np.ndarray, fgd: np.ndarray) -> float:
    """Mean posterior, under the GMMs ``bgd`` / ``fgd``, of the label each undecided pixel of the
    GrabCut label map ``labels`` got in ``fg`` (0 without undecided pixels or models)."""
    free = (labels == cv2.GC_PR_FGD) | (labels == cv2.GC_PR_BGD)
    if not free.any() or not bgd[0, :5].any() or not fgd[0, :5].any():
        return 0.0
    pix = work[free].astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        llr = np.nan_to_num(loglik(fgd, pix) - loglik(bgd, pix), nan=0.0, posinf=50.0, neginf=-50.0)
        p_fg = 1.0 / (1.0 + np.exp(-np.clip(llr, -50, 50)))
    return float(np.where(fg[free], p_fg, 1.0 - p_fg).mean())


def contrast(feats: dict[str, Any], fg: np.ndarray) -> float:
    """Mean GrabCut edge weight across the mask boundary (0 when there is no boundary)."""
    cut_h, cut_v = fg[:, 1:] != fg[:, :-1], fg[1:] != fg[:-1]
    n = int(cut_h.sum() + cut_v.sum())
    if n == 0:
        return 0.0
    return float((feats["contrast_h"][cut_h].sum() + feats["contrast_v"][cut_v].sum()) / n)


def solidity(fg: np.ndarray) -> float:
    """The mask's area over the area of the convex hull of all its parts (1 for a convex mask)."""
    contours, _ = cv2.findContours(fg.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0
    hull = cv2.convexHull(np.concatenate(contours))
    return float(min(1.0, fg.sum() / max(1.0, cv2.contourArea(hull))))


def interior_contrast(feats: dict[str, Any], fg: np.ndarray) -> float:
    """Mean GrabCut edge weight between neighbouring pixels of the mask's interior (the mask
    eroded by 2 pixels; 0 when nothing is left)."""
    inner = cv2.erode(fg.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    pairs_h, pairs_v = inner[:, :-1] & inner[:, 1:], inner[:-1] & inner[1:]
    n = int(pairs_h.sum() + pairs_v.sum())
    if n == 0:
        return 0.0
    return float((feats["contrast_h"][pairs_h].sum() + feats["contrast_v"][pairs_v].sum()) / n)


def tightness(fg: np.ndarray, box: tuple[int, int, int, int] | None) -> float:
    """Box-tightness prior: (fraction of the box's rows) x (fraction of its columns) the mask crosses.

    A box prompt is expected to be roughly tight, so every row and column of it should
    cross the object; 1 without a box.
    """
    if box is None:
        return 1.0
    inner = fg[box[1]:box[3], box[0]:box[2]]
    return float(inner.any(1).mean() * inner.any(0).mean())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks (1 when both are empty)."""
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0

"""The ``classical`` few-shot method: colour/texture back-projection and keypoint matching, then GrabCut.

No weights, CPU only, deterministic: the measured baseline of :mod:`anyseg.fewshot` (what the
learned methods have to beat) and the method ``auto`` falls back to without SAM-family weights.
It knows colours, local textures and keypoints, not objects: ``docs/FEWSHOT.md`` says what it
is and is not.

Fit (:meth:`ClassicalMethod.fit`), per reference, at a working resolution (longest side
``max_side``, 512 by default):

* colour: an HSV histogram (16 hue x 8 saturation x 4 value bins, smoothed over neighbouring
  bins, hue circular) of the mask and of the rest of the image;
* texture: a histogram of uniform LBP codes (8 neighbours, radius 1; Ojala et al. 2002) times 3
  gradient-magnitude levels, inside and outside the mask;
* keypoints: SIFT (Lowe 2004; ``detector="orb"``: ORB) keypoints and descriptors inside the
  mask, with the mask's interior point (farthest from its boundary) and size;
* the reference's own evidence level: the mean back-projected log-ratio inside its mask, which
  normalises the maps of new images (1 = as much evidence as the reference object itself).

Predict (:meth:`ClassicalMethod.predict`), per image:

1. back-projection (Swain and Ballard 1991): each pixel's log-ratio of the reference
   foreground's colour and texture likelihoods to the background's (half the reference's
   background, half this image's own histogram: Swain and Ballard's ratio histogram, so a colour
   that is everywhere in the new image is no evidence), colour + 0.5 x texture (naive Bayes,
   damped), Gaussian-smoothed; several references: the maximum of their normalised maps;
2. keypoints: the image's descriptors matched to each reference's (nearest two, Lowe's ratio
   test at 0.8, target -> reference so that several copies of the object all match), each match
   voting for the object's centre, scale and rotation (Lowe's Hough clustering, greedy); every
   cluster of at least 3 votes is verified by a RANSAC similarity fit
   (``cv2.estimateAffinePartial2D``) and places the reference mask (warped) in the image;
3. candidates: the keypoint placements, and the connected components of the map above 0.5 that
   no placement explains; each becomes a box (10 % margin) and a positive click at its interior
   point, segmented by :class:`~anyseg.models.classical.ClassicalPredictor` (GrabCut);
4. scores, from evidence only: keypoints ``1 - exp(-(n - 2) / 4)`` for ``n >= 3`` RANSAC
   inliers inside the mask (times the IoU with the placed reference mask); appearance: the
   Bhattacharyya similarity of the mask's colour and texture histograms to the reference's,
   times the back-projection's contrast between the mask and a ring around it, times the
   agreement of its area with the reference's; fused as ``1 - (1 - 0.5 a)(1 - 0.95 k)`` (colour
   alone never says more than 0.5: many things share a colour) and scaled by GrabCut's own
   box score (``0.6 + 0.4 s``). Without keypoints and with weak appearance the score stays low.

``instances="one"``: the best candidate (its score may be low: that is the evidence);
``"all"``: every candidate scoring at least ``threshold`` (0.3), mask-NMS at IoU 0.5, best
first, at most ``max_instances``. ``Masks.data`` carries each mask's ``source`` (``keypoints``
or ``colour``), ``reference`` (index), ``inliers``, ``appearance`` and ``keypoint_evidence``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import cv2
import numpy as np

from anyseg.errors import InputError
from anyseg.fewshot.base import INSTANCES, Reference, empty_masks
from anyseg.masks.boxes import mask_nms
from anyseg.models.classical import ClassicalPredictor
from anyseg.types import Masks, Prompt

__all__ = ["ClassicalMethod", "DETECTORS", "DEFAULT_MAX_SIDE", "DEFAULT_THRESHOLD", "DEFAULT_MAX_INSTANCES"]

#: keypoint detectors: SIFT (float descriptors, L2) or ORB (binary, Hamming)
DETECTORS = ("sift", "orb")
#: longest side of the working resolution of the features (pixels)
DEFAULT_MAX_SIDE = 512
#: least score of an instance with ``instances="all"``
DEFAULT_THRESHOLD = 0.3
#: most instances with ``instances="all"``
DEFAULT_MAX_INSTANCES = 10
_BINS = (16, 8, 4)  # HSV histogram bins
_N_COLOUR = _BINS[0] * _BINS[1] * _BINS[2]
_GRAD_LEVELS = (12.0, 40.0)  # gradient magnitude thresholds (grey levels per pixel) of the texture bins
_N_TEXTURE = 10 * (len(_GRAD_LEVELS) + 1)
_TEXTURE_WEIGHT = 0.5  # naive-Bayes damping of the texture log-ratio
_EPS = 1e-3  # added to every histogram probability (unseen bins: no evidence either way)
_MIN_LEVEL = float(np.log(1.5))  # least normaliser of a map: references with indistinct colours
_MAP_THRESHOLD = 0.5  # normalised map level of a colour candidate's pixels
_MIN_COMPONENT = 0.002  # a colour candidate covers at least this fraction of the image
_MAX_COMPONENTS = 12
_RATIO = 0.8  # Lowe's ratio test
_MAX_MATCHES = 1500
_MIN_INLIERS = 3
_MAX_PLACEMENTS = 12
_BOX_MARGIN = 0.1
_COLOUR_CAP, _KEYPOINT_CAP = 0.5, 0.95
_NMS_IOU = 0.5
_SEGMENT_ONE = 3  # candidates segmented with instances="one" (the best-ranked ones)


@dataclass(frozen=True, eq=False)
class _Image:
    """One image at the working resolution: colour and texture bin maps, keypoints."""

    size: tuple[int, int]  # (h, w) working
    scale: float  # working / original
    colour: np.ndarray  # (h, w) int bin
    texture: np.ndarray  # (h, w) int bin
    points: np.ndarray  # (K, 4) x, y, size, angle (degrees)
    descriptors: np.ndarray | None


@dataclass(frozen=True, eq=False)
class _RefModel:
    name: str
    fg_colour: np.ndarray
    bg_colour: np.ndarray
    fg_texture: np.ndarray
    bg_texture: np.ndarray
    level: float  # mean smoothed log-ratio inside the mask, on the reference itself
    mask: np.ndarray  # (h, w) bool, working resolution
    centre: np.ndarray  # (2,) xy interior point
    area: float  # fraction of the image
    diameter: float  # sqrt(mask pixels), working
    points: np.ndarray  # (K, 4) keypoints inside the mask
    descriptors: np.ndarray | None


@dataclass(frozen=True, eq=False)
class _Fitted:
    refs: tuple[_RefModel, ...]


@dataclass
class _Candidate:
    box: np.ndarray  # (4,) working xyxy
    point: np.ndarray  # (2,) working xy
    source: str  # "keypoints" or "colour"
    ref: int
    placed: np.ndarray | None = None  # the warped reference mask
    inlier_xy: np.ndarray | None = None  # (n, 2) target keypoints of the RANSAC inliers
    rank: float = 0.0


class ClassicalMethod:
    """Few-shot segmentation with no weights (see the module docstring).

    Args:
        max_side: longest side of the features' working resolution (default 512).
        threshold: least score of an instance with ``instances="all"`` (default 0.3).
        max_instances: most instances with ``instances="all"`` (default 10).
        detector: ``sift`` (default) or ``orb``.
        grabcut_side: working resolution of the GrabCut engine (default 360).
    """

    name = "classical"

    def __init__(self, max_side: int = DEFAULT_MAX_SIDE, threshold: float = DEFAULT_THRESHOLD,
                 max_instances: int = DEFAULT_MAX_INSTANCES, detector: str = "sift", grabcut_side: int = 360) -> None:
        if not _is_int(max_side) or max_side < 32:
            raise InputError(f"max_side must be an integer of at least 32 pixels; got {max_side!r}")
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0.0 <= threshold <= 1.0:
            raise InputError(f"threshold must be a number in [0, 1]; got {threshold!r}")
        if not _is_int(max_instances) or max_instances < 1:
            raise InputError(f"max_instances must be a positive integer; got {max_instances!r}")
        if detector not in DETECTORS:
            raise InputError(f"detector must be one of {', '.join(DETECTORS)}; got {detector!r}")
        self.max_side, self.threshold, self.max_instances = int(max_side), float(threshold), int(max_instances)
        self.detector = detector
        self.engine = ClassicalPredictor(max_side=grabcut_side)

    @classmethod
    def from_options(cls, model: str | None = None, features: str | None = None, device: str | None = None,
                     allow_download: bool = True, **options: Any) -> "ClassicalMethod":
        """The factory of :data:`anyseg.fewshot.base.METHODS`: no model, no feature model, CPU only."""
        if model not in (None, "auto", "classical"):
            raise InputError(f"the classical few-shot method uses no model; got --model {model} (use --method "
                             "matcher, persam, seggpt or sam3 for a model)")
        if features is not None:
            raise InputError(f"the classical few-shot method uses no feature model; got --features {features} "
                             "(--features is for --method matcher)")
        if device is not None and str(device).strip() != "cpu":
            raise InputError(f"the classical few-shot method runs on the CPU only; got --device {device}")
        known = {"max_side", "threshold", "max_instances", "detector", "grabcut_side"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown option(s) of the classical few-shot method: {', '.join(unknown)} "
                             f"(expected {', '.join(sorted(known))})")
        return cls(**options)

    # -- fit --------------------------------------------------------------------------------
    def fit(self, refs: Sequence[Reference]) -> _Fitted:
        """Histograms, keypoints and the evidence level of each reference."""
        return _Fitted(tuple(self._fit_one(r) for r in refs))

    def _fit_one(self, ref: Reference) -> _RefModel:
        img = _features(ref.image, self.max_side, self.detector, need_points=False)
        h, w = img.size
        mask = cv2.resize(ref.mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        if not mask.any() or mask.all():  # a tiny (or nearly whole) mask lost by the resize: the nearest pixels
            mask = cv2.resize(ref.mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) >= 0.5
            if not mask.any():
                mask.flat[np.argmax(cv2.resize(ref.mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA))] = True
        gray = _gray(_working(ref.image, self.max_side))
        det_mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8))
        points, desc = _keypoints(gray, self.detector, det_mask)
        fg_c, bg_c = _hist(img.colour, mask, _N_COLOUR, colour=True), _hist(img.colour, ~mask, _N_COLOUR, colour=True)
        fg_t, bg_t = _hist(img.texture, mask, _N_TEXTURE), _hist(img.texture, ~mask, _N_TEXTURE)
        dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
        cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
        model = _RefModel(ref.name, fg_c, bg_c, fg_t, bg_t, 1.0, mask, np.array([cx, cy], np.float64),
                          float(mask.mean()), float(np.sqrt(mask.sum())), points, desc)
        own = _log_ratio(model, img)
        level = max(_MIN_LEVEL, float(own[mask].mean()))
        return replace(model, level=level)

    # -- predict ----------------------------------------------------------------------------
    def predict(self, fitted: _Fitted, image: np.ndarray, instances: str = "one") -> Masks:
        """Masks of what the references show (see the module docstring), best first."""
        if instances not in INSTANCES:
            raise InputError(f"instances must be one of {', '.join(INSTANCES)}; got {instances!r}")
        img = _features(image, self.max_side, self.detector)
        maps = np.stack([_log_ratio(r, img) / r.level for r in fitted.refs])
        nmap = maps.max(0)
        cands = []
        for k, ref in enumerate(fitted.refs):
            cands += _placements(ref, k, img, self.detector)
        for c in _components(nmap, cands, img.size):  # the reference whose map is highest there
            c.ref = int(np.argmax(maps[:, int(c.point[1]), int(c.point[0])]))
            cands.append(c)
        if not cands:
            return empty_masks(image.shape[:2])
        cands.sort(key=lambda c: -c.rank)  # stable: ties keep the order found
        cands = cands[:_SEGMENT_ONE if instances == "one" else 2 * self.max_instances]
        emb = self.engine.embed(image)
        found = [self._segment(fitted, img, nmap, emb, image.shape[:2], c) for c in cands]
        found = [m for m in found if m is not None]
        if not found:
            return empty_masks(image.shape[:2])
        masks = mask_nms(Masks.concatenate(found), _NMS_IOU)  # sorted by score
        if instances == "one":
            return masks[:1]
        return masks[masks.scores >= self.threshold][:self.max_instances]

    def _segment(self, fitted: _Fitted, img: _Image, nmap: np.ndarray, emb: Any, size: tuple[int, int],
                 cand: _Candidate) -> Masks | None:
        """GrabCut from the candidate's box and click, then its score from the evidence."""
        big_h, big_w = size
        s = img.scale
        x0, y0 = max(0.0, cand.box[0] / s), max(0.0, cand.box[1] / s)
        x1, y1 = min(float(big_w), cand.box[2] / s), min(float(big_h), cand.box[3] / s)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        px = float(np.clip(cand.point[0] / s, x0, x1 - 1))
        py = float(np.clip(cand.point[1] / s, y0, y1 - 1))
        got = self.engine.predict(emb, Prompt(points=[[px, py]], labels=[1], box=[x0, y0, x1, y1]))
        mask = got.masks[0]
        if not mask.any():
            return None
        h, w = img.size
        small = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        if not small.any():
            small = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0
        score, ev = _score(fitted, img, nmap, small, cand, float(got.scores[0]))
        return Masks(masks=mask[None], scores=[score],
                     data={"source": np.array([cand.source]), "reference": np.array([cand.ref]),
                           "inliers": np.array([ev["inliers"]]), "appearance": np.array([ev["appearance"]], np.float32),
                           "keypoint_evidence": np.array([ev["keypoints"]], np.float32)})


# -- features ------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _working(image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s >= 1.0:
        return np.ascontiguousarray(image)
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _features(image: np.ndarray, max_side: int, detector: str, need_points: bool = True) -> _Image:
    """Colour and texture bins (and keypoints) of an image at the working resolution."""
    from skimage.feature import local_binary_pattern

    rgb = _working(image, max_side)
    h, w = rgb.shape[:2]
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.int32)  # H in 0..179
    hb = np.minimum(hsv[..., 0] * _BINS[0] // 180, _BINS[0] - 1)
    colour = (hb * _BINS[1] + hsv[..., 1] * _BINS[1] // 256) * _BINS[2] + hsv[..., 2] * _BINS[2] // 256
    gray = _gray(rgb)
    lbp = local_binary_pattern(gray, 8, 1, "uniform").astype(np.int32)  # 0..9
    smooth = cv2.GaussianBlur(gray, (0, 0), 1.0).astype(np.float32)
    mag = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1)) / 4.0
    texture = lbp * (len(_GRAD_LEVELS) + 1) + np.digitize(mag, _GRAD_LEVELS)
    points, desc = _keypoints(gray, detector) if need_points else (np.zeros((0, 4), np.float32), None)
    return _Image((h, w), w / image.shape[1], colour, texture.astype(np.int32), points, desc)


def _keypoints(gray: np.ndarray, detector: str, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(K, 4)`` keypoints (x, y, size, angle) and their descriptors (None when there are none)."""
    det = cv2.SIFT_create(nfeatures=2000) if detector == "sift" else cv2.ORB_create(nfeatures=2000)
    kps, desc = det.detectAndCompute(gray, mask)
    if desc is None or not kps:
        return np.zeros((0, 4), np.float32), None
    points = np.array([(k.pt[0], k.pt[1], k.size, k.angle) for k in kps], np.float32)
    return points, desc


def _hist(bins: np.ndarray, where: np.ndarray, n: int, colour: bool = False) -> np.ndarray:
    """Normalised histogram of ``bins[where]`` (colour: smoothed over neighbouring HSV bins)."""
    counts = np.bincount(bins[where].ravel(), minlength=n).astype(np.float64)
    if colour:
        c = counts.reshape(_BINS)
        c = 0.5 * c + 0.25 * (np.roll(c, 1, 0) + np.roll(c, -1, 0))  # hue is circular
        for axis in (1, 2):
            pad = np.pad(c, [(1, 1) if a == axis else (0, 0) for a in range(3)], mode="edge")
            lo, hi = np.take(pad, range(0, c.shape[axis]), axis), np.take(pad, range(2, c.shape[axis] + 2), axis)
            c = 0.5 * c + 0.25 * (lo + hi)
        counts = c.reshape(-1)
    total = counts.sum()
    return counts / total if total > 0 else np.full(n, 1.0 / n)


def _log_ratio(ref: _RefModel, img: _Image) -> np.ndarray:
    """The smoothed back-projected log-ratio map of ``ref`` on ``img`` (working resolution)."""
    everywhere = np.ones(img.size, bool)
    own_c, own_t = _hist(img.colour, everywhere, _N_COLOUR, colour=True), _hist(img.texture, everywhere, _N_TEXTURE)
    lc = np.log(ref.fg_colour + _EPS) - np.log(0.5 * (ref.bg_colour + own_c) + _EPS)
    lt = np.log(ref.fg_texture + _EPS) - np.log(0.5 * (ref.bg_texture + own_t) + _EPS)
    raw = (lc[img.colour] + _TEXTURE_WEIGHT * lt[img.texture]).astype(np.float32)
    return cv2.GaussianBlur(raw, (0, 0), max(1.0, 0.01 * max(img.size)))


# -- candidates ----------------------------------------------------------------------------
def _matches(ref: _RefModel, img: _Image, detector: str) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(target, reference)`` of the matches passing Lowe's ratio test."""
    if ref.descriptors is None or img.descriptors is None or len(ref.descriptors) < 2:
        return np.zeros(0, int), np.zeros(0, int)
    matcher = cv2.BFMatcher(cv2.NORM_L2 if detector == "sift" else cv2.NORM_HAMMING)
    pairs = [(m[0].queryIdx, m[0].trainIdx, m[0].distance / max(m[1].distance, 1e-6))
             for m in matcher.knnMatch(img.descriptors, ref.descriptors, k=2)
             if len(m) == 2 and m[0].distance < _RATIO * m[1].distance]
    if not pairs:
        return np.zeros(0, int), np.zeros(0, int)
    arr = np.array(pairs)
    arr = arr[np.argsort(arr[:, 2], kind="stable")[:_MAX_MATCHES]]  # the most distinctive first
    return arr[:, 0].astype(int), arr[:, 1].astype(int)


def _placements(ref: _RefModel, k: int, img: _Image, detector: str) -> list[_Candidate]:
    """Hough-style clusters of the matches' votes for the object's centre, scale and rotation,
    each verified by a RANSAC similarity that places the reference mask."""
    ti, ri = _matches(ref, img, detector)
    if len(ti) < _MIN_INLIERS:
        return []
    pt, pr = img.points[ti, :2].astype(np.float64), ref.points[ri, :2].astype(np.float64)
    scale = img.points[ti, 2] / np.maximum(ref.points[ri, 2], 1e-6)
    theta = np.deg2rad(img.points[ti, 3] - ref.points[ri, 3])
    off = ref.centre[None] - pr
    rot = np.stack([np.cos(theta) * off[:, 0] - np.sin(theta) * off[:, 1],
                    np.sin(theta) * off[:, 0] + np.cos(theta) * off[:, 1]], 1)
    centre = pt + scale[:, None] * rot
    reach = 0.3 * np.maximum(scale * ref.diameter, 4.0)
    near = np.hypot(*(centre[:, None] - centre[None]).transpose(2, 0, 1)) < np.minimum(reach[:, None], reach[None])
    dang = np.abs(np.angle(np.exp(1j * (theta[:, None] - theta[None]))))
    consistent = near & (np.abs(np.log(scale[:, None] / scale[None])) < np.log(1.6)) & (dang < np.deg2rad(30))
    left = np.ones(len(ti), bool)
    out: list[_Candidate] = []
    while left.sum() >= _MIN_INLIERS and len(out) < _MAX_PLACEMENTS:
        support = (consistent & left[None] & left[:, None]).sum(1)
        best = int(np.argmax(support))
        group = np.flatnonzero(consistent[best] & left)
        if len(group) < _MIN_INLIERS:
            break
        left[group] = False
        cand = _verify(ref, k, img, pr[group], pt[group], float(np.median(scale[group])))
        if cand is not None:
            out.append(cand)
    return out


def _verify(ref: _RefModel, k: int, img: _Image, src: np.ndarray, dst: np.ndarray, scale: float) -> _Candidate | None:
    """A RANSAC similarity from the reference's keypoints to the image's; the warped mask as a candidate."""
    cv2.setRNGSeed(12345)
    thresh = max(3.0, 0.08 * scale * ref.diameter)
    m, inl = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.RANSAC,
                                         ransacReprojThreshold=thresh, maxIters=500, confidence=0.995)
    if m is None or inl is None or int(inl.sum()) < _MIN_INLIERS:
        return None
    s = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if not 0.1 <= s <= 10.0:
        return None
    h, w = img.size
    placed = cv2.warpAffine(ref.mask.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST).astype(bool)
    if placed.sum() < 16:
        return None
    ys, xs = np.nonzero(placed)
    dist = cv2.distanceTransform(np.pad(placed, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
    box = _margin(np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64), (h, w))
    inliers = dst[inl.ravel().astype(bool)]
    return _Candidate(box, np.array([cx, cy], np.float64), "keypoints", k, placed, inliers, rank=10.0 + len(inliers))


def _components(nmap: np.ndarray, placed: list[_Candidate], size: tuple[int, int]) -> list[_Candidate]:
    """Connected components of the normalised map above :data:`_MAP_THRESHOLD` that no keypoint
    placement explains, largest evidence mass first."""
    h, w = size
    n, comp, stats, _ = cv2.connectedComponentsWithStats((nmap > _MAP_THRESHOLD).astype(np.uint8), connectivity=8)
    min_area = max(16, _MIN_COMPONENT * h * w)
    found = []
    for c in range(1, n):
        if stats[c, cv2.CC_STAT_AREA] < min_area:
            continue
        x, y, bw, bh = stats[c, :4]
        region = comp[y:y + bh, x:x + bw] == c
        if any(region[int(p.point[1]) - y, int(p.point[0]) - x] for p in placed
               if x <= p.point[0] < x + bw and y <= p.point[1] < y + bh):
            continue  # a keypoint placement lies on it
        dist = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
        cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
        mass = float(np.clip(nmap[y:y + bh, x:x + bw][region], 0, 2).sum()) / (h * w)
        box = _margin(np.array([x, y, x + bw, y + bh], np.float64), size)
        found.append(_Candidate(box, np.array([x + cx, y + cy], np.float64), "colour", -1, rank=mass))
    found.sort(key=lambda c: -c.rank)
    return found[:_MAX_COMPONENTS]


def _margin(box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    mx, my = _BOX_MARGIN * (box[2] - box[0]) + 1, _BOX_MARGIN * (box[3] - box[1]) + 1
    return np.array([max(0.0, box[0] - mx), max(0.0, box[1] - my), min(w, box[2] + mx), min(h, box[3] + my)])


# -- scores --------------------------------------------------------------------------------
def _bhattacharyya(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sqrt(p * q).sum())


def _score(fitted: _Fitted, img: _Image, nmap: np.ndarray, small: np.ndarray, cand: _Candidate,
           grabcut_score: float) -> tuple[float, dict[str, Any]]:
    """The score of a segmented candidate from its evidence (see the module docstring)."""
    h, w = img.size
    colour_hist = _hist(img.colour, small, _N_COLOUR, colour=True)
    texture_hist = _hist(img.texture, small, _N_TEXTURE)
    area = float(small.mean())
    best_app = 0.0
    for ref in fitted.refs:  # appearance: the best-matching reference
        sim = _bhattacharyya(colour_hist, ref.fg_colour) ** 0.7 * _bhattacharyya(texture_hist, ref.fg_texture) ** 0.3
        ratio = area / max(ref.area, 1e-6)
        agree = max(0.2, 1.0 - abs(np.log(ratio)) / np.log(16.0))
        best_app = max(best_app, float(np.clip((sim - 0.6) / 0.35, 0, 1)) * agree)
    grow = max(2, round(0.25 * np.sqrt(small.sum())))
    ring = cv2.dilate(small.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2)).astype(bool)
    ring &= ~small
    inside = float(np.clip(nmap[small], -1, 1.5).mean())
    outside = float(np.clip(nmap[ring], -1, 1.5).mean()) if ring.any() else 0.0
    contrast = float(np.clip(2.0 * (inside - outside), 0, 1)) * float(np.clip(inside, 0, 1))
    appearance = best_app * contrast
    keypoints, inliers = 0.0, 0
    if cand.inlier_xy is not None and cand.placed is not None:
        xy = np.clip(np.round(cand.inlier_xy).astype(int), 0, [w - 1, h - 1])
        zone = cv2.dilate(small.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        inliers = int(zone[xy[:, 1], xy[:, 0]].sum())
        if inliers >= _MIN_INLIERS:
            union = np.count_nonzero(small | cand.placed)
            shape = np.count_nonzero(small & cand.placed) / union if union else 0.0
            keypoints = (1.0 - float(np.exp(-(inliers - 2) / 4.0))) * (0.5 + 0.5 * shape)
    fused = 1.0 - (1.0 - _COLOUR_CAP * appearance) * (1.0 - _KEYPOINT_CAP * keypoints)
    score = float(np.clip(fused * (0.6 + 0.4 * np.clip(grabcut_score, 0, 1)), 0, 1))
    return score, {"inliers": inliers, "appearance": appearance, "keypoints": keypoints}

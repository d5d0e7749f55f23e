"""The classical discovery baseline: a normalised cut on a superpixel region adjacency graph (no weights).

Follows Shi & Malik, "Normalized Cuts and Image Segmentation" (PAMI 2000) on a region
adjacency graph (RAG) of SLIC superpixels (Achanta et al., PAMI 2012), the recipe of
scikit-image's ``graph.cut_normalized``; the cut itself is written here, because the RAG has
only a few hundred nodes and a dense eigen-decomposition is cheap and deterministic:

* the image is resized so that its longest side is at most ``work_side`` (320) pixels; SLIC
  makes about ``superpixels`` (300) regions on it (compactness 10, fixed: SLIC has no seed);
* each superpixel has a mean CIE Lab colour, the standard deviation of its lightness, and a
  texture descriptor: uniform local binary pattern histograms (Ojala et al. 2002; P = 8, radii
  1 and 3: 20 bins);
* an edge joins two superpixels that touch; its weight is the length of their shared boundary
  times ``exp(-|dLab|^2 / 2 s_c^2 - chi2(texture) / s_t - |dstd|^2 / 2 s_s^2)`` (a product of a
  colour and a texture affinity, as Shi & Malik's intensity / texture weights);
* a 2-way cut thresholds the second generalised eigenvector of ``(D - W) y = l D y`` at the
  value of least Ncut (Shi & Malik search a few thresholds; here every one is tried).

Two modes (``mode``):

``objects`` (default, kind ``objects``)
    the image is first cut into ``segments`` (8) by the recursive cuts of ``partition``; the
    segments the *boundary prior* calls salient are the object. The prior is Zhu et al.'s
    boundary connectivity (:func:`boundary_saliency`, "Saliency Optimization from Robust
    Background Detection", CVPR 2014): a superpixel whose geodesic neighbourhood (on the RAG,
    by colour and texture) touches the image border over a long stretch for its area is
    background; saliency is the colour contrast to the likely-background superpixels. A segment
    is salient when its mean saliency is above Otsu's threshold of the saliency map. With
    ``objects=1`` the union of the salient segments is the object (an occluded object may be in
    pieces); with ``objects=N`` its connected components (at least ``min_area`` of the image)
    are the objects, best first, at most ``N``.
``partition`` (kind ``partition``)
    recursive 2-way cuts, each time splitting the segment with the lowest Ncut, until
    ``objects`` (default 8) segments: disjoint and covering, ``labels`` = segment ids,
    ``data["feature"]`` = mean Lab / 100, lightness std / 100 and the texture histograms.

Scores come from the image only. A region's *contrast* is the distance between it and the ring
of pixels around it, ``1 - exp(-(colour + texture distance))`` on the same scales as the edge
weights, less the squared difference that sampling noise explains (the descriptors' variance
over the effective number of independent samples of each side), times ``s / (s + 1)`` for a
region of ``s`` independent samples (about 200 pixels each: a tiny region is weak evidence).
Partition segments score their contrast. Objects score
``w0 + w1 contrast + w2 border_touch + w3 separation + w4 background`` clipped to ``[0, 1]``
(:data:`OBJECT_SCORE_WEIGHTS`: least squares of the IoU on GrabCut's tuning half, so the score
estimates the IoU; ``border_touch`` the fraction of the image border the object covers,
``separation`` its mean saliency minus the rest's, ``background`` its mean background
probability), times ``min(1, contrast / 0.1)`` (no contrast with its surroundings, no object);
the terms are in ``Masks.data``. A uniform image or pure noise has no contrast anywhere and
scores about 0; candidates below :data:`MIN_SCORE` are dropped (objects mode).

Differences from the references: the affinity scales are absolute (Lab units, chi-square),
not adaptive to the image, so that a flat or noisy image does not look structured; masks are
made at the working resolution and upsampled nearest to the image (they snap to the working
resolution's superpixels, so edges are blocky by up to the scale factor: refine them with
:func:`anyseg.discover.refine.refine`).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from anyseg.discover.base import check_objects, empty_masks
from anyseg.errors import InputError
from anyseg.models.base import check_image
from anyseg.types import Masks

__all__ = ["ClassicalNCut", "MODES", "MIN_SCORE", "OBJECT_SCORE_WEIGHTS", "boundary_saliency", "bipartition"]

MODES = ("objects", "partition")
#: objects-mode candidates scoring below this are dropped (no evidence of an object)
MIN_SCORE = 0.02
#: objects mode: the score ``w0 + contrast + touch + separation + background`` terms, least squares on
#: the IoU of GrabCut's tuning half (``python bench/discover_classical.py --fit``)
OBJECT_SCORE_WEIGHTS = (0.065, 0.172, -0.228, 1.036, -0.53, -0.391)
_LBP_RADII = (1, 3)
_LBP_BINS = 10  # uniform LBP with P = 8: 9 uniform codes + 1 non-uniform
_EPS = 1e-9
#: pixels per independent sample of the blurred descriptors (about 4 pi sigma^2 for the sigma-4 windows)
_SAMPLE_AREA = 4 * np.pi * 4.0 ** 2


def _check_number(name: str, value: Any, low: float, high: float, integer: bool = False) -> float:
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, bool) or not ok or not low <= float(value) <= high:
        kind = "a whole number" if integer else "a number"
        raise InputError(f"{name} must be {kind} in {low:g}..{high:g}; got {value!r}")
    return float(value)


class _Graph:
    """The superpixel RAG of one working image: node features, dense affinity, areas, border counts."""

    def __init__(self, work: np.ndarray, superpixels: int, compactness: float, sigmas: tuple[float, float, float]):
        from skimage.segmentation import slic

        h, w = work.shape[:2]
        self.size = (h, w)
        sp = slic(work, n_segments=superpixels, compactness=compactness, sigma=1.0, start_label=0, channel_axis=-1)
        _, sp = np.unique(sp, return_inverse=True)
        self.sp = sp.reshape(h, w).astype(np.int32)
        self.n = n = int(self.sp.max()) + 1
        self.desc = _descriptors(work)
        flat = self.sp.reshape(-1)
        self.area = np.bincount(flat, minlength=n).astype(np.float64)
        self.feats = self.region_features()
        border = np.zeros((h, w), bool)
        border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
        self.border = np.bincount(self.sp[border], minlength=n).astype(np.float64)
        self.border_total = float(border.sum())
        self.sigmas = sigmas
        self.W = self._affinity()
        self.background: np.ndarray | None = None  # per-node background probability (boundary_saliency)

    def region_features(self, masks: list[np.ndarray] | None = None, variance: bool = False) -> Any:
        """``(n, 4 + 20)`` mean descriptors (Lab, L std, texture histograms) per superpixel, or per
        flat boolean pixel mask in ``masks``; with ``variance``, also the per-channel variance of
        each mean (pixel variance over the effective number of independent samples)."""
        flat = self.sp.reshape(-1)
        if masks is None:
            idx, m = flat, self.n
        else:
            idx = np.full(flat.shape, len(masks), np.int64)
            for i, mk in enumerate(masks):
                idx[mk.reshape(-1)] = i
            m = len(masks) + 1
        count = np.maximum(np.bincount(idx, minlength=m), 1).astype(np.float64)[:, None]
        chans = range(self.desc.shape[1])
        out = np.stack([np.bincount(idx, self.desc[:, c], m) for c in chans], 1) / count
        if masks is not None:
            out = out[: len(masks)]
        if not variance:
            return out
        sq = np.stack([np.bincount(idx, self.desc[:, c].astype(np.float64) ** 2, m) for c in chans], 1) / count
        var = np.maximum(sq[: len(out)] - out ** 2, 0.0)
        return out, var / np.maximum(count[: len(out)] / _SAMPLE_AREA, 1.0)

    def distance(self, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """The affinity exponent between feature rows ``a`` and ``b`` (broadcast): colour + texture
        terms; ``bias``: the squared difference per channel that sampling noise alone explains
        (subtracted, so that two samples of one texture or of noise are at distance about 0)."""
        s_c, s_t, s_s = self.sigmas
        diff2 = (a - b) ** 2 if bias is None else np.maximum((a - b) ** 2 - bias, 0.0)
        d_lab = diff2[..., :3].sum(-1) / (2 * s_c ** 2)
        d_std = diff2[..., 3] / (2 * s_s ** 2)
        ha, hb = a[..., 4:], b[..., 4:]
        chi2 = 0.5 * (diff2[..., 4:] / (ha + hb + _EPS)).sum(-1) / len(_LBP_RADII)
        return d_lab + d_std + chi2 / s_t

    def _affinity(self) -> np.ndarray:
        sp, n = self.sp, self.n
        pairs = np.concatenate([np.stack([sp[:, :-1].ravel(), sp[:, 1:].ravel()], 1),
                                np.stack([sp[:-1, :].ravel(), sp[1:, :].ravel()], 1)])
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        pairs.sort(axis=1)
        key, length = np.unique(pairs[:, 0].astype(np.int64) * n + pairs[:, 1], return_counts=True)
        i, j = key // n, key % n
        weight = length * np.exp(-np.minimum(self.distance(self.feats[i], self.feats[j]), 20.0))  # no denormals
        W = np.zeros((n, n))
        W[i, j] = W[j, i] = weight
        return W / max(float(length.mean()), 1.0) if len(length) else W

    def components(self, nodes: np.ndarray) -> list[np.ndarray]:
        """Connected components (in the RAG's adjacency) of a node subset."""
        from scipy.sparse.csgraph import connected_components

        sub = self.W[np.ix_(nodes, nodes)] > 0
        count, lab = connected_components(sub, directed=False)
        return [nodes[lab == c] for c in range(count)]

    def mask(self, nodes: np.ndarray) -> np.ndarray:
        sel = np.zeros(self.n, bool)
        sel[nodes] = True
        return sel[self.sp]

    def contrast(self, mask: np.ndarray) -> tuple[float, np.ndarray]:
        """``(contrast, region features)``: ``1 - exp(-distance(region, ring))`` (less sampling noise),
        times ``s / (s + 1)`` for ``s`` independent samples; the ring: pixels within about a
        tenth of the region's size outside it (the whole rest of the image when that is empty)."""
        area = float(mask.sum())
        r = int(max(3, round(0.1 * np.sqrt(area))))
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        ring = cv2.dilate(mask.astype(np.uint8), k).astype(bool) & ~mask
        if not ring.any():
            ring = ~mask
        if not ring.any():
            return 0.0, self.region_features([mask])[0]
        feats, var = self.region_features([mask, ring], variance=True)
        d = self.distance(feats[0], feats[1], bias=var[0] + var[1])
        samples = area / _SAMPLE_AREA  # a region of few independent samples is weak evidence
        return float((1.0 - np.exp(-d)) * samples / (samples + 1.0)), feats[0]


def _descriptors(work: np.ndarray) -> np.ndarray:
    """``(H * W, 24)`` float32 per-pixel descriptors: Lab (Gaussian sigma 1.5), the local lightness std
    (sigma 4) and local uniform-LBP histograms (one-hot codes, Gaussian sigma 4; radii 1 and 3).
    Local windows make a superpixel's mean stable inside a texture, where SLIC's regions follow
    single texture elements (bright blades, dark gaps) and their plain means vary widely."""
    from skimage.feature import local_binary_pattern

    lab = cv2.cvtColor(work, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 0] *= 100.0 / 255.0  # OpenCV's 8-bit Lab: L in 0..255, a and b offset by 128
    lab[..., 1:] -= 128.0
    blur = lambda x, s: cv2.GaussianBlur(x, (0, 0), s, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    light = lab[..., 0]
    std = np.sqrt(np.maximum(blur(light * light, 4.0) - blur(light, 4.0) ** 2, 0.0))
    chans = [blur(lab, 1.5), std[..., None]]
    grey = cv2.cvtColor(work, cv2.COLOR_RGB2GRAY)
    pad = max(_LBP_RADII) + 1
    padded = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REFLECT)  # no border codes
    for r in _LBP_RADII:
        code = local_binary_pattern(padded, 8, r, method="uniform")[pad:-pad, pad:-pad]
        code = np.clip(code, 0, _LBP_BINS - 1).astype(np.int64)
        onehot = np.eye(_LBP_BINS, dtype=np.float32)[code]
        chans.append(np.stack([blur(onehot[..., b], 4.0) for b in range(_LBP_BINS)], -1))
    return np.concatenate(chans, axis=-1).reshape(-1, 4 + len(_LBP_RADII) * _LBP_BINS).astype(np.float32)


def _second_eigenvector(M: np.ndarray) -> np.ndarray:
    """The eigenvector of the second largest eigenvalue of the symmetric ``M`` = ``D^-1/2 W D^-1/2``
    (the second smallest of the normalised Laplacian). ARPACK on the sparse matrix, from a fixed
    start (deterministic; a dense LAPACK call next to OpenCV's thread pool can stall for seconds),
    dense for tiny graphs or when ARPACK does not converge."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    n = M.shape[0]
    if n > 32:
        try:
            vals, vecs = eigsh(csr_matrix(M), k=2, which="LA", v0=np.linspace(1.0, 2.0, n), tol=1e-8, maxiter=5000)
            return vecs[:, int(np.argmin(vals))]
        except ArpackNoConvergence:
            pass
    _vals, vecs = np.linalg.eigh(M)
    return vecs[:, -2]


def bipartition(W: np.ndarray, min_nodes: int = 1) -> tuple[np.ndarray, float]:
    """Shi & Malik's 2-way normalised cut of a dense affinity ``W`` ``(n, n)``: ``(side, ncut)`` with
    ``side`` a boolean node mask; the second generalised eigenvector thresholded at the least-Ncut
    value (every threshold is tried). ``ncut`` is in ``[0, 2]`` (2: no split possible)."""
    n = W.shape[0]
    if n < 2 * min_nodes:
        return np.zeros(n, bool), 2.0
    d = W.sum(1) + _EPS
    inv = 1.0 / np.sqrt(d)
    y = _second_eigenvector(inv[:, None] * W * inv[None, :]) * inv
    order = np.argsort(y, kind="stable")
    S = W[np.ix_(order, order)]
    inner = np.cumsum(np.cumsum(S, 0), 1).diagonal()  # assoc(A_k, A_k) of each prefix A_k
    vol_a = np.cumsum(d[order])
    total = vol_a[-1]
    cut = vol_a - inner
    k = np.arange(1, n + 1)
    valid = (k >= min_nodes) & (k <= n - min_nodes)
    valid[-1] = False
    ncut = np.where(valid, cut / np.maximum(vol_a, _EPS) + cut / np.maximum(total - vol_a, _EPS), np.inf)
    best = int(np.argmin(ncut))
    side = np.zeros(n, bool)
    side[order[: best + 1]] = True
    return side, float(min(ncut[best], 2.0))


def boundary_saliency(graph: _Graph, sigma_geo: float = 20.0, sigma_bnd: float = 1.0,
                      sigma_spatial: float = 0.25) -> np.ndarray:
    """``(n,)`` per-superpixel saliency by the boundary prior (Zhu et al., "Saliency Optimization
    from Robust Background Detection", CVPR 2014): the geodesic distance between superpixels on the
    RAG (edge cost: the Lab distance plus 40 x the texture chi-square), the soft area and soft
    border length of each superpixel's geodesic neighbourhood (``exp(-d^2 / 2 sigma_geo^2)``), the
    boundary connectivity ``len / sqrt(area)`` and the background probability
    ``1 - exp(-bndcon^2 / 2 sigma_bnd^2)`` (kept as ``graph.background``); the saliency is the
    background-weighted contrast (Lab distance to the likely-background superpixels, spatially
    weighted with sigma 0.25 of the image size), normalised, times ``1 -`` its own background
    probability."""
    from scipy import sparse
    from scipy.sparse.csgraph import dijkstra

    n = graph.n
    lab = graph.feats[:, :3]
    i, j = np.nonzero(np.triu(graph.W > 0, 1))
    tex = 0.5 * ((graph.feats[i, 4:] - graph.feats[j, 4:]) ** 2 / (graph.feats[i, 4:] + graph.feats[j, 4:] + _EPS)).sum(1)
    cost = np.linalg.norm(lab[i] - lab[j], axis=1) + 40.0 * tex + 1e-6
    geo = dijkstra(sparse.coo_matrix((np.r_[cost, cost], (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr(),
                   directed=False)
    near = np.exp(-np.minimum(geo, 1e6) ** 2 / (2 * sigma_geo ** 2))
    area = near @ (graph.area / graph.area.mean())
    length = near @ (graph.border > 0).astype(np.float64)
    background = 1.0 - np.exp(-(length / np.sqrt(np.maximum(area, _EPS))) ** 2 / (2 * sigma_bnd ** 2))
    graph.background = background
    rows, cols = np.indices(graph.size)
    flat = graph.sp.reshape(-1)
    side = float(max(graph.size))
    cy = np.bincount(flat, rows.reshape(-1), n) / graph.area / side
    cx = np.bincount(flat, cols.reshape(-1), n) / graph.area / side
    spatial = np.exp(-((cy[:, None] - cy[None]) ** 2 + (cx[:, None] - cx[None]) ** 2) / (2 * sigma_spatial ** 2))
    contrast = (np.linalg.norm(lab[:, None] - lab[None], axis=2) * spatial * background[None]).sum(1)
    return contrast / max(float(contrast.max()), _EPS) * (1.0 - background)


class ClassicalNCut:
    """Normalised cut on a superpixel RAG (module docstring): ``mode`` ``objects`` or ``partition``."""

    name = "classical"

    def __init__(self, mode: str = "objects", superpixels: int = 300, compactness: float = 10.0,
                 work_side: int = 320, sigma_colour: float = 8.0, sigma_texture: float = 0.05,
                 sigma_std: float = 6.0, min_area: float = 0.005, segments: int = 8) -> None:
        if mode not in MODES:
            raise InputError(f"classical mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.mode = mode
        self.superpixels = int(_check_number("superpixels", superpixels, 16, 2000, integer=True))
        self.compactness = _check_number("compactness", compactness, 0.01, 1000)
        self.work_side = int(_check_number("work_side", work_side, 32, 2048, integer=True))
        self.sigmas = (_check_number("sigma_colour", sigma_colour, 0.1, 200),
                       _check_number("sigma_texture", sigma_texture, 1e-4, 10),
                       _check_number("sigma_std", sigma_std, 0.1, 200))
        self.min_area = _check_number("min_area", min_area, 0.0, 0.5)
        self.segments = int(_check_number("segments", segments, 2, 64, integer=True))

    @property
    def kind(self) -> str:
        return self.mode

    @classmethod
    def from_options(cls, model: str | None = None, device: str | None = None, allow_download: bool = True,
                     **options: Any) -> "ClassicalNCut":
        """The discovery factory: ``model`` must be ``None`` or ``classical`` and ``device`` ``None`` or ``cpu``."""
        if model not in (None, "classical"):
            raise InputError(f"the classical method uses no model; got --model {model!r}")
        if device not in (None, "cpu"):
            raise InputError(f"the classical method runs on the CPU; got --device {device!r}")
        known = {"mode", "superpixels", "compactness", "work_side", "sigma_colour", "sigma_texture", "sigma_std",
                 "min_area", "segments"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown classical option(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
        return cls(**options)

    def discover(self, image: np.ndarray, objects: int | None = None) -> Masks:
        """Masks of ``image`` (module docstring); ``objects``: objects wanted (1) or segments (8)."""
        image = check_image(image)
        h, w = image.shape[:2]
        if min(h, w) < 8:
            raise InputError(f"the image is {w}x{h}: the classical method needs at least 8x8 pixels")
        count = check_objects(objects, 1 if self.mode == "objects" else 8)
        scale = min(1.0, self.work_side / max(h, w))
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        work = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if size != (w, h) else image
        graph = _Graph(work, self.superpixels, self.compactness, self.sigmas)
        regions = self._objects(graph, count) if self.mode == "objects" else self._partition(graph, count)
        if not regions:
            return empty_masks((h, w))
        small = np.stack([graph.mask(r[0]) for r in regions])
        full = np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0 for m in small])
        scores = np.array([r[1] for r in regions], np.float32)
        feature = np.stack([r[2] for r in regions]).astype(np.float32)
        feature[:, :4] /= 100.0  # Lab and lightness std on about the histograms' scale
        if self.mode == "partition":
            return Masks(full, scores=scores, labels=np.arange(len(regions)), data={"feature": feature})
        keep = full.any(axis=(1, 2))
        terms = {k: np.array([r[3][k] for r in regions], np.float32)[keep] for k in regions[0][3]}
        return Masks(full[keep], scores=scores[keep], data={"feature": feature[keep], **terms})

    def _objects(self, graph: _Graph, count: int) -> list[tuple[np.ndarray, float, np.ndarray, dict[str, float]]]:
        """The NCut segments the boundary prior calls salient (module docstring): their union as one
        object (``count`` 1), or its connected components, best first (``count`` > 1)."""
        sal = boundary_saliency(graph)
        sal_px = sal[graph.sp]
        from skimage.filters import threshold_otsu

        if float(sal_px.max() - sal_px.min()) < 1e-6:
            return []
        t = float(threshold_otsu(sal_px))
        segments = self._partition(graph, self.segments)
        fg = [seg for seg, _, _ in segments if np.average(sal[seg], weights=graph.area[seg]) > t]
        if not fg:
            return []
        nodes = np.concatenate(fg)
        min_px = max(self.min_area * graph.size[0] * graph.size[1], 1.0)
        groups = [nodes] if count == 1 else [c for c in graph.components(nodes) if graph.area[c].sum() >= min_px]
        found = []
        segment_of = np.zeros(graph.n, np.int64)
        for k, seg in enumerate(fg):
            segment_of[seg] = k
        for group in groups:
            single = float(len(np.unique(segment_of[group])) == 1)
            score, feats, terms = self._object_score(graph, group, sal, sal_px, single)
            if score >= MIN_SCORE:
                found.append((group, score, feats, terms))
        found.sort(key=lambda r: -r[1])
        return found[:count]

    @staticmethod
    def _object_score(graph: _Graph, nodes: np.ndarray, sal: np.ndarray, sal_px: np.ndarray,
                      single: float) -> tuple[float, np.ndarray, dict[str, float]]:
        """The calibrated score of an object (module docstring), its region features and the score's terms."""
        mask = graph.mask(nodes)
        contrast, feats = graph.contrast(mask)
        touch = graph.border[nodes].sum() / max(graph.border_total, 1.0)
        sep = (sal_px[mask].mean() - (sal_px[~mask].mean() if (~mask).any() else 0.0)) / max(float(sal_px.max()), _EPS)
        background = float(np.average(graph.background[nodes], weights=graph.area[nodes]))
        w0, w_contrast, w_touch, w_sep, w_bg, w_single = OBJECT_SCORE_WEIGHTS
        linear = w0 + w_contrast * contrast + w_touch * touch + w_sep * sep + w_bg * background + w_single * single
        gate = min(1.0, contrast / 0.1)  # no contrast with the surroundings: no evidence of an object
        terms = {"contrast": float(contrast), "border_touch": float(touch), "separation": float(sep),
                 "background": background, "single_segment": single}
        return float(np.clip(linear, 0.0, 1.0) * gate), feats, terms

    def _partition(self, graph: _Graph, count: int) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """Recursive 2-way cuts, each time splitting the segment whose own best cut has the lowest Ncut."""
        segments: list[np.ndarray] = [np.arange(graph.n)]
        cuts: list[tuple[np.ndarray, float] | None] = [None]
        while len(segments) < min(count, graph.n):
            for i, seg in enumerate(segments):
                if cuts[i] is None:
                    cuts[i] = bipartition(graph.W[np.ix_(seg, seg)]) if len(seg) >= 2 else (np.zeros(len(seg), bool), 2.0)
            best = min(range(len(segments)), key=lambda i: (cuts[i][1], -len(segments[i])))  # type: ignore[index]
            side, value = cuts[best]  # type: ignore[misc]
            if value >= 2.0 or not side.any() or side.all():
                break
            seg = segments.pop(best)
            cuts.pop(best)
            segments += [seg[side], seg[~side]]
            cuts += [None, None]
        out = []
        for seg in segments:
            contrast, feats = graph.contrast(graph.mask(seg))
            out.append((seg, float(np.clip(contrast, 0, 1)), feats))
        return out

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
    the side of the cut that touches the image border less is the object (saliency, as
    GrabCut-style foreground extraction assumes); its connected components (in the RAG) that
    cover at least ``min_area`` of the image are the objects. ``objects=N`` keeps cutting the
    background side (MaskCut-style recursion), up to ``N`` objects, best first.
``partition`` (kind ``partition``)
    recursive 2-way cuts, each time splitting the segment with the lowest Ncut, until
    ``objects`` (default 8) segments: disjoint and covering, ``labels`` = segment ids,
    ``data["feature"]`` = mean Lab / 100, lightness std / 100 and the texture histograms.

Scores (both modes) come from the image only: the contrast between a region and the ring of
pixels around it, ``1 - exp(-(colour + texture distance))`` on the same scales as the edge
weights, less the squared difference that sampling noise explains (the descriptors' variance
over the effective number of independent samples of each side), times ``s / (s + 1)`` for a
region of ``s`` independent samples (about 200 pixels each: a tiny region is weak evidence), times (objects mode) ``1 - `` the fraction of the image border the object covers. A
uniform image or pure noise has no contrast anywhere and scores about 0; candidates below
:data:`MIN_SCORE` are dropped (objects mode).

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

__all__ = ["ClassicalNCut", "MODES", "MIN_SCORE"]

MODES = ("objects", "partition")
#: objects-mode candidates scoring below this are dropped (no evidence of an object)
MIN_SCORE = 0.02
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


class ClassicalNCut:
    """Normalised cut on a superpixel RAG (module docstring): ``mode`` ``objects`` or ``partition``."""

    name = "classical"

    def __init__(self, mode: str = "objects", superpixels: int = 300, compactness: float = 10.0,
                 work_side: int = 320, sigma_colour: float = 8.0, sigma_texture: float = 0.05,
                 sigma_std: float = 6.0, min_area: float = 0.005) -> None:
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
                 "min_area"}
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
        small = np.stack([graph.mask(nodes) for nodes, _, _ in regions])
        full = np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0 for m in small])
        scores = np.array([s for _, s, _ in regions], np.float32)
        feature = np.stack([f for _, _, f in regions]).astype(np.float32)
        feature[:, :4] /= 100.0  # Lab and lightness std on about the histograms' scale
        if self.mode == "partition":
            return Masks(full, scores=scores, labels=np.arange(len(regions)), data={"feature": feature})
        keep = full.any(axis=(1, 2))
        return Masks(full[keep], scores=scores[keep], data={"feature": feature[keep]})

    def _objects(self, graph: _Graph, count: int) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """MaskCut-style recursion: cut, keep the side touching the border less, cut the rest again."""
        remaining = np.arange(graph.n)
        min_px = self.min_area * graph.size[0] * graph.size[1]
        found: list[tuple[np.ndarray, float, np.ndarray]] = []
        for _ in range(2 * count + 2):
            if len(found) >= count or len(remaining) < 2:
                break
            side, _ncut = bipartition(graph.W[np.ix_(remaining, remaining)])
            a, b = remaining[side], remaining[~side]
            touch_a, touch_b = graph.border[a].sum(), graph.border[b].sum()
            if touch_a > touch_b or (touch_a == touch_b and graph.area[a].sum() > graph.area[b].sum()):
                a, b = b, a
            for comp in graph.components(a):
                if graph.area[comp].sum() < max(min_px, 1):
                    continue
                mask = graph.mask(comp)
                contrast, feats = graph.contrast(mask)
                touch = graph.border[comp].sum() / max(graph.border_total, 1.0)
                score = contrast * (1.0 - touch)
                if score >= MIN_SCORE:
                    found.append((comp, float(np.clip(score, 0, 1)), feats))
            remaining = b
        found.sort(key=lambda r: -r[1])
        return found[:count]

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

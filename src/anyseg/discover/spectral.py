"""Deep spectral methods: Laplacian eigenvectors of a patch-feature affinity, segments by k-means.

Follows Melas-Kyriazi et al., "Deep Spectral Methods: A Surprisingly Strong Baseline for
Unsupervised Semantic Segmentation and Localization" (CVPR 2022), reference code
``lukemelas/deep-spectral-segmentation`` (``extract/extract.py``, ``extract_utils.py``):

* features: the keys of the last attention layer (``patch_features(image, kind="keys")`` when
  the extractor takes ``kind``, else its default patch tokens), L2-normalised per cell;
* affinity ``W = W_feat + lambda * W_knn`` on the patch grid: ``W_feat = max(F F^T, 0)`` (divided
  by its maximum, a no-op for normalised features) and ``W_knn`` the KNN colour-matting affinity
  of the image downsampled to the grid: each cell's 20 nearest neighbours in ``(r, g, b, 2x, 2y)``
  and 10 in ``(r, g, b, 0.1x, 0.1y)`` (colour in ``[0, 1]``, positions in ``[0, 1]``), weight 1,
  symmetrised (pymatting's ``knn``, written here with ``scipy.spatial.cKDTree``);
  ``lambda`` (``color_lambda``) 10, the reference's ``_extract_eig`` default;
* the ``K`` (``eigenvectors``, 20 as ``extract_eigs``) smallest eigenpairs of the generalised
  problem ``(D - W) y = l D y`` (the reference's ``lapnorm=True``), computed as the largest of
  ``D^-1/2 W D^-1/2`` with ARPACK from a fixed start, ``y = D^-1/2 u``; the sign of each is flipped
  so that fewer than half of its entries are positive (as the reference);
* segments: k-means (k-means++ start, fixed seed; written here, scikit-learn is not a
  dependency) into ``objects`` segments, default 8 (the reference's multi-region default is 4
  and its semantic runs use 15), on the non-constant eigenvectors. The reference clusters all
  ``K - 1`` of them (``all_eigenvectors=True`` here); by default this uses the first
  ``objects - 1`` (Ng, Jordan & Weiss's rule: as many eigenvectors as clusters), because the
  eigenvectors past the last small eigenvalue are localised noise that k-means would split;
* semantic segmentation across a folder (:func:`cluster_segments`): k-means over the segments'
  L2-normalised mean features. The reference re-embeds a box crop around each segment with the
  network and reduces with PCA first; here the segment's mean patch feature is clustered as it is.

Differences, and bounds. The reference upsamples features to ``image / downsample`` and keeps
``W`` dense; here the grid is the extractor's and ``W_feat`` is dense only up to ``max_dense``
cells (4096: a 64 MiB float32 matrix), above which each row keeps its ``top_k`` (64) largest
affinities (computed in row blocks of at most 2^24 entries, then symmetrised): memory is
``O(n * (top_k + 30))`` then. The eigenvectors are upsampled bilinearly to the image at a
working resolution (longest side at most ``work_side``, 512), each pixel takes its nearest
k-means centre, and the label map is resized nearest to the image.

Scores: a segment's feature cohesion minus its separation, ``mean cos(f_i, f_j)`` over pairs of
distinct cells inside it minus ``mean cos(f_i, f_o)`` to the cells outside it, clipped to
``[0, 1]``: identical or structureless features (a flat image, noise) score about 0.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import cv2
import numpy as np

from anyseg.discover.base import check_grid, check_objects
from anyseg.errors import InputError
from anyseg.models.base import check_image
from anyseg.models.features import PatchFeatures
from anyseg.types import Masks

__all__ = ["DeepSpectral", "cluster_segments", "kmeans_features", "knn_colour_affinity", "feature_affinity",
           "spectral_embedding", "kmeans", "DEFAULT_MODEL"]

DEFAULT_MODEL = "dino-vits16"
_BLOCK = 1 << 24  # entries per row block of the top-k affinity


def _features(extractor: Any, image: np.ndarray) -> PatchFeatures:
    """The extractor's key features when it takes ``kind``, else its default patch features."""
    fn = extractor.patch_features
    try:
        params = inspect.signature(fn).parameters
        takes = "kind" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        takes = True
    if takes:
        try:
            return fn(image, kind="keys")
        except TypeError as e:
            if "kind" not in str(e):
                raise
    return fn(image)


def knn_colour_affinity(image_lr: np.ndarray, n_neighbors: Sequence[int] = (20, 10),
                        distance_weights: Sequence[float] = (2.0, 0.1)) -> Any:
    """``(n, n)`` sparse KNN colour affinity of an ``(h, w, 3)`` image in ``[0, 1]`` (pymatting's ``knn``
    as the reference uses it): for each ``(k, weight)``, every pixel's ``k`` nearest neighbours in
    ``(r, g, b, weight * x, weight * y)`` get 1, both ways; duplicates add up."""
    from scipy.sparse import csr_matrix
    from scipy.spatial import cKDTree

    h, w = image_lr.shape[:2]
    n = h * w
    rgb = image_lr.reshape(-1, 3).astype(np.float64)
    x = np.tile(np.linspace(0, 1, w), h)
    y = np.repeat(np.linspace(0, 1, h), w)
    rows, cols = [], []
    for k, weight in zip(n_neighbors, distance_weights):
        k = int(min(k, n))
        pts = np.column_stack([rgb, weight * x, weight * y])
        _, nb = cKDTree(pts).query(pts, k=k)
        nb = np.asarray(nb).reshape(n, k)
        rows.append(np.repeat(np.arange(n), k))
        cols.append(nb.reshape(-1))
    i, j = np.concatenate(rows + cols), np.concatenate(cols + rows)
    return csr_matrix((np.ones(len(i), np.float32), (i, j)), shape=(n, n))


def feature_affinity(feats: np.ndarray, max_dense: int = 4096, top_k: int = 64) -> Any:
    """``max(F F^T, 0)`` of L2-normalised rows ``(n, C)``: dense ``(n, n)`` float32 up to ``max_dense``
    rows, else sparse with each row's ``top_k`` largest entries (symmetrised by the maximum)."""
    from scipy.sparse import csr_matrix

    f = np.ascontiguousarray(feats, dtype=np.float32)
    n = f.shape[0]
    if n <= max_dense:
        W = np.maximum(f @ f.T, 0.0)
        return W / max(float(W.max()), 1e-12)
    k = int(min(top_k, n))
    step = max(1, _BLOCK // n)
    cols = np.empty((n, k), np.int64)
    vals = np.empty((n, k), np.float32)
    for start in range(0, n, step):
        block = f[start:start + step] @ f.T
        idx = np.argpartition(-block, k - 1, axis=1)[:, :k]
        cols[start:start + step] = idx
        vals[start:start + step] = np.take_along_axis(block, idx, axis=1)
    W = csr_matrix((np.maximum(vals, 0.0).reshape(-1), (np.repeat(np.arange(n), k), cols.reshape(-1))), shape=(n, n))
    W = W.maximum(W.T).tocsr()
    W.eliminate_zeros()
    return W / max(float(W.max()), 1e-12)


def spectral_embedding(W: Any, K: int, extra: Any = None, lam: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(eigenvalues (K,), eigenvectors (n, K))``: the ``K`` smallest generalised eigenpairs of
    ``(D - A) y = l D y`` with ``A = W + lam * extra`` (dense or sparse), ascending, signs fixed as the
    reference (fewer than half of each vector's entries positive)."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    n = W.shape[0]
    K = int(min(K, n - 1))
    deg = np.asarray(W.sum(axis=1)).reshape(-1).astype(np.float64)
    if extra is not None and lam > 0:
        deg = deg + lam * np.asarray(extra.sum(axis=1)).reshape(-1)
    inv = 1.0 / np.sqrt(np.maximum(deg, 1e-12))

    def matvec(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v).reshape(-1) * inv
        out = np.asarray(W @ v).reshape(-1)
        if extra is not None and lam > 0:
            out = out + lam * np.asarray(extra @ v).reshape(-1)
        return out * inv

    if n <= max(64, 3 * K):  # small: dense and exact (ARPACK needs K well below n)
        M = np.stack([matvec(e) for e in np.eye(n)], axis=1)
        vals, vecs = np.linalg.eigh((M + M.T) / 2)
        vals, vecs = vals[::-1][:K], vecs[:, ::-1][:, :K]
    else:
        op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
        v0 = np.random.default_rng(seed).standard_normal(n)
        try:
            vals, vecs = eigsh(op, k=K, which="LA", v0=v0, tol=1e-6, maxiter=max(1000, 20 * n))
        except ArpackNoConvergence as e:
            if e.eigenvalues is None or len(e.eigenvalues) < 2:
                raise InputError("the spectral decomposition did not converge on this image") from None
            vals, vecs = e.eigenvalues, e.eigenvectors
        order = np.argsort(-vals)
        vals, vecs = vals[order], vecs[:, order]
    y = vecs * inv[:, None]  # y^T D y = 1, as eigsh(L, M=D) returns them
    flip = (y > 0).mean(axis=0) > 0.5
    y[:, flip] *= -1
    return (1.0 - vals).astype(np.float64), y


def kmeans(X: np.ndarray, k: int, seed: int = 0, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (n,), centres (k, d))``: Lloyd's k-means from a k-means++ start (Arthur & Vassilvitskii
    2007), deterministic for a seed; ``k`` is capped at the number of distinct rows."""
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    k = int(max(1, min(k, len(np.unique(X.round(12), axis=0)))))
    rng = np.random.default_rng(seed)
    centres = [X[rng.integers(n)]]
    d2 = ((X - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        pick = rng.choice(n, p=d2 / total) if total > 0 else int(np.argmax(d2))
        centres.append(X[pick])
        d2 = np.minimum(d2, ((X - X[pick]) ** 2).sum(1))
    C = np.stack(centres)
    labels = np.zeros(n, np.int64)
    for it in range(iterations):
        dist = (X ** 2).sum(1)[:, None] - 2 * X @ C.T + (C ** 2).sum(1)[None]
        new = np.argmin(dist, axis=1)
        if it and np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            members = labels == c
            if members.any():
                C[c] = X[members].mean(0)
            else:  # an empty cluster takes the point farthest from its centre
                far = int(np.argmax(dist[np.arange(n), labels]))
                C[c], labels[far] = X[far], c
    return labels, C


def _segment_stats(feats: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scores (k,), mean features (k, C))`` from normalised cell features ``(n, C)`` and the fraction of
    each cell in each segment ``(n, k)``: cohesion minus separation (module docstring)."""
    total = feats.sum(0)
    scores, means = [], []
    for a in weights.T:
        s, s2 = float(a.sum()), float((a * a).sum())
        vec = a @ feats
        rest = total - vec
        n_rest = weights.shape[0] - s
        inside = (float(vec @ vec) - s2) / max(s * s - s2, 1e-12) if s * s - s2 > 1e-9 else 0.0
        outside = float(vec @ rest) / max(s * n_rest, 1e-12) if n_rest > 1e-9 else 0.0
        scores.append(np.clip(inside - outside, 0.0, 1.0))
        means.append(vec / max(s, 1e-12))
    return np.asarray(scores, np.float32), np.asarray(means, np.float32)


class DeepSpectral:
    """Deep spectral segmentation (module docstring) on a :class:`~anyseg.models.features.FeatureExtractor`."""

    name = "spectral"
    kind = "partition"

    def __init__(self, extractor: Any, eigenvectors: int = 20, color_lambda: float = 10.0, max_dense: int = 4096,
                 top_k: int = 64, work_side: int = 512, seed: int = 0, all_eigenvectors: bool = False) -> None:
        def whole(name: str, v: Any, low: int, high: int) -> int:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v <= high:
                raise InputError(f"{name} must be a whole number in {low}..{high}; got {v!r}")
            return int(v)

        self.extractor = extractor
        self.eigenvectors = whole("eigenvectors", eigenvectors, 2, 100)
        if isinstance(color_lambda, bool) or not isinstance(color_lambda, (int, float)) or not 0 <= color_lambda <= 1e4:
            raise InputError(f"color_lambda must be a number in 0..10000; got {color_lambda!r}")
        self.color_lambda = float(color_lambda)
        self.max_dense = whole("max_dense", max_dense, 16, 16384)
        self.top_k = whole("top_k", top_k, 4, 1024)
        self.work_side = whole("work_side", work_side, 32, 4096)
        self.seed = whole("seed", seed, 0, 2 ** 31 - 1)
        if not isinstance(all_eigenvectors, bool):
            raise InputError(f"all_eigenvectors must be true or false; got {all_eigenvectors!r}")
        self.all_eigenvectors = all_eigenvectors

    @classmethod
    def from_options(cls, model: str | None = None, device: str | None = None, allow_download: bool = True,
                     **options: Any) -> "DeepSpectral":
        """Load the feature model (``dino-vits16`` when present, else ``auto``) and build the method."""
        from anyseg.models.dino import load_features
        from anyseg.models.registry import REGISTRY
        from anyseg.models.resolver import model_status

        known = {"eigenvectors", "color_lambda", "max_dense", "top_k", "work_side", "seed", "all_eigenvectors"}
        feature_keys = {"size", "side", "max_cells"}
        unknown = sorted(set(options) - known - feature_keys)
        if unknown:
            raise InputError(f"unknown spectral option(s) {', '.join(unknown)}; expected one of "
                             f"{', '.join(sorted(known | feature_keys))}")
        if model is None:
            model = DEFAULT_MODEL if DEFAULT_MODEL in REGISTRY and model_status(DEFAULT_MODEL).present else "auto"
        feature_options = {k: options.pop(k) for k in list(options) if k in feature_keys}
        extractor = load_features(model, device=device, allow_download=allow_download, **feature_options)
        return cls(extractor, **options)

    def discover(self, image: np.ndarray, objects: int | None = None) -> Masks:
        """A partition of ``image`` into at most ``objects`` (8) segments; labels = segment ids."""
        image = check_image(image)
        h, w = image.shape[:2]
        count = check_objects(objects, 8)
        check_grid((h, w), int(getattr(self.extractor, "patch_size", 1)))
        pf = _features(self.extractor, image)
        gh, gw = pf.grid
        if gh * gw < 4:
            raise InputError(f"the image is {w}x{h}: too small for a {gw}x{gh} patch grid (at least 4 cells)")
        feats = pf.normalized().astype(np.float32)
        W = feature_affinity(feats, self.max_dense, self.top_k)
        colour = None
        if self.color_lambda > 0:
            small = cv2.resize(image, (gw, gh), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0
            colour = knn_colour_affinity(small.reshape(gh, gw, 3))
        _vals, vecs = spectral_embedding(W, self.eigenvectors, colour, self.color_lambda, self.seed)
        used = vecs.shape[1] - 1 if self.all_eigenvectors else max(1, min(count, vecs.shape[1]) - 1)
        emb = vecs[:, 1:1 + used]
        _cells, centres = kmeans(emb, min(count, gh * gw), self.seed)
        labels = self._pixel_labels(emb.reshape(gh, gw, -1), centres, (h, w))
        present = np.unique(labels)
        remap = np.zeros(int(present.max()) + 1, np.int64)
        remap[present] = np.arange(len(present))
        labels = remap[labels]
        k = len(present)
        masks = labels[None] == np.arange(k)[:, None, None]
        onehot = np.stack([cv2.resize(m.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA) for m in masks], -1)
        weights = onehot.reshape(gh * gw, k)
        weights = weights / np.maximum(weights.sum(1, keepdims=True), 1e-12)
        scores, means = _segment_stats(feats, weights)
        return Masks(masks, scores=scores, labels=np.arange(k), data={"feature": means})

    def _pixel_labels(self, grid: np.ndarray, centres: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``(H, W)`` labels: bilinear eigenvectors at the working resolution, nearest centre, nearest resize."""
        h, w = size
        scale = min(1.0, self.work_side / max(h, w))
        ww, wh = max(1, round(w * scale)), max(1, round(h * scale))
        chans = [cv2.resize(grid[..., c].astype(np.float32), (ww, wh), interpolation=cv2.INTER_LINEAR)
                 for c in range(grid.shape[-1])]
        up = np.stack(chans, -1).reshape(-1, grid.shape[-1])
        c = centres.astype(np.float32)
        dist = -2 * up @ c.T + (c ** 2).sum(1)[None]
        lab = np.argmin(dist, axis=1).reshape(wh, ww).astype(np.int32)
        if (wh, ww) != (h, w):
            lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
        return lab.astype(np.int64)


def kmeans_features(features: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """``(n,)`` cluster ids in ``0..k-1`` of ``(n, C)`` segment features, L2-normalised first (cosine k-means)."""
    X = np.asarray(features, np.float64).reshape(len(features), -1)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return kmeans(X, k, seed)[0]


def cluster_segments(results: Sequence[Masks], k: int, seed: int = 0) -> list[Masks]:
    """Semantic clustering across images: k-means (``k`` clusters) over every segment's L2-normalised
    ``data["feature"]``; each image's segments of one cluster are merged, ``labels`` = cluster ids
    ``0..k-1``, scores the area-weighted mean of the merged segments', features their mean."""
    results = list(results)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k (the number of clusters) must be a whole number >= 1; got {k!r}")
    rows = []
    for i, m in enumerate(results):
        if not isinstance(m, Masks):
            raise InputError(f"result {i} is a {type(m).__name__}, not Masks")
        if len(m) and "feature" not in m.data:
            raise InputError(f"result {i} has no data['feature'] column: cluster the output of a partition method")
        if len(m):
            rows.append(np.asarray(m.data["feature"], np.float64).reshape(len(m), -1))
    total = sum(len(r) for r in rows)
    if k > total:
        raise InputError(f"k={k} clusters but only {total} segments in {len(results)} images")
    if len({r.shape[1] for r in rows}) > 1:
        raise InputError("the segments' features have different lengths (results of different models?)")
    X = np.concatenate(rows)
    ids = kmeans_features(X, k, seed)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    out, start = [], 0
    for m in results:
        n = len(m)
        mine, start = ids[start:start + n], start + n
        if n == 0:
            out.append(m)
            continue
        feats = X[start - n:start]
        groups = np.unique(mine)
        masks = np.stack([m.masks[mine == g].any(0) for g in groups])
        areas = m.areas.astype(np.float64)
        scores = [float(np.average(m.scores[mine == g], weights=np.maximum(areas[mine == g], 1))) for g in groups]
        means = np.stack([feats[mine == g].mean(0) for g in groups]).astype(np.float32)
        out.append(Masks(masks, scores=np.asarray(scores, np.float32), labels=groups.astype(np.int64),
                         data={"feature": means}))
    return out

"""Refinement of discovered masks: the fast bilateral solver, or a dense CRF, snapping masks to image edges.

``refine(image, masks, method)`` with :data:`REFINERS`:

``none``
    the masks as they are (the identity).
``bilateral``
    the fast bilateral solver (Barron & Poole, ECCV 2016) as TokenCut uses it
    (``unsupervised_saliency_detection/bilateral_solver.py``): a bilateral grid in XY + YUV with
    cells of ``sigma_spatial`` pixels, ``sigma_luma`` and ``sigma_chroma`` levels (each pixel
    splats to the vertex of its cell; the blur is ``[1 2 1]`` along each of the 5 axes), the grid
    bistochastised (10 iterations), and ``(lam * A_smooth + diag(S c)) y = S (c t)`` solved by
    conjugate gradients (Jacobi preconditioner, 25 iterations, tolerance 1e-5), the solution
    sliced back to the pixels. Defaults are TokenCut's (``get_saliency.py``: sigma_spatial 16,
    sigma_luma 16, sigma_chroma 8; ``lam`` 256 and confidence 0.999 in ``bilateral_solver_output``),
    written here with numpy / scipy. An object mask is the solved soft mask above 0.5, holes filled,
    its largest connected component kept (as TokenCut).
``crf``
    a fully connected CRF (Krähenbühl & Koltun, NeurIPS 2011) with the Potts model: a Gaussian
    spatial kernel (``w2`` 3, ``gamma`` 3 px) and an appearance kernel (``w1`` 10, ``alpha`` 80 px,
    ``beta`` 13 RGB levels), 5 mean-field iterations: the parameters of deep spectral methods'
    ``extract_crf_segmentations``. The unary is ``-log p`` with ``p = gt_prob`` (0.7) on the mask's
    label (pydensecrf's ``unary_from_labels`` convention; the reference feeds one-hot labels to
    SimpleCRF). With ``pydensecrf`` importable it runs that (:func:`crf_backend` says which);
    otherwise (the default here: it is not a dependency) a numpy / OpenCV mean field in which the
    appearance kernel is the normalised bilateral-grid filter above (cells of ``alpha`` pixels and
    ``beta`` levels: an approximation of the Gaussian, not a permutohedral lattice) and the spatial
    kernel a normalised Gaussian blur.

A partition (two or more disjoint masks covering the image) is refined jointly: one soft
target per segment, solved (or CRF-inferred) together and each pixel given the arg-max, so the
result stays disjoint and covering (segments that vanish are dropped with their rows). Object
masks are refined one by one; one that vanishes is kept as it was.

Bounds: the work is done at a working resolution (longest side at most ``max_side``, 640); the
soft results are upsampled bilinearly to the image one label at a time (a running arg-max for
partitions), so memory is ``O(labels x working pixels + 2 x image pixels)``. Spatial sigmas are in
working-resolution pixels. Scores, labels, object ids and data columns are kept; boxes are
recomputed and logits dropped (they described the old masks).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from anyseg.errors import InputError
from anyseg.models.base import check_image
from anyseg.types import Masks

__all__ = ["REFINERS", "refine", "crf_backend", "BilateralGrid", "bilateral_solve", "MAX_SIDE"]

REFINERS = ("none", "crf", "bilateral")
MAX_SIDE = 640
_BILATERAL = {"sigma_spatial": 16.0, "sigma_luma": 16.0, "sigma_chroma": 8.0, "lam": 256.0, "confidence": 0.999,
              "cg_maxiter": 25, "cg_tol": 1e-5}
_CRF = {"w1": 10.0, "alpha": 80.0, "beta": 13.0, "w2": 3.0, "gamma": 3.0, "iterations": 5, "gt_prob": 0.7}
_RGB_TO_YUV = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def crf_backend() -> str:
    """``"pydensecrf"`` when that package is importable, else ``"fallback"`` (the numpy mean field)."""
    import importlib

    try:
        importlib.import_module("pydensecrf.densecrf")
    except ImportError:
        return "fallback"
    return "pydensecrf"


class BilateralGrid:
    """A bilateral grid over an ``(h, w, 3)`` uint8 RGB image: sparse splat ``S`` and ``[1 2 1]`` blur."""

    def __init__(self, image: np.ndarray, sigma_spatial: float, sigma_luma: float, sigma_chroma: float) -> None:
        from scipy.sparse import csr_matrix

        h, w = image.shape[:2]
        yuv = np.tensordot(image.astype(np.float64), _RGB_TO_YUV, ([2], [1])) + np.array([0.0, 128.0, 128.0])
        iy, ix = np.mgrid[:h, :w]
        coords = np.stack([ix / sigma_spatial, iy / sigma_spatial, yuv[..., 0] / sigma_luma,
                           yuv[..., 1] / sigma_chroma, yuv[..., 2] / sigma_chroma], -1)
        coords = np.floor(coords).astype(np.int64).reshape(-1, 5) + 1  # +1: the -1 neighbours stay >= 0
        base = coords.max(0) + 2
        stride = np.cumprod(np.concatenate([[1], base[:-1]]))
        keys = coords @ stride
        unique, idx = np.unique(keys, return_inverse=True)
        self.npixels, self.nvertices, self.dim = h * w, len(unique), 5
        self.S = csr_matrix((np.ones(self.npixels), (idx.reshape(-1), np.arange(self.npixels))),
                            shape=(self.nvertices, self.npixels))
        rows, cols = [], []
        for d in range(self.dim):
            for off in (-1, 1):
                nb = unique + off * stride[d]
                loc = np.clip(np.searchsorted(unique, nb), 0, len(unique) - 1)
                ok = np.flatnonzero(unique[loc] == nb)
                rows.append(ok)
                cols.append(loc[ok])
        r, c = np.concatenate(rows), np.concatenate(cols)
        self.B = csr_matrix((np.ones(len(r)), (r, c)), shape=(self.nvertices, self.nvertices))

    def splat(self, x: np.ndarray) -> np.ndarray:
        return self.S @ x

    def slice(self, y: np.ndarray) -> np.ndarray:
        return self.S.T @ y

    def blur(self, x: np.ndarray) -> np.ndarray:
        return 2 * self.dim * x + self.B @ x

    def filter(self, x: np.ndarray) -> np.ndarray:
        """The normalised bilateral filter of pixel values ``x`` ``(npixels, k)``."""
        num = self.slice(self.blur(self.splat(x)))
        den = self.slice(self.blur(self.splat(np.ones((self.npixels, 1)))))
        return num / np.maximum(den, 1e-12)


def bilateral_solve(grid: BilateralGrid, target: np.ndarray, confidence: np.ndarray, lam: float = 256.0,
                    cg_maxiter: int = 25, cg_tol: float = 1e-5) -> np.ndarray:
    """Barron & Poole's solver: ``(npixels, k)`` soft outputs for targets ``(npixels, k)`` and a
    confidence ``(npixels,)`` (TokenCut's ``BilateralSolver.solve``)."""
    from scipy.sparse import diags
    from scipy.sparse.linalg import cg

    m = grid.splat(np.ones(grid.npixels))
    n = np.ones(grid.nvertices)
    for _ in range(10):  # bistochastisation
        n = np.sqrt(n * m / np.maximum(grid.blur(n), 1e-12))
    m = n * grid.blur(n)
    Dn = diags(n)
    smooth = diags(m) - Dn @ (2 * grid.dim * diags(np.ones(grid.nvertices)) + grid.B) @ Dn
    c_splat = grid.splat(confidence)
    A = (lam * smooth + diags(c_splat)).tocsr()
    b = grid.splat(target * confidence[:, None])
    precond = diags(1.0 / np.maximum(A.diagonal(), 1e-5))
    y0 = b / np.maximum(c_splat, 1e-12)[:, None]
    y = np.empty_like(b)
    for d in range(b.shape[1]):
        y[:, d], _info = cg(A, b[:, d], x0=y0[:, d], M=precond, maxiter=cg_maxiter, rtol=cg_tol)
    return grid.slice(y)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


def _crf(image: np.ndarray, probs: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """Mean-field marginals ``(k, h, w)`` of the dense CRF (module docstring) from unary probabilities."""
    k, h, w = probs.shape
    unary = -np.log(np.clip(probs, 1e-6, 1.0)).astype(np.float32)
    if crf_backend() == "pydensecrf":
        import pydensecrf.densecrf as dcrf

        d = dcrf.DenseCRF2D(w, h, k)
        d.setUnaryEnergy(np.ascontiguousarray(unary.reshape(k, -1)))
        d.addPairwiseGaussian(sxy=p["gamma"], compat=p["w2"])
        d.addPairwiseBilateral(sxy=p["alpha"], srgb=p["beta"], rgbim=np.ascontiguousarray(image), compat=p["w1"])
        return np.asarray(d.inference(int(p["iterations"])), np.float32).reshape(k, h, w)
    grid = BilateralGrid(image, p["alpha"], p["beta"], p["beta"])
    q = _softmax(-unary)
    for _ in range(int(p["iterations"])):
        flat = q.reshape(k, -1).T.astype(np.float64)
        appearance = grid.filter(flat).T.reshape(k, h, w)
        spatial = np.stack([cv2.GaussianBlur(c, (0, 0), p["gamma"]) for c in q])
        q = _softmax(-unary + p["w1"] * appearance + p["w2"] * spatial)  # Potts: reward agreeing neighbours
    return q.astype(np.float32)


def _options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    defaults = dict(_BILATERAL if method == "bilateral" else _CRF)
    unknown = sorted(set(options) - set(defaults) - {"max_side"})
    if unknown:
        raise InputError(f"unknown {method} refinement option(s) {', '.join(unknown)}; expected "
                         f"{', '.join(sorted(defaults) + ['max_side'])}")
    for key, value in options.items():
        if key == "max_side":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0:
            raise InputError(f"refinement option {key} must be a positive number; got {value!r}")
        defaults[key] = float(value)
    if not 0.5 < defaults.get("gt_prob", 0.7) < 1.0 or not 0 < defaults.get("confidence", 0.5) <= 1.0:
        raise InputError("gt_prob must be in (0.5, 1) and confidence in (0, 1]")
    return defaults


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    filled = ndimage.binary_fill_holes(mask)
    lab, count = ndimage.label(filled)
    if count <= 1:
        return filled
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _soft(method: str, work: np.ndarray, targets: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """``(k, h, w)`` refined soft labels of ``(k, h, w)`` soft targets in ``[0, 1]`` at the working size."""
    k, h, w = targets.shape
    if method == "bilateral":
        grid = BilateralGrid(work, p["sigma_spatial"], p["sigma_luma"], p["sigma_chroma"])
        conf = np.full(h * w, p["confidence"])
        out = bilateral_solve(grid, targets.reshape(k, -1).T.astype(np.float64), conf, p["lam"],
                              int(p["cg_maxiter"]), p["cg_tol"])
        return out.T.reshape(k, h, w).astype(np.float32)
    g = p["gt_prob"]
    if k == 1:  # an object: a 2-label CRF, foreground / background
        fg = (1 - g) + (2 * g - 1) * targets[0]
        return _crf(work, np.stack([1 - fg, fg]), p)[1:]
    other = (1 - g) / (k - 1)
    return _crf(work, other + (g - other) * targets, p)


def _is_partition(masks: Masks) -> bool:
    return len(masks) >= 2 and bool((masks.masks.sum(0, dtype=np.int32) == 1).all())


def refine(image: np.ndarray, masks: Masks, method: str = "none", **options: Any) -> Masks:
    """``masks`` refined to ``image``'s edges with ``method`` (one of :data:`REFINERS`; module docstring)."""
    if method not in REFINERS:
        raise InputError(f"unknown refinement {method!r}; expected one of {', '.join(REFINERS)}")
    if not isinstance(masks, Masks):
        raise InputError(f"refine takes Masks; got {type(masks).__name__}")
    image = check_image(image)
    h, w = image.shape[:2]
    if len(masks) and masks.image_size != (h, w):
        raise InputError(f"the masks are {masks.image_size[1]}x{masks.image_size[0]} but the image is {w}x{h}")
    p = _options(method, options) if method != "none" else {}
    if method == "none" or len(masks) == 0:
        return masks
    max_side = options.get("max_side", MAX_SIDE)
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or not 16 <= max_side <= 8192:
        raise InputError(f"max_side must be a whole number in 16..8192; got {max_side!r}")
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def down(x: np.ndarray, interp: int) -> np.ndarray:
        return cv2.resize(x, size, interpolation=interp) if size != (w, h) else x

    def up(x: np.ndarray) -> np.ndarray:
        return cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR) if size != (w, h) else x

    work = down(image, cv2.INTER_AREA)
    targets = np.stack([down(m.astype(np.float32), cv2.INTER_AREA) for m in masks.masks])
    if _is_partition(masks):
        soft = _soft(method, work, targets, p)
        best = np.zeros((h, w), np.int64)
        top = np.full((h, w), -np.inf, np.float32)
        for i, s in enumerate(soft):
            s_up = up(s)
            better = s_up > top
            best[better], top[better] = i, s_up[better]
        out = best[None] == np.arange(len(masks))[:, None, None]
    else:
        out = np.zeros(masks.masks.shape, bool)
        for i, t in enumerate(targets):
            new = _largest_component(up(_soft(method, work, t[None], p)[0]) > 0.5)
            out[i] = new if new.any() else masks.masks[i]
    keep = out.any(axis=(1, 2))
    kept = masks[np.flatnonzero(keep)]
    return Masks(out[keep], scores=kept.scores, labels=kept.labels, object_ids=kept.object_ids, data=dict(kept.data))

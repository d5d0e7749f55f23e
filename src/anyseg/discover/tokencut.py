"""TokenCut and MaskCut: salient objects from a normalised cut of DINO's last-layer keys.

``TokenCut`` follows Wang et al., "Self-Supervised Transformers for Unsupervised Object
Discovery using Normalized Cut" (CVPR 2022; YangtaoWANG95/TokenCut, ``object_discovery.py``
``ncut`` / ``detect_box``): the graph over the patch tokens' keys (CLS dropped) is
``W_ij = 1`` if ``cos > tau`` (0.2) else ``eps`` (1e-5); the second smallest generalised
eigenvector of ``(D - W) x = lambda D x`` is split at its mean; the side holding the entry of
largest ``|x|`` (the seed) is the foreground; the object is the seed's 4-connected component on
the patch grid (``scipy.ndimage.label``'s default), shown on the image by nearest cells.

``MaskCut`` follows CutLER (Wang et al., CVPR 2023; facebookresearch/CutLER,
``maskcut/maskcut.py`` ``maskcut_forward``): up to ``objects`` (default 3) cuts with
``tau = 0.15``. Each cut's foreground is the seed's side, reversed when 3 or more of the 4
corner cells fall in it (CutLER's object-centric prior); its seed is then the largest entry
of the (possibly flipped) vector; the found object's cells are masked out (their features
zeroed: all their weights become ``eps``, as the reference does) and the cut repeats.
Objects come in discovery order (the first is the most salient cut, as in the reference).

Where these differ from the references:

* the normalised cut is :mod:`anyseg.discover.ncut` (memory-bounded, no dense ``N x N``).
* images keep their aspect ratio: the DINO family resizes the longest side to 480 pixels
  (MaskCut's ``fixed_size``, which squashes to 480x480; TokenCut pads at full resolution).
* MaskCut: cells of earlier objects take no part in the foreground, the corner rule or the
  seed, so each object is a connected region disjoint from the earlier ones (the reference
  subtracts earlier masks afterwards and checks IoU > 0.5 with the previous mask only). A cut
  whose object covers at most 1% of the grid ends the search (the reference then repeats the
  same graph, which finds the same mask again).
* no box output, no CRF / bilateral refinement here (the caller refines).
* scores (the references have none): ``(1 - Ncut(A, B)) * density(object)``, in ``[0, 1]``.
  ``Ncut`` is Shi & Malik's ``cut / vol(A) + cut / vol(B)`` of the cut's bipartition on ``W``
  (:func:`anyseg.discover.ncut.ncut_value`): near 0 when the two sides are not similar to each
  other, 1 for any cut of a structureless graph (every cut of a complete graph). ``density``
  (:func:`anyseg.discover.ncut.density`) is the fraction of the object's cell pairs that are
  similar (``cos > tau``): 1 for a coherent object, near 0 for cells similar to nothing (random
  features, where a low ``Ncut`` only says nothing is connected). So a separated *and*
  coherent object scores near 1; noise scores low. A uniform image, whose keys are all alike,
  gives a complete graph: no object at all (empty result).

``Masks.data["feature"]`` holds each object's mean key (``(N, C)`` float32).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from anyseg.discover.base import check_grid, check_objects, empty_masks
from anyseg.discover.ncut import MAX_CELLS, affinity, bipartition, density, ncut_value, second_eigenvector
from anyseg.errors import InputError, ModelError
from anyseg.types import Masks

__all__ = ["TokenCut", "MaskCut", "DEFAULT_MODEL", "FEATURE_OPTIONS", "grid_to_image", "component"]

#: the default backbone when present locally (TokenCut's main one)
DEFAULT_MODEL = "dino-vits16"
#: options passed on to :func:`anyseg.models.dino.load_features`
FEATURE_OPTIONS = ("size", "side", "max_cells", "weights")
#: MaskCut: an object of at most this fraction of the grid ends the search (CutLER's ``ratio <= 0.01``)
MIN_AREA = 0.01


def _default_model() -> str:
    """``dino-vits16`` when present locally, else any feature model ``auto`` finds, else ``dino-vits16``
    (downloaded when allowed, else its one-line "not present" error)."""
    from anyseg.models.families import FEATURES
    from anyseg.models.resolver import model_status, resolve

    try:
        if model_status(DEFAULT_MODEL).present:
            return DEFAULT_MODEL
        resolve("auto", FEATURES, quiet=True)
        return "auto"
    except ModelError:
        return DEFAULT_MODEL


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 < float(value) < 1.0:
        raise InputError(f"{name} must be a number in (0, 1); got {value!r}")
    return float(value)


def _takes_kind(extractor: Any) -> bool:
    try:
        return "kind" in inspect.signature(extractor.patch_features).parameters
    except (TypeError, ValueError):
        return False


def _score(aff: Any, side: np.ndarray, obj: np.ndarray) -> float:
    """``(1 - Ncut(side, rest)) * density(obj)`` in ``[0, 1]`` (module docstring)."""
    return float(np.clip((1.0 - ncut_value(aff, side)) * density(aff, obj.reshape(-1)), 0.0, 1.0))


def component(mask: np.ndarray, seed: int) -> np.ndarray:
    """``(gh, gw)`` bool: the 4-connected component of ``mask`` holding flat cell ``seed``."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask)
    label = labels.reshape(-1)[seed]
    return labels == label if label else np.zeros(mask.shape, bool)


def grid_to_image(grid_mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool: each pixel takes the cell under its centre (nearest; cells span ``H / gh`` rows)."""
    gh, gw = grid_mask.shape
    h, w = size
    rows = ((2 * np.arange(h) + 1) * gh) // (2 * h)
    cols = ((2 * np.arange(w) + 1) * gw) // (2 * w)
    return np.asarray(grid_mask, bool)[rows[:, None], cols[None, :]]


class _KeyCut:
    """What TokenCut and MaskCut share: the key extractor, the graph parameters, one-line checks."""

    name = "tokencut"
    kind = "objects"
    default_tau = 0.2

    def __init__(self, extractor: Any, tau: float | None = None, eps: float = 1e-5) -> None:
        for attr in ("patch_features", "patch_size"):
            if not hasattr(extractor, attr):
                raise ModelError(f"{self.name} needs a feature model (patch features); got {type(extractor).__name__}")
        if not _takes_kind(extractor):
            raise ModelError(f"{getattr(extractor, 'name', extractor)!r} gives no attention keys "
                             f"(patch_features(image, kind='keys')): {self.name} needs a DINO-family model")
        self.extractor = extractor
        self.tau = _check_fraction("tau", self.default_tau if tau is None else tau)
        self.eps = _check_fraction("eps", eps)

    @classmethod
    def from_options(cls, model: Any = None, device: str | None = None, allow_download: bool = True,
                     tau: float | None = None, eps: float = 1e-5, **options: Any) -> "_KeyCut":
        """Build from a model name / folder (``None``: :func:`_default_model`) or a loaded extractor."""
        unknown = sorted(set(options) - set(FEATURE_OPTIONS))
        if unknown:
            raise InputError(f"unknown {cls.name} option {unknown[0]!r}; expected tau, eps or one of "
                             f"{', '.join(FEATURE_OPTIONS)}")
        cells = options.get("max_cells")
        if cells is not None and (isinstance(cells, bool) or not isinstance(cells, (int, np.integer))
                                  or not 4 <= cells <= MAX_CELLS):
            raise InputError(f"max_cells must be a whole number in 4..{MAX_CELLS}; got {cells!r}")
        _check_fraction("tau", cls.default_tau if tau is None else tau)  # before any loading
        _check_fraction("eps", eps)
        if model is not None and hasattr(model, "patch_features"):
            if options:
                raise InputError(f"{', '.join(sorted(options))} go with a model name or folder, not with a loaded "
                                 "feature model")
            extractor = model
        else:
            from anyseg.models.dino import load_features

            extractor = load_features(_default_model() if model is None else model, device=device,
                                      allow_download=allow_download, **options)
        return cls(extractor, tau=tau, eps=eps)

    @property
    def model_id(self) -> str:
        """The features' identity (the keys of which weights, at which size) and the graph's parameters."""
        ex = self.extractor
        inner = ex.features_id("keys") if hasattr(ex, "features_id") else f"{getattr(ex, 'model_id', ex)}:keys"
        return f"{inner}:tau{self.tau:g}:eps{self.eps:g}"

    def keys(self, image: np.ndarray) -> Any:
        """The :class:`~anyseg.models.features.PatchFeatures` (keys) of a checked image (2+ cells a side)."""
        from anyseg.models.base import check_image

        image = check_image(image)
        check_grid(image.shape[:2], int(self.extractor.patch_size), what=self.name)
        pf = self.extractor.patch_features(image, kind="keys")
        gh, gw = pf.grid
        if gh < 2 or gw < 2:
            raise InputError(f"the image is {image.shape[1]}x{image.shape[0]}: its patch grid is {gw}x{gh}, too "
                             f"thin for {self.name} (at least 2 cells a side)")
        if tuple(pf.original_size) != tuple(image.shape[:2]):
            raise ModelError(f"the feature model returned a grid for a {pf.original_size[1]}x{pf.original_size[0]} "
                             f"image, not {image.shape[1]}x{image.shape[0]}")
        return pf

    def _result(self, pf: Any, cells: list[np.ndarray], scores: list[float]) -> Masks:
        size = tuple(pf.original_size)
        if not cells:
            return empty_masks(size)
        flat = pf.features.reshape(-1, pf.dim)
        feats = np.stack([flat[c.reshape(-1)].mean(axis=0) for c in cells]).astype(np.float32)
        masks = np.stack([grid_to_image(c, size) for c in cells])
        return Masks(masks=masks, scores=np.clip(np.asarray(scores, np.float32), 0.0, 1.0), data={"feature": feats})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_id!r})"


class TokenCut(_KeyCut):
    """TokenCut (module docstring): the one salient object of an image, scored by its cut."""

    name = "tokencut"
    default_tau = 0.2

    def discover(self, image: np.ndarray, objects: int | None = None) -> Masks:
        """At most one mask (TokenCut finds one object; ``objects`` is checked, a larger one is not an
        error: MaskCut finds several); none when the graph has no structure (a uniform image)."""
        check_objects(objects, 1)
        pf = self.keys(image)
        aff = affinity(pf.features, self.tau, self.eps)
        eig = second_eigenvector(aff)
        fg = bipartition(eig.vector)
        if eig.degenerate or not fg.any() or fg.all():
            return empty_masks(tuple(pf.original_size))
        seed = int(np.argmax(np.abs(eig.vector)))
        if not fg[seed]:
            fg = ~fg
        obj = component(fg.reshape(pf.grid), seed)
        return self._result(pf, [obj], [_score(aff, fg, obj)])


class MaskCut(_KeyCut):
    """MaskCut (module docstring): up to ``objects`` disjoint objects, in discovery order."""

    name = "maskcut"
    default_tau = 0.15
    default_objects = 3

    def _cut(self, pf: Any, active: np.ndarray) -> tuple[np.ndarray, float] | None:
        """One MaskCut step on the cells still ``active``: the object's cells and its score, or ``None``."""
        gh, gw = pf.grid
        aff = affinity(pf.features, self.tau, self.eps, active=None if active.all() else active)
        eig = second_eigenvector(aff)
        if eig.degenerate:
            return None
        vec = eig.vector
        fg = bipartition(vec)
        if not fg.any() or fg.all():
            return None
        corners = np.array([0, gw - 1, (gh - 1) * gw, gh * gw - 1])
        seed = int(np.flatnonzero(active)[np.argmax(np.abs(vec[active]))])
        if int((fg & active)[corners].sum()) >= 3 or not fg[seed]:
            fg, vec = ~fg, -vec  # CutLER: a side holding 3+ corners is background
        side = fg.copy()
        fg &= active
        if not fg.any():
            return None
        seed = int(np.flatnonzero(fg)[np.argmax(vec[fg])])
        obj = component(fg.reshape(gh, gw), seed)
        if obj.sum() <= MIN_AREA * gh * gw:
            return None
        return obj, _score(aff, side, obj)

    def discover(self, image: np.ndarray, objects: int | None = None) -> Masks:
        """Up to ``objects`` (default 3) masks, disjoint, in discovery order, each scored by its cut."""
        n = check_objects(objects, self.default_objects)
        pf = self.keys(image)
        active = np.ones(pf.grid[0] * pf.grid[1], bool)
        cells: list[np.ndarray] = []
        scores: list[float] = []
        for _ in range(n):
            if active.sum() < 2:
                break
            found = self._cut(pf, active)
            if found is None:
                break  # the same graph would give the same cut again
            obj, score = found
            cells.append(obj)
            scores.append(score)
            active &= ~obj.reshape(-1)
        return self._result(pf, cells, scores)

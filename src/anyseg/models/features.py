"""Dense patch features: what a feature family (DINOv2, DINOv3) returns, and the protocol its adapter meets.

A :class:`FeatureExtractor` (capability ``features``, loader role ``features``) turns one RGB
image into :class:`PatchFeatures`: a ``(gh, gw, C)`` grid of patch embeddings plus the geometry
that ties the grid to the original image. The image is resized to a multiple of the patch size
(keeping its aspect ratio up to rounding), so cell ``(r, c)`` covers the original pixels
``[c * W / gw, (c + 1) * W / gw) x [r * H / gh, (r + 1) * H / gh)``: the mapping between cells
and pixels is a per-axis scale, whatever the adapter's resize target was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from anyseg.errors import InputError

__all__ = ["PatchFeatures", "FeatureExtractor", "grid_for"]


def grid_for(original_size: tuple[int, int], patch_size: int, size: int, side: str = "longest",
             max_cells: int = 4096) -> tuple[int, int]:
    """``(gh, gw)``: the patch grid of an ``(H, W)`` image whose ``side`` (``longest`` or
    ``shortest``) is resized to about ``size`` pixels, each side rounded to a whole number of
    patches (at least one); grids above ``max_cells`` cells are scaled down to fit."""
    h, w = (int(v) for v in original_size)
    if h < 1 or w < 1:
        raise InputError(f"image size must be positive; got {w}x{h}")
    if side not in ("longest", "shortest"):
        raise InputError(f"side must be 'longest' or 'shortest'; got {side!r}")
    scale = size / (max(h, w) if side == "longest" else min(h, w))
    gh, gw = (max(1, int(round(v * scale / patch_size))) for v in (h, w))
    if gh * gw > max_cells:
        shrink = (max_cells / (gh * gw)) ** 0.5
        gh, gw = max(1, int(gh * shrink)), max(1, int(gw * shrink))
    return gh, gw


@dataclass(frozen=True, eq=False)
class PatchFeatures:
    """Patch embeddings of one image on its ``(gh, gw)`` grid.

    Attributes:
        features: ``(gh, gw, C)`` float32, as the model returned them (see :meth:`normalized`).
        patch_size: pixels per patch side in the model input.
        input_size: ``(gh * patch_size, gw * patch_size)``: the resized image the model saw.
        original_size: ``(H, W)`` of the image given.
        model_id: which weights computed them.
    """

    features: np.ndarray
    patch_size: int
    input_size: tuple[int, int]
    original_size: tuple[int, int]
    model_id: str = ""

    def __post_init__(self) -> None:
        feats = np.asarray(self.features, dtype=np.float32)
        if feats.ndim != 3:
            raise InputError(f"PatchFeatures.features must have shape (gh, gw, C); got {feats.shape}")
        want = (feats.shape[0] * self.patch_size, feats.shape[1] * self.patch_size)
        if tuple(self.input_size) != want:
            raise InputError(f"PatchFeatures: a {feats.shape[1]}x{feats.shape[0]} grid of {self.patch_size}-pixel "
                             f"patches is a {want[1]}x{want[0]} input, not {self.input_size[1]}x{self.input_size[0]}")
        feats.setflags(write=False)
        object.__setattr__(self, "features", feats)
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "original_size", tuple(int(v) for v in self.original_size))

    @property
    def grid(self) -> tuple[int, int]:
        """``(gh, gw)``."""
        return int(self.features.shape[0]), int(self.features.shape[1])

    @property
    def dim(self) -> int:
        return int(self.features.shape[2])

    def normalized(self) -> np.ndarray:
        """``(gh * gw, C)`` L2-normalised rows (row-major cells), for cosine similarities."""
        flat = self.features.reshape(-1, self.dim)
        norm = np.linalg.norm(flat, axis=1, keepdims=True)
        return flat / np.maximum(norm, 1e-12)

    def _scale(self) -> tuple[float, float]:
        (h, w), (gh, gw) = self.original_size, self.grid
        return w / gw, h / gh  # original pixels per cell, x and y

    def cell_centers(self, cells: np.ndarray | None = None) -> np.ndarray:
        """``(N, 2)`` float XY centres, in original pixels, of flat cell indices (default: every cell)."""
        gh, gw = self.grid
        idx = np.arange(gh * gw) if cells is None else np.asarray(cells, dtype=np.int64).reshape(-1)
        sx, sy = self._scale()
        return np.stack([(idx % gw + 0.5) * sx, (idx // gw + 0.5) * sy], axis=1)

    def cells_at(self, xy: np.ndarray) -> np.ndarray:
        """Flat cell indices of ``(N, 2)`` XY original-pixel positions (clipped to the grid)."""
        gh, gw = self.grid
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        sx, sy = self._scale()
        cols = np.clip(np.floor(xy[:, 0] / sx), 0, gw - 1).astype(np.int64)
        rows = np.clip(np.floor(xy[:, 1] / sy), 0, gh - 1).astype(np.int64)
        return rows * gw + cols

    def pool_mask(self, mask: np.ndarray) -> np.ndarray:
        """``(gh, gw)`` float32: the fraction of each cell that an ``(H, W)`` mask covers (area average)."""
        import cv2

        mask = np.asarray(mask)
        if mask.shape != self.original_size:
            raise InputError(f"mask is {mask.shape[1] if mask.ndim > 1 else '?'}x{mask.shape[0]} but the image "
                             f"is {self.original_size[1]}x{self.original_size[0]}")
        gh, gw = self.grid
        h, w = self.original_size
        src = mask.astype(np.float32) if mask.dtype != np.float32 else mask
        if h % gh == 0 and w % gw == 0:  # exact block means
            return src.reshape(gh, h // gh, gw, w // gw).mean(axis=(1, 3)).astype(np.float32)
        if h >= gh and w >= gw:
            return np.clip(cv2.resize(src, (gw, gh), interpolation=cv2.INTER_AREA), 0.0, 1.0)
        # an image smaller than its grid (tiny inputs): each cell takes the pixel under its centre
        centers = self.cell_centers()
        xs = np.clip(centers[:, 0].astype(np.int64), 0, w - 1)
        ys = np.clip(centers[:, 1].astype(np.int64), 0, h - 1)
        return src[ys, xs].reshape(gh, gw).astype(np.float32)


@runtime_checkable
class FeatureExtractor(Protocol):
    """What a ``features`` loader returns (:data:`anyseg.models.families.ROLES`): dense patch
    features of one ``(H, W, 3)`` uint8 RGB image (:class:`anyseg.models.dino.DinoFeatures`)."""

    name: str
    family: str
    patch_size: int

    @property
    def model_id(self) -> str: ...

    def patch_features(self, image: np.ndarray, kind: str = "tokens") -> PatchFeatures:
        """``kind``: ``tokens`` (the last layer's patch tokens) or ``keys`` (its attention keys:
        TokenCut, MaskCut, deep spectral methods)."""

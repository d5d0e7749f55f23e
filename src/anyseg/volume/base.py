"""A volume and its geometry: the one type every reader returns and every writer takes.

Conventions (SimpleITK's / ITK's, which DICOM, NRRD and MetaImage use natively; NIfTI's RAS
affine is converted on reading and writing):

* ``array`` is indexed ``[k, j, i]``: ``k`` is the slice index along the file's third axis,
  ``j`` the row, ``i`` the column (the order ``SimpleITK.GetArrayFromImage`` gives). It may be a
  numpy array or a lazy :class:`SliceSource` (slices read on demand) with the same
  ``shape`` / ``dtype`` / ``__getitem__(k)`` contract.
* ``spacing`` ``(si, sj, sk)`` in mm along ``i``, ``j``, ``k``;
* ``origin`` ``(x, y, z)``: the LPS position in mm of the centre of voxel ``(i, j, k) = (0, 0, 0)``;
* ``direction`` ``(3, 3)``: column ``c`` is the unit LPS direction of index axis ``c`` (``i``,
  ``j``, ``k``), as ``SimpleITK.Image.GetDirection()`` reshaped to 3 x 3.

So the LPS position of voxel ``(i, j, k)`` is ``origin + direction @ (spacing * (i, j, k))``;
:meth:`Volume.affine_lps` is that map as a 4 x 4 matrix, :meth:`Volume.affine_ras` the NIfTI /
nibabel one (x and y negated). ``intensity`` says what the values are (``HU`` after a DICOM
rescale, ``raw`` otherwise) and ``window`` a default display window ``(center, width)`` when the
file has one (DICOM's WindowCenter / WindowWidth).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from anyseg.errors import InputError

__all__ = ["Volume", "SliceSource", "AXES", "axis_index"]

#: the anatomical names of the three slicing axes, for volumes in the usual (near-axial) orientation
AXES = ("axial", "coronal", "sagittal")


def axis_index(axis: str | int) -> int:
    """The array axis (0 = k, 1 = j, 2 = i) a slicing axis name means: ``axial`` slices along ``k``
    (the file's slice axis), ``coronal`` along ``j``, ``sagittal`` along ``i``; an int is itself."""
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) and 0 <= int(axis) <= 2:
        return int(axis)
    if axis in AXES:
        return AXES.index(axis)
    raise InputError(f"--axis must be one of {', '.join(AXES)} (or 0, 1, 2); got {axis!r}")


@runtime_checkable
class SliceSource(Protocol):
    """A lazy ``(K, J, I)`` volume: ``source[k]`` reads slice ``k`` as a ``(J, I)`` array."""

    shape: tuple[int, int, int]
    dtype: Any

    def __getitem__(self, k: Any) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image and its geometry (module docstring).

    Attributes:
        array: ``(K, J, I)`` numpy array or lazy :class:`SliceSource`.
        spacing: ``(si, sj, sk)`` mm.
        origin: ``(x, y, z)`` LPS mm of voxel ``(0, 0, 0)``.
        direction: ``(3, 3)`` LPS direction cosines, one column per index axis ``i, j, k``.
        intensity: ``"HU"`` (DICOM CT after rescale), ``"raw"`` otherwise.
        window: a default display window ``(center, width)`` from the file, or ``None``.
        meta: format-specific facts (the source path, DICOM series UID, the 4D index taken ...).
    """

    array: Any
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    intensity: str = "raw"
    window: tuple[float, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = tuple(getattr(self.array, "shape", ()))
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"a volume must have 3 dimensions of at least 1; got shape {shape}")
        spacing = tuple(float(v) for v in self.spacing)
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise InputError(f"voxel spacing must be 3 positive numbers; got {self.spacing}")
        origin = tuple(float(v) for v in self.origin)
        direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if not np.all(np.isfinite(direction)) or np.abs(direction.T @ direction - np.eye(3)).max() > 1e-3:
            raise InputError("the volume's direction cosines are not orthonormal (a rotation or reflection): "
                             "a sheared grid cannot be described by spacing and direction")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(K, J, I)``."""
        return tuple(int(v) for v in self.array.shape)  # type: ignore[return-value]

    def affine_lps(self) -> np.ndarray:
        """``(4, 4)``: voxel ``(i, j, k, 1)`` -> LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        a[:3, 3] = self.origin
        return a

    def affine_ras(self) -> np.ndarray:
        """``(4, 4)``: voxel ``(i, j, k, 1)`` -> RAS mm, the NIfTI / nibabel affine."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps()

    def voxel_volume_ml(self) -> float:
        """One voxel's volume in millilitres (mm^3 / 1000)."""
        return float(np.prod(self.spacing)) / 1000.0

    def slice(self, k: int) -> np.ndarray:
        """Slice ``k`` along the file's slice axis, ``(J, I)``."""
        if not 0 <= k < self.shape[0]:
            raise InputError(f"slice {k} is outside the volume (0..{self.shape[0] - 1})")
        return np.asarray(self.array[k])

    def same_geometry(self, other: "Volume", atol: float = 1e-4) -> bool:
        """Whether ``other`` has this volume's shape, spacing, origin and direction (to ``atol``)."""
        return (self.shape == other.shape and np.allclose(self.spacing, other.spacing, atol=atol)
                and np.allclose(self.origin, other.origin, atol=atol)
                and np.allclose(self.direction, other.direction, atol=atol))

    def with_array(self, array: Any, intensity: str | None = None, **meta: Any) -> "Volume":
        """The same geometry with another array (a label volume, a windowed copy ...)."""
        shape = tuple(getattr(array, "shape", ()))
        if shape != self.shape:
            raise InputError(f"the new array has shape {shape}, not the volume's {self.shape}")
        return Volume(array, self.spacing, self.origin, self.direction, intensity or self.intensity, self.window,
                      {**self.meta, **meta})

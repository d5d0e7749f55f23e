"""Phantom volumes with known masks, for the volume tests (I/O, sessions, metrics).

Stable API (other tests build on it; keep the signatures):

* ``ellipsoid_phantom(shape=(24, 40, 48), spacing=(0.8, 0.8, 2.5), direction="oblique", noise=20.0, seed=0)
  -> (Volume, labels)``: a CT-like int16 volume (HU) ``(K, J, I)`` with an ellipsoid (label 1,
  ~100 HU) and a tube that drifts sideways along ``k`` (label 2, ~300 HU) on a 0 HU background
  with Gaussian noise of ``noise`` HU; ``labels`` is the ``(K, J, I)`` uint8 ground truth (a voxel
  is in a shape when its centre is). The shapes are defined in mm (index x spacing), so anisotropic
  spacing gives a true ellipsoid. ``direction``: ``"oblique"`` (:func:`oblique_direction`, a
  rotation about a tilted axis), ``"identity"``, ``"flipped"`` (an oblique reflection, det -1) or
  a 3 x 3 matrix; the origin is ``ORIGIN``. The volume's window is ``(40, 400)``.
* ``oblique_direction(flip=False) -> (3, 3)``: an exact rotation (or reflection) used above.
* ``write_dicom_series(volume, folder, ...) -> [paths]``: the volume as a CT series of
  single-frame files cloned from pydicom's ``CT_small.dcm`` (positions, orientation, spacing and
  values from the volume; stored with RescaleIntercept -1024), shuffled file names.
* ``ct_small_series(folder, n=5, step=5.0, ...) -> [paths]``: ``CT_small.dcm`` copied into ``n``
  slices ``step`` mm apart (the brief's synthetic series), with knobs for broken series.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anyseg.volume.base import Volume

ORIGIN = (-20.5, 13.25, -40.0)
HU_BACKGROUND, HU_ELLIPSOID, HU_TUBE = 0.0, 100.0, 300.0


def oblique_direction(flip: bool = False) -> np.ndarray:
    """A rotation of 25 deg about the axis (1, 2, 3) (times diag(1, 1, -1) when ``flip``)."""
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    angle = np.radians(25.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    r = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    return r @ np.diag([1.0, 1.0, -1.0]) if flip else r


def _direction(direction: Any) -> np.ndarray:
    if isinstance(direction, str):
        return {"oblique": oblique_direction(), "identity": np.eye(3),
                "flipped": oblique_direction(flip=True)}[direction]
    return np.asarray(direction, dtype=np.float64).reshape(3, 3)


def phantom_masks(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """The ``(K, J, I)`` uint8 labels of the ellipsoid (1) and the tube (2) for a grid."""
    k, j, i = (int(v) for v in shape)
    si, sj, sk = (float(v) for v in spacing)
    zz, yy, xx = np.meshgrid(np.arange(k) * sk, np.arange(j) * sj, np.arange(i) * si, indexing="ij")
    ex, ey, ez = i * si, j * sj, k * sk  # extents in mm
    ell = (((xx - 0.38 * ex) / (0.25 * ex)) ** 2 + ((yy - 0.5 * ey) / (0.3 * ey)) ** 2
           + ((zz - 0.5 * ez) / (0.35 * ez)) ** 2) <= 1.0
    t = zz / max(ez - sk, 1e-9)  # 0 .. 1 along k
    cy = (0.35 + 0.3 * t) * ey  # the tube drifts in j as k grows
    radius = 0.08 * min(ex, ey)
    tube = (((xx - 0.8 * ex) ** 2 + (yy - cy) ** 2) <= radius ** 2) & (t >= 0.1) & (t <= 0.9)
    labels = np.zeros((k, j, i), dtype=np.uint8)
    labels[ell] = 1
    labels[tube & ~ell] = 2
    return labels


def ellipsoid_phantom(shape: Sequence[int] = (24, 40, 48), spacing: Sequence[float] = (0.8, 0.8, 2.5),
                      direction: Any = "oblique", noise: float = 20.0, seed: int = 0) -> tuple[Volume, np.ndarray]:
    """``(Volume, labels)``: see the module docstring."""
    labels = phantom_masks(shape, spacing)
    values = np.full(labels.shape, HU_BACKGROUND, dtype=np.float64)
    values[labels == 1] = HU_ELLIPSOID
    values[labels == 2] = HU_TUBE
    if noise:
        values += np.random.default_rng(seed).normal(0.0, float(noise), size=labels.shape)
    array = np.clip(np.rint(values), -1024, 3071).astype(np.int16)
    volume = Volume(array, tuple(float(v) for v in spacing), ORIGIN, _direction(direction), "HU", (40.0, 400.0),
                    {"format": "phantom", "path": "phantom"})
    return volume, labels


def _ct_template() -> Any:
    import pydicom
    from pydicom.data import get_testdata_file

    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def _uid(root: str, *parts: int) -> str:
    return root + ".".join(str(int(p)) for p in parts)


def write_dicom_series(volume: Volume, folder: str | Path, series_uid: str | None = None,
                       description: str = "phantom", shuffle: bool = True) -> list[Path]:
    """Write ``volume`` as single-frame CT files (see the module docstring); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = _ct_template()
    series_uid = series_uid or _uid("1.2.826.0.1.3680043.8.498.", 77, zlib.crc32(description.encode()) % 10 ** 8)
    k_count, rows, cols = volume.shape
    d = np.asarray(volume.direction)
    order = np.random.default_rng(1).permutation(k_count) if shuffle else np.arange(k_count)
    paths = []
    for n, k in enumerate(order):
        ds = base.copy()
        pos = np.asarray(volume.origin) + d[:, 2] * volume.spacing[2] * k
        stored = (np.asarray(volume.slice(int(k)), dtype=np.int32) + 1024).astype(np.int16)
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelSpacing = [f"{volume.spacing[1]:.6f}", f"{volume.spacing[0]:.6f}"]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*d[:, 0], *d[:, 1])]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.SliceThickness = f"{volume.spacing[2]:.6f}"
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = description
        ds.SOPInstanceUID = _uid(series_uid + ".", k + 1)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = int(k) + 1
        ds.PixelData = stored.tobytes()
        path = folder / f"img{n:03d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths


def ct_small_series(folder: str | Path, n: int = 5, step: float = 5.0, series_uid: str | None = None,
                    drop: Sequence[int] = (), steps: Sequence[float] | None = None,
                    orientation: dict[int, Sequence[float]] | None = None, rows: dict[int, int] | None = None,
                    description: str = "ct small") -> list[Path]:
    """``CT_small.dcm`` as ``n`` slices ``step`` mm apart along its normal; returns the paths in slice order.

    ``drop``: slice numbers left out (a gap); ``steps``: the ``n - 1`` steps instead of ``step``;
    ``orientation``: ``{slice: six cosines}`` overrides; ``rows``: ``{slice: Rows}`` (a mixed size,
    the pixel data cropped to match).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = _ct_template()
    series_uid = series_uid or _uid("1.2.826.0.1.3680043.8.498.", 78, zlib.crc32(f"{description}{n}".encode()) % 10 ** 8)
    origin = np.asarray([float(v) for v in base.ImagePositionPatient])
    iop = [float(v) for v in base.ImageOrientationPatient]
    normal = np.cross(iop[:3], iop[3:])
    offsets = np.concatenate([[0.0], np.cumsum(steps if steps is not None else [step] * (n - 1))])
    pixels = base.pixel_array
    paths = []
    for k in range(n):
        if k in drop:
            continue
        ds = base.copy()
        ds.ImagePositionPatient = [f"{v:.6f}" for v in origin + normal * offsets[k]]
        if orientation and k in orientation:
            ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation[k]]
        if rows and k in rows:
            ds.Rows = rows[k]
            ds.PixelData = np.ascontiguousarray(pixels[: rows[k]]).tobytes()
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = description
        ds.SOPInstanceUID = _uid(series_uid + ".", k + 1)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n - k  # deliberately reversed: sorting must use the positions
        path = folder / f"ct_{series_uid[-6:]}_{k:03d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths

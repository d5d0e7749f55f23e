"""Display windows and volume slices as uint8 frames (the input of the image and video engines).

Presets ``(center, width)`` in HU, the standard CT table (Radiopaedia "Windowing (CT)", the
values most viewers ship; the issue's names):

========== ======== ======= ===============================================
preset     center   width   note
========== ======== ======= ===============================================
ct-abdomen 40       400     soft tissue (Radiopaedia's abdomen uses L 50)
ct-lung    -600     1500
ct-bone    400      1800
ct-brain   40       80
========== ======== ======= ===============================================

Other specs:

* ``"W,L"``: an explicit window, **width first, then level (center)**, as the issue writes it
  (``--window 400,40`` is the abdomen window). A Python tuple is ``(center, width)``, the order of
  :attr:`Volume.window` and DICOM's WindowCenter / WindowWidth.
* ``"mri"``: the 0.5th .. 99.5th percentiles of the volume (robust to a few hot voxels), measured
  on at most :data:`AUTO_SLICES` evenly spaced slices, each subsampled to at most
  :data:`AUTO_PIXELS` pixels, so its cost is bounded whatever the volume's size.
* ``"auto"`` (and ``None``): the file's own default window when it has one (DICOM's
  WindowCenter / WindowWidth, :attr:`Volume.window`), else the same percentiles as ``"mri"``.

The mapping is linear: ``c - w/2 -> 0``, ``c + w/2 -> 255``, clipped. It differs from DICOM's
VOI LUT formula (PS3.3 C.11.2.1.2, ``(x - (c - 0.5)) / (w - 1) + 0.5``) by half a unit of width,
which is what lets it take the sub-unit widths of normalised MR data.

Display orientation (:func:`rgb_slices`): a slice is ``volume.array.take(s, axis)`` and its
rows / columns are the two remaining array axes **in array order**, never flipped: axial
(``axis 0``) frames are ``(J, I)`` (rows = ``j``, columns = ``i``), coronal (``axis 1``)
``(K, I)`` and sagittal (``axis 2``) ``(K, J)``. So a pixel ``(x, y)`` of a frame is an array index
directly, and masks map back without any transform; the picture may look upside down or
mirrored against a radiological viewer (e.g. ``k`` increasing downwards on a coronal frame of a
feet-first stack), and pixels of coronal / sagittal frames are not square when the slice spacing
differs from the pixel spacing (:func:`pixel_size` gives the mm per row and column).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from anyseg.errors import InputError
from anyseg.volume.base import Volume, axis_index

__all__ = ["PRESETS", "resolve_window", "auto_window", "to_uint8", "rgb_slices", "pixel_size", "SliceFrames",
           "AUTO_SLICES", "AUTO_PIXELS"]

#: name -> (center, width)
PRESETS: dict[str, tuple[float, float]] = {
    "ct-abdomen": (40.0, 400.0),
    "ct-lung": (-600.0, 1500.0),
    "ct-bone": (400.0, 1800.0),
    "ct-brain": (40.0, 80.0),
}
#: the percentile window reads at most this many slices ...
AUTO_SLICES = 16
#: ... and at most this many pixels of each
AUTO_PIXELS = 65536
_PERCENTILES = (0.5, 99.5)


def _names() -> str:
    return ", ".join([*PRESETS, "mri", "auto", "W,L"])


def auto_window(volume: Volume | np.ndarray) -> tuple[float, float]:
    """``(center, width)`` from the 0.5 .. 99.5 percentiles of a bounded sample of the volume."""
    array = volume.array if isinstance(volume, Volume) else volume
    shape = tuple(int(v) for v in array.shape)
    if len(shape) == 2:
        picks, get = [0], (lambda _k: np.asarray(array))
    else:
        picks = np.unique(np.linspace(0, shape[0] - 1, min(AUTO_SLICES, shape[0])).round().astype(int))
        get = (lambda k: np.asarray(array[int(k)]))
    samples = []
    for k in picks:
        s = get(k)
        step = max(1, int(np.ceil(np.sqrt(s.size / AUTO_PIXELS))))
        part = np.asarray(s[::step, ::step], dtype=np.float64).ravel()
        samples.append(part[np.isfinite(part)])
    values = np.concatenate(samples) if samples else np.zeros(1)
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, _PERCENTILES)
    if not hi > lo:  # a (nearly) constant volume: a window around its value
        lo, hi = float(values.min()), float(values.max())
        if not hi > lo:
            return float(lo), 1.0
    return float((lo + hi) / 2.0), float(hi - lo)


def resolve_window(spec: Any, volume: Volume | None = None) -> tuple[float, float]:
    """A window spec (module docstring) -> ``(center, width)``."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        if volume is not None and volume.window is not None:
            return _checked(volume.window, "the file's window")
        return _from_volume(volume, "auto")
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in PRESETS:
            return PRESETS[text]
        if text == "mri":
            return _from_volume(volume, "mri")
        parts = text.split(",")
        if len(parts) == 2:
            try:
                width, level = float(parts[0]), float(parts[1])
            except ValueError:
                parts = []
            else:
                return _checked((level, width), f"--window {spec}")
        raise InputError(f"--window must be one of {_names()} (W,L = width,level, e.g. 400,40); got {spec!r}")
    try:
        center, width = (float(v) for v in spec)
    except (TypeError, ValueError):
        raise InputError(f"a window is a name ({_names()}) or (center, width); got {spec!r}") from None
    return _checked((center, width), "the window")


def _from_volume(volume: Volume | None, name: str) -> tuple[float, float]:
    if volume is None:
        raise InputError(f"--window {name} measures the volume's values; no volume was given")
    return auto_window(volume)


def _checked(window: Sequence[float], what: str) -> tuple[float, float]:
    center, width = float(window[0]), float(window[1])
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        raise InputError(f"{what}: a window needs a finite center and a positive width; got "
                         f"center {center:g}, width {width:g}")
    return center, width


def to_uint8(image: Any, window: Any) -> np.ndarray:
    """A slice ``(J, I)`` -> ``(J, I)`` uint8 through ``window`` (``(center, width)`` or a preset / ``"W,L"``).

    ``"auto"`` / ``"mri"`` measure this slice alone; pass a resolved ``(center, width)`` (from
    :func:`resolve_window` on the volume) for frames that agree with each other.
    """
    a = np.asarray(image)
    if a.ndim != 2:
        raise InputError(f"to_uint8 takes one 2D slice; got shape {a.shape}")
    if isinstance(window, str) and window.strip().lower() in ("auto", "mri"):
        center, width = auto_window(a)
    else:
        center, width = resolve_window(window)
    lo = center - width / 2.0
    scaled = (a.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / width)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def pixel_size(volume: Volume, axis: str | int) -> tuple[float, float]:
    """mm per row and per column of the frames along ``axis`` (see the module docstring)."""
    si, sj, sk = volume.spacing
    return {0: (sj, si), 1: (sk, si), 2: (sk, sj)}[axis_index(axis)]


class SliceFrames(Sequence):
    """The slices of a volume along one axis as ``(H, W, 3)`` uint8 frames, rendered on access.

    Axial frames read one slice each (lazy volumes stay lazy). Coronal and sagittal frames cut
    across every slice, so the first access renders the whole volume through the window once into
    a uint8 copy (one byte a voxel, bounded by the reader's voxel limit) and cuts frames from it.
    """

    def __init__(self, volume: Volume, axis: str | int, window: tuple[float, float]) -> None:
        self.volume, self.axis, self.window = volume, axis_index(axis), window
        shape = volume.shape
        self.frame_shape = tuple(n for a, n in enumerate(shape) if a != self.axis)
        self._count = shape[self.axis]
        self._grey: np.ndarray | None = None

    def __len__(self) -> int:
        return self._count

    def grey(self, index: int) -> np.ndarray:
        """Frame ``index`` as ``(H, W)`` uint8."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise InputError(f"a frame index must be an int; got {index!r}")
        n = self._count
        if not -n <= int(index) < n:
            raise IndexError(f"frame {index} is outside 0..{n - 1}")
        index = int(index) % n
        if self.axis == 0:
            return to_uint8(self.volume.slice(index), self.window)
        if self._grey is None:
            k = self.volume.shape[0]
            grey = np.empty(self.volume.shape, dtype=np.uint8)
            for s in range(k):
                grey[s] = to_uint8(self.volume.slice(s), self.window)
            self._grey = grey
        return np.ascontiguousarray(self._grey.take(index, axis=self.axis))

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        g = self.grey(index)
        return np.repeat(g[:, :, None], 3, axis=2)


def rgb_slices(volume: Volume, axis: str | int = "axial", window: Any = "auto") -> SliceFrames:
    """A lazy sequence of ``(H, W, 3)`` uint8 frames along ``axis`` through one window for the whole
    volume (resolved once by :func:`resolve_window`); orientation as the module docstring says."""
    if not isinstance(volume, Volume):
        raise InputError(f"rgb_slices takes an anyseg.volume.Volume; got {type(volume).__name__}")
    return SliceFrames(volume, axis, resolve_window(window, volume))

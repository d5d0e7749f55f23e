"""Reading volumes into :class:`~anyseg.volume.base.Volume` and writing label volumes in their geometry.

Formats (the libraries are the ``medical`` extra):

* **NIfTI** ``.nii`` / ``.nii.gz`` (nibabel). The affine is nibabel's ``header.get_best_affine()``
  (the sform when ``sform_code > 0``, else the qform, else the zooms), converted from RAS to LPS.
  Near-orthogonal affines (float32 round-off, under 1e-4) are made exactly orthonormal (polar
  decomposition); a sheared sform falls back to the qform when there is one (as ITK's reader does),
  else it is a one-line error: anyseg keeps orthogonal grids only. ``xyzt_units`` of metres or
  microns are scaled to mm (as ITK does). Lazy: ``.nii`` slices come from a memory map; a large
  ``.nii.gz`` is decompressed once into an unlinked temporary file and memory-mapped (gzip cannot
  seek backwards cheaply, and propagation runs both ways), a small one is read whole.
  **4D**: ``index`` picks the volume / time point; a 4D file without ``index`` is a one-line error
  that says how many there are (never a silent choice of the first).
* **NRRD** ``.nrrd`` / ``.nhdr`` and **MetaImage** ``.mha`` / ``.mhd`` (SimpleITK, geometry exactly
  as SimpleITK gives it). Read whole (compressed data cannot be sliced lazily), after a header check
  against the voxel limit; a 4D file's ``index`` volume is extracted on reading.
* **TIFF stacks**: a multi-page ``.tif`` / ``.tiff`` (tifffile; one page per slice is read lazily),
  or a folder of 2D ``.tif`` / ``.tiff`` / ``.png`` slices in natural order (``img2`` before
  ``img10``). TIFF has no patient geometry: identity direction, zero origin, and ``spacing`` from
  the caller (``--spacing``), else ImageJ metadata (pixel size and ``spacing`` with a unit), else
  1 mm, said in ``meta["spacing_source"]``. RGB(A) slices become luminance (ITU-R 601, as
  Pillow's ``L``), said in ``meta["warnings"]``.
* **DICOM** series (a folder, or one file of it): :mod:`anyseg.volume.dicom`.

Errors are one-line :class:`~anyseg.errors.InputError` s: a missing path, a file that is no volume
(a JPEG, a text file), a plain 2D image (use ``anyseg segment``), a corrupt header, a voxel
count over ``ANYSEG_MAX_VOXELS`` (default 1e9, checked on the header before any pixel is read).
A single-slice NIfTI / NRRD / MetaImage / DICOM is a volume of one slice (``K == 1``); a single 2D
PNG / JPEG / one-page TIFF is not.

Writing (:func:`save_labels`): the label volume gets the input's shape, spacing, origin and
direction. NIfTI stores the RAS affine as both qform and sform (the source's codes when it was a
NIfTI, else 1, scanner), intent ``label``, units mm, uint8 (or uint16 above 255 labels); NRRD and
MetaImage go through SimpleITK (compressed); ``dicom-seg`` through highdicom, referencing the
source series. Every file is written atomically.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from anyseg.errors import InputError
from anyseg.volume.base import Volume
from anyseg.volume.dicom import save_dicom_seg  # re-exported: the package docs name it here

__all__ = ["load_volume", "save_labels", "save_dicom_seg", "max_voxels", "LazySlices", "LABEL_FORMATS",
           "MAX_VOXELS_DEFAULT"]

MAX_VOXELS_DEFAULT = 1_000_000_000
#: a ``.nii.gz`` up to this many uncompressed bytes is read whole; larger ones are memory-mapped
GZIP_IN_MEMORY_BYTES = 256 * 2 ** 20
#: output format -> the file suffixes it writes (the first is the default)
LABEL_FORMATS = {"nifti": (".nii.gz", ".nii"), "nrrd": (".nrrd",), "mha": (".mha",), "dicom-seg": (".dcm",)}
_HINT = "pip install 'anyseg[medical]'"
_ITK = (".nrrd", ".nhdr", ".mha", ".mhd")
_TIFF = (".tif", ".tiff")
_SLICES = (".tif", ".tiff", ".png")
_IMAGES_2D = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".heic", ".avif")
_KINDS = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), TIFF stacks, DICOM series"


def max_voxels() -> int:
    """The voxel limit: ``ANYSEG_MAX_VOXELS`` (default :data:`MAX_VOXELS_DEFAULT`)."""
    raw = os.environ.get("ANYSEG_MAX_VOXELS", "").strip()
    if not raw:
        return MAX_VOXELS_DEFAULT
    try:
        value = int(float(raw))
    except ValueError:
        raise InputError(f"ANYSEG_MAX_VOXELS must be a number of voxels; got {raw!r}") from None
    if value < 1:
        raise InputError(f"ANYSEG_MAX_VOXELS must be positive; got {raw!r}")
    return value


def _check_voxels(shape: Sequence[int], name: str, limit: int) -> None:
    n = int(np.prod([int(v) for v in shape]))
    if n > limit:
        raise InputError(f"{name}: {' x '.join(str(int(v)) for v in shape)} = {n} voxels, over the limit of "
                         f"{limit} (set ANYSEG_MAX_VOXELS to raise it)")


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise InputError(f"reading this volume needs {module} ({_HINT}): {e}") from None


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "ERROR" in ln:
            return ln.split("ERROR:", 1)[-1].strip()[:200]
    return (lines[-1] if lines else type(e).__name__)[:200]


class LazySlices:
    """A lazy ``(K, J, I)`` volume (:class:`~anyseg.volume.base.SliceSource`): ``source[k]`` reads one slice.

    ``source[a:b]`` stacks slices, ``source[k, rows, cols]`` indexes within them, and
    ``np.asarray(source)`` reads everything (the reader checked the voxel limit). Reads are
    serialised by a lock (file handles and decoders are not thread-safe).
    """

    def __init__(self, shape: tuple[int, int, int], dtype: Any, read: Callable[[int], np.ndarray], keep: Any = None):
        self.shape = tuple(int(v) for v in shape)
        self.dtype = np.dtype(dtype)
        self._read, self._keep, self._lock = read, keep, threading.Lock()

    def __len__(self) -> int:
        return self.shape[0]

    def _one(self, k: int) -> np.ndarray:
        n = self.shape[0]
        if not -n <= k < n:
            raise IndexError(f"slice {k} is outside the volume (0..{n - 1})")
        with self._lock:
            out = np.asarray(self._read(int(k) % n))
        if out.shape != self.shape[1:]:
            raise InputError(f"slice {k} has shape {out.shape}, not {self.shape[1:]}: the volume is inconsistent")
        return out.astype(self.dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            return self._one(int(key))[rest] if rest else self._one(int(key))
        ks = range(self.shape[0])[key] if isinstance(key, slice) else np.arange(self.shape[0])[key].ravel()
        out = np.empty((len(ks), *self.shape[1:]), dtype=self.dtype)
        for n, k in enumerate(ks):
            out[n] = self._one(int(k))
        return out[(slice(None), *rest)] if rest else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"LazySlices(shape={self.shape}, dtype={self.dtype})"


# ----------------------------------------------------------------------------------------- dispatch

def _sniff(p: Path) -> str:
    """The format of a file: by suffix, else by its first bytes."""
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(_ITK):
        return "itk"
    if name.endswith(_TIFF):
        return "tiff"
    if name.endswith(_IMAGES_2D):
        return "2d"
    try:
        with open(p, "rb") as f:
            head = f.read(352)
    except OSError as e:
        raise InputError(f"{p}: cannot be read ({e.strerror or e})") from None
    if len(head) >= 132 and head[128:132] == b"DICM" or name.endswith((".dcm", ".dicom", ".ima")):
        return "dicom"
    if head[344:348] in (b"n+1\0", b"ni1\0") or head[4:8] == b"n+2\0":
        return "nifti"
    if head.startswith(b"NRRD") or head.startswith(b"ObjectType"):
        return "itk"
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "tiff"
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff" or head[:4] == b"GIF8":
        return "2d"
    return "unknown"


def _natural(p: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def load_volume(path: str | os.PathLike, series: str | None = None, index: int | None = None, lazy: bool = True,
                spacing: Sequence[float] | None = None) -> Volume:
    """Read a volume file or folder (module docstring) into a :class:`Volume`.

    Args:
        path: a NIfTI / NRRD / MetaImage / multi-page TIFF file, a DICOM file or folder, or a folder of slices.
        series: the DICOM SeriesInstanceUID to read when the folder holds several.
        index: the volume / time point of a 4D file.
        lazy: read slices on demand where the format allows (else the whole array now).
        spacing: ``(si, sj, sk)`` mm for TIFF / PNG stacks (they carry none).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file or folder")
    limit = max_voxels()
    if p.is_dir():
        slices = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in _SLICES
                         and not f.name.startswith(".")), key=_natural)
        kind = "slices" if slices else "dicom"
    else:
        kind = _sniff(p)
    if kind == "2d":
        raise InputError(f"{p.name}: a 2D image, not a volume; use `anyseg segment` for 2D images "
                         f"(volumes: {_KINDS})")
    if kind == "unknown":
        raise InputError(f"{p.name}: not a volume file (expected {_KINDS})")
    if series is not None and kind != "dicom":
        raise InputError(f"--series chooses a DICOM series; {p.name} is not DICOM")
    if spacing is not None and kind not in ("tiff", "slices"):
        raise InputError(f"--spacing is for TIFF / PNG stacks; {p.name} carries its own spacing")
    if index is not None and kind in ("dicom", "slices"):
        raise InputError(f"--index picks a volume of a 4D file; {p.name} is not one")
    if kind == "nifti":
        return _read_nifti(p, index, lazy, limit)
    if kind == "itk":
        return _read_itk(p, index, limit)
    if kind == "tiff":
        return _read_tiff(p, index, lazy, limit, spacing)
    if kind == "slices":
        return _read_slice_folder(p, slices, lazy, limit, spacing)
    return _read_dicom(p, series, lazy, limit)


def _read_dicom(p: Path, series: str | None, lazy: bool, limit: int) -> Volume:
    from anyseg.volume import dicom

    s = dicom.read_series(p, series, max_voxels=limit)
    source = LazySlices(s.shape, s.dtype, s.read_slice, keep=s)
    array = source if lazy else np.asarray(source)
    return Volume(array, s.spacing, s.origin, s.direction, s.intensity, s.window, {**s.meta, "path": str(p)})


def _pick_index(n: int, index: int | None, name: str) -> int:
    if index is None:
        if n > 1:
            raise InputError(f"{name} is 4D with {n} volumes (time points); choose one with --index 0..{n - 1}")
        return 0
    if not 0 <= int(index) < n:
        raise InputError(f"--index {index} is outside {name}'s {n} volume(s) (0..{n - 1})")
    return int(index)


# ---------------------------------------------------------------------------------------------- NIfTI

def _orthonormal(m: np.ndarray, name: str) -> tuple[tuple[float, float, float], np.ndarray] | None:
    """``(spacing, direction)`` of a 3 x 3 affine block, or ``None`` when it is sheared."""
    s = np.linalg.norm(m, axis=0)
    if not np.all(np.isfinite(m)) or s.min() <= 0:
        raise InputError(f"{name}: the affine has a zero or non-finite axis (corrupt header?)")
    d = m / s
    if np.abs(d.T @ d - np.eye(3)).max() > 1e-4:
        return None
    u, _, vt = np.linalg.svd(d)
    return (float(s[0]), float(s[1]), float(s[2])), u @ vt


def _nifti_geometry(header: Any, name: str) -> tuple[tuple, tuple, np.ndarray, list[str]]:
    """``(spacing, origin LPS, direction LPS, notes)`` from the best affine (module docstring)."""
    notes: list[str] = []
    affine = np.asarray(header.get_best_affine(), dtype=np.float64)
    split = _orthonormal(affine[:3, :3], name)
    if split is None and int(header["sform_code"]) > 0 and int(header["qform_code"]) > 0:
        affine = np.asarray(header.get_qform(), dtype=np.float64)
        split = _orthonormal(affine[:3, :3], name)
        notes.append(f"{name}: the sform is sheared; the qform is used (as ITK does)")
    if split is None:
        raise InputError(f"{name}: the affine is sheared (not a rotation times a scaling); anyseg keeps "
                         "orthogonal grids only: resample it first")
    spacing, direction = split
    unit = header.get_xyzt_units()[0]
    scale = {"meter": 1000.0, "micron": 1e-3}.get(unit, 1.0)
    if scale != 1.0:
        notes.append(f"{name}: spatial units are {unit}s, converted to mm")
    flip = np.diag([-1.0, -1.0, 1.0])
    origin = flip @ affine[:3, 3] * scale
    return tuple(v * scale for v in spacing), tuple(float(v) for v in origin), flip @ direction, notes


def _nifti_raw(p: Path, proxy: Any, lazy: bool) -> np.ndarray:
    """The unscaled ``(X, Y, Z, ...)`` data: a memory map (``.nii``, large ``.nii.gz``) or in memory."""
    nbytes = int(np.prod(proxy.shape)) * np.dtype(proxy.dtype).itemsize
    gz = p.name.lower().endswith(".gz")
    if not gz or not lazy or nbytes <= GZIP_IN_MEMORY_BYTES:
        return np.asarray(proxy.get_unscaled())
    fd, tmp = tempfile.mkstemp(prefix=".anyseg-nifti-", suffix=".nii")
    try:
        with gzip.open(p, "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, 16 * 2 ** 20)
        raw = np.memmap(tmp, dtype=proxy.dtype, mode="r", offset=int(proxy.offset), shape=tuple(proxy.shape),
                        order="F")
    except (OSError, EOFError, ValueError) as e:
        raise InputError(f"{p.name}: cannot decompress it ({type(e).__name__}: {_first_line(e)})") from None
    finally:
        try:
            os.unlink(tmp)  # the map stays valid (POSIX); the space is freed when it is closed
        except OSError:
            pass
    return raw


def _read_nifti(p: Path, index: int | None, lazy: bool, limit: int) -> Volume:
    nib = _require("nibabel")
    try:
        img = nib.load(str(p))
        header, proxy = img.header, img.dataobj
        dtype = np.dtype(header.get_data_dtype())
    except Exception as e:  # noqa: BLE001 - nibabel raises many types for a bad file
        raise InputError(f"{p.name}: not a readable NIfTI file ({type(e).__name__}: {_first_line(e)})") from None
    dims = [int(v) for v in img.shape]
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) > 4 or len(dims) < 2:
        raise InputError(f"{p.name}: a {len(dims)}D NIfTI image of shape {tuple(img.shape)}; volumes are 3D or 4D")
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise InputError(f"{p.name}: voxels of type {dtype} (RGB or complex); a volume is one real channel")
    x, y, z, n = (dims + [1, 1])[:4] if len(dims) == 2 else (dims + [1])[:4]
    t = _pick_index(n, index, p.name)
    _check_voxels((z, y, x) if lazy else (n, z, y, x), p.name, limit)  # eager: a .nii.gz is read whole
    spacing, origin, direction, notes = _nifti_geometry(header, p.name)
    slope, inter = float(proxy.slope), float(proxy.inter)
    scaled = (slope, inter) != (1.0, 0.0)
    out = np.dtype(np.float32) if scaled else dtype.newbyteorder("=")
    try:
        raw = _nifti_raw(p, proxy, lazy).reshape((x, y, z, n), order="F")
    except (OSError, EOFError, ValueError, gzip.BadGzipFile) as e:
        raise InputError(f"{p.name}: cannot read its voxels ({type(e).__name__}: {_first_line(e)})") from None

    def read(k: int) -> np.ndarray:
        s = np.asarray(raw[:, :, k, t]).T
        return (s * np.float32(slope) + np.float32(inter)).astype(np.float32) if scaled else s.astype(out)

    source = LazySlices((z, y, x), out, read, keep=raw)
    meta = {"format": "nifti", "path": str(p), "qform_code": int(header["qform_code"]),
            "sform_code": int(header["sform_code"]), "n_volumes": n, "index": t, "warnings": notes}
    return Volume(source if lazy else np.asarray(source), spacing, origin, direction, "raw", None, meta)


# ------------------------------------------------------------------------------------ NRRD, MetaImage

def _read_itk(p: Path, index: int | None, limit: int) -> Volume:
    sitk = _require("SimpleITK")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(f"{p.name}: not a readable NRRD / MetaImage file ({_first_line(e)})") from None
    dim, size, comps = reader.GetDimension(), tuple(reader.GetSize()), reader.GetNumberOfComponents()
    if comps != 1:
        raise InputError(f"{p.name}: {comps} components per voxel (RGB or vector); a volume is one channel")
    if dim not in (2, 3, 4):
        raise InputError(f"{p.name}: a {dim}D image of size {size}; volumes are 3D or 4D")
    _check_voxels(size[::-1], p.name, limit)  # a 4D file is read whole before its volume is extracted
    t = _pick_index(size[3], index, p.name) if dim == 4 else _pick_index(1, index, p.name)
    if dim == 4:
        reader.SetExtractIndex([0, 0, 0, t])
        reader.SetExtractSize([size[0], size[1], size[2], 0])
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise InputError(f"{p.name}: cannot read its voxels ({_first_line(e)})") from None
    if img.GetDimension() == 2:
        d2 = np.asarray(img.GetDirection(), dtype=np.float64).reshape(2, 2)
        direction = np.eye(3)
        direction[:2, :2] = d2
        spacing, origin = (*img.GetSpacing(), 1.0), (*img.GetOrigin(), 0.0)
        array = sitk.GetArrayFromImage(img)[None]
    else:
        direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
        spacing, origin, array = img.GetSpacing(), img.GetOrigin(), sitk.GetArrayFromImage(img)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{p.name}: voxels of type {array.dtype}; a volume is one real channel")
    meta = {"format": p.suffix.lower().lstrip("."), "path": str(p), "index": t,
            "n_volumes": size[3] if dim == 4 else 1, "warnings": []}
    return Volume(array, spacing, origin, direction, "raw", None, meta)


# ---------------------------------------------------------------------------------------- TIFF stacks

_UNITS_MM = {"micron": 1e-3, "um": 1e-3, "\u00b5m": 1e-3, "\\u00b5m": 1e-3, "nm": 1e-6, "mm": 1.0, "cm": 10.0,
             "m": 1000.0, "meter": 1000.0}


def _stack_spacing(spacing: Sequence[float] | None, tif: Any) -> tuple[tuple[float, float, float], str]:
    """``(spacing, source)``: the caller's, else ImageJ metadata with a known unit, else 1 mm."""
    if spacing is not None:
        values = [float(v) for v in spacing]
        if len(values) != 3 or not all(np.isfinite(values)) or min(values) <= 0:
            raise InputError(f"--spacing must be 3 positive numbers SI,SJ,SK in mm; got {spacing}")
        return (values[0], values[1], values[2]), "--spacing"
    meta = getattr(tif, "imagej_metadata", None) if tif is not None else None
    if meta and "spacing" in meta:
        scale = _UNITS_MM.get(str(meta.get("unit", "")).lower())
        try:
            xres = tif.pages[0].tags["XResolution"].value
            yres = tif.pages[0].tags["YResolution"].value
            si, sj = xres[1] / xres[0] * scale, yres[1] / yres[0] * scale
            sk = float(meta["spacing"]) * scale
            if min(si, sj, sk) > 0:
                return (float(si), float(sj), float(sk)), "ImageJ metadata"
        except (KeyError, TypeError, ZeroDivisionError, IndexError):
            pass
    return (1.0, 1.0, 1.0), "default 1 mm (no spacing in the file; pass --spacing SI,SJ,SK)"


def _gray(a: np.ndarray) -> np.ndarray:
    """RGB(A) ``(..., C)`` -> luminance (ITU-R 601), in the input's dtype."""
    g = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    return np.rint(g).astype(a.dtype) if a.dtype.kind in "iu" else g.astype(a.dtype)


def _read_tiff(p: Path, index: int | None, lazy: bool, limit: int, spacing: Sequence[float] | None) -> Volume:
    tifffile = _require("tifffile")
    try:
        tif = tifffile.TiffFile(str(p))
        s = tif.series[0]
        shape, axes, dtype = tuple(int(v) for v in s.shape), str(s.axes), np.dtype(s.dtype)
    except Exception as e:  # noqa: BLE001 - tifffile raises many types for a bad file
        raise InputError(f"{p.name}: not a readable TIFF ({type(e).__name__}: {_first_line(e)})") from None
    rgb = axes.endswith("S") and shape[-1] in (3, 4)
    plane = shape[:-1] if rgb else shape
    lead = [n for n in plane[:-2] if n > 1]
    if len(plane) < 2 or not lead or len(lead) > 2 or dtype.kind not in "biuf":
        tif.close()
        if len(plane) >= 2 and not lead:
            raise InputError(f"{p.name}: a 2D image, not a volume; use `anyseg segment` for 2D images")
        raise InputError(f"{p.name}: a TIFF of shape {shape} ({axes}, {dtype}); expected a stack of 2D slices")
    n, k = (lead[0], lead[1]) if len(lead) == 2 else (1, lead[0])
    t = _pick_index(n, index, p.name)
    j, i = plane[-2], plane[-1]
    _check_voxels((k, j, i), p.name, limit)
    (spacing3, source_note) = _stack_spacing(spacing, tif)
    pages = s.pages
    per_page = len(pages) == n * k and pages[0] is not None and tuple(pages[0].shape[:2]) == (j, i)

    def read(kk: int) -> np.ndarray:
        a = pages[t * k + kk].asarray()
        return _gray(a) if rgb else a

    if per_page:
        source: Any = LazySlices((k, j, i), dtype, read, keep=tif)
        array = source if lazy else np.asarray(source)
        if not lazy:
            tif.close()
    else:
        whole = s.asarray().reshape((n, k, j, i, *(shape[-1:] if rgb else ())))[t]
        array = _gray(whole) if rgb else whole
        tif.close()
    notes = ["RGB slices converted to luminance"] if rgb else []
    meta = {"format": "tiff", "path": str(p), "spacing_source": source_note, "index": t, "n_volumes": n,
            "warnings": notes}
    return Volume(array, spacing3, (0.0, 0.0, 0.0), np.eye(3), "raw", None, meta)


def _slice_reader(f: Path) -> np.ndarray:
    if f.suffix.lower() in _TIFF:
        a = _require("tifffile").imread(str(f))
    else:
        from PIL import Image

        with Image.open(f) as im:
            a = np.asarray(im.convert("L") if im.mode in ("P", "PA", "LA", "1") else im)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = _gray(a)
    if a.ndim != 2:
        raise InputError(f"{f.name}: a slice of shape {a.shape}; the slices of a folder must be 2D")
    return a


def _read_slice_folder(p: Path, files: list[Path], lazy: bool, limit: int,
                       spacing: Sequence[float] | None) -> Volume:
    if len(files) < 2:
        raise InputError(f"{p}: one 2D image, not a stack; use `anyseg segment` for 2D images")
    try:
        first = _slice_reader(files[0])
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a decoder error
        raise InputError(f"{files[0].name}: cannot read this slice ({type(e).__name__}: {_first_line(e)})") from None
    shape = (len(files), *first.shape)
    _check_voxels(shape, str(p), limit)
    spacing3, source_note = _stack_spacing(spacing, None)

    def read(k: int) -> np.ndarray:
        try:
            a = _slice_reader(files[k])
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{files[k].name}: cannot read this slice ({type(e).__name__}: {_first_line(e)})") from None
        if a.shape != first.shape or a.dtype != first.dtype:
            raise InputError(f"{files[k].name}: a {a.dtype} slice of shape {a.shape}, not {first.dtype} "
                             f"{first.shape} like {files[0].name}; the slices must match")
        return a

    source = LazySlices(shape, first.dtype, read)
    meta = {"format": "slices", "path": str(p), "files": [f.name for f in files], "spacing_source": source_note,
            "warnings": []}
    return Volume(source if lazy else np.asarray(source), spacing3, (0.0, 0.0, 0.0), np.eye(3), "raw", None, meta)


# -------------------------------------------------------------------------------------------- writing

def _label_format(path: Path, fmt: str | None) -> tuple[str, Path]:
    name = path.name.lower()
    by_suffix = next((f for f, sfx in LABEL_FORMATS.items() if name.endswith(sfx)), None)
    if fmt is None:
        if by_suffix is None:
            raise InputError(f"{path.name}: unknown label volume suffix; use .nii.gz, .nii, .nrrd, .mha or .dcm")
        return by_suffix, path
    if fmt not in LABEL_FORMATS:
        raise InputError(f"--format must be one of {', '.join(LABEL_FORMATS)}; got {fmt!r}")
    if by_suffix == fmt:
        return fmt, path
    if by_suffix is None and not path.suffix:
        return fmt, path.with_name(path.name + LABEL_FORMATS[fmt][0])
    raise InputError(f"{path.name}: the suffix does not match --format {fmt} ({', '.join(LABEL_FORMATS[fmt])})")


def save_labels(labels: Any, like: Volume, path: str | os.PathLike, format: str | None = None,
                segment_names: Mapping[int, str] | Sequence[str] | None = None) -> Path:
    """Write a ``(K, J, I)`` label volume in ``like``'s geometry; returns the path written.

    ``format``: ``nifti`` | ``nrrd`` | ``mha`` | ``dicom-seg`` (default: from the suffix; a path
    without a suffix gets the format's). ``dicom-seg`` needs ``like`` read from a DICOM series and
    uses ``segment_names`` (``{label: name}`` or names of labels 1, 2, ...).
    """
    fmt, out = _label_format(Path(path), format)
    arr = np.asarray(labels)
    if arr.shape != like.shape:
        raise InputError(f"labels of shape {arr.shape} do not match the volume's {like.shape}")
    if arr.dtype.kind not in "biu" or (arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535)):
        raise InputError(f"labels must be integers in 0..65535; got {arr.dtype}")
    arr = arr.astype(np.uint8 if not arr.size or int(arr.max()) <= 255 else np.uint16, copy=False)
    if fmt == "dicom-seg":
        return _write_seg(arr, like, out, segment_names)
    if fmt == "nifti":
        return _write_nifti(arr, like, out)
    sitk = _require("SimpleITK")
    from anyseg.io.atomic import write_bytes

    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(v) for v in like.spacing])
    img.SetOrigin([float(v) for v in like.origin])
    img.SetDirection([float(v) for v in np.asarray(like.direction).ravel()])
    with tempfile.TemporaryDirectory(prefix=".anyseg-labels-") as d:
        tmp = Path(d) / f"labels{LABEL_FORMATS[fmt][0]}"
        sitk.WriteImage(img, str(tmp), True)
        return write_bytes(out, tmp.read_bytes())


def _write_nifti(arr: np.ndarray, like: Volume, out: Path) -> Path:
    nib = _require("nibabel")
    from anyseg.io.atomic import write_bytes

    affine = like.affine_ras()
    img = nib.Nifti1Image(np.asfortranarray(arr.transpose(2, 1, 0)), affine)
    from_nifti = like.meta.get("format") == "nifti"
    qcode = int(like.meta.get("qform_code", 0) or 0) if from_nifti else 0
    scode = int(like.meta.get("sform_code", 0) or 0) if from_nifti else 0
    img.set_qform(affine, code=qcode or 1)
    img.set_sform(affine, code=scode or 1)
    img.header.set_data_dtype(arr.dtype)
    img.header.set_xyzt_units("mm")
    img.header.set_intent("label")
    data = img.to_bytes()
    if out.name.lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return write_bytes(out, data)


def _write_seg(arr: np.ndarray, like: Volume, out: Path, names: Mapping[int, str] | Sequence[str] | None) -> Path:
    from anyseg.volume import dicom

    files = like.meta.get("dicom_files")
    if like.meta.get("format") != "dicom" or not files:
        raise InputError(f"--format dicom-seg needs a DICOM source series; this volume is "
                         f"{like.meta.get('format', 'not from a file')}")
    frames = like.meta.get("frames")
    sources = dicom.series_datasets(files)
    if frames is not None:  # one multi-frame source: label slice k is source frame frames[k]
        ordered = np.zeros_like(arr)
        ordered[np.asarray(frames)] = arr
        arr = ordered
    return dicom.save_dicom_seg(arr, sources, out, names)

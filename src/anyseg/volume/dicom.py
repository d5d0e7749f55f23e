"""DICOM series reading (pydicom) with consistency checks, and DICOM Segmentation writing (highdicom).

Reading follows what the DICOM standard (PS3.3 C.7.6.2, Image Plane module) and the common
converters (dcm2niix, dicom2nifti, SimpleITK's GDCM series reader) do:

* files are grouped by ``SeriesInstanceUID``; several series without a chosen one is a one-line
  error that lists them (UID, description, file count);
* slices are sorted by their position along the slice normal, ``ImagePositionPatient . (r x c)``
  with ``r``, ``c`` the row and column cosines of ``ImageOrientationPatient`` (not by
  ``InstanceNumber`` or ``SliceLocation``, which scanners fill inconsistently);
* the slice spacing comes from those positions (the mean step, first to last), never from
  ``SliceThickness`` (which is the slab thickness, not the distance between slices); a
  one-slice series uses ``SpacingBetweenSlices`` / ``SliceThickness`` / 1 mm and says so;
* each slice gets its own ``RescaleSlope`` / ``RescaleIntercept`` (Modality LUT); a CT's values
  are then Hounsfield units (``intensity == "HU"``); ``WindowCenter`` / ``WindowWidth`` (the first
  pair when several) is the default display window.

Checks, so that the geometry is never silently wrong (tolerances as dicom2nifti's
``validate_slice_increment``: 5 % or 0.1 mm, and a gap above 1.5 median steps is a missing slice):

* mixed sizes (Rows / Columns), mixed pixel spacing, mixed orientations: error;
* two slices at one position (several echoes / phases / acquisitions in one series): error;
* a gap larger than 1.5 x the median step (missing slices): error;
* steps that vary by at most 0.1 % / 0.01 mm: silent; at most 5 % / 0.1 mm: a warning (the mean
  step is used, so the first and last slices are placed exactly); more: error;
* positions that drift sideways (gantry tilt, a sheared grid): silent below 5 % of a pixel, a
  warning below half a pixel, an error above (resampling a tilted stack is left to dcm2niix /
  Slicer: anyseg does not resample).

Warnings go to :func:`warnings.warn` and to ``meta["warnings"]``. Differences from dcm2niix:
no vendor-specific fixes (Philips private positions, Siemens mosaics), no gantry-tilt
correction, no 4D (temporal / diffusion) series; enhanced multi-frame files (one file, many
frames) are read from their per-frame functional groups, the same checks applied.

Writing a DICOM Segmentation follows highdicom's ``Segmentation`` (BINARY, one segment per label
value, frames referencing the source instances they were drawn on), which 3D Slicer
(QuantitativeReporting / dcmqi) and OHIF open.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from anyseg.errors import InputError

__all__ = ["DicomSeries", "read_series", "is_dicom_file", "series_datasets", "save_dicom_seg", "MAX_FILES"]

#: The most files a DICOM folder scan opens (headers only).
MAX_FILES = 20000
_HINT = "pip install 'anyseg[medical]'"


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError as e:
        raise InputError(f"reading DICOM needs pydicom ({_HINT}): {e}") from None
    return pydicom


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` starts like a DICOM Part 10 file (128-byte preamble, then ``DICM``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


@dataclass
class DicomSeries:
    """One sorted, checked series: its geometry and a reader of slice ``k`` (rescaled)."""

    files: list[Path]
    shape: tuple[int, int, int]
    dtype: Any
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    intensity: str
    window: tuple[float, float] | None
    meta: dict[str, Any]
    rescale: np.ndarray  # (K, 2): slope, intercept per slice
    frames: list[int] | None = None  # multi-frame: the frame index of each slice in files[0]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def read_slice(self, k: int) -> np.ndarray:
        """Slice ``k`` (sorted order) as ``(J, I)`` in :attr:`dtype`, slope / intercept applied."""
        pydicom = _pydicom()
        try:
            with self._lock:
                if self.frames is None:
                    raw = pydicom.dcmread(self.files[k]).pixel_array
                else:
                    from pydicom.pixels import pixel_array

                    raw = pixel_array(str(self.files[0]), index=self.frames[k])
        except Exception as e:  # noqa: BLE001 - a decoder or file error: one line
            raise InputError(f"{self.files[0 if self.frames else k].name}: cannot decode the DICOM pixel data "
                             f"({type(e).__name__}: {_first_line(e)}); compressed transfer syntaxes need "
                             "pylibjpeg / gdcm") from None
        if raw.shape != self.shape[1:]:
            raise InputError(f"{self.files[k].name}: pixel data of shape {raw.shape}, not {self.shape[1:]}")
        slope, inter = self.rescale[k]
        if np.dtype(self.dtype).kind == "f":
            return (raw.astype(np.float32) * np.float32(slope) + np.float32(inter)).astype(self.dtype)
        return (raw.astype(np.int32) * int(slope) + int(inter)).astype(self.dtype)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


def _float(ds: Any, name: str, default: float | None = None, index: int = 0) -> float | None:
    value = ds.get(name)
    if value is None or value == "":
        return default
    try:
        if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
            value = value[index]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return default


def _scan(folder: Path, max_files: int) -> tuple[dict[str, list[tuple[Path, Any]]], int]:
    """``{series UID: [(file, header)]}`` of the image files under ``folder``, and how many were skipped."""
    pydicom = _pydicom()
    groups: dict[str, list[tuple[Path, Any]]] = {}
    skipped = 0
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if len(files) > max_files:
        raise InputError(f"{folder}: {len(files)} files, more than the {max_files} a DICOM folder may hold here")
    for path in files:
        if not is_dicom_file(path):
            skipped += 1
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - a broken header: skipped, counted
            skipped += 1
            continue
        if _unusable(ds):
            skipped += 1
            continue
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    return groups, skipped


def _unusable(ds: Any) -> str | None:
    """Why a header is no image slice of a series (``None`` when it is one)."""
    if not str(ds.get("SeriesInstanceUID", "")):
        return "it has no SeriesInstanceUID"
    if ds.get("Modality") in ("SEG", "RTSTRUCT", "SR", "PR", "RTPLAN", "KO"):
        return f"it is a {ds.get('Modality')} object, not an image"
    if "Rows" not in ds or "Columns" not in ds:
        return "it holds no image (no Rows / Columns)"
    return None


def _series_list(groups: dict[str, list[tuple[Path, Any]]]) -> str:
    parts = []
    for uid, items in groups.items():
        ds = items[0][1]
        desc = str(ds.get("SeriesDescription", "") or ds.get("Modality", "") or "no description")
        parts.append(f"{uid} ({desc}, {len(items)} files)")
    return "; ".join(parts)


def _pick(path: Path, series: str | None, max_files: int) -> tuple[str, list[tuple[Path, Any]], int]:
    """The chosen series' files and headers (a folder, or one file of it)."""
    if path.is_file():
        if not is_dicom_file(path):
            raise InputError(f"{path.name}: not a DICOM file (no DICM preamble)")
        try:
            own = _pydicom().dcmread(path, stop_before_pixels=True)
        except Exception as e:  # noqa: BLE001 - a broken header
            raise InputError(f"{path.name}: a corrupt DICOM header ({type(e).__name__}: {_first_line(e)})") from None
        why = _unusable(own)
        if why:
            raise InputError(f"{path.name}: not a DICOM image slice: {why}")
        series = series or str(own.get("SeriesInstanceUID", ""))
        if int(own.get("NumberOfFrames", 1) or 1) > 1:
            return series, [(path, own)], 0
        folder = path.parent
    else:
        folder = path
    groups, skipped = _scan(folder, max_files)
    if not groups:
        raise InputError(f"{folder}: no DICOM image files found ({skipped} other files)")
    if series is None:
        if len(groups) > 1:
            raise InputError(f"{folder} holds {len(groups)} DICOM series; choose one with --series UID: "
                             f"{_series_list(groups)}")
        series = next(iter(groups))
    if series not in groups:
        raise InputError(f"no DICOM series {series} in {folder}; it holds: {_series_list(groups)}")
    return series, groups[series], skipped


def _same(values: list[Any], what: str, name: str, atol: float = 1e-4) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    bad = np.abs(arr - arr[0]).max(axis=1) > atol
    if bad.any():
        other = arr[int(np.argmax(bad))]
        raise InputError(f"{name}: mixed {what} in one series ({arr[0].round(4).tolist()} and "
                         f"{other.round(4).tolist()}); split the series or choose one with --series")
    return arr[0]


def stack_geometry(positions: np.ndarray, orientation: np.ndarray, pixel_spacing: np.ndarray, name: str,
                   one_slice_step: float | None = None) -> tuple[np.ndarray, tuple, tuple, np.ndarray, list[str]]:
    """Sort slices along the normal and check the stack: ``(order, spacing, origin, direction, warnings)``.

    ``positions`` ``(K, 3)`` ImagePositionPatient (LPS mm), ``orientation`` the shared six cosines,
    ``pixel_spacing`` the shared ``(row spacing, column spacing)``. See the module docstring.
    """
    notes: list[str] = []
    r, c = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    if min(np.linalg.norm(r), np.linalg.norm(c)) < 1e-6:
        raise InputError(f"{name}: ImageOrientationPatient {orientation.tolist()} has a zero vector")
    r, c = r / np.linalg.norm(r), c / np.linalg.norm(c)
    if abs(float(r @ c)) > 1e-3:
        raise InputError(f"{name}: ImageOrientationPatient's row and column cosines are not perpendicular")
    normal = np.cross(r, c)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    pos, d = positions[order], along[order]
    si, sj = float(pixel_spacing[1]), float(pixel_spacing[0])
    if len(d) == 1:
        sk = one_slice_step or 1.0
        notes.append(f"{name}: one slice; slice spacing {sk:g} mm from "
                     f"{'SpacingBetweenSlices / SliceThickness' if one_slice_step else 'nothing (1 mm assumed)'}")
    else:
        sk = _check_steps(np.diff(d), name, notes)
        drift = pos - np.outer(d - d[0], normal) - pos[0]
        worst = float(np.abs(drift).max()) if len(pos) else 0.0
        pixel = min(si, sj)
        if worst > 0.5 * pixel:
            tilt = np.degrees(np.arctan2(worst, float(d[-1] - d[0])))
            raise InputError(f"{name}: slice positions drift {worst:.2f} mm sideways, not along the slice normal "
                             f"(gantry tilt about {tilt:.1f} deg): the grid is sheared; resample it first "
                             "(e.g. dcm2niix or 3D Slicer)")
        if worst > 0.05 * pixel:
            notes.append(f"{name}: slice positions drift {worst:.3f} mm sideways (under half a pixel); ignored")
    direction = np.column_stack([r, c, normal])
    return order, (si, sj, float(sk)), tuple(float(v) for v in pos[0]), direction, notes


def _check_steps(steps: np.ndarray, name: str, notes: list[str]) -> float:
    """The slice spacing from the sorted steps along the normal, after the gap / variation checks."""
    if float(steps.min()) < 1e-3:
        n = int(np.sum(steps < 1e-3)) + 1
        raise InputError(f"{name}: {n} slices share a position (several echoes, phases or acquisitions in one "
                         "series?); anyseg reads one 3D stack per series")
    med = float(np.median(steps))
    gaps = np.flatnonzero(steps > 1.5 * med)
    if gaps.size:
        g = int(gaps[0])
        missing = int(round(float(steps[g]) / med)) - 1
        raise InputError(f"{name}: a {float(steps[g]):.3g} mm gap after slice {g} where the median step is "
                         f"{med:.3g} mm ({max(missing, 1)} slice(s) missing?); the geometry would be wrong")
    sk = float(steps.sum()) / len(steps)
    dev = float(np.abs(steps - med).max())
    if dev > max(0.1, 0.05 * med):
        raise InputError(f"{name}: slice spacing varies from {float(steps.min()):.4g} to {float(steps.max()):.4g} mm;"
                         " a regular grid cannot hold it (resample first)")
    if dev > max(0.01, 1e-3 * med):
        notes.append(f"{name}: slice spacing varies from {float(steps.min()):.4g} to {float(steps.max()):.4g} mm; "
                     f"using the mean {sk:.4g} mm")
    return sk


def _value_dtype(headers: Sequence[Any], rescale: np.ndarray) -> Any:
    """int16 / int32 when the rescale is integral and the range fits, float32 otherwise."""
    slopes, inters = rescale[:, 0], rescale[:, 1]
    if not (np.all(slopes == np.round(slopes)) and np.all(inters == np.round(inters))):
        return np.float32
    ds = headers[0]
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    ends = np.concatenate([slopes * lo + inters, slopes * hi + inters])
    if ends.min() >= -32768 and ends.max() <= 32767:
        return np.int16
    return np.int32 if ends.min() >= -2 ** 31 and ends.max() < 2 ** 31 else np.float32


def _window(ds: Any) -> tuple[float, float] | None:
    center, width = _float(ds, "WindowCenter"), _float(ds, "WindowWidth")
    return (center, width) if center is not None and width is not None and width > 0 else None


def _rescale(ds: Any) -> tuple[float, float]:
    return _float(ds, "RescaleSlope", 1.0) or 1.0, _float(ds, "RescaleIntercept", 0.0) or 0.0


def read_series(path: str | os.PathLike, series: str | None = None, max_voxels: int | None = None,
                max_files: int = MAX_FILES) -> DicomSeries:
    """Find, sort and check one DICOM series (a folder, or one file of it); see the module docstring."""
    try:
        uid, items, skipped = _pick(Path(path), series, max_files)
        if len(items) == 1 and int(items[0][1].get("NumberOfFrames", 1) or 1) > 1:
            return _multiframe(items[0][0], items[0][1], max_voxels)
        return _single_frames(uid, items, skipped, max_voxels)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{Path(path).name}: a malformed DICOM header ({type(e).__name__}: {_first_line(e)})") from None


def _single_frames(uid: str, items: list[tuple[Path, Any]], skipped: int, max_voxels: int | None) -> DicomSeries:
    name = f"DICOM series {uid}"
    headers = [ds for _, ds in items]
    for key in ("ImagePositionPatient", "ImageOrientationPatient"):
        if any(key not in ds for ds in headers):
            raise InputError(f"{name}: a slice has no {key}, so the slices cannot be placed in 3D "
                             "(a secondary capture or a 2D image?)")
    size = _same([(int(ds.Rows), int(ds.Columns)) for ds in headers], "image sizes (Rows, Columns)", name, 0)
    orientation = _same([[float(v) for v in ds.ImageOrientationPatient] for ds in headers], "orientations", name)
    spacing2 = _same([[float(v) for v in (ds.get("PixelSpacing") or [1.0, 1.0])] for ds in headers],
                     "pixel spacings", name)
    if int(headers[0].get("SamplesPerPixel", 1) or 1) != 1:
        raise InputError(f"{name}: colour images (SamplesPerPixel {headers[0].SamplesPerPixel}); a volume is one channel")
    positions = np.asarray([[float(v) for v in ds.ImagePositionPatient] for ds in headers])
    step1 = _float(headers[0], "SpacingBetweenSlices") or _float(headers[0], "SliceThickness")
    order, spacing, origin, direction, notes = stack_geometry(positions, orientation, spacing2, name, step1)
    if "PixelSpacing" not in headers[0]:
        notes.append(f"{name}: no PixelSpacing; 1 mm pixels assumed")
    files = [items[i][0] for i in order]
    headers = [headers[i] for i in order]
    rescale = np.asarray([_rescale(ds) for ds in headers], dtype=np.float64)
    meta = _meta(headers[0], uid, notes, skipped, [str(f) for f in files])
    return _finish(files, headers, (len(files), int(size[0]), int(size[1])), spacing, origin, direction, rescale,
                   meta, max_voxels, None)


def _meta(ds: Any, uid: str, notes: list[str], skipped: int, files: list[str]) -> dict[str, Any]:
    return {"format": "dicom", "series_uid": uid, "series_description": str(ds.get("SeriesDescription", "")),
            "modality": str(ds.get("Modality", "")), "study_uid": str(ds.get("StudyInstanceUID", "")),
            "photometric": str(ds.get("PhotometricInterpretation", "")), "dicom_files": files,
            "skipped_files": skipped, "warnings": notes}


def _finish(files: list[Path], headers: Sequence[Any], shape: tuple[int, int, int], spacing: tuple, origin: tuple,
            direction: np.ndarray, rescale: np.ndarray, meta: dict[str, Any], max_voxels: int | None,
            frames: list[int] | None) -> DicomSeries:
    """Voxel limit, value type, window, warnings; decodes slice 0 once so that a bad codec fails here."""
    name = f"DICOM series {meta['series_uid']}"
    voxels = int(np.prod(shape))
    if max_voxels is not None and voxels > max_voxels:
        raise InputError(f"{name}: {shape[2]}x{shape[1]}x{shape[0]} = {voxels} voxels, over the limit of "
                         f"{max_voxels} (ANYSEG_MAX_VOXELS)")
    modality = meta["modality"]
    rescaled = bool(np.any(rescale != [1.0, 0.0]))
    intensity = "HU" if modality == "CT" and (rescaled or "RescaleIntercept" in headers[0]) else "raw"
    out = DicomSeries(files, shape, _value_dtype(headers, rescale), spacing, origin, direction, intensity,
                      _window(headers[0]), meta, rescale, frames)
    out.read_slice(0)
    for note in meta["warnings"]:
        warnings.warn(note, UserWarning, stacklevel=3)
    return out


def _multiframe(path: Path, ds: Any, max_voxels: int | None) -> DicomSeries:
    """An enhanced multi-frame image: per-frame positions from the functional groups, the same checks."""
    uid = str(ds.get("SeriesInstanceUID", ""))
    name = f"{path.name} (multi-frame)"
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    per = ds.get("PerFrameFunctionalGroupsSequence")
    n = int(ds.NumberOfFrames)
    if per is None or len(per) != n:
        raise InputError(f"{name}: no per-frame functional groups, so its {n} frames cannot be placed in 3D")

    def item(frame: Any, seq: str) -> Any:
        for group in (frame, shared):
            if group is not None and seq in group and len(group.get(seq)):
                return group.get(seq)[0]
        return None

    try:
        positions = np.asarray([[float(v) for v in item(f, "PlanePositionSequence").ImagePositionPatient]
                                for f in per])
        orient = [[float(v) for v in item(f, "PlaneOrientationSequence").ImageOrientationPatient] for f in per]
        measures = [item(f, "PixelMeasuresSequence") for f in per]
        spacing2 = [[float(v) for v in (m.PixelSpacing if m is not None else [1.0, 1.0])] for m in measures]
    except (AttributeError, TypeError, ValueError):
        raise InputError(f"{name}: frames without a plane position / orientation; it cannot be placed in 3D") from None
    orientation = _same(orient, "orientations", name)
    spacing2 = _same(spacing2, "pixel spacings", name)
    step1 = _float(measures[0], "SpacingBetweenSlices") or _float(measures[0], "SliceThickness")
    order, spacing, origin, direction, notes = stack_geometry(positions, orientation, spacing2, name, step1)

    def rescale_of(f: Any) -> tuple[float, float]:
        t = item(f, "PixelValueTransformationSequence")
        return _rescale(t) if t is not None else _rescale(ds)

    rescale = np.asarray([rescale_of(per[i]) for i in order], dtype=np.float64)
    meta = _meta(ds, uid, notes, 0, [str(path)])
    meta["frames"] = [int(i) for i in order]
    out = _finish([path], [ds], (n, int(ds.Rows), int(ds.Columns)), spacing, origin, direction, rescale, meta,
                  max_voxels, [int(i) for i in order])
    voi = item(per[int(order[0])], "FrameVOILUTSequence")
    out.window = (_window(voi) if voi is not None else None) or out.window
    return out


def series_datasets(files: Sequence[str | os.PathLike]) -> list[Any]:
    """The headers (no pixel data) of ``files``, in that order: the source images for :func:`save_dicom_seg`."""
    pydicom = _pydicom()
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def _segments(labels: np.ndarray, names: Mapping[int, str] | Sequence[str] | None) -> tuple[np.ndarray, list]:
    """Label values -> consecutive segment numbers 1..N, and each segment's name."""
    values = [int(v) for v in np.unique(labels) if v != 0]
    if not values:
        raise InputError("the label volume is empty: a DICOM Segmentation needs at least one segment")
    if isinstance(names, Mapping):
        label_names = [str(names.get(v, f"object {v}")) for v in values]
    elif names is not None:
        names = list(names)
        label_names = [str(names[v - 1]) if 0 < v <= len(names) else f"object {v}" for v in values]
    else:
        label_names = [f"object {v}" for v in values]
    lut = np.zeros(int(labels.max()) + 1, dtype=np.uint8 if len(values) < 256 else np.uint16)
    lut[values] = np.arange(1, len(values) + 1)
    return lut[labels], list(zip(values, label_names))


def save_dicom_seg(labels: np.ndarray, source_datasets: Sequence[Any], path: str | os.PathLike,
                   segment_names: Mapping[int, str] | Sequence[str] | None = None,
                   description: str = "anyseg segmentation") -> Path:
    """Write ``labels`` ``(K, J, I)`` (0 = background) as a DICOM Segmentation of ``source_datasets``.

    ``source_datasets`` are the source series' datasets in the label volume's slice order (as
    :func:`read_series` sorted them; :func:`series_datasets` reads them); each label value becomes
    one segment (``segment_names``: ``{value: name}`` or names of values 1, 2, ...). The file is
    written atomically. Returns ``path``.
    """
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError as e:
        raise InputError(f"--format dicom-seg needs highdicom ({_HINT}): {e}") from None
    from anyseg.io.atomic import atomic_open
    from anyseg.version import __version__

    labels = np.asarray(labels)
    sources = list(source_datasets)
    if labels.ndim != 3 or labels.dtype.kind not in "biu":
        raise InputError(f"labels must be a (K, J, I) integer array; got {labels.dtype} {labels.shape}")
    frames = int(sources[0].get("NumberOfFrames", 1) or 1) if len(sources) == 1 else len(sources)
    got = (frames, *(int(getattr(sources[0], a, 0)) for a in ("Rows", "Columns"))) if sources else (0,)
    if labels.shape != got:
        raise InputError(f"labels of shape {labels.shape} do not match the source series {got}")
    numbered, names = _segments(labels.astype(np.int64), segment_names)
    algorithm = hd.AlgorithmIdentificationSequence(name="anyseg", family=codes.cid7162.ArtificialIntelligence,
                                                   version=__version__)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=i + 1, segment_label=label[:64], segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=algorithm, tracking_id=f"label {value}", tracking_uid=hd.UID())
        for i, (value, label) in enumerate(names)]
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=numbered, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9001,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="anyseg", manufacturer_model_name="anyseg",
            software_versions=__version__, device_serial_number="0", content_description=description[:64],
            content_label="ANYSEG")
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise InputError(f"cannot build a DICOM Segmentation of this series: {_first_line(e)}") from None
    with atomic_open(path, "wb") as f:
        seg.save_as(f)
    return Path(path)

"""``anyseg volume`` as a task: a volume prompted on slices, propagated in 3D, written in its own geometry.

:func:`run_volume_command` reads the volume (:func:`anyseg.volume.io.load_volume`), checks every
prompt against it (slice indices, coordinates, mask files, 3D boxes) and the options before the
model loads and before ``--out`` is touched, then runs a :class:`~anyseg.volume.session.VolumeSession`
(the slices along ``--axis`` as video frames, propagation both ways from the prompted slices) and
writes, in ``DIR``:

* ``labels.nii.gz``: the label volume (object id per voxel) in the input's geometry (shape,
  spacing, origin, direction) by :func:`anyseg.volume.io.save_labels`; with ``--format dicom-seg``
  ``labels.dcm``, a DICOM Segmentation that references the source series
  (highdicom, through the same function; the input must then be a DICOM series);
* ``volume.json``: anyseg_version, task ``volume``, the model, axis, window (and the ``(center,
  width)`` it resolved to), prompts, the
  geometry, and per object its voxels, volume in mL (voxels x the voxel's volume), bounding box
  in voxels ``(i0, j0, k0, i1, j1, k1)`` (inclusive) and in mm (LPS: the box of the voxel
  centres' positions), and its centroid in mm (LPS);
* unless ``--no-overlay``: ``overlays/NNNN.png``, the slices (along ``--axis``) where some object
  has a mask, coloured by object (DAVIS palette) with outlines, and ``sweep.mp4``, every slice in
  order (:func:`anyseg.io.video.open_video_writer`: H.264, else mp4v with a notice).

Writes are staged (:func:`anyseg.io.atomic.staged_dir`): the overlays first, then the sweep,
then the label file with ``volume.json`` last, so the record always describes the files beside
it; a failed run leaves the previous record as it was. Overlay PNGs of an earlier run that this
run did not write (and, with ``--no-overlay``, the earlier overlays and sweep) are removed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anyseg.errors import InputError, PromptError

__all__ = ["FORMATS", "LABEL_FILES", "RECORD", "parse_box3d", "volume_prompts", "check_volume_prompts",
           "object_stats", "geometry_record", "run_volume_command", "volume_from_args"]

FORMATS = ("nifti", "dicom-seg")
#: the label file of each ``--format``
LABEL_FILES = {"nifti": "labels.nii.gz", "dicom-seg": "labels.dcm"}
RECORD = "volume.json"
OVERLAYS = "overlays"
SWEEP = "sweep.mp4"
_OVERLAY_NAME = re.compile(r"^\d{4,}\.png$")
BOX3D_FORM = "X0,Y0,Z0,X1,Y1,Z1 (pixels on the slices, slice indices), e.g. 20,30,5,60,70,18"


def parse_box3d(text: str) -> list[float]:
    """``X0,Y0,Z0,X1,Y1,Z1`` -> six floats; a one-line :class:`PromptError` otherwise (bounds are
    checked against the volume by :func:`anyseg.volume.session.check_box3d`)."""
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) != 6 or not all(np.isfinite(values)):
        raise PromptError(f"malformed --box3d {text!r}: expected {BOX3D_FORM}")
    return values


def volume_prompts(prompts: Sequence[tuple[int, str]], box3ds: Sequence[tuple[int, str]] = ()) -> list[dict[str, Any]]:
    """``(obj_id, "SLICE:KIND=VALUE")`` and ``(obj_id, "X0,...,Z1")`` pairs -> prompt dicts: ``slice``,
    ``obj_id`` and ``points`` / ``labels``, ``box``, ``mask_path`` or ``box3d`` (clicks of one object
    on one slice merged into one prompt, as ``anyseg track`` does)."""
    from anyseg.prompts import parse_frame_prompt
    from anyseg.tasks.track import merge_prompts

    merged = merge_prompts(parse_frame_prompt(t, obj) for obj, t in prompts)
    out = [{"slice": p.pop("frame"), **p} for p in merged]
    out += [{"obj_id": obj, "box3d": parse_box3d(t)} for obj, t in box3ds]
    if not out:
        raise PromptError("no prompt: give --prompt SLICE:box=X0,Y0,X1,Y1 (or point=, mask=) or --box3d")
    return out


def check_volume_prompts(prompts: Sequence[dict[str, Any]], shape: tuple[int, int, int], axis: int) -> None:
    """A one-line error for any prompt the run would fail on, before the model loads: object ids
    1..254, the slice inside the volume, points and boxes on the slice, mask files readable, of
    the slice's size and not empty, 3D boxes inside and not inverted, one 3D box per object, and
    an object's first prompt able to start it (a box, a mask, a 3D box or a positive click)."""
    from anyseg.io.images import load_mask
    from anyseg.volume.session import check_box3d, check_slice_prompt

    size = tuple(n for a, n in enumerate(shape) if a != axis)
    count = shape[axis]
    started: set[int] = set()
    boxed: set[int] = set()
    for p in prompts:
        obj = p["obj_id"]
        if isinstance(obj, bool) or not isinstance(obj, (int, np.integer)) or not 1 <= obj <= 254:
            raise PromptError(f"object ids must be integers in 1..254; got {obj!r}")
        if "box3d" in p:
            if obj in boxed:
                raise PromptError(f"object {obj} has two --box3d; give one per object")
            check_box3d(p["box3d"], shape, axis)
            boxed.add(obj)
            started.add(obj)
            continue
        s = p["slice"]
        if not 0 <= s < count:
            raise PromptError(f"--prompt for object {obj}: slice {s} is outside the volume ({count} slices along "
                              f"this axis, 0..{count - 1})")
        mask = load_mask(p["mask_path"], size=size) if "mask_path" in p else None
        if mask is not None and not mask.any():
            raise PromptError(f"mask {p['mask_path']} is empty")
        try:
            prompt = check_slice_prompt(s, size, p.get("points"), p.get("labels"), p.get("box"), mask)
        except InputError as e:
            raise PromptError(f"--prompt for object {obj}: {e}") from None
        if obj not in started and prompt.box is None and mask is None and not (prompt.labels == 1).any():
            raise PromptError(f"object {obj}'s first prompt (slice {s}) has only negative clicks: "
                              "expected a positive click, a box, a mask or a --box3d")
        started.add(int(obj))


def geometry_record(volume: Any) -> dict[str, Any]:
    """The volume's geometry as JSON: shape ``(K, J, I)``, spacing ``(si, sj, sk)`` mm, origin (LPS mm),
    direction (3 x 3, columns = index axes i, j, k, LPS)."""
    return {"shape": [int(v) for v in volume.shape], "spacing": [float(v) for v in volume.spacing],
            "origin": [float(v) for v in volume.origin],
            "direction": [[float(v) for v in row] for row in np.asarray(volume.direction)],
            "voxel_volume_ml": volume.voxel_volume_ml(), "coordinates": "LPS"}


def object_stats(labels: np.ndarray, volume: Any, ids: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Per object id: ``voxels``, ``volume_ml``, ``bbox_voxels`` ``[i0, j0, k0, i1, j1, k1]`` (inclusive),
    ``bbox_mm`` ``[x0, y0, z0, x1, y1, z1]`` (LPS, the box of the voxel centres' positions) and
    ``centroid_mm`` (LPS); an object with no voxel has zeros and ``null`` boxes."""
    affine = volume.affine_lps()
    out: dict[str, dict[str, Any]] = {}
    for obj in ids:
        m = labels == obj
        n = int(m.sum())
        rec: dict[str, Any] = {"voxels": n, "volume_ml": n * volume.voxel_volume_ml(), "bbox_voxels": None,
                               "bbox_mm": None, "centroid_mm": None}
        if n:
            per_k, per_j, per_i = m.sum((1, 2)), m.sum((0, 2)), m.sum((0, 1))
            lo = [int(np.flatnonzero(c)[0]) for c in (per_i, per_j, per_k)]
            hi = [int(np.flatnonzero(c)[-1]) for c in (per_i, per_j, per_k)]
            corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
            mm = (affine @ corners.T).T[:, :3]
            centre = [float((c * np.arange(len(c))).sum() / n) for c in (per_i, per_j, per_k)]
            rec.update(bbox_voxels=[*lo, *hi], bbox_mm=[*mm.min(0).tolist(), *mm.max(0).tolist()],
                       centroid_mm=(affine @ np.array([*centre, 1.0]))[:3].tolist())
        out[str(int(obj))] = rec
    return out


def _blend(frame: np.ndarray, ids: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """The slice with its objects coloured (DAVIS palette, 55 %) and white outlines."""
    out = frame.astype(np.float32)
    fg = ids > 0
    out[fg] = out[fg] * 0.45 + palette[ids[fg].astype(np.intp) % len(palette)] * 0.55
    edge = np.zeros(ids.shape, bool)
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge[1:, :] |= ids[1:, :] != ids[:-1, :]
    out[edge] = 255
    return np.clip(out, 0, 255).astype(np.uint8)


def write_overlays(session: Any, out: Path, progress: bool = True) -> dict[str, Any]:
    """``overlays/NNNN.png`` (slices with masks) and ``sweep.mp4`` (every slice); returns their record."""
    from anyseg.io.atomic import staged_dir, write_bytes
    from anyseg.io.export import davis_palette, png_bytes
    from anyseg.io.video import fallback_notice, open_video_writer
    from anyseg.tasks.track_output import frame_bar

    palette = davis_palette().astype(np.float32)
    frames = session.frames
    written: list[int] = []
    with staged_dir(out / OVERLAYS) as stage, open_video_writer(out / SWEEP, frames.size, 10.0) as video:
        for s in frame_bar(range(len(frames)), "overlays", progress):
            ids = session.id_map(s)
            picture = _blend(frames[s], ids, palette)
            if ids.any():
                write_bytes(stage / f"{s:04d}.png", png_bytes(picture))
                written.append(s)
            video.write(picture)
        info = video.close().to_dict()
    names = {f"{s:04d}.png" for s in written}
    for old in (out / OVERLAYS).iterdir():
        if _OVERLAY_NAME.match(old.name) and old.name not in names:
            old.unlink(missing_ok=True)
    if info.get("codec") != "h264":
        print(f"anyseg: notice: {fallback_notice(SWEEP)}", file=sys.stderr)
    info["path"] = SWEEP
    return {"overlays": f"{OVERLAYS}/NNNN.png", "overlay_slices": written, "sweep": info}


def _drop_overlays(out: Path) -> None:
    """``--no-overlay``: the overlays and sweep of an earlier run go (the record would not name them)."""
    (out / SWEEP).unlink(missing_ok=True)
    if (out / OVERLAYS).is_dir():
        for old in (out / OVERLAYS).iterdir():
            if _OVERLAY_NAME.match(old.name):
                old.unlink(missing_ok=True)


def _load(path: str | Path, series: str | None, index: int | None, fmt: str) -> Any:
    """The volume, refused (one line) when it is 2D (a single slice, or one row or column), or when
    ``--format dicom-seg`` is asked of a volume that is not a DICOM series."""
    from anyseg.volume.io import load_volume

    volume = load_volume(path, series=series, index=index)
    if min(volume.shape) < 2:
        raise InputError(f"{path} is 2D (shape {list(volume.shape)} as K, J, I): anyseg volume needs a 3D volume "
                         "(use anyseg segment for a 2D image)")
    if fmt == "dicom-seg" and volume.meta.get("format") != "dicom":
        raise InputError(f"--format dicom-seg needs a DICOM source series; {Path(path).name} is "
                         f"{volume.meta.get('format') or 'not DICOM'} (use --format nifti)")
    return volume


def _check_options(fmt: str, device: str | None, out: Path) -> str | None:
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if device is None:
        return None
    from anyseg.models.sam import check_device

    return check_device(device)


def _propagate(session: Any, prompts: Sequence[dict[str, Any]], progress: bool) -> None:
    """Add ``prompts`` (mask files read at the slice's size) and run every pass, with a progress bar."""
    from anyseg.io.images import load_mask
    from anyseg.tasks.track_output import frame_bar

    for p in prompts:
        if "box3d" in p:
            session.add_prompt(obj_id=p["obj_id"], box3d=p["box3d"])
            continue
        mask = load_mask(p["mask_path"], size=session.size) if "mask_path" in p else None
        session.add_prompt(p["slice"], p["obj_id"], points=p.get("points"), labels=p.get("labels"), box=p.get("box"),
                           mask=mask)
    passes = session.plan()
    bar = frame_bar(None, "propagating", progress, total=sum(abs(e - s) + 1 for s, e, _ in passes))
    for _ in session.propagate():
        bar.update(1)
    bar.close()


def _save_labels(labels: Any, volume: Any, path: Path, fmt: str) -> None:
    """The label file by :func:`anyseg.volume.io.save_labels` (NIfTI, or a DICOM Segmentation of the
    source series with one segment per object, named ``object N``)."""
    from anyseg.volume.io import save_labels

    ids = [int(v) for v in labels.meta.get("object_ids", [])]
    save_labels(labels.array, volume, path, format=fmt, segment_names={i: f"object {i}" for i in ids})


def run_volume_command(path: str | Path, prompts: Sequence[tuple[int, str]], out: str | Path, *,
                       box3ds: Sequence[tuple[int, str]] = (), axis: str = "axial", model: str = "auto",
                       window: str = "auto", series: str | None = None, index: int | None = None,
                       fmt: str = "nifti", overlay: bool = True, device: str | None = None,
                       weights: str | None = None, show_progress: bool = True) -> dict[str, Any]:
    """``anyseg volume``: check everything, segment the volume at ``path``, write ``out`` (module docstring).

    ``prompts``: ``(obj_id, "SLICE:KIND=VALUE")`` pairs and ``box3ds`` ``(obj_id, "X0,Y0,Z0,X1,Y1,Z1")``
    pairs, as ``--obj`` / ``--prompt`` / ``--box3d`` give them. Returns the record of ``volume.json``.
    """
    import time

    from anyseg.io.atomic import staged_dir, write_json
    from anyseg.version import __version__
    from anyseg.volume.base import AXES, axis_index
    from anyseg.volume.session import VolumeFrames, VolumeSession
    from anyseg.volume.window import resolve_window

    t0 = time.perf_counter()
    out = Path(out)
    a = axis_index(axis)
    merged = volume_prompts(prompts, box3ds)
    device = _check_options(fmt, device, out)
    volume = _load(path, series, index, fmt)
    check_volume_prompts(merged, volume.shape, a)
    for p in merged:
        if "mask_path" in p:
            p["mask_path"] = str(Path(p["mask_path"]).resolve())
    VolumeFrames(volume, a, window)[0]  # an unknown window fails here, before the model loads
    with VolumeSession(volume, model=model, axis=a, window=window, device=device, weights=weights) as session:
        _propagate(session, merged, show_progress)
        labels = session.labels()
        tracker = session.tracker
        outputs: dict[str, Any] = {"labels": LABEL_FILES[fmt], "format": fmt}
        if overlay:
            outputs.update(write_overlays(session, out, show_progress))
        else:
            _drop_overlays(out)
        ids = session.object_ids
        record = {"anyseg_version": __version__, "task": "volume", "volume": str(Path(path).resolve()),
                  "series": series, "index": index, "model": model, "tracker": getattr(tracker, "name", str(model)),
                  "model_id": getattr(tracker, "model_id", None), "axis": AXES[a], "window": window,
                  "window_center_width": list(resolve_window(window, volume)),
                  "prompts": merged, "geometry": geometry_record(volume), "object_ids": ids,
                  "objects": object_stats(labels.array, volume, ids), "outputs": outputs}
    with staged_dir(out) as stage:
        _save_labels(labels, volume, stage / LABEL_FILES[fmt], fmt)
        record["seconds"] = round(time.perf_counter() - t0, 3)
        write_json(stage / RECORD, record)
    return record


def volume_from_args(args: argparse.Namespace) -> int:
    """``anyseg volume`` from its parsed arguments: :func:`run_volume_command`, then a summary (the
    record as JSON on stdout with ``--json``, else one line on stderr); returns the exit code 0."""
    record = run_volume_command(
        args.volume, getattr(args, "prompts", None) or [], args.out, box3ds=getattr(args, "box3ds", None) or [],
        axis=args.axis, model=args.model, window=args.window, series=args.series, index=args.index,
        fmt=args.format, overlay=not args.no_overlay, device=args.device, weights=getattr(args, "weights", None))
    if args.json:
        print(json.dumps(record))
    else:
        sizes = ", ".join(f"{k}: {v['volume_ml']:.2f} mL" for k, v in record["objects"].items())
        print(f"segmented {len(record['object_ids'])} object(s) ({sizes}) along {record['axis']} with "
              f"{record['tracker']} -> {Path(args.out) / RECORD}", file=sys.stderr)
    return 0

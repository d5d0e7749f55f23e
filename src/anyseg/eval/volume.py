"""``anyseg eval volume``: label volumes (or 2D medical masks) scored per case and per object with
Dice, IoU, NSD, HD95 and ASSD in mm (:mod:`anyseg.eval.volume_metrics`, checked against MONAI).

Three ways in, one record format (``{"name", "objects": {id: scores}, ...}`` per case, resumable
through :class:`~anyseg.eval.store.ResultStore`) and one summary:

* ``--pred DIR --gt DIR``: label volumes from any tool (NIfTI, NRRD, MetaImage, read by
  :func:`anyseg.volume.io.load_volume`), paired by file stem (``case.nii.gz`` <-> ``case.nrrd``
  is a pair); each pair must have the same geometry (shape, spacing, origin, direction), else a
  one-line error. The objects are the ids present in the ground truth, or ``--labels 1,2``.
* ``--model M --data DIR --prompt-protocol first-slice|middle-slice|box3d``: ``DIR/images/NAME``
  and ``DIR/labels/NAME`` volumes; each ground-truth object gives one prompt, the tight box of
  the object on one slice along ``--axis``: ``first-slice`` its first slice holding it (the
  propagation then runs one way), ``middle-slice`` the middle one of the slices holding it
  (MedSAM2's key-slice protocol: both ways), ``box3d`` its 3D bounding box, MedSAM2-style
  (``VolumeSession.add_prompt(box3d=...)``: the box's in-plane extent on its middle slice, its
  extent along the axis bounding the propagation). All objects of a case go into one
  :class:`~anyseg.volume.session.VolumeSession` on one tracker (loaded once per run), propagated
  once, as DAVIS multi-object evaluation runs a video.
* ``--model M --data DIR --prompt-protocol box``: the 2D medical case (Kvasir-SEG:
  ``images/ID.jpg`` + ``masks/ID.jpg``, read by :func:`anyseg.eval.datasets.read_mask_folder`'s
  rule: JPEG masks are foreground where > 127): the promptable model gets the ground truth's
  tight box, as ``anyseg eval box`` does, and is scored with these metrics at pixel spacing 1
  (the tolerance is then in pixels).

The default NSD tolerance is 2 mm (2 pixels in 2D), MedSAM's evaluation setting
(``bowang-lab/MedSAM``, ``evaluation/compute_metrics.py``: ``tolerance=2.0``, spacing 1 for 2D
images). MedSAM's script weights boundary elements by area (DeepMind's ``surface-distance``);
this counts boundary voxels, as MONAI's ``compute_surface_dice(use_subvoxels=False)`` does.

Empty masks follow :mod:`~anyseg.eval.volume_metrics`: an object missing from the prediction
scores Dice / IoU / NSD 0 and an infinite HD95 / ASSD; an object named by ``--labels`` but absent
from both is not scored (listed under ``absent``). Records store a non-finite distance as
``null``; the summary averages the finite values and counts the others (``hd95_nonfinite``,
``assd_nonfinite``). Overall means are over every scored (case, object) pair; ``per_object`` has
the means per object id.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anyseg.errors import InputError
from anyseg.eval import volume_metrics as vm

__all__ = ["PROMPT_PROTOCOLS", "VOLUME_SUFFIXES", "DEFAULT_TOLERANCE", "add_arguments", "run_volume_eval",
           "volume_files", "label_array", "parse_labels", "case_objects", "score_case", "object_prompt",
           "volume_summary"]

#: ``--prompt-protocol`` values: the three volume protocols, and ``box`` for 2D image/mask folders
PROMPT_PROTOCOLS = ("first-slice", "middle-slice", "box3d", "box")
#: the label-volume files read, longest suffix first
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: NSD tolerance in mm (pixels in 2D): MedSAM's evaluation setting (module docstring)
DEFAULT_TOLERANCE = 2.0
#: largest object id (16-bit label volumes), and the most objects one case may name
MAX_LABEL = 65535
MAX_OBJECTS = 1000
METRICS = ("dice", "iou", "nsd", "hd95", "assd")


# -- options -----------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """``eval volume``'s own options (the caller adds ``--limit``, ``--out``, ``--fresh``)."""
    p.add_argument("--pred", metavar="DIR", help="predicted label volumes (NIfTI / NRRD / MHA), paired with --gt by "
                   "file stem")
    p.add_argument("--gt", metavar="DIR", help="ground-truth label volumes")
    p.add_argument("--model", metavar="NAME|PATH", help="with --data: the model that segments (classical, a "
                   "registry name or a local model folder)")
    p.add_argument("--data", metavar="DIR", help="with --model: images/ + labels/ volumes (paired by file stem), or "
                   "images/ + masks/ 2D images with --prompt-protocol box")
    p.add_argument("--prompt-protocol", default=None, choices=PROMPT_PROTOCOLS,
                   help="with --model: the prompt each object gets from the ground truth (default middle-slice; box "
                        "for 2D image/mask folders)")
    p.add_argument("--weights", metavar="PATH", help="transformers weights folder for --model")
    p.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:N or mps")
    p.add_argument("--axis", default="axial", help="slicing axis the prompts go on and the propagation runs along: "
                   "axial, coronal or sagittal (default axial)")
    p.add_argument("--window", default="auto", help="intensity window for the model: a preset name, W,L or auto "
                   "(default auto)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="MM",
                   help=f"NSD tolerance in mm (pixels in 2D; default {DEFAULT_TOLERANCE:g}, MedSAM's)")
    p.add_argument("--labels", default=None, metavar="ID,ID", help="object ids to score (default: those in each "
                   "ground truth)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout (the table to stderr)")


def parse_labels(text: str | None) -> list[int] | None:
    """``--labels 1,2``: distinct object ids in 1..65535, or ``None`` (the ground truth's own)."""
    if text is None:
        return None
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--labels must be comma-separated object ids such as 1,2; got {text!r}") from None
    if not ids or len(set(ids)) != len(ids) or not all(1 <= i <= MAX_LABEL for i in ids):
        raise InputError(f"--labels must be distinct object ids in 1..{MAX_LABEL} (0 is background); got {text!r}")
    if len(ids) > MAX_OBJECTS:
        raise InputError(f"--labels names {len(ids)} objects; at most {MAX_OBJECTS}")
    return ids


def _mode(args: argparse.Namespace) -> str:
    """``pairs`` (``--pred/--gt``), ``volumes`` (``--model/--data``) or ``images`` (``--prompt-protocol box``)."""
    pairs, model = args.pred is not None or args.gt is not None, args.model is not None or args.data is not None
    if pairs == model:
        raise InputError("eval volume takes either --pred DIR --gt DIR, or --model M --data DIR")
    if pairs:
        if args.pred is None or args.gt is None:
            raise InputError("--pred and --gt go together: the predicted and the ground-truth label volumes")
        if args.prompt_protocol is not None:
            raise InputError("--prompt-protocol applies to --model --data, not to --pred --gt")
        return "pairs"
    if args.model is None or args.data is None:
        raise InputError("--model and --data go together: the model and the images/ + labels/ folder it segments")
    return "images" if args.prompt_protocol == "box" else "volumes"


def _check_args(args: argparse.Namespace) -> str:
    """Every option checked before anything is read; the mode."""
    from anyseg.volume.base import axis_index

    mode = _mode(args)
    vm.check_tolerance(args.tolerance)
    args.label_ids = parse_labels(args.labels)
    axis_index(args.axis)
    if mode == "volumes" and args.prompt_protocol is None:
        args.prompt_protocol = "middle-slice"
    if mode == "volumes" and str(args.window).strip().lower() not in ("auto", "mri"):
        from anyseg.volume.window import resolve_window

        resolve_window(args.window)  # (a preset or W,L: checked now; auto and mri measure each volume)
    if mode == "pairs" and (args.weights is not None or args.device is not None):
        raise InputError("--weights and --device apply to --model, not to --pred --gt")
    if mode == "images" and args.labels is not None:
        raise InputError("--labels applies to label volumes; 2D masks (--prompt-protocol box) hold one object")
    return mode


# -- reading -----------------------------------------------------------------------------------------
def _stem(name: str) -> str | None:
    low = name.lower()
    suffix = next((s for s in VOLUME_SUFFIXES if low.endswith(s)), None)
    return name[: -len(suffix)] if suffix and len(name) > len(suffix) else None


def volume_files(folder: Path, what: str) -> dict[str, Path]:
    """``{stem: path}`` of the volume files in ``folder`` (``case.nii.gz`` has stem ``case``); a missing
    or empty folder, or two files with one stem, is a one-line :class:`InputError`."""
    if not folder.is_dir():
        raise InputError(f"{what} folder not found: {folder}")
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        stem = _stem(p.name) if p.is_file() and not p.name.startswith(".") else None
        if stem is None:
            continue
        if stem in files:
            raise InputError(f"two {what} files share the stem {stem!r}: {files[stem].name} and {p.name}")
        files[stem] = p
    if not files:
        raise InputError(f"no {what} volumes ({', '.join(VOLUME_SUFFIXES)}) in {folder}")
    return files


def _pairs(a: dict[str, Path], b: dict[str, Path], b_dir: Path, what: str, limit: int | None) -> list[str]:
    missing = sorted(set(a) - set(b))
    if missing:
        raise InputError(f"no {what} for {a[missing[0]].name} in {b_dir} (matched by file stem)"
                         + (f"; {len(missing) - 1} more missing" if len(missing) > 1 else ""))
    return sorted(a)[: limit or None]


def _load(path: Path) -> Any:
    from anyseg.volume.io import load_volume

    return load_volume(path)


def label_array(volume: Any, path: Any) -> np.ndarray:
    """The integer ``(K, J, I)`` label array of a label volume (a lazy one read slice by slice);
    non-integral or negative values are a one-line :class:`InputError`."""
    a = volume.array
    arr = np.asarray(a) if isinstance(a, np.ndarray) else np.stack([volume.slice(k) for k in range(volume.shape[0])])
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise InputError(f"{path} is not a label volume: it has non-integer values")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise InputError(f"{path} is not a label volume (values of type {arr.dtype})")
    if arr.size and arr.min() < 0:
        raise InputError(f"{path} is not a label volume: it has negative values")
    return arr


def _geometry_error(pred: Any, gt: Any, pred_path: Path, gt_path: Path) -> InputError:
    parts = [("shape", pred.shape, gt.shape), ("spacing", pred.spacing, gt.spacing),
             ("origin", pred.origin, gt.origin),
             ("direction", np.round(pred.direction, 4).tolist(), np.round(gt.direction, 4).tolist())]
    name, a, b = next(((n, a, b) for n, a, b in parts if not np.allclose(np.asarray(a, float), np.asarray(b, float),
                                                                          atol=1e-4)), parts[0])
    return InputError(f"{pred_path.name} and {gt_path.name} differ in geometry: {name} {tuple(a)} vs {tuple(b)} "
                      "(resample the prediction onto the ground truth's grid)")


def _read_pair(pred_path: Path, gt_path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    pred, gt = _load(pred_path), _load(gt_path)
    if not pred.same_geometry(gt):
        raise _geometry_error(pred, gt, pred_path, gt_path)
    return label_array(pred, pred_path), label_array(gt, gt_path), vm.array_spacing(gt)


# -- scoring -----------------------------------------------------------------------------------------
def case_objects(gt: np.ndarray, wanted: Sequence[int] | None, name: str) -> list[int]:
    """The object ids scored in one case: ``wanted`` (``--labels``), else the ground truth's non-zero ids."""
    if wanted is not None:
        return list(wanted)
    ids = [int(v) for v in np.unique(gt) if v != 0]
    if not ids:
        raise InputError(f"case {name}: the ground truth has no objects (all zero); give --labels to score "
                         "false positives")
    if len(ids) > MAX_OBJECTS:
        raise InputError(f"case {name}: the ground truth has {len(ids)} object ids; at most {MAX_OBJECTS} "
                         "(give --labels)")
    return ids


def score_case(name: str, pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], ids: Sequence[int],
               tolerance: float) -> dict[str, Any]:
    """One case's record: ``objects`` ``{id: scores}`` (:meth:`ObjectScores.to_record`), ``absent``
    (ids in neither mask, not scored) and ``extra_pred_ids`` (predicted ids not scored)."""
    objects: dict[str, Any] = {}
    absent = []
    boxes = _object_boxes(pred, gt, ids)
    for obj in ids:
        box = boxes.get(int(obj))
        if box is None:
            absent.append(int(obj))
            continue
        objects[str(obj)] = vm.score_object(pred[box] == obj, gt[box] == obj, spacing, tolerance).to_record()
    extra = sorted({int(v) for v in np.unique(pred)} - set(ids) - {0})
    return {"name": name, "spacing": [round(float(s), 6) for s in spacing], "objects": objects, "absent": absent,
            "extra_pred_ids": extra[:20]}


def _object_boxes(pred: np.ndarray, gt: np.ndarray, ids: Sequence[int]) -> dict[int, tuple[slice, ...]]:
    """Each object's box: the bounding box of its voxels in ``pred`` or ``gt`` grown by one voxel
    (clipped), so each object costs its own size, not the volume's (the metrics are the same on it:
    :func:`~anyseg.eval.volume_metrics.crop_to_union`). Objects in neither are left out."""
    from scipy.ndimage import find_objects

    top = max(ids, default=0)
    found = [find_objects(a, max_label=top) if a.size else [] for a in (pred, gt)]
    out = {}
    for obj in ids:
        parts = [f[obj - 1] for f in found if obj - 1 < len(f) and f[obj - 1] is not None]
        if parts:
            out[int(obj)] = tuple(slice(max(0, min(b[d].start for b in parts) - 1),
                                        min(n, max(b[d].stop for b in parts) + 1)) for d, n in enumerate(gt.shape))
    return out


def _means(scores: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in METRICS:
        mean, bad = vm.finite_mean(s[m] for s in scores)
        out[f"mean_{m}"] = None if mean is None else round(mean, 4)
        if m in ("hd95", "assd"):
            out[f"{m}_nonfinite"] = bad
    return out


def volume_summary(records: list[dict[str, Any]], tolerance: float, unit: str = "mm") -> dict[str, Any]:
    """Means over every scored (case, object) pair and per object id (module docstring)."""
    pairs = [(oid, s) for r in records for oid, s in r["objects"].items()]
    out: dict[str, Any] = {"num_cases": len(records), "num_objects": len(pairs), f"tolerance_{unit}": tolerance}
    if not pairs:
        return out
    out.update(_means([s for _, s in pairs]))
    ids = sorted({oid for oid, _ in pairs}, key=int)
    per_object = {oid: {"num_cases": sum(1 for o, _ in pairs if o == oid), **_means([s for o, s in pairs if o == oid])}
                  for oid in ids}
    if len(ids) > 1:
        for oid in ids[:20]:  # (the printed table: the two headline metrics per object)
            out[f"dice[{oid}]"] = per_object[oid]["mean_dice"]
            out[f"nsd[{oid}]"] = per_object[oid]["mean_nsd"]
    out["per_object"] = per_object
    seconds = [r["seconds"] for r in records if isinstance(r.get("seconds"), (int, float))]
    if seconds:
        out["mean_seconds"] = round(float(np.mean(seconds)), 3)
    return out


# -- prompts from the ground truth -------------------------------------------------------------------
def object_prompt(mask: np.ndarray, protocol: str, axis: int) -> dict[str, Any]:
    """One object's prompt under ``protocol`` (module docstring), as ``VolumeSession.add_prompt``
    keywords: ``{"slice", "box"}``, or ``{"box3d"}`` for ``box3d``.

    ``mask`` is the object's ``(K, J, I)`` ground truth; slice ``s`` along array ``axis`` (0 axial,
    1 coronal, 2 sagittal) is ``mask.take(s, axis)``, its rows and columns the other axes in array
    order (the session's convention), and the box ``[x0, y0, x1, y1]`` is its tight box in those
    pixels, end exclusive (:func:`anyseg.eval.runners.tight_box`). ``box3d`` is ``(x0, y0, z0, x1,
    y1, z1)``: the tight box of the object's projection along the axis and its first and last
    slices (inclusive), MedSAM2's ``mask3D_to_bbox`` layout.
    """
    from anyseg.eval.runners import tight_box

    m = np.moveaxis(np.asarray(mask, dtype=bool), axis, 0)
    slices = np.flatnonzero(m.any(axis=(1, 2)))
    if not len(slices):
        raise InputError("the object is empty: nothing to prompt with")
    if protocol == "first-slice":
        return {"slice": int(slices[0]), "box": tight_box(m[slices[0]])}
    if protocol == "middle-slice":
        s = int(slices[len(slices) // 2])
        return {"slice": s, "box": tight_box(m[s])}
    if protocol == "box3d":
        lo, hi = int(slices[0]), int(slices[-1])
        x0, y0, x1, y1 = tight_box(m[lo: hi + 1].any(axis=0))
        return {"box3d": [x0, y0, float(lo), x1, y1, float(hi)]}
    raise InputError(f"--prompt-protocol must be one of {', '.join(PROMPT_PROTOCOLS[:3])} for volumes; got {protocol!r}")


def segment_case(volume: Any, gt: np.ndarray, ids: Sequence[int], tracker: Any, args: argparse.Namespace
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """``(predicted labels (K, J, I), prompts by object id)``: every object's ground-truth prompt in
    one :class:`~anyseg.volume.session.VolumeSession` on ``tracker``, propagated once."""
    from anyseg.volume.base import axis_index
    from anyseg.volume.session import VolumeSession

    axis = axis_index(args.axis)
    prompts = {int(obj): object_prompt(gt == obj, args.prompt_protocol, axis) for obj in ids}
    with VolumeSession(volume, model=tracker, axis=axis, window=args.window) as session:
        for obj, prompt in prompts.items():
            session.add_prompt(obj_id=obj, **prompt)
        labels = np.asarray(session.run().labels().array)
    return labels, {str(k): v for k, v in prompts.items()}


# -- the runs ----------------------------------------------------------------------------------------
def _records(st: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    by_name = {r["name"]: r for r in st.records()}
    return [by_name[n] for n in names if n in by_name]


def _progress(items: list, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="case", dynamic_ncols=True, leave=False, disable=None)


def _run_pairs(job: Any) -> tuple[Any, list[dict], dict]:
    args = job.args
    pred_dir, gt_dir = Path(args.pred), Path(args.gt)
    gts, preds = volume_files(gt_dir, "ground-truth"), volume_files(pred_dir, "predicted")
    names = _pairs(gts, preds, pred_dir, "prediction", args.limit)
    job.header.update(mode="pairs", pred=str(pred_dir.resolve()), gt=str(gt_dir.resolve()),
                      tolerance_mm=args.tolerance, labels=args.label_ids)
    st = job.store()
    for name in _progress([n for n in names if n not in st], "volumes"):
        pred, gt, spacing = _read_pair(preds[name], gts[name])
        st.add(score_case(name, pred, gt, spacing, case_objects(gt, args.label_ids, name), args.tolerance))
    records = _records(st, names)
    return st, records, volume_summary(records, args.tolerance)


def _run_volumes(job: Any) -> tuple[Any, list[dict], dict]:
    from anyseg.video.session import load_tracker

    args = job.args
    root = Path(args.data)
    images, labels = volume_files(root / "images", "image"), volume_files(root / "labels", "label")
    names = _pairs(images, labels, root / "labels", "label volume", args.limit)
    job.header.update(mode="volumes", data=str(root.resolve()), prompt_protocol=args.prompt_protocol,
                      axis=args.axis, window=args.window, tolerance_mm=args.tolerance, labels=args.label_ids)
    tracker = load_tracker(args.model, weights=args.weights, device=args.device)  # (errors before anything is written)
    job.header["model"] = getattr(tracker, "name", args.model)
    st = job.store()
    for name in _progress([n for n in names if n not in st], f"volume {args.prompt_protocol}"):
        volume, gt_volume = _load(images[name]), _load(labels[name])
        if not volume.same_geometry(gt_volume):
            raise _geometry_error(volume, gt_volume, images[name], labels[name])
        gt = label_array(gt_volume, labels[name])
        wanted = case_objects(gt, args.label_ids, name)
        ids = [i for i in wanted if (gt == i).any()]  # (a prompt needs the object)
        t = time.perf_counter()
        pred, prompts = segment_case(volume, gt, ids, tracker, args) if ids else (np.zeros_like(gt), {})
        seconds = time.perf_counter() - t
        rec = score_case(name, pred, gt, vm.array_spacing(gt_volume), wanted, args.tolerance)
        rec.update(prompts=prompts, seconds=round(seconds, 3),
                   seconds_per_slice=round(seconds / max(1, gt.shape[_axis(args)]), 4))
        st.add(rec)
    records = _records(st, names)
    return st, records, volume_summary(records, args.tolerance)


def _axis(args: argparse.Namespace) -> int:
    from anyseg.volume.base import axis_index

    return axis_index(args.axis)


def _run_images(job: Any) -> tuple[Any, list[dict], dict]:
    """The 2D case: the ground truth's tight box prompts ``--model``, scored at pixel spacing 1."""
    from anyseg.eval import datasets
    from anyseg.eval.runners import tight_box
    from anyseg.models import load_model
    from anyseg.types import Prompt

    args = job.args
    root = Path(args.data)
    if not root.is_dir():
        raise InputError(f"data folder not found: {root}")
    samples = datasets.read_mask_folder(root, limit=args.limit)
    job.header.update(mode="images", data=str(root.resolve()), prompt_protocol="box", tolerance_px=args.tolerance)
    model = load_model(args.model, weights=args.weights, device=args.device)
    job.header["model"] = getattr(model, "name", args.model)
    st = job.store()
    for s in _progress([s for s in samples if s.name not in st], "box"):
        image = s.load_image()
        gt, ignore = s.load_gt()
        if image.shape[:2] != gt.shape:
            raise InputError(f"image {s.image_path} is {image.shape[1]}x{image.shape[0]} but its mask is "
                             f"{gt.shape[1]}x{gt.shape[0]}")
        if not gt.any():
            raise InputError(f"ground truth {s.mask_path} is empty: nothing to prompt with")
        box = tight_box(gt)
        t = time.perf_counter()
        masks = model.predict(model.embed(image), Prompt(box=box))
        seconds = time.perf_counter() - t
        scores = vm.score_object(masks.masks[0], gt, (1.0, 1.0), args.tolerance, ignore=ignore)
        st.add({"name": s.name, "box": box, "objects": {"1": scores.to_record()}, "score":
                round(float(masks.scores[0]), 6), "seconds": round(seconds, 3)})
    records = _records(st, [s.name for s in samples])
    return st, records, volume_summary(records, args.tolerance, unit="px")


def run_volume_eval(job: Any) -> int:
    """``anyseg eval volume``: check the options, score the cases not yet in the run folder's store,
    summarise every case and write the report; the exit code."""
    mode = _check_args(job.args)
    job.header = {"kind": "volume", "model": job.args.model, "weights": job.args.weights}
    job.model_name = job.args.model or "masks"
    if mode == "pairs":
        job.data = Path(job.args.pred)
    st, records, summary = {"pairs": _run_pairs, "volumes": _run_volumes, "images": _run_images}[mode](job)
    return job.report_or_json(st, records, summary, "volume", job.args.json)

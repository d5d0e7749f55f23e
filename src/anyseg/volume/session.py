"""``VolumeSession``: a volume's slices as video frames, prompted on any slice, propagated both ways.

>>> session = VolumeSession(load_volume("ct.nii.gz"), model="classical", window="ct-abdomen")
>>> session.add_prompt(40, obj_id=1, box=[120, 90, 200, 170])          # on slice 40 (axial)
>>> session.add_prompt(obj_id=2, box3d=(60, 60, 30, 110, 120, 52))     # MedSAM2's 3D box
>>> for index, masks in session.propagate():   # streamed, as computed
...     masks.object_ids, masks.masks               # (N,), (N, H, W) bool
>>> labels = session.labels()                   # a Volume of object ids, in the input's geometry

What it follows. MedSAM2 (``bowang-lab/MedSAM2``, ``medsam2_infer_3D_CT.py``) segments a 3D
scan with the SAM 2 *video* engine: the windowed slices (uint8, grey copied to RGB) are the
frames, a box goes on a key slice, and the engine propagates forward from it to the last slice
and, after a reset with the same prompt, backward (``reverse=True``) to the first; a voxel is
in the object when either pass put it there. Here any anyseg tracker
(:class:`anyseg.video.base.Tracker`: the classical optical-flow engine, SAM 2 / 2.1, EdgeTAM,
SAM 3's tracker, MedSAM2 once registered; a promptable image model that cannot track, such as
MedSAM, through :class:`ImageTracker`, slice by slice from boxes) runs on the slices along ``axis`` (frames made lazily
by :func:`anyseg.volume.window.rgb_slices`; slice ``s`` is ``volume.array.take(s, axis)``, its
rows and columns the remaining axes in array order, so a point ``(x, y)`` on an axial slice is
voxel ``(i, j) = (x, y)``), through a :class:`anyseg.video.session.VideoSession`.

Where it differs from MedSAM2:

* **Passes.** One forward pass from the earliest prompted slice and one backward pass from the
  latest, without a reset between them (the trackers restart from the prompts themselves), so
  prompts on several slices and several objects work in one session.
* **Merging.** Instead of the union of the two passes, each slice keeps, per object, the result
  anchored on the *nearest* prompt of that object: the forward pass's result at slice ``s``
  comes from the object's last prompt at or before ``s``, the backward pass's from its first
  prompt at or after ``s``; the one whose anchor is fewer slices away wins (the forward one on a
  tie, and a newer result over an older one at the same distance). Before an object's first
  prompt (in a pass's direction) the pass says nothing about it. Between two prompts each half
  therefore comes from its own prompt, which is what a correction should do.
* **Corrections.** A prompt added after propagation (a new object, a correction on a slice
  already propagated, or a replaced prompt) re-propagates from that slice: forward up to the
  object's next prompt (or the end) and backward down to its previous prompt (or the start); the
  other slices keep their results (their nearest anchor is unchanged).
* **3D box** (``box3d=(x0, y0, z0, x1, y1, z1)``, MedSAM2's ``mask3D_to_bbox`` layout: x, y in
  slice pixels, z0..z1 slice indices inclusive): the 2D box ``(x0, y0, x1, y1)`` goes on the
  middle slice ``(z0 + z1) // 2`` and the object's masks outside ``z0..z1`` are empty (passes
  stop at the bounds when every object has them). MedSAM2's largest-3D-component
  post-processing is :meth:`VolumeSession.labels` ``(largest_component=True)``; off by default.
* **Overlaps** in :meth:`VolumeSession.labels`: a voxel claimed by two objects gets the higher
  object id (the later object, as ``anyseg track``'s id maps do).

Yield order of :meth:`VolumeSession.propagate`: as computed (the forward pass, then the backward
pass); each yield is that slice's *merged* masks so far, so a slice can be yielded twice and the
last value is the final one (:meth:`VolumeSession.masks` gives it at any time). Memory: the
session keeps, per slice and object, one bit-packed mask (``H * W / 8`` bytes) and its anchor,
nothing else per slice; frames are made lazily and only a few are cached.
"""

from __future__ import annotations

import os
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from anyseg.errors import InputError, PromptError
from anyseg.types import Masks, Prompt
from anyseg.video.base import Tracker
from anyseg.video.frames import FrameSource
from anyseg.volume.base import AXES, Volume, axis_index

__all__ = ["VolumeSession", "VolumeFrames", "ImageTracker", "check_box3d", "check_slice_prompt", "mask_contrast", "DEFAULT_FADE",
           "MIN_CONTRAST"]

#: the end-of-object test's default: a result with under this fraction of its prompt's contrast ends the object
DEFAULT_FADE = 0.3
#: a prompt whose mask has less contrast than this (in noise units) is not tested for fading
MIN_CONTRAST = 1.0


def mask_contrast(grey: np.ndarray, mask: np.ndarray) -> float:
    """How much a mask stands out of its surroundings on a grey slice: ``(mean inside - mean of a ring
    outside) / (std inside + std ring + 1)``, signed; 0 for an empty mask or one without a ring.
    The ring is ``max(2, 0.2 * sqrt(area))`` pixels wide."""
    import cv2

    area = int(mask.sum())
    if area == 0:
        return 0.0
    r = max(2, int(round(0.2 * np.sqrt(area))))
    ring = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    ring = ring.astype(bool) & ~mask
    if not ring.any():
        return 0.0
    inside, outside = grey[mask], grey[ring]
    return float((inside.mean() - outside.mean()) / (inside.std() + outside.std() + 1.0))


class VolumeFrames(FrameSource):
    """The slices of ``volume`` along ``axis`` as ``(H, W, 3)`` uint8 RGB frames, made lazily
    (:func:`anyseg.volume.window.rgb_slices` with ``window``); a few are cached."""

    def __init__(self, volume: Volume, axis: str | int = "axial", window: Any = "auto", cache_frames: int = 4) -> None:
        from anyseg.volume.window import rgb_slices

        self.axis = axis_index(axis)
        self.axis_name = AXES[self.axis]
        self.volume = volume
        self._slices = rgb_slices(volume, self.axis_name, window)
        shape = volume.shape
        size = tuple(n for a, n in enumerate(shape) if a != self.axis)
        name = str(volume.meta.get("path") or "volume")
        super().__init__(name, shape[self.axis], size, fps=10.0, cache_frames=cache_frames)

    def check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise PromptError(f"slice index must be an int; got {index!r}")
        if not 0 <= int(index) < self.count:
            raise PromptError(f"slice {index} is outside the volume: it has {self.count} {self.axis_name} slices "
                              f"(0..{self.count - 1})")
        return int(index)

    def _read(self, index: int) -> np.ndarray:
        frame = np.asarray(self._slices[index])
        if frame.shape != (*self.size, 3) or frame.dtype != np.uint8:
            raise InputError(f"slice {index} rendered as {frame.shape} {frame.dtype}, expected {(*self.size, 3)} uint8")
        return np.ascontiguousarray(frame)


@dataclass
class _Entry:
    """One object's kept result on one slice: its mask (bit-packed), score and anchoring prompt."""

    anchor: int
    distance: int
    bits: np.ndarray
    score: float


def check_box3d(box3d: Any, shape: tuple[int, int, int], axis: int) -> tuple[float, float, int, float, float, int]:
    """``(x0, y0, z0, x1, y1, z1)`` validated against a ``(K, J, I)`` volume sliced along ``axis``:
    six finite numbers, ``x0 < x1``, ``y0 < y1`` within the slice (pixels), ``z0 <= z1`` whole slice
    indices within the volume. One-line :class:`PromptError` otherwise."""
    try:
        values = [float(v) for v in box3d]
    except (TypeError, ValueError):
        values = []
    if len(values) != 6 or not all(np.isfinite(values)):
        raise PromptError(f"box3d must be 6 numbers X0,Y0,Z0,X1,Y1,Z1; got {box3d!r}")
    x0, y0, z0, x1, y1, z1 = values
    count = shape[axis]
    h, w = (n for a, n in enumerate(shape) if a != axis)
    if z0 != int(z0) or z1 != int(z1):
        raise PromptError(f"box3d's Z0 and Z1 must be slice indices (whole numbers); got {z0:g} and {z1:g}")
    if not (x0 < x1 and y0 < y1 and z0 <= z1):
        raise PromptError(f"box3d {values} is inverted or empty: expected X0 < X1, Y0 < Y1 and Z0 <= Z1")
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h or z0 < 0 or z1 > count - 1:
        raise PromptError(f"box3d {values} is outside the volume (slices 0..{count - 1} of {w}x{h} pixels)")
    return x0, y0, int(z0), x1, y1, int(z1)


def check_slice_prompt(s: int, size: tuple[int, int], points: Any = None, labels: Any = None, box: Any = None,
                       mask: Any = None) -> Prompt:
    """The prompt on slice ``s`` of an ``(H, W)`` slice, checked: a one-line :class:`PromptError` naming
    the slice for an empty prompt, a point or box off the slice, or a mask of another size."""
    if points is None and box is None and mask is None:
        raise PromptError(f"the prompt on slice {s} is empty: give points, a box, a mask or a box3d")
    prompt = Prompt(points=points, labels=labels, box=box, mask=mask)
    h, w = size
    kind, value = prompt.first_outside(size) or (None, None)
    if kind == "point":
        raise PromptError(f"point ({value[0]:g}, {value[1]:g}) is outside slice {s} ({w}x{h} pixels)")
    if kind == "box":
        raise PromptError(f"box {[float(v) for v in value]} is outside slice {s} ({w}x{h} pixels)")
    if kind == "mask":
        raise PromptError(f"the mask prompt is {value.shape[1]}x{value.shape[0]}, slice {s} is {w}x{h}")
    return prompt


class VolumeSession:
    """One volume, one tracker: prompts on any slice, propagation both ways, a label volume.

    Args:
        volume: the :class:`~anyseg.volume.base.Volume` (numpy or lazy slices).
        model: ``"auto"``, a tracker name (``classical``, ``sam2.1-hiera-tiny``, ``medsam2`` ...),
            a local video checkpoint folder (:func:`anyseg.video.session.load_tracker`), a
            promptable image model that cannot track (``medsam``, ``sam-vit-base``: run slice by
            slice by :class:`ImageTracker`), or a :class:`~anyseg.video.base.Tracker` instance.
        axis: ``axial`` (along ``k``), ``coronal`` (``j``), ``sagittal`` (``i``) or 0, 1, 2.
        window: the display window the frames are made with (:func:`anyseg.volume.window.rgb_slices`:
            a preset name, ``"W,L"`` or ``auto``).
        device, weights: passed to :func:`~anyseg.video.session.load_tracker`.
        fade: the end-of-object test (module docstring): a result whose contrast falls below
            ``fade`` x its anchor's ends the object in that pass; ``None`` turns it off; ``"auto"``
            (default): :data:`DEFAULT_FADE` for the classical engine, off for learned trackers
            (they have their own object-presence score).
    """

    def __init__(self, volume: Volume, model: str | os.PathLike | Tracker = "auto", axis: str | int = "axial",
                 window: Any = "auto", device: str | None = None, weights: str | None = None,
                 fade: float | str | None = "auto") -> None:
        from anyseg.video.session import VideoSession

        if not isinstance(volume, Volume):
            raise InputError(f"expected an anyseg.volume.Volume (load_volume(path)); got {type(volume).__name__}")
        self.volume = volume
        self.axis = axis_index(axis)
        self.window = window
        self.frames = VolumeFrames(volume, self.axis, window)
        self.tracker = _tracker(model, weights, device) if isinstance(model, (str, os.PathLike)) else model
        self.video = VideoSession(self.tracker, self.frames)
        if fade == "auto":
            fade = DEFAULT_FADE if getattr(self.tracker, "name", "") == "classical" else None
        if fade is not None and not (isinstance(fade, (int, float)) and 0 < fade < 1):
            raise InputError(f"fade must be a contrast ratio in (0, 1), None or 'auto'; got {fade!r}")
        self.fade = None if fade is None else float(fade)
        self._contrast: dict[tuple[int, int], float] = {}  # (obj, prompted slice) -> its mask's contrast
        self.size = self.frames.size
        self._anchors: dict[int, list[int]] = {}  # obj -> sorted prompted slices
        self._limits: dict[int, tuple[int, int]] = {}  # obj -> (z0, z1) from a box3d
        self._pending: list[tuple[int, int]] = []  # (slice, obj) prompted since the last propagation
        self._kept: dict[int, dict[int, _Entry]] = {}  # slice -> obj -> kept result
        self.prompts: list[dict[str, Any]] = []  # what was prompted, for records
        self._propagated = False

    # -- prompts -------------------------------------------------------------------------------
    @property
    def object_ids(self) -> list[int]:
        return sorted(self._anchors)

    @property
    def prompted_slices(self) -> list[int]:
        return sorted({s for slices in self._anchors.values() for s in slices})

    def __len__(self) -> int:
        return len(self.frames)

    def add_prompt(self, slice: int | None = None, obj_id: int = 1, points: Any = None, labels: Any = None,
                   box: Any = None, mask: Any = None, box3d: Any = None) -> Masks:
        """Add (or correct) object ``obj_id`` on ``slice``; returns that slice's masks of every object.

        Points ``(K, 2)`` XY and boxes XYXY are in slice pixels (columns, rows of the slice),
        ``mask`` is the slice's ``(H, W)``; ``box3d`` (instead of ``slice`` and ``box``) is a 3D box
        (module docstring). Prompts outside the volume are one-line :class:`PromptError`.
        """
        if box3d is not None:
            if slice is not None or box is not None:
                raise PromptError("give box3d alone (it sets the slice and the box), not with a slice or a box")
            x0, y0, z0, x1, y1, z1 = check_box3d(box3d, self.volume.shape, self.axis)
            slice, box = (z0 + z1) // 2, [x0, y0, x1, y1]
            anchors = self._anchors.get(obj_id, []) if isinstance(obj_id, (int, np.integer)) else []
            if any(not z0 <= s <= z1 for s in anchors):
                raise PromptError(f"object {obj_id} has prompts on slices {anchors}, outside box3d's slices {z0}..{z1}")
        if slice is None:
            raise PromptError("add_prompt needs the slice the prompt is on (or a box3d)")
        s = self.frames.check_index(slice)
        check_slice_prompt(s, self.size, points, labels, box, mask)
        limit = self._limits.get(obj_id) if box3d is None else None
        if limit is not None and not limit[0] <= s <= limit[1]:
            raise PromptError(f"slice {s} is outside object {obj_id}'s box3d slices {limit[0]}..{limit[1]}")
        result = self.video.add_prompt(s, obj_id, points=points, labels=labels, box=box, mask=mask)
        obj = int(obj_id)
        if box3d is not None:
            self._limits[obj] = (z0, z1)
        slices = self._anchors.setdefault(obj, [])
        if s not in slices:
            slices.insert(bisect_left(slices, s), s)
        self._pending.append((s, obj))
        if result.object_ids is not None and obj in result.object_ids:  # the prompted slice's result, kept now
            row = int(np.flatnonzero(result.object_ids == obj)[0])
            mask = result.masks[row]
            if self.fade is not None:
                self._contrast[(obj, s)] = mask_contrast(self._grey(s), mask)
            score = float(np.clip(result.scores[row], 0.0, 1.0))
            self._kept.setdefault(s, {})[obj] = _Entry(s, 0, np.packbits(mask.reshape(-1)), score)
        self.prompts.append(_prompt_record(s, obj, points, labels, box, mask, box3d))
        return result

    # -- propagation ---------------------------------------------------------------------------
    def _range(self, obj: int) -> tuple[int, int]:
        return self._limits.get(obj, (0, len(self.frames) - 1))

    def plan(self) -> list[tuple[int, int, bool]]:
        """The ``(start, end, reverse)`` passes the next :meth:`propagate` will run (module docstring)."""
        if not self._anchors:
            raise PromptError("no prompts yet: add a point, box, mask or box3d for an object first")
        if not self._pending:
            return []
        ends_f, ends_b = [], []
        for s, obj in self._pending:
            slices, (lo, hi) = self._anchors[obj], self._range(obj)
            later = slices[bisect_right(slices, s):]
            earlier = slices[:bisect_left(slices, s)]
            first_time = not self._propagated
            ends_f.append(hi if first_time or not later else later[0])
            ends_b.append(lo if first_time or not earlier else earlier[-1])
        start_f, start_b = min(s for s, _ in self._pending), max(s for s, _ in self._pending)
        passes = [(start_f, max(start_f, max(ends_f)), False)]
        end_b = min(start_b, min(ends_b))
        if end_b < start_b:
            passes.append((start_b, end_b, True))
        return passes

    def propagate(self) -> Iterator[tuple[int, Masks]]:
        """Run :meth:`plan`'s passes; yield ``(slice, merged Masks)`` as computed (module docstring)."""
        passes = self.plan()
        for start, end, reverse in passes:
            lost: dict[int, int] = {}  # obj -> the anchor it faded from, in this pass
            for s, masks in self.video.propagate([(start, end, reverse)]):
                self._keep(s, masks, reverse, lost)
                yield s, self.masks(s)
        self._pending.clear()
        self._propagated = True

    def run(self) -> "VolumeSession":
        """Propagate to the end, discarding the stream; returns the session (for ``labels()``)."""
        for _ in self.propagate():
            pass
        return self

    def _grey(self, s: int) -> np.ndarray:
        return self.frames[s].mean(axis=2, dtype=np.float32)

    def _keep(self, s: int, masks: Masks, reverse: bool, lost: dict[int, int]) -> None:
        """Keep each object's result on slice ``s`` if its anchor is at least as near as the kept one's
        (and, with :attr:`fade`, empty once the object faded in this pass)."""
        if masks.object_ids is None:
            raise InputError(f"the tracker {getattr(self.tracker, 'name', '?')} returned masks without object_ids")
        kept = self._kept.setdefault(s, {})
        for row, obj in enumerate(masks.object_ids):
            obj = int(obj)
            slices = self._anchors.get(obj)
            lo, hi = self._range(obj)
            if not slices or not lo <= s <= hi:
                continue
            if reverse:
                i = bisect_left(slices, s)
                anchor = slices[i] if i < len(slices) else None
            else:
                i = bisect_right(slices, s)
                anchor = slices[i - 1] if i > 0 else None
            if anchor is None:  # before the object's first prompt in this direction: no evidence
                continue
            distance = abs(s - anchor)
            old = kept.get(obj)
            if old is not None and (distance > old.distance or (distance == old.distance and reverse
                                                                 and old.anchor < s)):
                continue  # a nearer anchor (or, on a tie, the forward result) is kept
            mask, score = masks.masks[row], float(np.clip(masks.scores[row], 0.0, 1.0))
            if self.fade is not None:
                mask, score = self._faded(s, obj, anchor, mask, lost)
            kept[obj] = _Entry(anchor, distance, np.packbits(mask.reshape(-1)), score)

    def _faded(self, s: int, obj: int, anchor: int, mask: np.ndarray, lost: dict[int, int]) -> tuple[np.ndarray, float]:
        """The mask (empty once the object has faded away from ``anchor`` in this pass) and its score:
        its contrast relative to the anchor's, clipped to [0, 1] (1 on the prompted slice)."""
        if lost.get(obj) == anchor:
            return np.zeros_like(mask), 0.0
        ref = self._contrast.get((obj, anchor))
        if s == anchor or ref is None or abs(ref) < MIN_CONTRAST:
            return mask, 1.0  # the prompt itself, or an object without contrast to follow
        ratio = mask_contrast(self._grey(s), mask) / ref if mask.any() else 0.0
        if ratio < self.fade:
            lost[obj] = anchor
            return np.zeros_like(mask), 0.0
        return mask, float(np.clip(ratio, 0.0, 1.0))

    # -- results -------------------------------------------------------------------------------
    def _mask(self, entry: _Entry | None) -> np.ndarray:
        h, w = self.size
        if entry is None:
            return np.zeros((h, w), bool)
        return np.unpackbits(entry.bits, count=h * w).reshape(h, w).astype(bool)

    def masks(self, slice: int) -> Masks:
        """Slice ``slice``'s kept masks of every object (empty where nothing reached it); ``scores``
        are the tracker's (0 where there is no result), ``data["anchor"]`` the prompt slice each
        result comes from (-1: none)."""
        s = self.frames.check_index(slice)
        kept = self._kept.get(s, {})
        ids = self.object_ids
        h, w = self.size
        if not ids:
            return Masks(np.zeros((0, h, w), bool), object_ids=np.zeros(0, np.int64))
        entries = [kept.get(o) for o in ids]
        return Masks(np.stack([self._mask(e) for e in entries]),
                     scores=np.asarray([e.score if e else 0.0 for e in entries], np.float32),
                     object_ids=np.asarray(ids, np.int64),
                     data={"anchor": np.asarray([e.anchor if e else -1 for e in entries], np.int64)})

    def slices_with_masks(self) -> list[int]:
        """The slices where some object has a non-empty mask, in order."""
        return sorted(s for s, kept in self._kept.items() if any(e.bits.any() for e in kept.values()))

    def id_map(self, slice: int) -> np.ndarray:
        """Slice ``slice`` as an ``(H, W)`` map of object ids (0: background; overlaps: the higher id)."""
        s = self.frames.check_index(slice)
        top = max(self.object_ids, default=0)
        out = np.zeros(self.size, np.uint8 if top < 256 else np.uint16)
        for obj, entry in sorted(self._kept.get(s, {}).items()):
            out[self._mask(entry)] = obj
        return out

    def labels(self, largest_component: bool = False) -> Volume:
        """The ``(K, J, I)`` label volume (uint8, uint16 past id 255; 0 background; overlaps: the higher
        id) as a :class:`Volume` in the input's geometry (``intensity="labels"``). With
        ``largest_component``, each object keeps only its largest 26-connected 3D component
        (MedSAM2's post-processing)."""
        top = max(self.object_ids, default=0)
        out = np.zeros(self.volume.shape, np.uint8 if top < 256 else np.uint16)
        view = np.moveaxis(out, self.axis, 0)  # view[s] is slice s, as the frames are made
        for s in sorted(self._kept):
            view[s] = self.id_map(s)
        if largest_component and top:
            out = _largest_components(out, self.object_ids)
        return self.volume.with_array(out, intensity="labels", object_ids=self.object_ids)

    def close(self) -> None:
        self.video.close()
        self.frames.close()

    def __enter__(self) -> "VolumeSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _largest_components(labels: np.ndarray, ids: list[int]) -> np.ndarray:
    """Each object's largest 26-connected component of ``labels`` (the rest becomes background)."""
    from scipy import ndimage

    out = np.zeros_like(labels)
    for obj in ids:
        parts, n = ndimage.label(labels == obj, structure=np.ones((3, 3, 3), bool))
        if n:
            sizes = np.bincount(parts.ravel())[1:]
            out[parts == int(np.argmax(sizes)) + 1] = obj
    return out


def _prompt_record(s: int, obj: int, points: Any, labels: Any, box: Any, mask: Any, box3d: Any) -> dict[str, Any]:
    """A JSON-able record of one prompt (a mask as its pixel count)."""
    rec: dict[str, Any] = {"slice": s, "obj_id": obj}
    if box3d is not None:
        rec["box3d"] = [float(v) for v in box3d]
    elif box is not None:
        rec["box"] = [float(v) for v in np.asarray(box, float).reshape(-1)]
    if points is not None:
        pts = np.asarray(points, float).reshape(-1, 2)
        rec["points"] = pts.tolist()
        rec["labels"] = [int(v) for v in (np.ones(len(pts)) if labels is None else np.asarray(labels).reshape(-1))]
    if mask is not None:
        rec["mask_pixels"] = int(np.asarray(mask).astype(bool).sum())
    return rec


def _tracker(name: str | os.PathLike, weights: str | None, device: str | None) -> Tracker:
    """A video engine by name or folder; a promptable image model that cannot track becomes an
    :class:`ImageTracker` (its own one-line error stays when it is not even promptable)."""
    from anyseg.errors import ModelError
    from anyseg.models import load_model, resolve
    from anyseg.models.families import PROMPTABLE, VIDEO
    from anyseg.video.session import load_tracker

    try:
        resolve(name, VIDEO, quiet=True)
    except ModelError:
        try:
            resolve(name, PROMPTABLE, quiet=True)
        except ModelError:
            pass  # neither: load_tracker's message says what fits
        else:
            return ImageTracker(load_model(name, weights=weights, device=device))
    return load_tracker(str(name), weights=weights, device=device)


@dataclass
class _ImageState:
    frames: Any
    size: tuple[int, int]
    prompts: dict[int, dict[int, np.ndarray]]
    closed: bool = False

    @property
    def object_ids(self) -> list[int]:
        return sorted({o for p in self.prompts.values() for o in p})


class ImageTracker:
    """A promptable image model (MedSAM, SAM) run slice by slice: a :class:`~anyseg.video.base.Tracker`.

    Follows MedSAM's 3D use (bowang-lab/MedSAM, MedSAM-Lite's 3D inference): the prompted slice
    is segmented from its prompt, and each next slice from a box prompt, the bounding box of the
    previous slice's mask widened by ``margin`` of its size (at least 2 pixels) on each side. An
    object whose mask vanishes stays empty until prompted again; a prompt restarts it. Differs: the
    margin is anyseg's choice. Scores are the model's own (SAM's predicted IoU). One embedding per
    slice, computed when the slice is reached; nothing per slice is kept.
    """

    def __init__(self, predictor: Any, margin: float = 0.1) -> None:
        self.predictor = predictor
        self.margin = float(margin)
        self.name = f"{getattr(predictor, 'name', None) or predictor.model_id} (slice by slice)"
        self.model_id = predictor.model_id

    def start(self, frames: Any) -> _ImageState:
        return _ImageState(frames, tuple(frames.size), {})

    def add_prompt(self, state: _ImageState, prompt: Any) -> Masks:
        from anyseg.video.base import checked_prompt, masks_from_objects

        frame, obj = checked_prompt(state.frames, prompt)
        if prompt.mask is not None:
            mask = prompt.mask.astype(bool)
        else:
            embedding = self.predictor.embed(state.frames[frame])
            mask = self.predictor.predict(embedding, Prompt(points=prompt.points, labels=prompt.labels,
                                                            box=prompt.box)).masks[0]
        state.prompts.setdefault(frame, {})[obj] = mask
        return masks_from_objects({o: state.prompts[frame].get(o, np.zeros(state.size, bool))
                                   for o in state.object_ids}, state.size)

    def propagate(self, state: _ImageState, start: int, end: int, reverse: bool = False) -> Iterator[tuple[int, Masks]]:
        step = -1 if reverse else 1
        if (end - start) * step < 0:
            raise InputError(f"cannot propagate {'backward' if reverse else 'forward'} from slice {start} to {end}")
        behind = [f for f in state.prompts if (start - f) * step >= 0]
        first = min(behind, key=lambda f: f * step) if behind else start
        current: dict[int, tuple[np.ndarray, float]] = {}
        for t in range(first, end + step, step):
            self._advance(state, t, current)
            if (t - start) * step >= 0:
                ids = state.object_ids
                masks = [current.get(o, (np.zeros(state.size, bool), 0.0)) for o in ids]
                yield t, Masks(np.stack([m for m, _ in masks]) if ids else np.zeros((0, *state.size), bool),
                               scores=np.asarray([sc for _, sc in masks], np.float32),
                               object_ids=np.asarray(ids, np.int64))

    def _advance(self, state: _ImageState, t: int, current: dict[int, tuple[np.ndarray, float]]) -> None:
        """Every object's mask on slice ``t``: its prompt there, else a box from its previous mask."""
        from anyseg import cancel
        from anyseg.types import masks_to_boxes

        cancel.check()
        h, w = state.size
        embedding = None
        for obj in state.object_ids:
            if obj in state.prompts.get(t, {}):
                current[obj] = (state.prompts[t][obj], 1.0)
                continue
            prev = current.get(obj)
            if prev is None or not prev[0].any():
                continue
            x0, y0, x1, y1 = masks_to_boxes(prev[0][None])[0]
            pad_x, pad_y = max(2.0, self.margin * (x1 - x0)), max(2.0, self.margin * (y1 - y0))
            box = [max(0.0, x0 - pad_x), max(0.0, y0 - pad_y), min(float(w), x1 + pad_x), min(float(h), y1 + pad_y)]
            if embedding is None:
                embedding = self.predictor.embed(state.frames[t])
            out = self.predictor.predict(embedding, Prompt(box=box))
            current[obj] = (out.masks[0], float(np.clip(out.scores[0], 0.0, 1.0)))

    def close(self, state: _ImageState) -> None:
        state.prompts.clear()
        state.closed = True

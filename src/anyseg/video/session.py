"""``VideoSession``: prompts on any frame, streamed propagation, corrections.

>>> session = VideoSession(load_tracker("classical"), open_frames("clip.mp4"))
>>> session.add_prompt(0, obj_id=1, box=[40, 60, 200, 220])
>>> for index, masks in session.propagate():     # every frame, streamed
...     masks.object_ids, masks.masks             # (N,), (N, H, W) bool
>>> session.add_prompt(80, obj_id=1, points=[[120, 90]], labels=[0])   # a correction
>>> for index, masks in session.propagate():     # re-propagates from frame 80 onwards
...     ...

Propagation order. The first :meth:`VideoSession.propagate` runs forward from the earliest
prompted frame to the last frame, then backward from that frame to frame 0, so every frame
gets masks. After new prompts (corrections or new objects), the next call re-propagates
forward from the earliest new prompt's frame to the end, and also backward to frame 0 when
that frame lies before every earlier prompt. Frames are yielded as they are computed (the
prompted frames themselves included, with their refined masks), so callers can stream results
to disk and show progress; nothing per frame is kept by the session.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from anyseg.errors import InputError, PromptError
from anyseg.types import Masks
from anyseg.video.base import ObjectPrompt, Tracker


def masks_from_objects(objects: dict[int, np.ndarray], size: tuple[int, int]) -> Masks:
    """``{obj_id: (H, W) bool}`` -> :class:`Masks` sorted by object id (``object_ids`` column)."""
    ids = sorted(objects)
    if not ids:
        return Masks(np.zeros((0, *size), dtype=bool), object_ids=np.zeros(0, np.int64))
    return Masks(np.stack([np.asarray(objects[i], dtype=bool) for i in ids]), object_ids=np.asarray(ids, np.int64))


class VideoSession:
    """One video, one tracker: add prompts, stream masks, correct, re-propagate."""

    def __init__(self, tracker: Tracker, frames: Any) -> None:
        self.tracker = tracker
        self.frames = frames
        self.size = tuple(frames.size)
        self.state = tracker.start(frames)
        self._prompted: dict[int, set[int]] = {}  # frame -> object ids prompted there
        self._pending: list[int] = []  # frames prompted since the last propagation
        self._propagated = False

    # -- prompts -------------------------------------------------------------------------------
    @property
    def object_ids(self) -> list[int]:
        return sorted({o for objs in self._prompted.values() for o in objs})

    @property
    def prompted_frames(self) -> list[int]:
        return sorted(self._prompted)

    def add_prompt(self, frame: int, obj_id: int, points: Any = None, labels: Any = None, box: Any = None,
                   mask: Any = None) -> Masks:
        """Add (or correct) object ``obj_id`` on ``frame``; returns that frame's masks of every object.

        Points and boxes are in original pixels (XY, XYXY); ``mask`` is ``(H, W)``. Prompts outside
        the frame, an out-of-range frame or a mask of the wrong size are one-line errors.
        """
        frame = self.frames.check_index(frame)
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or obj_id < 1:
            raise PromptError(f"object ids must be positive integers; got {obj_id!r}")
        prompt = ObjectPrompt(frame, int(obj_id), points=points, labels=labels, box=box, mask=mask)
        self._check_within(prompt)
        known = int(obj_id) in self.object_ids
        if not known and prompt.box is None and prompt.mask is None and not (prompt.labels == 1).any():
            raise PromptError(f"object {obj_id} is unknown (no prompt yet): its first prompt needs a positive click, "
                              f"a box or a mask; known objects: {self.object_ids or 'none'}")
        objects = self.tracker.add_prompt(self.state, prompt)
        self._prompted.setdefault(frame, set()).add(int(obj_id))
        self._pending.append(frame)
        return masks_from_objects(objects, self.size)

    def _check_within(self, p: ObjectPrompt) -> None:
        h, w = self.size
        if p.points is not None:
            bad = (p.points[:, 0] < 0) | (p.points[:, 0] > w) | (p.points[:, 1] < 0) | (p.points[:, 1] > h)
            if bad.any():
                x, y = p.points[np.flatnonzero(bad)[0]]
                raise PromptError(f"point ({x:g}, {y:g}) is outside the {w}x{h} frame {p.frame}")
            if p.labels is not None and not np.isin(p.labels, (0, 1)).all():
                raise PromptError("point labels must be 1 (positive) or 0 (negative)")
        if p.box is not None:
            x0, y0, x1, y1 = p.box
            if not (x1 > x0 and y1 > y0):
                raise PromptError(f"box {p.box.tolist()} is empty: expected X0 < X1 and Y0 < Y1")
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                raise PromptError(f"box {p.box.tolist()} is outside the {w}x{h} frame {p.frame}")
        if p.mask is not None:
            if p.mask.shape != (h, w):
                raise PromptError(f"mask prompt is {p.mask.shape[1]}x{p.mask.shape[0]}, the video is {w}x{h}")
            if not p.mask.any():
                raise PromptError(f"mask prompt for object {p.obj_id} on frame {p.frame} is empty")

    # -- propagation ---------------------------------------------------------------------------
    def plan(self) -> list[tuple[int, int, bool]]:
        """The ``(start, end, reverse)`` passes the next :meth:`propagate` will run."""
        if not self._prompted:
            raise PromptError("no prompts yet: add a point, box or mask for an object first")
        last = len(self.frames) - 1
        if not self._propagated:
            first = min(self._prompted)
            passes = [(first, last, False)]
            if first > 0:
                passes.append((first, 0, True))
            return passes
        if not self._pending:
            return []
        start = min(self._pending)
        passes = [(start, last, False)]
        earlier = [f for f in self._prompted if f < start]
        if not earlier and start > 0:
            passes.append((start, 0, True))
        return passes

    def propagate(self, passes: Sequence[tuple[int, int, bool]] | None = None) -> Iterator[tuple[int, Masks]]:
        """Yield ``(frame_index, Masks)`` frame by frame (see the module docstring for the order).

        ``passes`` overrides the plan: ``[(start, end, reverse), ...]``. A frame may be yielded
        twice (the starting frame of a backward pass): the later value is the one to keep.
        """
        from anyseg import cancel

        passes = self.plan() if passes is None else list(passes)
        for start, end, reverse in passes:
            start, end = self.frames.check_index(start), self.frames.check_index(end)
            if (start > end) != bool(reverse) and start != end:
                raise InputError(f"a {'backward' if reverse else 'forward'} pass cannot go from frame {start} to {end}")
            cancel.check()
            for index, objects in self.tracker.propagate(self.state, start, end, reverse=reverse):
                cancel.check()  # between frames: a cancelled job stops after at most one more frame
                yield index, masks_from_objects(objects, self.size)
        self._propagated = True
        self._pending.clear()

    def close(self) -> None:
        self.tracker.close(self.state)
        self.state = None

    def __enter__(self) -> "VideoSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load_tracker(name: str = "auto", weights: str | None = None, device: str | None = None,
                 allow_download: bool = True) -> Tracker:
    """A video engine by model name or local folder: ``classical`` (optical flow, no weights), a
    SAM 2-family name, or the path of a video checkpoint folder (its family from ``config.json``).

    ``auto``: the best model present locally that can track (SAM 2 / 2.1, EdgeTAM, SAM 3), else
    ``classical`` with a notice on stderr (:func:`anyseg.models.resolve`, capability ``video``).
    The tracker is built by the family record's ``tracker`` loader.
    """
    from anyseg.models.families import VIDEO
    from anyseg.models.resolver import resolve_folder

    spec, folder = resolve_folder(name, VIDEO, weights=weights, allow_download=allow_download)
    return spec.family_record.build("tracker", spec, folder, device)


def classical_tracker(spec: Any = None, folder: Any = None, device: str | None = None, **options: Any) -> Tracker:
    """The classical family's ``tracker`` loader: :class:`~anyseg.video.classical.ClassicalTracker` (no weights, CPU)."""
    from anyseg.video.classical import ClassicalTracker

    return ClassicalTracker(**options)


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

from anyseg.errors import InputError, PromptError
from anyseg.types import Masks
from anyseg.video.base import ObjectPrompt, Tracker, TrackerState, masks_from_objects

__all__ = ["VideoSession", "load_tracker", "classical_tracker", "masks_from_objects"]


def _as_masks(result: Any, size: tuple[int, int]) -> Masks:
    """A tracker's result as :class:`Masks`: trackers return ``Masks`` (:class:`~anyseg.video.base.Tracker`);
    an ``{obj_id: mask}`` dict from an older, third-party engine is converted (:func:`masks_from_objects`)."""
    return result if isinstance(result, Masks) else masks_from_objects(result, size)


class VideoSession:
    """One video, one tracker: add prompts, stream masks, correct, re-propagate."""

    def __init__(self, tracker: Tracker, frames: Any) -> None:
        self.tracker = tracker
        self.frames = frames
        self.size = tuple(frames.size)
        self.state: TrackerState | None = tracker.start(frames)
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
        prompt = ObjectPrompt.of(frame, obj_id, points=points, labels=labels, box=box, mask=mask)
        prompt.check_within(self.size)
        if prompt.mask is not None and not prompt.mask.any():
            raise PromptError(f"mask prompt for object {prompt.obj_id} on frame {frame} is empty")
        known = prompt.obj_id in self.object_ids
        if not known and prompt.box is None and prompt.mask is None and not (prompt.labels == 1).any():
            raise PromptError(f"object {obj_id} is unknown (no prompt yet): its first prompt needs a positive click, "
                              f"a box or a mask; known objects: {self.object_ids or 'none'}")
        masks = _as_masks(self.tracker.add_prompt(self.state, prompt), self.size)
        self._prompted.setdefault(frame, set()).add(prompt.obj_id)
        self._pending.append(frame)
        return masks

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
                yield index, _as_masks(objects, self.size)
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


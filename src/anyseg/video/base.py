"""The interface video engines implement, and the one prompt and result types they share.

A :class:`Tracker` keeps no hidden global state: :meth:`Tracker.start` returns a
:class:`TrackerState` for one video, and every other call takes it. A prompt is an
:class:`ObjectPrompt`: a frame, an object id and an :class:`anyseg.types.Prompt` (whose
validation it uses). Results are :class:`anyseg.types.Masks` at the video's resolution, one row
per object sorted by id, with the ``object_ids`` column set (ids are the caller's, e.g. DAVIS
palette values 1..254).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np

from anyseg.errors import PromptError
from anyseg.types import Masks, Prompt

if TYPE_CHECKING:
    from anyseg.video.frames import FrameSource

__all__ = ["ObjectPrompt", "Tracker", "TrackerState", "checked_prompt", "masks_from_objects", "masks_by_object"]


def _checked_obj_id(obj_id: Any) -> int:
    """``obj_id`` as an ``int``; a bool, a non-integer or an id below 1 is a one-line :class:`PromptError`."""
    if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or obj_id < 1:
        raise PromptError(f"object ids must be positive integers; got {obj_id!r}")
    return int(obj_id)


@dataclass(frozen=True, eq=False, init=False)
class ObjectPrompt:
    """A prompt for one object on one frame: clicks and/or a box, or a mask.

    ``ObjectPrompt(frame, obj_id, prompt)`` with an :class:`anyseg.types.Prompt`, or, shorter,
    ``ObjectPrompt.of(frame, obj_id, points=..., labels=..., box=..., mask=...)`` (the same
    keywords are accepted by the constructor). The geometry is checked by :class:`Prompt`
    (shapes, finite numbers, labels 0/1, non-empty boxes); whether it lies inside the video is
    :meth:`check_within`'s job, once the frame size is known.

    Attributes:
        frame: frame index (0-based; checked against the video by the tracker).
        obj_id: object id (a positive int).
        prompt: the points, labels, box and/or mask (in original pixels; a mask prompt replaces
            clicks and box). Text and ``mask_logits`` are not video prompts.
    """

    frame: int
    obj_id: int
    prompt: Prompt

    def __init__(self, frame: int, obj_id: int, prompt: Prompt | None = None, *, points: Any = None,
                 labels: Any = None, box: Any = None, mask: Any = None) -> None:
        obj = _checked_obj_id(obj_id)
        parts = (points, labels, box, mask)
        if prompt is None:
            if points is None and box is None and mask is None:
                raise PromptError(f"the prompt for object {obj_id} on frame {frame} is empty")
            prompt = Prompt(points=points, labels=labels, box=box, mask=mask)
        elif not isinstance(prompt, Prompt):
            raise PromptError(f"expected an anyseg.types.Prompt for object {obj_id}; got {type(prompt).__name__}")
        elif any(p is not None for p in parts):
            raise PromptError("give either a Prompt or points/labels/box/mask to ObjectPrompt, not both")
        if prompt.points is None and prompt.box is None and prompt.mask is None:
            raise PromptError(f"the prompt for object {obj_id} on frame {frame} is empty: a video prompt needs "
                              "points, a box or a mask (text and mask_logits do not apply)")
        object.__setattr__(self, "frame", frame)
        object.__setattr__(self, "obj_id", obj)
        object.__setattr__(self, "prompt", prompt)

    @classmethod
    def of(cls, frame: int, obj_id: int, points: Any = None, labels: Any = None, box: Any = None,
           mask: Any = None) -> "ObjectPrompt":
        """The prompt from its parts: ``(K, 2)`` XY points, ``(K,)`` labels, an XYXY box, an ``(H, W)`` mask."""
        return cls(frame, obj_id, points=points, labels=labels, box=box, mask=mask)

    # the prompt's parts, for the trackers (already validated by Prompt)
    @property
    def points(self) -> np.ndarray | None:
        """``(K, 2)`` float64 XY, or ``None``."""
        return self.prompt.points

    @property
    def labels(self) -> np.ndarray | None:
        """``(K,)`` int64, 1 positive / 0 negative, or ``None`` (no points)."""
        return self.prompt.labels

    @property
    def box(self) -> np.ndarray | None:
        """``(4,)`` float64 XYXY, or ``None``."""
        return self.prompt.box

    @property
    def mask(self) -> np.ndarray | None:
        """``(H, W)`` bool, or ``None``."""
        return self.prompt.mask

    def check_within(self, size: tuple[int, int]) -> None:
        """Raise a one-line :class:`PromptError` if a point or the box lies outside an ``(H, W)``
        frame, or the mask is not ``H x W``."""
        h, w = size
        kind, value = self.prompt.first_outside(size) or (None, None)
        if kind == "point":
            x, y = value
            raise PromptError(f"point ({x:g}, {y:g}) is outside the {w}x{h} frame {self.frame}")
        if kind == "box":
            raise PromptError(f"box {value.tolist()} is outside the {w}x{h} frame {self.frame}")
        if kind == "mask":
            raise PromptError(f"mask prompt is {value.shape[1]}x{value.shape[0]}, the video is {w}x{h}")

    def __repr__(self) -> str:
        return f"ObjectPrompt(frame={self.frame}, obj_id={self.obj_id}, prompt={self.prompt.to_json()})"


def checked_prompt(frames: Any, prompt: Any) -> tuple[int, int]:
    """``(frame, obj_id)`` of a prompt given to a tracker, validated against ``frames`` (one-line errors):
    an :class:`ObjectPrompt`, on a frame of the video, inside it (:meth:`ObjectPrompt.check_within`)."""
    if not isinstance(prompt, ObjectPrompt):
        raise PromptError(f"expected an ObjectPrompt; got {type(prompt).__name__}")
    frame = frames.check_index(prompt.frame)
    prompt.check_within(tuple(frames.size))
    return frame, prompt.obj_id


def masks_from_objects(objects: Mapping[int, np.ndarray], size: tuple[int, int]) -> Masks:
    """``{obj_id: (H, W) bool}`` -> :class:`Masks` sorted by object id (``object_ids`` column), what
    trackers return; no objects gives zero rows over ``size``."""
    ids = sorted(int(i) for i in objects)
    if not ids:
        return Masks(np.zeros((0, *size), dtype=bool), object_ids=np.zeros(0, np.int64))
    return Masks(np.stack([np.asarray(objects[i], dtype=bool) for i in ids]), object_ids=np.asarray(ids, np.int64))


def masks_by_object(masks: Masks) -> dict[int, np.ndarray]:
    """The inverse of :func:`masks_from_objects`: ``{obj_id: (H, W) bool}`` (read-only arrays)."""
    if masks.object_ids is None:
        raise PromptError("these masks have no object_ids column (expected a tracker's result)")
    return {int(o): m for o, m in zip(masks.object_ids, masks.masks)}


@runtime_checkable
class TrackerState(Protocol):
    """What every tracker's per-video state offers (:class:`~anyseg.video.classical.ClassicalState`,
    :class:`~anyseg.video.sam2.Sam2VideoState`); the rest is the engine's own.

    Attributes:
        frames: the video (read lazily; the caller's to close).
        size: ``(H, W)`` of the video: the size of every mask the tracker returns.
        closed: set by :meth:`Tracker.close`; a closed state is refused by the other calls.

    ``runtime_checkable``: ``isinstance(state, TrackerState)`` checks that these members exist.
    """

    frames: "FrameSource"
    size: tuple[int, int]
    closed: bool

    @property
    def object_ids(self) -> list[int]:
        """The ids of the objects prompted so far."""


class Tracker(Protocol):
    """A video object segmentation engine (semi-supervised: prompts in, masks for every frame out)."""

    name: str

    def start(self, frames: Any) -> TrackerState:
        """A fresh state for ``frames`` (an :class:`anyseg.video.frames.FrameSource`)."""

    def add_prompt(self, state: TrackerState, prompt: ObjectPrompt) -> Masks:
        """Add or correct ``prompt.obj_id`` on ``prompt.frame``; return that frame's masks of every object.

        The result has one row per prompted object, sorted by id, with ``object_ids`` set
        (:func:`masks_from_objects`). A prompt on a frame already prompted for that object
        replaces it (a correction); later propagation starts from the prompted frames.
        """

    def propagate(self, state: TrackerState, start: int, end: int, reverse: bool = False
                  ) -> Iterator[tuple[int, Masks]]:
        """Masks of every object for frames ``start..end`` inclusive (``start > end`` when ``reverse``).

        Yields ``(frame_index, Masks)`` one frame at a time (streaming; rows as for
        :meth:`add_prompt`); memory must not grow with the number of frames (bounded memory
        bank, frames decoded lazily).
        """

    def close(self, state: TrackerState) -> None:
        """Free the state's memory (and mark it ``closed``)."""

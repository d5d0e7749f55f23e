"""The interface video engines implement.

A :class:`Tracker` keeps no hidden global state: :meth:`Tracker.start` returns a state object
for one video, and every other call takes it. Object masks are ``(H, W)`` bool arrays at the
video's resolution, keyed by integer object id (ids are the caller's, e.g. DAVIS palette
values 1..254).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import numpy as np

from anyseg.errors import PromptError


@dataclass(frozen=True)
class ObjectPrompt:
    """A prompt for one object on one frame: clicks and/or a box, or a mask.

    Attributes:
        frame: frame index (0-based).
        obj_id: object id (positive int).
        points: ``(N, 2)`` float XY in original pixels, or ``None``.
        labels: ``(N,)`` int, 1 positive / 0 negative, or ``None``.
        box: ``(4,)`` float XYXY in original pixels, or ``None``.
        mask: ``(H, W)`` bool, or ``None`` (a mask prompt replaces clicks and box).
    """

    frame: int
    obj_id: int
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if int(self.obj_id) < 1:
            raise PromptError(f"object ids must be positive integers; got {self.obj_id}")
        if self.points is None and self.box is None and self.mask is None:
            raise PromptError(f"the prompt for object {self.obj_id} on frame {self.frame} is empty")
        if self.points is not None:
            pts = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)
            labels = np.ones(len(pts), np.int64) if self.labels is None else np.asarray(self.labels, np.int64).reshape(-1)
            if len(labels) != len(pts):
                raise PromptError(f"{len(pts)} points but {len(labels)} labels")
            object.__setattr__(self, "points", pts)
            object.__setattr__(self, "labels", labels)
        if self.box is not None:
            object.__setattr__(self, "box", np.asarray(self.box, dtype=np.float64).reshape(4))
        if self.mask is not None:
            object.__setattr__(self, "mask", np.asarray(self.mask).astype(bool))


def checked_prompt(frames: Any, prompt: Any) -> tuple[int, int]:
    """``(frame, obj_id)`` of a prompt given to a tracker, validated against ``frames`` (one-line errors)."""
    if not isinstance(prompt, ObjectPrompt):
        raise PromptError(f"expected an ObjectPrompt; got {type(prompt).__name__}")
    frame = frames.check_index(prompt.frame)
    obj = prompt.obj_id
    if isinstance(obj, bool) or not isinstance(obj, (int, np.integer)):
        raise PromptError(f"object ids must be positive integers; got {obj!r}")
    return frame, int(obj)


class Tracker(Protocol):
    """A video object segmentation engine (semi-supervised: prompts in, masks for every frame out)."""

    name: str

    def start(self, frames: Any) -> Any:
        """A fresh state for ``frames`` (an :class:`anyseg.video.frames.FrameSource`)."""

    def add_prompt(self, state: Any, prompt: ObjectPrompt) -> dict[int, np.ndarray]:
        """Add or correct ``prompt.obj_id`` on ``prompt.frame``; return that frame's masks of every object.

        A prompt on a frame already prompted for that object replaces it (a correction);
        later propagation starts from the prompted frames.
        """

    def propagate(self, state: Any, start: int, end: int, reverse: bool = False) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        """Masks of every object for frames ``start..end`` inclusive (``start > end`` when ``reverse``).

        Yields ``(frame_index, {obj_id: (H, W) bool})`` one frame at a time (streaming); memory
        must not grow with the number of frames (bounded memory bank, frames decoded lazily).
        """

    def close(self, state: Any) -> None:
        """Free the state's memory."""

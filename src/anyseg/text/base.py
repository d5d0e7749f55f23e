"""What the text backends return, and the interfaces they implement."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from anyseg.errors import InputError
from anyseg.text.vocab import ClassName
from anyseg.types import Masks


def _shape(a: Any) -> str:
    return "x".join(str(v) for v in np.shape(a)) or "scalar"


@dataclass(frozen=True, eq=False)
class Detections:
    """Boxes found from text, in original image pixels: columnar and frozen, like :class:`~anyseg.types.Masks`.

    Every column has one row per box; the arrays are read-only and a wrong column is a one-line
    :class:`~anyseg.errors.InputError` naming the expected and the received shape. Selection
    (:meth:`select`) returns new ``Detections``.

    Attributes:
        boxes: ``(N, 4)`` float32 XYXY in the original image's pixels (clipped to the image),
            finite; one box may be given as ``(4,)`` and no box as any empty array.
        scores: ``(N,)`` float32 detection confidence in ``[0, 1]``.
        labels: ``(N,)`` int64 index into the queried classes (or phrases).
        phrases: ``N`` texts, the matched text for each box (the synonym or phrase that won);
            empty gives ``N`` empty strings. A list (a copy of the one given).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    phrases: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        boxes = np.asarray(self.boxes, dtype=np.float32)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        elif boxes.shape == (4,):
            boxes = boxes[None]
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise InputError(f"Detections.boxes must have shape (N, 4); got {_shape(self.boxes)}")
        if not np.isfinite(boxes).all():
            raise InputError("Detections.boxes must be finite numbers")
        n = len(boxes)

        def column(name: str, value: Any, dtype: Any) -> np.ndarray:
            arr = np.asarray(value, dtype=dtype)
            if arr.ndim == 0 and n == 1:
                arr = arr[None]
            if arr.shape != (n,):
                raise InputError(f"Detections.{name} must have shape ({n},) to match {n} boxes; got {_shape(arr)}")
            return arr

        scores = column("scores", self.scores, np.float32)
        if n and not (np.isfinite(scores).all() and scores.min() >= 0 and scores.max() <= 1):
            raise InputError(f"Detections.scores must be confidences in [0, 1]; got {scores.min():g} to {scores.max():g}")
        labels = column("labels", self.labels, np.int64)
        phrases = [str(p) for p in self.phrases] if self.phrases is not None else []
        if phrases and len(phrases) != n:
            raise InputError(f"Detections.phrases must have {n} entries to match {n} boxes; got {len(phrases)}")
        for arr in (boxes, scores, labels):
            arr.flags.writeable = False
        set_(self, "boxes", boxes)
        set_(self, "scores", scores)
        set_(self, "labels", labels)
        set_(self, "phrases", phrases or [""] * n)

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, index: np.ndarray | Sequence[int]) -> "Detections":
        """The rows at ``index`` (integer positions, in that order)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        return Detections(self.boxes[index], self.scores[index], self.labels[index], [self.phrases[i] for i in index])

    def __repr__(self) -> str:
        return f"Detections(n={len(self)}, phrases={sorted(set(self.phrases))})"


class TextDetector(Protocol):
    """Open-vocabulary box detector (Grounding DINO, OWLv2)."""

    name: str

    def detect(self, image: np.ndarray, classes: Sequence[ClassName], box_threshold: float | None = None,
               text_threshold: float | None = None) -> Detections:
        """Boxes for every class (any synonym), before NMS and top-k (the caller applies those)."""


class TextSegmenter(Protocol):
    """A model that goes from words to instance masks directly (SAM 3)."""

    name: str

    def segment(self, image: np.ndarray, classes: Sequence[ClassName], threshold: float | None = None,
                mask_threshold: float = 0.5) -> Masks:
        """Instance masks: ``scores``, ``labels`` (class label strings), ``data["class_id"]`` (int64 index
        into ``classes``) and ``data["phrase"]`` (the synonym that matched)."""

"""What the text backends return, and the interfaces they implement."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from anyseg.text.vocab import ClassName
from anyseg.types import Masks


@dataclass
class Detections:
    """Boxes found from text, in original image pixels.

    Attributes:
        boxes: ``(N, 4)`` float32 XYXY in the original image's pixels (clipped to the image).
        scores: ``(N,)`` float32 detection confidence in ``[0, 1]``.
        labels: ``(N,)`` int64 index into the queried classes (or phrases).
        phrases: ``(N,)`` the matched text for each box (the synonym or phrase that won).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    phrases: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        if len(self.scores) != n or len(self.labels) != n or (self.phrases and len(self.phrases) != n):
            raise ValueError("Detections columns differ in length")
        if not self.phrases:
            self.phrases = [""] * n

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, index: np.ndarray | Sequence[int]) -> "Detections":
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        return Detections(self.boxes[index], self.scores[index], self.labels[index], [self.phrases[i] for i in index])


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

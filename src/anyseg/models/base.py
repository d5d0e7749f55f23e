"""The interfaces promptable model adapters implement, and what they declare they can do.

No hidden per-image state: :meth:`Predictor.embed` returns an :class:`~anyseg.types.Embedding`
and :meth:`Predictor.predict` takes it back, so one model serves many images and callers (the
CLI, the HTTP service, the embedding cache) decide what to keep.

Capabilities are declared twice, once per level: a family record says what its models can do
(:data:`anyseg.models.families.CAPABILITIES`, read before anything is loaded), and these
protocols say what a loaded object offers: :class:`Promptable` (capability ``promptable``),
:class:`GridDecoder` (``grid``: what segment-everything's point-grid generator calls) and,
for video, :class:`anyseg.video.base.Tracker` (``video``). Both are ``runtime_checkable``:
``isinstance(predictor, GridDecoder)`` checks the methods, the record the meaning.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol, runtime_checkable

import numpy as np

from anyseg.errors import InputError
from anyseg.types import Embedding, Masks, Prompt


class Predictor(ABC):
    """A promptable segmenter: embed an image once, then predict many prompts against it."""

    #: registry name, e.g. ``"sam-vit-base"`` or ``"classical"``
    name: str = ""
    #: family, e.g. ``"sam"``, ``"sam2"``, ``"classical"``
    family: str = ""

    @property
    def model_id(self) -> str:
        """Identity of the loaded weights; the embedding cache keys on it."""
        return self.name

    @abstractmethod
    def embed(self, image: np.ndarray) -> Embedding:
        """Encode an ``(H, W, 3)`` uint8 RGB image."""

    @abstractmethod
    def predict(self, embedding: Embedding, prompt: Prompt, multimask: bool = False) -> Masks:
        """Masks for one prompt: 3 candidates sorted by score when ``multimask``, else 1.

        The returned ``Masks`` carries ``logits`` so that the best candidate can be fed back
        as ``Prompt(mask_logits=...)`` together with new clicks (iterative refinement).
        """

    def predict_batch(self, embedding: Embedding, prompts: list[Prompt], multimask: bool = False) -> list[Masks]:
        """Several prompts against one embedding. Adapters override this to batch the decoder."""
        return [self.predict(embedding, p, multimask=multimask) for p in prompts]

    def segment(self, image: np.ndarray, prompt: Prompt, multimask: bool = False) -> Masks:
        """Convenience: embed then predict (use :meth:`embed` once for many prompts)."""
        return self.predict(self.embed(image), prompt, multimask=multimask)


@runtime_checkable
class Promptable(Protocol):
    """What promptable segmentation needs of a model (every :class:`Predictor` is one)."""

    name: str
    family: str

    @property
    def model_id(self) -> str: ...

    def embed(self, image: np.ndarray) -> Embedding: ...

    def predict(self, embedding: Embedding, prompt: Prompt, multimask: bool = False) -> Masks: ...

    def predict_batch(self, embedding: Embedding, prompts: list[Prompt], multimask: bool = False) -> list[Masks]: ...


@runtime_checkable
class GridDecoder(Protocol):
    """What segment-everything's point-grid generator calls (the capability ``grid``).

    :func:`anyseg.tasks.everything.generate` embeds each crop (:meth:`embed`), decodes its
    points in batches with :meth:`decode_points` and upscales the survivors with
    :meth:`upscale_logits` in the frame that :meth:`geometry` describes
    (:class:`anyseg.models.sam.SamFamilyPredictor` and its runtimes implement it). For a
    registered family the record's ``grid`` capability decides; the protocol is the check for
    objects whose family the registry does not know.
    """

    def embed(self, image: np.ndarray) -> Embedding: ...

    def geometry(self, original_size: tuple[int, int]) -> Any: ...

    def decode_points(self, embedding: Embedding, points_xy: np.ndarray, multimask: bool = True,
                      mask_inputs: Any | None = None) -> tuple[Any, Any]: ...

    def upscale_logits(self, low_res_logits: Any, geo: Any) -> Any: ...


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an RGB image array: ``(H, W, 3)`` uint8, returned C-contiguous."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"image must have shape (H, W, 3); got {'x'.join(map(str, image.shape))}")
    if image.shape[2] == 4:
        image = image[..., :3]
    if image.dtype != np.uint8:
        if image.dtype.kind == "f" and image.size and float(np.nanmax(image)) <= 1.0:
            image = image * 255.0
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def check_embedding(predictor: Predictor, embedding: Embedding) -> None:
    if embedding.model_id != predictor.model_id:
        raise InputError(
            f"the embedding was made by {embedding.model_id!r}, not by {predictor.model_id!r}; embed the image with this model"
        )

"""Reference examples and the interface every few-shot method implements.

A :class:`Reference` is one annotated example: an RGB image and a boolean mask of "this part"
of it, validated when it is made (one-line errors). A :class:`FewShotMethod` turns references
into a *fitted* state once (:meth:`FewShotMethod.fit`: the reference features, computed once
and kept) and segments new images against it (:meth:`FewShotMethod.predict`), one image at a
time and with no memory between images (tracking is :mod:`anyseg.video`'s job).

Methods are named after their papers and registered by import path in :data:`METHODS`
(imported on first use, as the model families' loaders are): ``matcher``, ``persam``,
``persam-f``, ``seggpt``, ``sam3`` and ``classical`` (no weights, the measured baseline).
:class:`anyseg.fewshot.Segmenter` is the user-facing wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from anyseg.errors import InputError, ModelError
from anyseg.models.base import check_image
from anyseg.types import Masks

__all__ = ["Reference", "FewShotMethod", "METHODS", "INSTANCES", "register_method", "method_factory",
           "check_references", "check_instances", "empty_masks"]

#: how many instances a prediction returns: the one best-matching instance, or every matching one
INSTANCES = ("one", "all")


@dataclass(frozen=True, eq=False)
class Reference:
    """One annotated example: ``image`` ``(H, W, 3)`` uint8 RGB and ``mask`` ``(H, W)`` bool.

    ``name`` is how errors and records name it (the file name, or ``reference N``). The mask
    must mark a part of the image: an empty mask, one of another size, or one that covers the
    whole image is a one-line :class:`~anyseg.errors.InputError`.
    """

    image: np.ndarray
    mask: np.ndarray
    name: str = "reference"

    def __post_init__(self) -> None:
        image = check_image(self.image)
        mask = np.asarray(self.mask)
        if mask.ndim == 3 and mask.shape[2] in (1, 3, 4):
            mask = mask[..., 0]
        if mask.ndim != 2:
            raise InputError(f"reference mask {self.name} must have shape (H, W); got {'x'.join(map(str, mask.shape))}")
        mask = mask > 0 if mask.dtype != bool else mask
        if mask.shape != image.shape[:2]:
            raise InputError(f"reference mask {self.name} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                             f"{image.shape[1]}x{image.shape[0]}")
        if not mask.any():
            raise InputError(f"reference mask {self.name} is empty: it must mark what to find")
        if mask.all():
            raise InputError(f"reference mask {self.name} covers the whole image: it must mark a part of it")
        image.setflags(write=False)
        mask = np.ascontiguousarray(mask)
        mask.setflags(write=False)
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "mask", mask)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.image.shape[:2]


def check_references(refs: Any) -> list[Reference]:
    """``refs`` as a non-empty list of :class:`Reference` (one-line errors otherwise)."""
    if isinstance(refs, Reference):
        refs = [refs]
    try:
        refs = list(refs)
    except TypeError:
        raise InputError(f"expected a list of Reference; got {type(refs).__name__}") from None
    if not refs:
        raise InputError("no reference examples: give at least one image with its mask")
    for i, r in enumerate(refs):
        if not isinstance(r, Reference):
            raise InputError(f"reference {i + 1} is a {type(r).__name__}, not a Reference(image, mask)")
    return refs


def check_instances(instances: str) -> str:
    if instances not in INSTANCES:
        raise InputError(f"instances must be one of {', '.join(INSTANCES)}; got {instances!r}")
    return instances


def empty_masks(size: tuple[int, int]) -> Masks:
    """No instance found: zero masks over an ``(H, W)`` image."""
    return Masks(masks=np.zeros((0, *size), bool), scores=np.zeros(0, np.float32))


@runtime_checkable
class FewShotMethod(Protocol):
    """A few-shot (in-context) segmentation method.

    ``fit`` computes what the references contribute (features, prototypes, prompts) once;
    ``predict`` segments one image against that fitted state. ``predict`` returns
    :class:`~anyseg.types.Masks` at the image's size: with ``instances="one"`` at most one mask
    (none when nothing matches), with ``"all"`` every matching instance, best first; scores in
    ``[0, 1]`` that mean something (a method with no evidence scores low).
    """

    name: str

    def fit(self, refs: Sequence[Reference]) -> Any:
        """The fitted state of ``refs`` (already validated by :func:`check_references`)."""

    def predict(self, fitted: Any, image: np.ndarray, instances: str = "one") -> Masks:
        """Masks of what the references show, in ``image`` ``(H, W, 3)`` uint8."""


#: method name -> ``"package.module:attr"`` of its factory (or the factory itself), called as
#: ``factory(model=..., features=..., device=..., allow_download=..., **options)``
METHODS: dict[str, str | Callable[..., FewShotMethod]] = {
    "matcher": "anyseg.fewshot.matcher:MatcherMethod.from_options",
    "persam": "anyseg.fewshot.persam:PerSamMethod.from_options",
    "persam-f": "anyseg.fewshot.persam:PerSamFMethod.from_options",
    "seggpt": "anyseg.fewshot.seggpt:SegGptMethod.from_options",
    "sam3": "anyseg.fewshot.sam3:Sam3ExemplarMethod.from_options",
    "classical": "anyseg.fewshot.classical:ClassicalMethod.from_options",
}


def register_method(name: str, factory: str | Callable[..., FewShotMethod], replace: bool = False) -> None:
    """Add a method (a factory or its import path) under ``name``."""
    if name in METHODS and not replace:
        raise ModelError(f"a few-shot method named {name!r} is already registered")
    METHODS[name] = factory


def method_factory(name: str) -> Callable[..., FewShotMethod]:
    """The factory of method ``name`` (imported now); unknown names are one line naming the known ones."""
    target = METHODS.get(name)
    if target is None:
        raise InputError(f"unknown few-shot method {name!r}; expected one of {', '.join(METHODS)} (or auto)")
    if not isinstance(target, str):
        return target
    from anyseg.models.families import import_path

    return import_path(target, f"the few-shot method {name!r}")

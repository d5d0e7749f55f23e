"""The interface every discovery method implements, its registry and the shared checks.

A :class:`DiscoveryMethod` segments one image without any label or prompt. It has a
:attr:`~DiscoveryMethod.kind`:

``objects``
    salient objects, best first (TokenCut: one; MaskCut: up to ``objects``). The masks need
    not cover the image; every one is a connected region the method believes is an object.
``partition``
    a full partition of the image into segments (deep spectral methods, DiffSeg, the classical
    normalised cut): the masks are disjoint and cover every pixel; ``Masks.labels`` holds each
    segment's cluster id (``int``), so that segments of several images can be clustered
    across a folder (semantic clustering) and matched to classes at evaluation.

``discover(image, objects)`` returns :class:`~anyseg.types.Masks` at the image's size with
scores in ``[0, 1]`` computed from the method's own evidence (a method that found no
structure scores low: it is never confidently wrong), and ``Masks.data["feature"]`` may hold
one ``(C,)`` descriptor per mask (the mean feature under it) for semantic clustering.

Methods are registered by import path in :data:`METHODS` (imported on first use, as the model
families' loaders are) and built by ``factory(model=..., device=..., allow_download=...,
**options)``; :func:`anyseg.discover.discover` is the user-facing call.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from anyseg.errors import InputError, ModelError
from anyseg.types import Masks

__all__ = ["DiscoveryMethod", "METHODS", "KINDS", "register_method", "method_factory", "check_objects",
           "check_grid", "empty_masks", "MAX_OBJECTS"]

KINDS = ("objects", "partition")
#: ``--objects`` at most (MaskCut's iterations, partition segments)
MAX_OBJECTS = 64


@runtime_checkable
class DiscoveryMethod(Protocol):
    """An unsupervised segmentation method (module docstring)."""

    name: str
    kind: str

    def discover(self, image: np.ndarray, objects: int | None = None) -> Masks:
        """Masks of ``image`` ``(H, W, 3)`` uint8 (``objects``: how many; ``None``: the method's default)."""


#: method name -> ``"package.module:attr"`` of its factory (or the factory itself)
METHODS: dict[str, str | Callable[..., DiscoveryMethod]] = {
    "tokencut": "anyseg.discover.tokencut:TokenCut.from_options",
    "maskcut": "anyseg.discover.tokencut:MaskCut.from_options",
    "spectral": "anyseg.discover.spectral:DeepSpectral.from_options",
    "diffseg": "anyseg.discover.diffseg:DiffSeg.from_options",
    "classical": "anyseg.discover.classical:ClassicalNCut.from_options",
}


def register_method(name: str, factory: str | Callable[..., DiscoveryMethod], replace: bool = False) -> None:
    """Add a method (a factory or its import path) under ``name``."""
    if name in METHODS and not replace:
        raise ModelError(f"a discovery method named {name!r} is already registered")
    METHODS[name] = factory


def method_factory(name: str) -> Callable[..., DiscoveryMethod]:
    """The factory of method ``name`` (imported now); unknown names are one line naming the known ones."""
    target = METHODS.get(name)
    if target is None:
        raise InputError(f"unknown discovery method {name!r}; expected one of {', '.join(METHODS)}")
    if not isinstance(target, str):
        return target
    from anyseg.models.families import import_path

    return import_path(target, f"the discovery method {name!r}")


def check_objects(objects: Any, default: int) -> int:
    """``objects`` as a whole number in ``1..MAX_OBJECTS`` (``None``: ``default``); one-line errors."""
    if objects is None:
        return default
    if isinstance(objects, bool) or not isinstance(objects, (int, np.integer)):
        raise InputError(f"--objects must be a whole number; got {objects!r}")
    if not 1 <= int(objects) <= MAX_OBJECTS:
        raise InputError(f"--objects must be in 1..{MAX_OBJECTS}; got {int(objects)}")
    return int(objects)


def check_grid(image_size: tuple[int, int], patch_size: int, min_cells: int = 2, what: str = "the patch grid") -> None:
    """An image smaller than ``min_cells`` patches on a side is a one-line :class:`InputError`."""
    h, w = image_size
    need = min_cells * patch_size
    if h < need or w < need:
        raise InputError(f"the image is {w}x{h}: too small for {what} ({patch_size}-pixel patches need at "
                         f"least {need}x{need} pixels)")


def empty_masks(size: tuple[int, int]) -> Masks:
    """Nothing found: zero masks over an ``(H, W)`` image."""
    return Masks(masks=np.zeros((0, *size), bool), scores=np.zeros(0, np.float32))

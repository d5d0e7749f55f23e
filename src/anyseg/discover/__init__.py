"""Object discovery and unsupervised segmentation: no labels, no prompts.

>>> from anyseg.discover import discover, Discoverer
>>> masks = discover(image, method="tokencut")                 # the salient object, with a score
>>> objs = discover(image, method="maskcut", objects=3)        # up to three objects
>>> parts = discover(image, method="spectral", objects=8)      # a partition into segments (labels)
>>> d = Discoverer("tokencut", refine="bilateral", sam="sam-vit-base")  # models loaded once
>>> masks = d.discover(image)

Methods (:data:`~anyseg.discover.base.METHODS`): ``tokencut`` and ``maskcut`` (normalised cuts on
DINO keys), ``spectral`` (deep spectral methods), ``diffseg`` (Stable Diffusion self-attention),
``classical`` (no weights: a normalised cut on superpixels, the measured baseline). ``auto``
picks ``tokencut`` when a DINO-family feature model is present locally, else ``classical`` with
a notice. ``refine`` (:data:`REFINERS`) snaps masks to image edges; ``sam`` snaps each discovered
object to a SAM mask (:func:`anyseg.discover.snap.snap_to_sam`). ``docs/DISCOVER.md`` says what
each method follows from its paper and where it differs.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from anyseg.discover.base import KINDS, METHODS, DiscoveryMethod, method_factory, register_method
from anyseg.errors import InputError
from anyseg.types import Masks

__all__ = ["discover", "Discoverer", "auto_method", "METHODS", "KINDS", "REFINERS", "DiscoveryMethod",
           "register_method"]

#: refinement of discovered masks: none, a dense CRF, or the fast bilateral solver
REFINERS = ("none", "crf", "bilateral")

_AUTO_NOTICE = ("no DINO feature model found locally; discovery with the classical method (a normalised cut on "
                "superpixels: a baseline, see `anyseg models list`)")


def auto_method(quiet: bool = False) -> str:
    """``tokencut`` when a feature model (DINO, DINOv2, DINOv3) is present locally, else ``classical``
    (with a notice on stderr unless ``quiet``)."""
    from anyseg.models.families import FEATURES
    from anyseg.models.resolver import resolve

    try:
        resolve("auto", FEATURES, quiet=True)
    except Exception:  # nothing present locally (resolve says so in one line)
        if not quiet:
            print(f"anyseg: notice: {_AUTO_NOTICE}", file=sys.stderr)
        return "classical"
    return "tokencut"


def check_refine(refine: Any) -> str:
    refine = "none" if refine is None else refine
    if refine not in REFINERS:
        raise InputError(f"refine must be one of {', '.join(REFINERS)}; got {refine!r}")
    return refine


class Discoverer:
    """A discovery method with its models loaded once; :meth:`discover` per image.

    Args:
        method: ``auto`` or one of :data:`METHODS`.
        model: the method's model (a registry name or a local folder; ``None``: its default).
        refine: one of :data:`REFINERS`, applied to every result.
        sam: a promptable model (name, folder or loaded predictor) that each discovered object is
            snapped to (methods of kind ``objects`` only).
        device: torch device; ``options`` go to the method's factory.
    """

    def __init__(self, method: str = "auto", model: Any = None, refine: str | None = "none", sam: Any = None,
                 device: str | None = None, allow_download: bool = True, **options: Any) -> None:
        if not isinstance(method, str):
            raise InputError(f"method must be a name; got {type(method).__name__}")
        self.refine = check_refine(refine)
        if method == "auto":
            method = auto_method()
        factory = method_factory(method)
        self.method: DiscoveryMethod = factory(model=model, device=device, allow_download=allow_download, **options)
        self.name = method
        self.kind = self.method.kind
        if self.kind not in KINDS:
            raise InputError(f"discovery method {method!r} has kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        self.sam = None
        if sam is not None:
            if self.kind != "objects":
                raise InputError(f"--sam snaps discovered objects to SAM masks; {method} returns a partition into "
                                 "segments (use tokencut, maskcut or classical)")
            from anyseg.discover.snap import load_sam

            self.sam = load_sam(sam, device=device, allow_download=allow_download)

    @property
    def model_id(self) -> str:
        """What computed the results: the method, its model, the refinement and the SAM model."""
        inner = getattr(self.method, "model_id", None) or getattr(self.method, "name", self.name)
        parts = [self.name if inner == self.name else f"{self.name}:{inner}"]
        if self.refine != "none":
            parts.append(f"refine={self.refine}")
        if self.sam is not None:
            parts.append(f"sam={self.sam.model_id}")
        return "+".join(parts)

    def discover(self, image: np.ndarray, objects: int | None = None) -> Masks:
        """The masks of ``image`` ``(H, W, 3)`` uint8 (``objects``: how many; ``None``: the method's default)."""
        from anyseg.discover.base import check_objects
        from anyseg.models.base import check_image

        image = check_image(image)
        if objects is not None:
            check_objects(objects, 1)
        masks = self.method.discover(image, objects=objects)
        if self.refine != "none" and len(masks):
            from anyseg.discover.refine import refine

            masks = refine(image, masks, self.refine)
        if self.sam is not None and len(masks):
            from anyseg.discover.snap import snap_to_sam

            masks = snap_to_sam(self.sam, image, masks)
        return masks

    def __repr__(self) -> str:
        return f"Discoverer({self.name!r}, kind={self.kind!r}, refine={self.refine!r})"


def discover(image: np.ndarray, method: str = "auto", model: Any = None, objects: int | None = None,
             refine: str | None = "none", sam: Any = None, device: str | None = None, allow_download: bool = True,
             **options: Any) -> Masks:
    """Discover objects or segments in one image (a :class:`Discoverer` built for one call)."""
    return Discoverer(method, model=model, refine=refine, sam=sam, device=device, allow_download=allow_download,
                      **options).discover(image, objects=objects)

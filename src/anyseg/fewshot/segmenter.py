"""``anyseg.fewshot.Segmenter``: fit reference examples once, then segment new images.

>>> from anyseg.fewshot import Reference, Segmenter
>>> seg = Segmenter(method="classical").fit([Reference(ref_image, ref_mask)])
>>> masks = seg.predict(image)                  # Masks at the image's size, with scores
>>> every = seg.predict(image, instances="all") # every matching instance, best first

``method="auto"`` picks the best method whose models are present locally: ``matcher`` (a
SAM-family model and DINOv2 features), else ``persam`` (a SAM-family model), else
``classical`` with a notice on stderr, as the other ``auto`` choices do.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np

from anyseg.errors import InputError
from anyseg.fewshot.base import FewShotMethod, Reference, check_instances, check_references, method_factory
from anyseg.models.base import check_image
from anyseg.types import Masks

__all__ = ["Segmenter", "auto_method"]

_AUTO_NOTICE = ("no SAM-family weights found locally; few-shot segmentation with the classical engine "
                "(colour back-projection and feature matching, then GrabCut: a baseline, see `anyseg models list`)")


def auto_method(quiet: bool = False) -> str:
    """``matcher`` when a SAM-family model and a DINO feature model are present, ``persam`` when a
    SAM-family model is, else ``classical`` (with a notice unless ``quiet``)."""
    from anyseg.models.families import FEATURES, PROMPTABLE
    from anyseg.models.resolver import resolve

    sam = resolve("auto", PROMPTABLE, quiet=True)
    if sam.family_record.baseline:
        if not quiet:
            print(f"anyseg: notice: {_AUTO_NOTICE}", file=sys.stderr)
        return "classical"
    try:
        resolve("auto", FEATURES, quiet=True)
    except Exception:  # no feature model present: PerSAM uses SAM's own features
        return "persam"
    return "matcher"


class Segmenter:
    """A few-shot segmenter: ``fit(refs)`` once (the reference features are computed and kept),
    then ``predict(image)`` for as many images as needed.

    Args:
        method: ``auto`` or one of :data:`anyseg.fewshot.base.METHODS`.
        model: the promptable (SAM-family) model of the methods that prompt one, or the
            in-context model of ``seggpt`` / ``sam3`` (a registry name or a local folder;
            default ``auto``).
        features: the patch-feature model of ``matcher`` (default ``dinov2-small``).
        instances: ``one`` (the best-matching instance) or ``all`` (every matching instance).
        device: torch device; ``options`` go to the method.
    """

    def __init__(self, method: str = "auto", model: str | None = None, features: str | None = None,
                 instances: str = "one", device: str | None = None, allow_download: bool = True,
                 quiet: bool = False, **options: Any) -> None:
        self.instances = check_instances(instances)
        self.method_name = auto_method(quiet) if method == "auto" else method
        factory = method_factory(self.method_name)
        self.method: FewShotMethod = factory(model=model, features=features, device=device,
                                             allow_download=allow_download, **options)
        self.references: list[Reference] = []
        self.fits = 0  # how many times reference features were computed
        self._fitted: Any = None

    def fit(self, refs: Reference | Sequence[Reference]) -> "Segmenter":
        """Compute and keep what ``refs`` contribute; returns ``self``."""
        refs = check_references(refs)
        self._fitted = self.method.fit(refs)
        self.references = refs
        self.fits += 1
        return self

    def predict(self, image: np.ndarray, instances: str | None = None) -> Masks:
        """Masks of what the references show in ``image`` (``(H, W, 3)`` uint8), at its size."""
        if self._fitted is None:
            raise InputError("this Segmenter has no references yet: call fit([Reference(image, mask), ...]) first")
        image = check_image(image)
        masks = self.method.predict(self._fitted, image, check_instances(instances or self.instances))
        if not isinstance(masks, Masks) or masks.masks.shape[1:] != image.shape[:2]:
            raise InputError(f"few-shot method {self.method_name!r} returned masks of the wrong size")  # a bug, said plainly
        return masks

    def __repr__(self) -> str:
        return f"Segmenter(method={self.method_name!r}, references={len(self.references)}, instances={self.instances!r})"

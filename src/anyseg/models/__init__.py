"""Model loading by registry name: ``load_model("sam2.1-hiera-tiny")``, ``load_model("auto")``."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from anyseg.errors import ModelError
from anyseg.models.base import Predictor
from anyseg.models.registry import REGISTRY, SAM_FAMILIES, ModelSpec, get_spec, sam_family_by_quality

__all__ = ["Predictor", "load_model", "resolve_auto", "model_status", "ModelStatus", "REGISTRY", "get_spec"]


@dataclass(frozen=True)
class ModelStatus:
    spec: ModelSpec
    present: bool
    source: str  # where the weights are: "path", "ANYSEG_MODELS", "hf-cache", "builtin" or "" (absent)
    location: str


def model_status(name: str) -> ModelStatus:
    """Whether ``name``'s weights are present locally (no network access)."""
    from anyseg.models import weights

    spec = get_spec(name)
    if not spec.needs_weights:
        return ModelStatus(spec, True, "builtin", "")
    try:
        local = weights.resolve_local(spec)
    except ModelError:
        local = None  # e.g. a broken folder in ANYSEG_MODELS: reported as absent here
    if local is None:
        return ModelStatus(spec, False, "", "")
    return ModelStatus(spec, True, local[1], str(local[0]))


def _promptable(status: ModelStatus) -> bool:
    """False for a SAM 3 folder that holds only the image (text) model: it has no point/box tracker."""
    if status.spec.family != "sam3_tracker":
        return True
    import json
    from pathlib import Path

    try:
        return json.loads((Path(status.location) / "config.json").read_text()).get("model_type") != "sam3"
    except (OSError, ValueError):
        return True


def resolve_auto(quiet: bool = False) -> str:
    """The best SAM-family model present locally, else ``classical`` (with a notice on stderr)."""
    for spec in sam_family_by_quality():
        status = model_status(spec.name)
        if status.present and _promptable(status):
            return spec.name
    if not quiet:
        print(
            "anyseg: notice: no SAM-family weights found locally; using the classical engine "
            "(see `anyseg models list` / `anyseg models pull NAME`)",
            file=sys.stderr,
        )
    return "classical"


def load_model(name: str = "auto", weights: str | os.PathLike | None = None, device: str | None = None,
               allow_download: bool = True, quiet: bool = False) -> Predictor:
    """Load a promptable model by registry name.

    ``auto`` picks the best SAM-family model present locally, or ``classical`` when none is.
    A model named explicitly that is not available is an error, never a silent fallback.
    With ``weights`` (a transformers folder), that folder is used for the named model.
    An unknown or unavailable ``device`` is a one-line :class:`~anyseg.errors.InputError`
    (:func:`anyseg.models.sam.check_device`; the classical engine runs on the CPU whatever it says).
    """
    if device is not None:
        from anyseg.models.sam import check_device

        device = check_device(device)
    if name == "auto":
        if weights is not None:
            raise ModelError("--weights needs an explicit --model NAME (which architecture the weights are)")
        name = resolve_auto(quiet=quiet)
    spec = get_spec(name)
    if spec.family not in SAM_FAMILIES and spec.family != "classical":
        raise ModelError(
            f"{name} is not a promptable segmenter (it is a {spec.family} model); use it with "
            "`anyseg text` / `anyseg semantic` / `anyseg panoptic --model`, or pick a SAM-family model"
        )
    if spec.family == "classical":
        if weights is not None:
            raise ModelError("the classical engine takes no weights")
        from anyseg.models.classical import ClassicalPredictor

        return ClassicalPredictor()
    from anyseg.models import weights as weights_mod
    from anyseg.models.sam import SamFamilyPredictor

    folder, _source = weights_mod.resolve(spec, weights, allow_download=allow_download)
    return SamFamilyPredictor.from_folder(spec, folder, device=device)

"""Model loading by registry name or local folder: ``load_model("sam2.1-hiera-tiny")``, ``load_model("./my-sam")``.

Families (:mod:`anyseg.models.families`) say what each model can do and which adapter loads
it; :func:`resolve` turns a ``--model`` value into a spec for a capability; the loaders build
the adapter the record names.
"""

from __future__ import annotations

import os

from anyseg.models.base import GridDecoder, Predictor, Promptable
from anyseg.models.families import FAMILY_RECORDS, PROMPTABLE, Family, get_family, register_family
from anyseg.models.registry import REGISTRY, ModelSpec, get_spec, models_with, register_model
from anyseg.models.resolver import ModelStatus, model_status, resolve, resolve_auto, resolve_folder

__all__ = ["Predictor", "Promptable", "GridDecoder", "load_model", "resolve", "resolve_auto", "resolve_folder",
           "model_status", "ModelStatus", "REGISTRY", "get_spec", "models_with", "register_model", "ModelSpec",
           "Family", "FAMILY_RECORDS", "get_family", "register_family"]


def load_model(name: str | os.PathLike = "auto", weights: str | os.PathLike | None = None, device: str | None = None,
               allow_download: bool = True, quiet: bool = False) -> Predictor:
    """Load a promptable model by registry name or local model folder.

    ``auto`` picks the best promptable model present locally, or ``classical`` when none is.
    A model named explicitly that is not available is an error, never a silent fallback.
    With ``weights`` (a transformers folder), that folder is used for the named model; a
    folder given as ``name`` (``config.json`` + ``*.safetensors``) is read as its family from
    ``config.json``'s ``model_type`` (:func:`resolve`). The predictor is built by the family
    record's ``predictor`` loader.
    An unknown or unavailable ``device`` is a one-line :class:`~anyseg.errors.InputError`
    (:func:`anyseg.models.device.check_device`; the classical engine runs on the CPU whatever it says).
    """
    if device is not None:
        from anyseg.models.device import check_device

        device = check_device(device)
    spec, folder = resolve_folder(name, PROMPTABLE, weights=weights, allow_download=allow_download, quiet=quiet)
    return spec.family_record.build("predictor", spec, folder, device)

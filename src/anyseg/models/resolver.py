"""Which model a ``--model`` value means: ``resolve(name_or_path, capability)``.

One resolver serves every entry point (``load_model``, ``load_tracker``, the text backends, the
CLI, the service, eval):

* ``auto``: the first model of :func:`~anyseg.models.registry.models_with` (the capability's
  order, derived from the family records) whose weights are present locally and whose
  checkpoint can serve the capability (:meth:`Family.serves_type`); else the baseline family
  (``classical``) where it has the capability, with a notice on stderr; else one line saying
  which weights would do.
* a registry name: its spec, if its family has the capability (else one line naming the models
  that have it).
* a path to a local model folder (the transformers convention: ``config.json`` +
  ``*.safetensors``): a spec of the family whose records claim the folder's ``model_type``,
  with :attr:`ModelSpec.path` set. So ``--model ./my-finetuned-sam`` works wherever ``--model
  sam-vit-base --weights ./my-finetuned-sam`` does.

A registered name always wins over a folder of the same name in the working directory; a value
is read as a path when it is not registered and has a path separator, starts with ``.`` or
``~``, or is an existing directory.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from anyseg.errors import ModelError
from anyseg.models import weights as weights_mod
from anyseg.models.families import (
    CAPABILITIES, CONCEPTS, DETECT, DIFFUSION, EVERYTHING, FAMILY_RECORDS, FEATURES, FEWSHOT, GRID, INPAINT, LABELS,
    PROMPTABLE, SEMANTIC, TEXT, VIDEO, families_with, family_for_model_type, known_model_types,
)
from anyseg.models.registry import REGISTRY, ModelSpec, get_spec, models_with

__all__ = ["resolve", "resolve_auto", "resolve_folder", "spec_for_folder", "model_status", "ModelStatus",
           "is_path_like", "WORDS"]


@dataclass(frozen=True)
class Words:
    """How messages speak of a capability: ``what`` a model with it is, what others ``cannot`` do,
    the ``notice`` printed when ``auto`` falls back to a baseline, and the ``example`` to pull."""

    what: str
    cannot: str
    notice: str = ""
    example: str = ""


_SAM_NOTICE = ("no SAM-family weights found locally; using the classical engine "
               "(see `anyseg models list` / `anyseg models pull NAME`)")
_TEXT = Words("text model", "read text", example="grounding-dino-tiny")
#: per capability (not per family): the words of its messages
WORDS: dict[str, Words] = {
    PROMPTABLE: Words("promptable segmenter", "take point, box or mask prompts", _SAM_NOTICE),
    EVERYTHING: Words("segment-everything model", "segment everything", _SAM_NOTICE),
    GRID: Words("point-grid decoder", "decode point grids", _SAM_NOTICE),
    VIDEO: Words("video tracker", "track video",
                 "no SAM 2-family weights found locally; tracking with the classical optical-flow engine "
                 "(see `anyseg models list`)"),
    TEXT: _TEXT,
    SEMANTIC: _TEXT,
    CONCEPTS: Words("SAM 3 model", "take concept prompts", example="sam3"),
    DETECT: Words("text detector", "detect boxes from words", example="grounding-dino-tiny"),
    LABELS: Words("CLIP model", "label regions with words", example="clip-vit-b16"),
    FEATURES: Words("feature model (DINO / DINOv2 / DINOv3)", "compute patch features", example="dinov2-small"),
    FEWSHOT: Words("in-context model (SegGPT, SAM 3)", "segment from reference examples", example="seggpt-vit-large"),
    DIFFUSION: Words("diffusion model (Stable Diffusion)", "run a diffusion UNet", example="sd-v1-4"),
    INPAINT: Words("Stable Diffusion inpainting model", "fill masked regions from a text prompt",
                   example="sd-inpainting"),
}


@dataclass(frozen=True)
class ModelStatus:
    spec: ModelSpec
    present: bool
    source: str  # where the weights are: "path", "ANYSEG_MODELS", "hf-cache", "converted", "builtin" or "" (absent)
    location: str


def model_status(name: str) -> ModelStatus:
    """Whether ``name``'s weights are present locally (no network access)."""
    spec = get_spec(name)
    if not spec.needs_weights:
        return ModelStatus(spec, True, "builtin", "")
    try:
        local = weights_mod.resolve_local(spec)
    except ModelError:
        local = None  # e.g. a broken folder in ANYSEG_MODELS: reported as absent here
    if local is None:
        return ModelStatus(spec, False, "", "")
    return ModelStatus(spec, True, local[1], str(local[0]))


def is_path_like(text: str) -> bool:
    """Whether an unregistered ``--model`` value names a folder rather than a (mistyped) name."""
    return any(sep in text for sep in ("/", os.sep)) or text.startswith((".", "~")) or Path(text).is_dir()


def spec_for_folder(path: str | os.PathLike) -> ModelSpec:
    """A spec for a local model folder: the family from ``config.json``'s ``model_type``.

    A missing folder, one without ``config.json``, or a ``model_type`` no family reads is a
    one-line :class:`ModelError` (the last names the known model types). The weights
    themselves are checked when the model is loaded (:func:`anyseg.models.weights.check_weights_dir`).
    """
    given = os.fspath(path)
    folder = Path(given).expanduser()
    if folder.is_file() and folder.suffix == ".safetensors":
        folder = folder.parent
    if not folder.is_dir():
        raise ModelError(f"model folder not found: {folder} (--model takes a registry name or a local model folder; "
                         "see `anyseg models list`)")
    config = folder / "config.json"
    if not config.is_file() and (folder / "model_index.json").is_file():  # a diffusers pipeline folder
        model_type = weights_mod.read_model_type(folder)
    elif not config.is_file():
        raise ModelError(f"model folder {folder} has no config.json (a transformers model folder holds config.json "
                         "and *.safetensors; a diffusers folder model_index.json)")
    else:
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (OSError, ValueError, AttributeError) as e:
            raise ModelError(f"model folder {folder}: config.json is not valid JSON ({e})") from None
    family = family_for_model_type(model_type)
    if family is None:
        raise ModelError(f"model folder {folder}: config.json has model_type {model_type!r}, which no anyseg model "
                         f"family reads; known model types: {', '.join(known_model_types())}")
    return ModelSpec(given, family.name, None, 0.0, 0, notes=f"local {family.title} folder", path=folder)


def _check_capability(spec: ModelSpec, capability: str) -> ModelSpec:
    family = spec.family_record
    if not family.has(capability):
        words = WORDS[capability]
        fitting = ", ".join(s.name for s in models_with(capability))
        raise ModelError(f"{spec.name} is not a {words.what}: a {family.title} model cannot {words.cannot}; "
                         f"use one of: {fitting}")
    return spec


def _auto(capability: str, quiet: bool) -> ModelSpec:
    candidates = models_with(capability)
    for spec in candidates:
        family = spec.family_record
        if family.baseline:
            continue  # the fallback, below
        if spec.needs_weights:
            status = model_status(spec.name)
            if not status.present or not family.serves_type(capability, weights_mod.read_model_type(status.location)):
                continue
        return spec
    words = WORDS[capability]
    fallback = [s for s in candidates if s.family_record.baseline]
    if fallback:
        if not quiet:
            print(f"anyseg: notice: {words.notice}", file=sys.stderr)
        return fallback[0]
    titles = [f.title for f in sorted(families_with(capability), key=lambda f: -f.auto_rank.get(capability, 0))
              if not f.baseline]
    need = ", ".join(titles[:-1]) + (" or " if len(titles) > 1 else "") + titles[-1] if titles else "model"
    baselines = [f.title for f in FAMILY_RECORDS.values() if f.baseline]
    tail = f"; the {baselines[0]} engine cannot {words.cannot}" if baselines else ""
    raise ModelError(f"no {words.what} is present locally: that needs {need} weights (e.g. `anyseg models "
                     f"pull {words.example}`, or put a transformers folder in $ANYSEG_MODELS/NAME){tail}")


def resolve(name_or_path: str | os.PathLike, capability: str, quiet: bool = False) -> ModelSpec:
    """The spec that ``name_or_path`` means for ``capability`` (see the module docstring).

    Args:
        name_or_path: ``auto``, a registry name, or the path of a local model folder.
        capability: what the caller will do with it, one of :data:`~anyseg.models.families.CAPABILITIES`.
        quiet: ``auto`` says nothing on stderr when it falls back to the baseline.

    Raises:
        ModelError: an unknown name (with a close match), a model whose family lacks the
            capability, a bad folder, or (``auto``) no fitting model present and no baseline.
    """
    if capability not in CAPABILITIES:
        raise ModelError(f"unknown capability {capability!r}; expected one of {', '.join(CAPABILITIES)}")
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ModelError(f"a model is a registry name or a folder path; got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    if text == "auto":
        return _auto(capability, quiet)
    if text in REGISTRY:
        spec = REGISTRY[text]
    elif isinstance(name_or_path, os.PathLike) or is_path_like(text):
        spec = spec_for_folder(name_or_path)
    else:
        spec = get_spec(text)  # an unknown name: one line, with a close match
    return _check_capability(spec, capability)


def resolve_auto(quiet: bool = False, capability: str = PROMPTABLE) -> str:
    """The name ``auto`` resolves to for ``capability`` (default: the best promptable model present, else ``classical``)."""
    return resolve("auto", capability, quiet=quiet).name


def resolve_folder(name_or_path: str | os.PathLike, capability: str, weights: str | os.PathLike | None = None,
                   allow_download: bool = True, quiet: bool = False) -> tuple[ModelSpec, Path | None]:
    """The spec (:func:`resolve`) and its local weights folder (``None`` for a no-weights model).

    ``weights`` (a transformers folder) goes with a registry name; with ``auto`` or a folder
    given as the model it is an error. The family's extra requirements (e.g. EdgeTAM's timm) are
    checked before any weights are looked for or downloaded.
    """
    if weights is not None and os.fspath(name_or_path) == "auto":
        raise ModelError("--weights needs an explicit --model NAME (which architecture the weights are)")
    spec = resolve(name_or_path, capability, quiet=quiet)
    if weights is not None and spec.path is not None:
        raise ModelError(f"--model {spec.name} is a model folder already; --weights goes with a registry name")
    spec.family_record.check_requires(spec.name)
    if not spec.needs_weights:
        if weights is not None:
            raise ModelError(f"{spec.name} takes no weights")
        return spec, None
    folder, _source = weights_mod.resolve(spec, weights, allow_download=allow_download)
    return spec, folder

"""Weight resolution: explicit path -> ``ANYSEG_MODELS`` -> Hugging Face cache -> download.

Weights are transformers-format folders (``config.json`` + ``*.safetensors``), or diffusers
pipeline folders (``model_index.json`` + ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``: Stable Diffusion, read by :mod:`anyseg.models.diffusion`, and its inpainting
pipelines, read by :mod:`anyseg.edit.sd`; SDXL's add ``text_encoder_2/`` and ``tokenizer_2/``); pickled ``*.bin``
/ ``*.ckpt`` checkpoints are refused (never unpickle untrusted files). Offline
(``HF_HUB_OFFLINE=1``, ``ANYSEG_OFFLINE=1``, or no route to the hub) a missing model fails
fast with one line that says how to provide it.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from anyseg.errors import ModelError, ModelNotAvailable
from anyseg.models.registry import ModelSpec

#: files fetched from the hub: configs, safetensors weights, tokenizer files
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]

#: ``model_index.json``'s ``_class_name`` -> the model type a family record claims
DIFFUSERS_MODEL_TYPES = {"StableDiffusionPipeline": "stable-diffusion",
                         "StableDiffusionInpaintPipeline": "stable-diffusion-inpaint",
                         "StableDiffusionXLInpaintPipeline": "stable-diffusion-xl-inpaint"}
#: the components of a diffusers pipeline folder anyseg reads, and their weights file (fp32 main
#: file; a local folder may hold the ``.fp16`` variant instead)
DIFFUSERS_WEIGHTS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}
#: per diffusers model type: its weighted components (folder -> weights file stem) and tokenizer folders
DIFFUSERS_COMPONENTS: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "stable-diffusion": (DIFFUSERS_WEIGHTS, ("tokenizer",)),
    "stable-diffusion-inpaint": (DIFFUSERS_WEIGHTS, ("tokenizer",)),
    "stable-diffusion-xl-inpaint": ({**DIFFUSERS_WEIGHTS, "text_encoder_2": "model"}, ("tokenizer", "tokenizer_2")),
}


def diffusers_patterns(model_type: str, variant: str | None = None) -> list[str]:
    """The hub files a pipeline of ``model_type`` needs: the index, the scheduler, the tokenizers and each
    component's config and safetensors weights (the ``variant``'s, e.g. ``fp16``, else the main files);
    never the safety checker, the feature extractor, the root single-file checkpoints, ``.ckpt`` / ``.bin``,
    nor the EMA or other variants."""
    weights, tokenizers = DIFFUSERS_COMPONENTS[model_type]
    suffix = f".{variant}" if variant else ""
    return ["model_index.json", "scheduler/scheduler_config.json",
            *(f"{t}/{x}" for t in tokenizers for x in ("*.json", "*.txt")),
            *(f"{c}/{f}" for c, w in weights.items() for f in ("config.json", f"{w}{suffix}.safetensors"))]


#: fetched for Stable Diffusion (DiffSeg): its fp32 files
DIFFUSERS_PATTERNS = diffusers_patterns("stable-diffusion")


def is_diffusers_spec(spec: ModelSpec) -> bool:
    """Whether ``spec``'s family reads diffusers pipeline folders (e.g. Stable Diffusion)."""
    from anyseg.models.families import find_family

    family = find_family(spec.family)
    return family is not None and bool(set(family.model_types) & set(DIFFUSERS_MODEL_TYPES.values()))


def download_patterns(spec: ModelSpec) -> list[str]:
    """The hub files fetched for ``spec``: :func:`diffusers_patterns` of its family's pipeline type and
    :attr:`~ModelSpec.variant`, or :data:`DOWNLOAD_PATTERNS` for a transformers model."""
    if not is_diffusers_spec(spec):
        return list(DOWNLOAD_PATTERNS)
    model_type = next(t for t in spec.family_record.model_types if t in DIFFUSERS_COMPONENTS)
    return diffusers_patterns(model_type, spec.variant)


def _is_diffusers_dir(path: Path) -> bool:
    return (path / "model_index.json").is_file() and not (path / "config.json").is_file()


def _pipeline_class(path: Path) -> str | None:
    try:
        name = json.loads((path / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _diffusers_type(path: Path) -> str | None:
    return DIFFUSERS_MODEL_TYPES.get(_pipeline_class(path) or "")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def is_offline() -> bool:
    """True when the user asked for offline mode (read at call time, not import time)."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("ANYSEG_OFFLINE"))


def models_dir() -> Path | None:
    value = os.environ.get("ANYSEG_MODELS")
    return Path(value).expanduser() if value else None


def converted_dir(spec: ModelSpec) -> Path:
    """The transformers folder an original-format checkpoint (:attr:`ModelSpec.checkpoint`) is converted
    into: ``$ANYSEG_MODELS/NAME``, else ``~/.cache/anyseg/models/NAME`` (``$XDG_CACHE_HOME`` respected)."""
    root = models_dir()
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "anyseg" / "models"
    return root / spec.name


def hf_cache_dir() -> str:
    """The Hugging Face hub cache, read from the environment at call time (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def how_to_get(spec: ModelSpec, pulling: bool = False) -> str:
    """How to make ``spec``'s weights available; ``pulling``: said by ``models pull`` itself."""
    if spec.checkpoint is not None:  # an original checkpoint: downloaded, then converted
        steps = (f"`huggingface-cli download {spec.hub_id} {spec.checkpoint} --local-dir .`, then `anyseg models convert "
                 f"{spec.checkpoint} --family {spec.family} --config {spec.name} --out {converted_dir(spec)}`")
        if pulling:
            return f"run it again while online, or {steps}"
        return f"run `anyseg models pull {spec.name}` while online (it downloads and converts it), or {steps}"
    if is_diffusers_spec(spec):
        model_type = next(t for t in spec.family_record.model_types if t in DIFFUSERS_COMPONENTS)
        weights, tokenizers = DIFFUSERS_COMPONENTS[model_type]
        parts = ", ".join(f"{c}/" for c in (*weights, *tokenizers))
        layout = f"diffusers folder of {spec.hub_id} (model_index.json, {parts})"
    else:
        layout = f"transformers folder of {spec.hub_id} (config.json + *.safetensors)"
    where = f"put the {layout} in $ANYSEG_MODELS/{spec.name}"
    if pulling:
        return f"run it again while online, or {where}"
    return f"run `anyseg models pull {spec.name}` while online, {where}, or pass --weights PATH to the command"


def check_weights_dir(path: Path, spec: ModelSpec) -> Path:
    """Validate a weights folder for ``spec``; raise a one-line :class:`ModelError` naming what is wrong."""
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix == ".safetensors":
            path = path.parent
        else:
            raise ModelError(
                f"weights {path} are not a transformers folder or a .safetensors file "
                f"(expected a folder with config.json and *.safetensors for {spec.name})"
            )
    if not path.exists():
        raise ModelError(f"weights path not found: {path}")
    if _is_diffusers_dir(path):
        return _check_diffusers_dir(path, spec)
    config = path / "config.json"
    safetensors = sorted(path.glob("*.safetensors"))
    missing = [n for n, ok in (("config.json", config.is_file()), ("*.safetensors", bool(safetensors))) if not ok]
    if missing:
        pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt*"))
        extra = f"; found pickled {pickled[0]}, which anyseg does not load (convert it to safetensors)" if pickled else ""
        raise ModelError(f"weights folder {path} for {spec.name} lacks {' and '.join(missing)}{extra}")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise ModelError(f"weights folder {path}: config.json is not valid JSON ({e})") from None
    accepted = set(spec.family_record.model_types)  # the config.json model types its family reads
    if accepted and model_type not in accepted:
        raise ModelError(
            f"weights folder {path} holds a {model_type!r} model, but {spec.name} needs one of {sorted(accepted)}"
        )
    return path


def _check_diffusers_dir(path: Path, spec: ModelSpec) -> Path:
    """A diffusers pipeline folder: its model type, then each component's config and safetensors weights."""
    model_type = _diffusers_type(path)
    accepted = set(spec.family_record.model_types)
    if model_type is None or (accepted and model_type not in accepted):
        what = repr(model_type) if model_type else f"{_pipeline_class(path)!r} (model_index.json _class_name)"
        raise ModelError(f"weights folder {path} holds a {what} diffusers pipeline, but {spec.name} needs one "
                         f"of {sorted(accepted)}")
    missing = []
    weights, tokenizers = DIFFUSERS_COMPONENTS[model_type]
    for component, stem in weights.items():
        sub = path / component
        if not (sub / "config.json").is_file():
            missing.append(f"{component}/config.json")
        if not any((sub / f"{stem}{v}.safetensors").is_file() for v in ("", ".fp16")):
            missing.append(f"{component}/{stem}.safetensors")
    vocab = ("tokenizer.json", "vocab.json")
    for tokenizer in tokenizers:
        if not any((path / tokenizer / f).is_file() for f in vocab):
            missing.append(f"{tokenizer}/vocab.json")
    if missing:
        pickled = sorted(str(p.relative_to(path)) for pattern in ("*/*.bin", "*.ckpt") for p in path.glob(pattern))
        extra = f"; found pickled {pickled[0]}, which anyseg does not load (convert it to safetensors)" if pickled else ""
        raise ModelError(f"diffusers folder {path} for {spec.name} lacks {', '.join(missing)}{extra}")
    return path


def read_model_type(folder: str | os.PathLike) -> str | None:
    """``config.json``'s ``model_type`` in ``folder`` (``None`` when absent or unreadable).

    A diffusers pipeline folder (``model_index.json``, no ``config.json``) has the model type of
    its ``_class_name`` (:data:`DIFFUSERS_MODEL_TYPES`: ``stable-diffusion``, ``stable-diffusion-inpaint``,
    ``stable-diffusion-xl-inpaint``).
    """
    if _is_diffusers_dir(Path(folder)):
        return _diffusers_type(Path(folder))
    try:
        value = json.loads((Path(folder) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _hf_cache_snapshot(spec: ModelSpec) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            spec.hub_id, revision=spec.revision, local_files_only=True, allow_patterns=download_patterns(spec),
            cache_dir=hf_cache_dir(),
        )
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    try:
        return check_weights_dir(Path(folder), spec)
    except ModelError:
        return None  # an incomplete snapshot is as good as none


def resolve_local(spec: ModelSpec, weights: str | os.PathLike | None = None) -> tuple[Path, str] | None:
    """Local weights for ``spec`` and where they came from, without any network access.

    An explicit ``weights`` path (or the folder of a spec made from ``--model PATH``) must be
    valid (errors are raised, never skipped).
    """
    if weights is not None or spec.path is not None:
        return check_weights_dir(Path(weights if weights is not None else spec.path), spec), "path"
    if spec.hub_id is None:
        return None
    root = models_dir()
    if root is not None:
        for candidate in (root / spec.name, root / spec.hub_id.replace("/", "--")):
            if candidate.exists():
                return check_weights_dir(candidate, spec), "ANYSEG_MODELS"
    if spec.checkpoint is not None:  # the hub holds an original checkpoint: only its converted folder serves
        folder = converted_dir(spec)
        return (check_weights_dir(folder, spec), "converted") if folder.exists() else None
    cached = _hf_cache_snapshot(spec)
    if cached is not None:
        return cached, "hf-cache"
    return None


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def download(spec: ModelSpec, progress: bool = True, pulling: bool = False) -> Path:
    """Download ``spec``'s safetensors weights into the Hugging Face cache and return the folder; an
    original-format checkpoint (:attr:`ModelSpec.checkpoint`) is downloaded there and converted into
    :func:`converted_dir`.

    ``pulling``: called by ``anyseg models pull`` (its errors then suggest what that command can do).
    """
    hint = how_to_get(spec, pulling)
    if is_offline():
        raise ModelNotAvailable(f"{spec.name} is not available locally and downloads are off (offline mode); {hint}")
    if not _hub_reachable():
        raise ModelNotAvailable(f"{spec.name} is not available locally and the Hugging Face hub cannot be reached; {hint}")
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        if spec.checkpoint is not None:
            original = hf_hub_download(spec.hub_id, spec.checkpoint, revision=spec.revision, cache_dir=hf_cache_dir())
        else:
            folder = snapshot_download(
                spec.hub_id, revision=spec.revision, allow_patterns=download_patterns(spec), cache_dir=hf_cache_dir()
            )
    except GatedRepoError:
        raise ModelNotAvailable(
            f"{spec.hub_id} is gated: accept its licence on the hub and log in (`hf auth login`), then retry"
        ) from None
    except RepositoryNotFoundError:
        raise ModelNotAvailable(f"{spec.hub_id} was not found on the hub (or needs a login)") from None
    except (HfHubHTTPError, OSError) as e:
        raise ModelNotAvailable(f"downloading {spec.hub_id} failed: {str(e).splitlines()[0]}") from None
    if spec.checkpoint is not None:
        from anyseg.models.convert import convert_checkpoint

        folder = converted_dir(spec)
        convert_checkpoint(original, spec.family, folder, config=spec.name)
    return check_weights_dir(Path(folder), spec)


def resolve(spec: ModelSpec, weights: str | os.PathLike | None = None, allow_download: bool = True) -> tuple[Path, str]:
    """Weights folder for ``spec``: local first, then a download when allowed and online."""
    if not spec.needs_weights:
        raise ModelError(f"{spec.name} needs no weights")
    local = resolve_local(spec, weights)
    if local is not None:
        return local
    if not allow_download:
        raise ModelNotAvailable(f"{spec.name} is not available locally; {how_to_get(spec)}")
    return download(spec), "download"

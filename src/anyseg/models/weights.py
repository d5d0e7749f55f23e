"""Weight resolution: explicit path -> ``ANYSEG_MODELS`` -> Hugging Face cache -> download.

Weights are transformers-format folders (``config.json`` + ``*.safetensors``); pickled
``*.bin`` checkpoints are refused (never unpickle untrusted files). Offline
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


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def is_offline() -> bool:
    """True when the user asked for offline mode (read at call time, not import time)."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("ANYSEG_OFFLINE"))


def models_dir() -> Path | None:
    value = os.environ.get("ANYSEG_MODELS")
    return Path(value).expanduser() if value else None


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
    where = (f"put the transformers folder of {spec.hub_id} (config.json + *.safetensors) in "
             f"$ANYSEG_MODELS/{spec.name}")
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


def read_model_type(folder: str | os.PathLike) -> str | None:
    """``config.json``'s ``model_type`` in ``folder`` (``None`` when absent or unreadable)."""
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
            spec.hub_id, revision=spec.revision, local_files_only=True, allow_patterns=DOWNLOAD_PATTERNS,
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
    """Download ``spec``'s safetensors weights into the Hugging Face cache and return the folder.

    ``pulling``: called by ``anyseg models pull`` (its errors then suggest what that command can do).
    """
    hint = how_to_get(spec, pulling)
    if is_offline():
        raise ModelNotAvailable(f"{spec.name} is not available locally and downloads are off (offline mode); {hint}")
    if not _hub_reachable():
        raise ModelNotAvailable(f"{spec.name} is not available locally and the Hugging Face hub cannot be reached; {hint}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        folder = snapshot_download(
            spec.hub_id, revision=spec.revision, allow_patterns=DOWNLOAD_PATTERNS, cache_dir=hf_cache_dir()
        )
    except GatedRepoError:
        raise ModelNotAvailable(
            f"{spec.hub_id} is gated: accept its licence on the hub and log in (`hf auth login`), then retry"
        ) from None
    except RepositoryNotFoundError:
        raise ModelNotAvailable(f"{spec.hub_id} was not found on the hub (or needs a login)") from None
    except (HfHubHTTPError, OSError) as e:
        raise ModelNotAvailable(f"downloading {spec.hub_id} failed: {str(e).splitlines()[0]}") from None
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

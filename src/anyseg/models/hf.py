"""Loading transformers models and tokenizers from a resolved weights folder, with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anyseg.errors import ModelError
from anyseg.models.registry import ModelSpec


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_pretrained(spec: ModelSpec, folder: Path, class_name: str, device: str = "cpu") -> Any:
    """``transformers.<class_name>.from_pretrained(folder)`` (safetensors only), in eval mode on ``device``.

    Corrupt safetensors, shape mismatches and bad configs are the weights' fault: one line
    naming the model and the folder.
    """
    import transformers

    model_cls = getattr(transformers, class_name)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = model_cls.from_pretrained(str(folder), use_safetensors=True)
    except Exception as e:  # noqa: BLE001 - every loading failure becomes one line
        raise ModelError(f"cannot load {spec.name} from {folder}: {_first_line(e)}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model.eval().to(device)


def load_tokenizer(spec: ModelSpec, folder: Path) -> Any:
    """The tokenizer saved with the weights (``tokenizer.json`` / vocab files in ``folder``)."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"cannot load the tokenizer of {spec.name} from {folder}: {_first_line(e)} "
                         "(the weights folder needs its tokenizer files)") from None
    finally:
        transformers.logging.set_verbosity(verbosity)


def resolve_folder(name: str, weights: str | None = None, allow_download: bool = True,
                   families: tuple[str, ...] | None = None, what: str = "model") -> tuple[ModelSpec, Path]:
    """Registry spec and local weights folder of ``name``, checking that its family is one of ``families``."""
    from anyseg.models import weights as weights_mod
    from anyseg.models.registry import REGISTRY, get_spec

    spec = get_spec(name)
    if families is not None and spec.family not in families:
        fitting = ", ".join(s.name for s in REGISTRY.values() if s.family in families)
        raise ModelError(f"{name} is not a {what}; use one of: {fitting}")
    folder, _source = weights_mod.resolve(spec, weights, allow_download=allow_download)
    return spec, folder

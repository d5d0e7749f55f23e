"""Loading transformers models and tokenizers from a resolved weights folder, with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anyseg.errors import ModelError
from anyseg.models.registry import ModelSpec


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_pretrained(spec: ModelSpec, folder: Path, class_name: str, device: str = "cpu",
                    key_mapping: dict[str, str] | None = None, **model_kwargs: Any) -> Any:
    """``transformers.<class_name>.from_pretrained(folder, **model_kwargs)`` (safetensors only), in eval
    mode on ``device`` (``model_kwargs``: the class's own arguments, e.g. ``add_pooling_layer=False``).

    Corrupt safetensors, shape mismatches and bad configs are the weights' fault: one line
    naming the model and the folder. Weights the checkpoint lacks would be left random by
    transformers (with a log line that is easy to miss): that is an error here too
    (``ANYSEG_ALLOW_MISSING_WEIGHTS=1`` turns it into a warning).
    """
    import os
    import warnings

    import transformers

    model_cls = getattr(transformers, class_name)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    kwargs: dict[str, Any] = {**model_kwargs, "use_safetensors": True, "output_loading_info": True}
    if key_mapping:
        kwargs["key_mapping"] = key_mapping
    try:
        model, info = model_cls.from_pretrained(str(folder), **kwargs)
    except Exception as e:  # noqa: BLE001 - every loading failure becomes one line
        raise ModelError(f"cannot load {spec.name} from {folder}: {_first_line(e)}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        msg = (f"{folder} lacks {len(missing)} of {spec.name}'s weights (e.g. {missing[0]}): not a {class_name} "
               "checkpoint, or an incomplete one")
        if os.environ.get("ANYSEG_ALLOW_MISSING_WEIGHTS", "").lower() not in ("1", "true", "yes"):
            raise ModelError(msg + " (ANYSEG_ALLOW_MISSING_WEIGHTS=1 loads it anyway, with random weights there)")
        warnings.warn(msg + "; those weights are random", stacklevel=2)
    return model.eval().to(device)


#: files of which a weights folder needs one for its tokenizer (transformers 5 silently builds an
#: empty tokenizer from a folder without any)
VOCAB_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "tokenizer.model")


def load_tokenizer(spec: ModelSpec, folder: Path) -> Any:
    """The tokenizer saved with the weights (``tokenizer.json`` / vocab files in ``folder``)."""
    import transformers

    if not any((Path(folder) / f).is_file() for f in VOCAB_FILES):
        raise ModelError(f"the weights folder {folder} of {spec.name} has no tokenizer files "
                         f"(one of {', '.join(VOCAB_FILES)}); copy them from {spec.hub_id}")

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"cannot load the tokenizer of {spec.name} from {folder}: {_first_line(e)} "
                         "(the weights folder needs its tokenizer files)") from None
    finally:
        transformers.logging.set_verbosity(verbosity)


def read_preprocessor(folder: Path | None) -> dict[str, Any]:
    """The weights folder's ``preprocessor_config.json`` (``{}`` when absent or unreadable)."""
    import contextlib
    import json

    if folder is None:
        return {}
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        return {}
    with contextlib.suppress(OSError, ValueError):
        cfg = json.loads(path.read_text())
        return cfg if isinstance(cfg, dict) else {}
    return {}


def normalization(cfg: dict[str, Any], mean: tuple[float, ...], std: tuple[float, ...]
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(image_mean, image_std)`` from a preprocessor config, else the given defaults (3 values each)."""
    try:
        m = tuple(float(v) for v in cfg.get("image_mean", mean))
        s = tuple(float(v) for v in cfg.get("image_std", std))
    except (TypeError, ValueError):
        return tuple(mean), tuple(std)
    return (m, s) if len(m) == 3 and len(s) == 3 else (tuple(mean), tuple(std))


def preprocessor_normalization(folder: Path | None, default: tuple[tuple[float, ...], tuple[float, ...]]
                               ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of a weights folder's ``preprocessor_config.json``, else ``default`` (the family's)."""
    return normalization(read_preprocessor(folder), *default)

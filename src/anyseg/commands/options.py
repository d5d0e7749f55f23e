"""Options and checks that several ``anyseg`` sub-commands share.

Options are checked before any file is read or written: ``--device`` (:func:`device_option`),
``--max-pixels`` (:func:`check_max_pixels`), ``--out`` (:func:`check_out`). ``--model`` /
``--runtime`` of the promptable commands load through :func:`load_predictor`, and
:func:`model_label` is how a status line names the model that ran.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from anyseg.errors import InputError

__all__ = ["RUNTIME_HELP", "DEVICE_HELP", "MAX_PIXELS_HELP", "OUT_HELP", "device_option", "check_max_pixels",
           "check_out", "is_baseline", "model_label", "load_predictor"]

RUNTIME_HELP = ("SAM-family inference runtime (default auto: torch-bf16 on CPUs with native bf16 and on CUDA, "
                "else torch; onnx exports are cached next to the weights)")
DEVICE_HELP = "torch device: cpu, cuda, cuda:N or mps (default: cuda when available, else cpu)"
MAX_PIXELS_HELP = "largest image accepted, in pixels (default 40M, or $ANYSEG_MAX_PIXELS)"
OUT_HELP = "output folder (created if missing; earlier results stay until the run succeeds)"


def device_option(device: str | None) -> str | None:
    """``--device`` checked (:func:`anyseg.models.sam.check_device`) before any work; ``None`` stays ``None``
    (the model's default, resolved by the loader: no torch import here)."""
    if device is None:
        return None
    from anyseg.models.sam import check_device

    return check_device(device)


def check_max_pixels(value: int | None) -> int | None:
    """``--max-pixels``: ``None`` (the default limit) or a positive integer."""
    if value is not None and value <= 0:
        raise InputError(f"--max-pixels must be positive; got {value}")
    return value


def check_out(path: str) -> Path:
    """``--out`` as a folder path; an existing file there is a one-line error (nothing is created yet)."""
    out_dir = Path(path)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a folder")
    return out_dir


def is_baseline(predictor: Any) -> bool:
    """Whether ``predictor`` is a no-weights baseline engine (its family record says: ``classical``)."""
    from anyseg.models.families import find_family

    return bool(getattr(find_family(getattr(predictor, "family", "")), "baseline", False))


def model_label(predictor: Any) -> str:
    """How a status line names ``predictor``: ``classical`` (it has no runtimes), else ``NAME [RUNTIME]``."""
    if is_baseline(predictor):
        return predictor.name
    return f"{predictor.name} [{getattr(predictor, 'runtime', 'torch')}]"


def load_predictor(args: argparse.Namespace, device: str | None) -> Any:
    """``--model`` (name, ``auto`` or local folder) on ``--runtime`` (for the classical engine, a
    one-line error naming what to do)."""
    from anyseg.models import load_model
    from anyseg.runtime import with_runtime

    quiet = args.model == "auto" and args.runtime not in ("auto", "torch")  # (the runtime error says it all)
    model = load_model(args.model, weights=args.weights, device=device, quiet=quiet)
    return with_runtime(model, args.runtime, requested=args.model)

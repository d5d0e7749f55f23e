"""Inference runtimes for SAM-family predictors: ``auto`` (the default), ``torch``, ``torch-bf16``,
``torch-fp16``, ``torch-compile`` (:mod:`anyseg.runtime.torch_fast`), ``onnx`` and ``onnx-int8``
(:mod:`anyseg.runtime.onnx`). :func:`with_runtime` picks by name; :func:`default_runtime` says
what ``auto`` means on this machine.

``auto`` picks what measured fastest per machine (docs/BENCHMARKS.md, "Fast inference"):

* CUDA: ``torch-bf16`` where the GPU supports bf16, else ``torch-fp16`` (autocast + SDPA);
* a CPU with native bf16 (``avx512_bf16`` or ``amx_bf16``): ``torch-bf16`` (bf16 GEMMs run
  ~4x faster than fp32 there; masks within the reduced-precision parity reported);
* any other CPU: ``torch`` (fp32, with the rescheduled mask decoder: the same numbers as
  transformers' model). ONNX runtimes stay opt-in because their first use exports the model
  (10-70 s, several GB of memory), a bad surprise for a one-shot command; once exported they
  are the fastest encoders measured for SAM ViT (``onnx-int8``: x5-6 over eager fp32 with
  identical masks on ViT-B), so services and batch runs on ViT models should ask for them.

Evaluation (``anyseg eval``) defaults to ``torch`` instead: numbers that match the reference
implementation, independent of the machine.

The runtimes are defined once, in :mod:`anyseg.runtime.table`; which of them a predictor may
run is its family record's :attr:`~anyseg.models.families.Family.runtimes` (the classical
engine: only its own, ``torch``). A runtime is a predictor composed of an encoder part and a
decoder part over the shared model (:mod:`anyseg.runtime.torch_fast`, :mod:`anyseg.runtime.onnx`).
"""

from __future__ import annotations

from typing import Any

from anyseg.errors import InputError
from anyseg.runtime.table import ONNX_RUNTIMES, RUNTIMES

__all__ = ["RUNTIMES", "default_runtime", "with_runtime", "classical_runtime_error", "runtime_error"]


def default_runtime(device: str | None = None) -> tuple[str, str]:
    """``(runtime, reason)``: what ``auto`` resolves to for a predictor on ``device``."""
    dev = str(device or "cpu")
    if dev.startswith("cuda"):
        import torch

        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "torch-bf16", "CUDA device with bf16"
        return "torch-fp16", "CUDA device without bf16"
    from anyseg.runtime.torch_fast import cpu_bf16_support

    info = cpu_bf16_support()
    if info.get("native"):
        flag = "amx_bf16" if info.get("amx_bf16") else "avx512_bf16"
        return "torch-bf16", f"CPU with native bf16 ({flag})"
    return "torch", "CPU without native bf16: fp32 with the rescheduled decoder"


def classical_runtime_error(runtime: str, requested: str | None = None) -> InputError:
    """The error for ``runtime`` asked of the classical engine: with ``requested="auto"`` it is
    there because no SAM-family model is present, so the message says how to get one."""
    if requested == "auto":
        return InputError(f"no SAM-family model is present on this machine (the classical engine has no {runtime} "
                          "runtime); get one with `anyseg models pull sam2.1-hiera-tiny` (or put weights in "
                          "$ANYSEG_MODELS), or drop --runtime")
    return InputError(f"the classical engine has no {runtime} runtime: it has only its own (--runtime torch or "
                      "auto); drop --runtime, or pick a SAM-family model (`anyseg models list`)")


def runtime_error(predictor: Any, family: Any, runtime: str, requested: str | None = None) -> InputError:
    """The one-line error for a ``runtime`` that ``predictor``'s family record does not list."""
    if family is not None and family.baseline:
        return classical_runtime_error(runtime, requested)
    name = getattr(predictor, "name", type(predictor).__name__)
    have = ", ".join(family.runtimes) if family is not None else "torch"
    return InputError(f"{name} has no {runtime} runtime (its runtimes: {have}); drop --runtime or pick one of those")


def with_runtime(predictor: Any, runtime: str = "auto", requested: str | None = None) -> Any:
    """``predictor`` running on ``runtime``, one of those its family record lists.

    ``auto`` is :func:`default_runtime` for families with the torch runtimes, else the family's
    first (the classical engine: ``torch``, its own code). A predictor whose family is not
    registered runs only ``torch`` (as it is). ``requested`` is the model name the user gave
    (e.g. ``auto``): it words the error for the classical engine asked for another runtime
    (:func:`classical_runtime_error`).
    """
    from anyseg.models.families import find_family

    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    family = find_family(getattr(predictor, "family", ""))
    offered = family.runtimes if family is not None else ("torch",)
    if runtime == "auto":
        runtime = offered[0] if len(offered) == 1 else default_runtime(getattr(predictor, "device", "cpu"))[0]
    if runtime not in offered:
        raise runtime_error(predictor, family, runtime, requested)
    if runtime == "torch":
        return predictor  # the predictor as loaded (the classical engine: its own code)
    if runtime in ONNX_RUNTIMES:
        from anyseg.runtime.onnx import load_runtime

        return load_runtime(predictor, runtime)
    from anyseg.runtime.torch_fast import apply_runtime

    return apply_runtime(predictor, runtime)

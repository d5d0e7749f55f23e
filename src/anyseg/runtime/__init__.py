"""Inference runtimes for SAM-family predictors: ``torch`` (default), ``torch-bf16``,
``torch-compile`` (:mod:`anyseg.runtime.torch_fast`), ``onnx`` and ``onnx-int8``
(:mod:`anyseg.runtime.onnx`). :func:`with_runtime` picks by name."""

from __future__ import annotations

from typing import Any

from anyseg.errors import InputError

RUNTIMES = ("torch", "torch-bf16", "torch-compile", "onnx", "onnx-int8")


def with_runtime(predictor: Any, runtime: str = "torch") -> Any:
    """``predictor`` running on ``runtime``; the classical engine only runs ``torch`` (its own code)."""
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if runtime == "torch" or getattr(predictor, "family", "") == "classical":
        if runtime != "torch":
            raise InputError(f"the classical engine has no {runtime} runtime; use --runtime torch")
        return predictor
    if runtime.startswith("onnx"):
        from anyseg.runtime.onnx import load_runtime

        return load_runtime(predictor, runtime)
    from anyseg.runtime.torch_fast import apply_runtime

    return apply_runtime(predictor, runtime)

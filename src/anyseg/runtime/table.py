"""The runtimes, defined once: their names, which backend builds each, and what each does.

:data:`RUNTIMES` (with ``auto``) is what ``--runtime`` accepts; :data:`TORCH_RUNTIMES` and
:data:`ONNX_RUNTIMES` are the views the two backends (:mod:`anyseg.runtime.torch_fast`,
:mod:`anyseg.runtime.onnx`) validate against. Which runtimes a model has is declared by its
family record (:attr:`anyseg.models.families.Family.runtimes`). This module imports nothing
heavy, so ``anyseg.cli`` can build its option choices from it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Runtime", "TABLE", "RUNTIMES", "TORCH_RUNTIMES", "ONNX_RUNTIMES"]


@dataclass(frozen=True)
class Runtime:
    """One runtime: ``name`` (the ``--runtime`` value), ``backend`` (``torch`` or ``onnx``: the
    module that composes its encoder and decoder parts) and a one-line ``summary``."""

    name: str
    backend: str
    summary: str


#: every runtime but ``auto`` (which picks one of these per machine: :func:`anyseg.runtime.default_runtime`)
TABLE: tuple[Runtime, ...] = (
    Runtime("torch", "torch", "fp32 eager, the rescheduled mask decoder: transformers' numbers"),
    Runtime("torch-bf16", "torch", "image encoder and decoder GEMMs under bf16 autocast"),
    Runtime("torch-fp16", "torch", "the same under fp16 autocast (CUDA only)"),
    Runtime("torch-compile", "torch", "the image encoder through torch.compile (inductor, frozen weights)"),
    Runtime("onnx", "onnx", "the image encoder (and mask inputs' decoder) in ONNX Runtime, fp32"),
    Runtime("onnx-int8", "onnx", "the same with a dynamically int8-quantized encoder"),
)

RUNTIMES: tuple[str, ...] = ("auto", *(r.name for r in TABLE))
TORCH_RUNTIMES: tuple[str, ...] = tuple(r.name for r in TABLE if r.backend == "torch")
ONNX_RUNTIMES: tuple[str, ...] = tuple(r.name for r in TABLE if r.backend == "onnx")

"""Mask-driven editing, the Python API: remove, fill, replace, compose, style, cutout.

Each function takes an ``(H, W, 3)`` uint8 RGB image and an ``(H, W)`` mask and returns an
:class:`~anyseg.edit.base.EditResult` (the edited image, the mask used, a JSON-ready record)::

    from anyseg import edit

    out = edit.remove(image, mask)                                  # classical Telea, no weights
    out = edit.fill(image, mask, "a vase of flowers", engine="sd")  # Stable Diffusion inpainting
    out = edit.replace(image, mask, blur=12)                        # the object stays, the rest is blurred
    out = edit.compose(image, "replace the dog with a cat", segment=find_mask)  # Edit Everything

``engine`` is a name of :data:`~anyseg.edit.base.ENGINES` (built once per call by its factory
with ``weights`` / ``model`` / ``device`` / ``allow_download``) or an already built engine
object (anything with ``inpaint``), so a caller editing many images builds it once
(:func:`build_engine`). The steps every edit shares (mask checks, dilation, the working crop,
the feathered paste that leaves every pixel outside the dilated mask bit-identical) are
:func:`anyseg.edit.base.run_inpaint`'s.

The submodules ``replace``, ``compose``, ``style`` and ``cutout`` share these functions' names;
``anyseg.edit.NAME`` is always the function (the package ignores the import system's attempt to
rebind the name to the submodule), and ``from anyseg.edit.NAME import ...`` reads the module.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable

import numpy as np

from anyseg.edit.base import DEFAULT_DILATE, DEFAULT_FEATHER, EditResult, InpaintEngine, engine_factory, run_inpaint
from anyseg.errors import InputError

__all__ = ["EditResult", "build_engine", "remove", "fill", "replace", "compose", "style", "cutout"]

_API = frozenset(("replace", "compose", "style", "cutout"))


class _EditPackage(types.ModuleType):
    """Keeps the API functions bound when a same-named submodule is imported (module docstring)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType) and callable(self.__dict__.get(name)):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _EditPackage


def build_engine(engine: str | Any, weights: Any = None, model: str | None = None, device: str | None = None,
                 allow_download: bool = True, **options: Any) -> InpaintEngine:
    """``engine`` built by its registered factory (a name), or returned as it is (an engine object)."""
    if not isinstance(engine, str):
        if not callable(getattr(engine, "inpaint", None)):
            raise InputError(f"engine must be an edit engine name or an engine object; got {type(engine).__name__}")
        return engine
    factory = engine_factory(engine)
    return factory(weights=weights, model=model, device=device, allow_download=allow_download, **options)


def remove(image: np.ndarray, mask: Any, engine: str | Any = "telea", dilate: int = DEFAULT_DILATE,
           feather: int = DEFAULT_FEATHER, seed: int = 0, weights: Any = None, model: str | None = None,
           device: str | None = None, prompt: str | None = None, allow_download: bool = True,
           **options: Any) -> EditResult:
    """The masked object removed and its place filled from the surroundings (Inpaint Anything's
    remove: the mask dilated by ``dilate`` px first). A mask covering the whole image is refused
    (nothing is left to fill from); a generative engine needs ``prompt`` (e.g. "background")."""
    eng = build_engine(engine, weights=weights, model=model, device=device, allow_download=allow_download)
    return run_inpaint(eng, image, mask, "remove", prompt=prompt, seed=seed, dilate=dilate, feather=feather,
                       **options)


def fill(image: np.ndarray, mask: Any, prompt: str | None, engine: str | Any = "sd", dilate: int = DEFAULT_DILATE,
         feather: int = DEFAULT_FEATHER, seed: int = 0, weights: Any = None, model: str | None = None,
         device: str | None = None, allow_download: bool = True, **options: Any) -> EditResult:
    """The masked region replaced with new content that matches ``prompt`` (Inpaint Anything's fill).

    A generative engine needs ``prompt`` and may be given a mask covering the whole image (then
    the whole image is generated); a non-generative one only fills from the surroundings, so it
    gets the same checks as :func:`remove`. ``options`` (``steps``, ``guidance``, ``strength``,
    ``negative_prompt`` for ``sd``) go to the engine's ``inpaint``.
    """
    eng = build_engine(engine, weights=weights, model=model, device=device, allow_download=allow_download)
    generative = bool(getattr(eng, "generative", False))
    return run_inpaint(eng, image, mask, "fill", prompt=prompt, seed=seed, dilate=dilate, feather=feather,
                       allow_full=generative, **options)


def replace(image: np.ndarray, mask: Any, prompt: str | None = None, engine: str | Any = "sd",
            blur: int | None = None, color: Any = None, background: Any = None, dilate: int = 0,
            feather: int = DEFAULT_FEATHER, seed: int = 0, weights: Any = None, model: str | None = None,
            device: str | None = None, allow_download: bool = True, max_pixels: int | None = None,
            **options: Any) -> EditResult:
    """The masked object kept, everything else changed (Replace Anything): regenerated by a
    generative ``engine`` from ``prompt``, or, with ``blur`` / ``color`` / ``background``, made
    without weights (:mod:`anyseg.edit.replace`). ``mask`` is the object; the result's ``mask``
    is the region that changed."""
    import importlib

    ops = importlib.import_module("anyseg.edit.replace")  # the module (``anyseg.edit.replace`` is this function)
    if blur is not None or color is not None or background is not None:
        if prompt is not None:
            raise InputError("replace: --prompt regenerates the background; --blur, --color and --background "
                             "replace it without a model: give one of them")
        return ops.replace_background(image, mask, blur=blur, color=color, background=background, dilate=dilate,
                                      feather=feather, max_pixels=max_pixels)
    eng = build_engine(engine, weights=weights, model=model, device=device, allow_download=allow_download)
    return ops.replace_generative(eng, image, mask, prompt, seed=seed, dilate=dilate, feather=feather, **options)


def compose(image: np.ndarray, instruction_or_pairs: Any, segment: Callable[[np.ndarray, str], Any] | None = None,
            engine: str | Any = "sd", dilate: int = DEFAULT_DILATE, feather: int = DEFAULT_FEATHER, seed: int = 0,
            weights: Any = None, model: str | None = None, device: str | None = None, allow_download: bool = True,
            on_step: Callable[[int, Any], None] | None = None, **options: Any) -> EditResult:
    """Edit Everything: the instruction's steps (:mod:`anyseg.edit.compose`) applied in order.

    ``instruction_or_pairs``: a compound sentence ("replace the dog with a cat and make the sky a
    sunset") or ``(target, prompt)`` pairs (prompt ``None``: remove the target). ``segment(image,
    phrase)`` returns the target's mask on the current image (each step sees the previous one's
    result); :func:`anyseg.tasks.edit.text_segmenter` makes one from anyseg's text backends. The
    engine is built once; every fill step needs a generative engine. The result's mask is the
    union of the steps' masks and its record has one entry per step (``steps``).
    """
    from anyseg.edit.compose import steps_of

    steps = steps_of(instruction_or_pairs)
    if segment is None or not callable(segment):
        raise InputError("compose needs segment(image, phrase) -> mask to find each target "
                         "(anyseg.tasks.edit.text_segmenter() makes one from a text model)")
    eng = build_engine(engine, weights=weights, model=model, device=device, allow_download=allow_download)
    fills = [s for s in steps if s.prompt is not None]
    if fills and not getattr(eng, "generative", False):
        raise InputError(f"compose: {fills[0].target!r} -> {fills[0].prompt!r} needs a generative engine "
                         f"(--engine sd); the {eng.name} engine can only remove")
    current, used, records = image, None, []
    for k, step in enumerate(steps):
        if on_step is not None:
            on_step(k, step)
        mask = np.asarray(segment(current, step.target))
        if mask.ndim != 2 or not mask.any():
            raise InputError(f"compose: nothing matching {step.target!r} was found in the image")
        if step.prompt is None:
            result = remove(current, mask, engine=eng, dilate=dilate, feather=feather, seed=seed, **options)
        else:
            result = fill(current, mask, step.prompt, engine=eng, dilate=dilate, feather=feather, seed=seed, **options)
        current = result.image
        used = result.mask if used is None else used | result.mask
        records.append({"target": step.target, **result.record})
    from anyseg.masks.rle import encode

    record = {"operation": "compose", "engine": eng.name, "model": eng.model_id, "seed": int(seed),
              "prompt": None, "dilate": int(dilate), "feather": int(feather),
              "seconds": round(sum(r.get("seconds", 0.0) for r in records), 3), "mask": encode(used),
              "mask_area": int(used.sum()), "steps": records}
    return EditResult(current, used, record)


def style(image: np.ndarray, mask: Any, style_image: Any, engine: str = "classical", strength: float = 1.0,
          feather: int = 8, seed: int = 0, prompt: str | None = None, **options: Any) -> EditResult:
    """The masked region restyled after ``style_image`` (:func:`anyseg.edit.style.style`: Reinhard
    colour transfer, histogram matching and guided-filter texture, or masked img2img with ``sd``);
    pixels outside the mask unchanged, the seam feathered."""
    import importlib

    module = importlib.import_module("anyseg.edit.style")
    return module.style(image, mask, style_image, engine=engine, strength=strength, feather=feather, seed=seed,
                        prompt=prompt, **options)


def cutout(image: np.ndarray, mask: Any, method: str = "matting", band: int = 10, feather: int = 0) -> EditResult:
    """An RGBA cut-out whose alpha is matted in a ``band``-pixel trimap around the mask's edge
    (:func:`anyseg.edit.cutout.cutout`; ``method="feather"``: a feathered edge instead)."""
    import importlib

    module = importlib.import_module("anyseg.edit.cutout")
    return module.cutout(image, mask, method=method, band=band, feather=feather)

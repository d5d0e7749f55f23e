"""Stable Diffusion inpainting through diffusers: the ``sd`` edit engine (fill, replace, generative style).

:class:`SdInpaintEngine` wraps diffusers' ``StableDiffusionInpaintPipeline`` (SD 1.x / 2.x
inpainting checkpoints, whose UNet takes 9 channels: the noisy latent, the mask at latent size
and the masked image's latent) or ``StableDiffusionXLInpaintPipeline`` (SDXL inpainting: two
text encoders and tokenizers, size and crop conditioning), built from a diffusers folder the
resolver found (``--model sd-inpainting | sd2-inpainting | sdxl-inpainting | PATH``; capability
``inpaint``). What it follows and where it differs:

* **No safety checker.** The pipelines are built with ``safety_checker=None`` and
  ``requires_safety_checker=False`` (its weights are not even downloaded), and SDXL's invisible
  watermark is off: anyseg does not filter or mark generated content; what is generated, and
  its use under the model's licence (CreativeML OpenRAIL-M / Open RAIL++-M), is the user's
  responsibility.
* The scheduler is the folder's (``scheduler/scheduler_config.json``'s ``_class_name``: PNDM for
  SD 1.5, DDIM / Euler for others), as ``from_pretrained`` would build it.
* **The working size.** The UNet's ``sample_size`` times the VAE's cell (512 for SD, 1024 for
  SDXL): the crop that :func:`anyseg.edit.base.run_inpaint` hands over is resized so that its
  longest side is the working size (smaller crops are upscaled, as Inpaint Anything runs SD on a
  512 x 512 crop around the mask; Stable Diffusion makes poor images far below its training
  size), each side rounded to a multiple of 8 pixels (the VAE's cell), run, and resized back
  to the crop's size. The aspect ratio is kept up to that rounding (and a floor of an eighth of
  the working size for very thin crops).
* **Reproducible.** The noise comes from ``torch.Generator(device).manual_seed(seed)``: the same
  seed, settings and device give the same image (bit-identical on CPU).
* ``strength`` < 1 starts from the input image noised to that level (masked img2img: what the
  generative style engine uses); ``steps x strength`` must leave at least one step.
* Precision: float16 on CUDA by default, float32 on CPU (``dtype`` overrides); a folder holding
  only the ``.fp16`` weight files is upcast when loaded in float32. The diffusers progress bar
  goes to tqdm with ``disable=None`` (shown on a terminal only).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from anyseg.errors import InputError, ModelError
from anyseg.models.registry import ModelSpec

__all__ = ["SdInpaintEngine", "DEFAULT_MODEL", "DEFAULTS", "check_settings"]

#: the model ``--engine sd`` uses when ``--model`` is not given
DEFAULT_MODEL = "sd-inpainting"
#: the settings every call may override (diffusers' inpainting defaults, except 25 steps rather than 50)
DEFAULTS: dict[str, Any] = {"steps": 25, "guidance": 7.5, "strength": 1.0, "negative_prompt": None}
_DTYPES = ("float32", "float16", "bfloat16")
_XL_TYPE = "stable-diffusion-xl-inpaint"


def check_settings(settings: dict[str, Any], what: str = "the sd engine") -> dict[str, Any]:
    """``settings`` (keys of :data:`DEFAULTS`) validated; one-line :class:`InputError` otherwise."""
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise InputError(f"unknown option(s) for {what}: {', '.join(unknown)}; expected {', '.join(DEFAULTS)}")
    out = {**DEFAULTS, **settings}
    steps, guidance, strength, negative = out["steps"], out["guidance"], out["strength"], out["negative_prompt"]
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= 1000:
        raise InputError(f"{what}: --steps must be a whole number in 1..1000; got {steps!r}")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= guidance <= 50:
        raise InputError(f"{what}: --guidance must be a number in 0..50; got {guidance!r}")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise InputError(f"{what}: --strength must be a number in (0, 1]; got {strength!r}")
    if int(steps * strength) < 1:
        raise InputError(f"{what}: --steps {steps} x --strength {strength} leaves no denoising step; "
                         "raise one of them")
    if negative is not None and not isinstance(negative, str):
        raise InputError(f"{what}: --negative-prompt must be text; got {type(negative).__name__}")
    return {"steps": int(steps), "guidance": float(guidance), "strength": float(strength),
            "negative_prompt": negative or None}


def _muted(fn: Any) -> Any:
    """``fn()`` with diffusers' and transformers' logs at error level."""
    import diffusers
    import transformers

    levels = diffusers.logging.get_verbosity(), transformers.logging.get_verbosity()
    diffusers.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    try:
        return fn()
    finally:
        diffusers.logging.set_verbosity(levels[0])
        transformers.logging.set_verbosity(levels[1])


def _scheduler(spec: ModelSpec, folder: Path) -> Any:
    """The folder's scheduler, from ``scheduler/scheduler_config.json``'s ``_class_name``."""
    import diffusers

    try:
        config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        name = config.get("_class_name")
    except (OSError, ValueError, AttributeError) as e:
        raise ModelError(f"{spec.name}: cannot read {folder / 'scheduler' / 'scheduler_config.json'} ({e})") from None
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise ModelError(f"{spec.name}: scheduler_config.json names {name!r}, which is not a diffusers scheduler")
    return _muted(lambda: cls.from_config(config))


def _index(folder: Path) -> dict[str, Any]:
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def _build_pipeline(spec: ModelSpec, folder: Path, xl: bool, torch_dtype: Any) -> Any:
    """The inpainting pipeline of a checked folder, with no safety checker and no watermark (module docstring)."""
    import diffusers
    import transformers

    from anyseg.models.diffusion import load_components

    classes: dict[str, Any] = {"unet": diffusers.UNet2DConditionModel, "vae": diffusers.AutoencoderKL,
                               "text_encoder": transformers.CLIPTextModel}
    tokenizers: tuple[str, ...] = ("tokenizer",)
    if xl:
        classes["text_encoder_2"] = transformers.CLIPTextModelWithProjection
        tokenizers = ("tokenizer", "tokenizer_2")
    parts = load_components(spec, folder, classes, tokenizers, torch_dtype)
    channels = parts["unet"].config.in_channels
    if channels not in (4, 9):
        raise ModelError(f"{spec.name}: its UNet takes {channels} input channels; an inpainting UNet takes 9 "
                         "(latent, mask, masked-image latent)")
    parts["scheduler"] = _scheduler(spec, folder)
    index = _index(folder)
    if xl:
        build = lambda: diffusers.StableDiffusionXLInpaintPipeline(  # noqa: E731
            **parts, image_encoder=None, feature_extractor=None, add_watermarker=False,
            requires_aesthetics_score=bool(index.get("requires_aesthetics_score", False)),
            force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)))
    else:
        build = lambda: diffusers.StableDiffusionInpaintPipeline(  # noqa: E731
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        pipeline = _muted(build)
    except Exception as e:  # noqa: BLE001 - a folder diffusers cannot assemble: one line
        from anyseg.models.diffusion import first_line

        raise ModelError(f"cannot build the inpainting pipeline of {spec.name} from {folder}: {first_line(e)}") from None
    pipeline.set_progress_bar_config(disable=None)
    return pipeline


def _round8(x: float, lo: int) -> int:
    return max(lo, int(round(x / 8.0)) * 8)


class SdInpaintEngine:
    """The ``sd`` engine: a diffusers inpainting pipeline and its settings (module docstring).

    Args:
        spec: the registry spec (or a local folder's).
        pipeline: the loaded ``StableDiffusion(XL)InpaintPipeline`` on ``device``.
        device: its torch device; dtype: ``float32`` / ``float16`` / ``bfloat16``.
        settings: ``steps``, ``guidance``, ``strength``, ``negative_prompt`` (:func:`check_settings`).
    """

    name = "sd"
    generative = True

    def __init__(self, spec: ModelSpec, pipeline: Any, device: str = "cpu", dtype: str = "float32",
                 **settings: Any) -> None:
        self.spec, self.pipeline, self.device, self.dtype = spec, pipeline, device, dtype
        self.settings = check_settings(settings)
        self.last_settings = self.settings  # what the latest inpaint ran with (per-call overrides included)
        self.xl = hasattr(pipeline, "text_encoder_2")
        self.vae_factor = 2 ** (len(pipeline.vae.config.block_out_channels) - 1)
        sample = pipeline.unet.config.sample_size
        sample = sample[0] if isinstance(sample, (list, tuple)) else sample
        self.working_size: int | None = int(sample) * self.vae_factor

    @property
    def model_id(self) -> str:
        """The spec's name and the settings of the latest call (the engine's own before any): what the
        record of that call must say to be reproduced."""
        s = self.last_settings
        precision = "" if self.dtype == "float32" else f"-{self.dtype}"
        return f"{self.spec.name}@steps{s['steps']}-cfg{s['guidance']:g}-strength{s['strength']:g}{precision}"

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, spec: ModelSpec, folder: Path, device: str | None = None, dtype: str | None = None,
                    **settings: Any) -> "SdInpaintEngine":
        """Load ``spec``'s inpainting pipeline from a resolved diffusers folder (the family's ``inpaint`` loader)."""
        from anyseg.models.device import check_device
        from anyseg.models.weights import check_weights_dir, read_model_type

        settings = check_settings(settings)
        device = check_device(device)
        dtype = _check_dtype(dtype, device)
        spec.family_record.check_requires(spec.name)
        folder = check_weights_dir(Path(folder), spec)
        import torch

        pipeline = _build_pipeline(spec, folder, read_model_type(folder) == _XL_TYPE, getattr(torch, dtype))
        pipeline = pipeline.to(device)
        return cls(spec, pipeline, device, dtype, **settings)

    @classmethod
    def from_options(cls, weights: Any = None, model: Any = None, device: str | None = None,
                     allow_download: bool = True, dtype: str | None = None, **settings: Any) -> "SdInpaintEngine":
        """The engine factory of :data:`anyseg.edit.base.ENGINES`.

        ``model``: a registry name (default :data:`DEFAULT_MODEL`), ``auto``, a diffusers folder,
        or a loaded :class:`SdInpaintEngine` (its pipeline is shared; its settings, overridden by
        these); ``weights``: a folder for a registry name. ``settings``: :data:`DEFAULTS`' keys.
        Bad settings are refused before anything is loaded.
        """
        if isinstance(model, SdInpaintEngine):
            if weights is not None:
                raise InputError("--weights goes with a model name, not with a loaded sd engine")
            if dtype is not None and dtype != model.dtype:
                raise InputError(f"the loaded sd engine computes in {model.dtype}; load it again for {dtype}")
            return cls(model.spec, model.pipeline, model.device, model.dtype, **{**model.settings, **settings})
        settings = check_settings(settings)
        from anyseg.models.device import check_device
        from anyseg.models.families import INPAINT
        from anyseg.models.resolver import resolve_folder

        device = check_device(device)
        _check_dtype(dtype, device)
        if model is None:
            model = DEFAULT_MODEL
        if not isinstance(model, (str, os.PathLike)):
            raise InputError(f"--model for the sd engine is a registry name or a folder; got {type(model).__name__}")
        spec, folder = resolve_folder(model, INPAINT, weights=weights, allow_download=allow_download, quiet=True)
        return spec.family_record.build("inpaint", spec, folder, device, dtype=dtype, **settings)

    # -- inpainting ------------------------------------------------------------------------------
    def run_size(self, h: int, w: int) -> tuple[int, int]:
        """``(height, width)`` the pipeline runs at for an ``h x w`` crop (module docstring)."""
        size = self.working_size or max(h, w)
        scale = float(size) / max(h, w)
        lo = _round8(size / 8.0, 8)  # a very thin crop keeps at least an eighth of the working size
        return _round8(h * scale, lo), _round8(w * scale, lo)

    def inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str | None = None, seed: int = 0,
                **options: Any) -> np.ndarray:
        """``image`` ``(h, w, 3)`` uint8 with the ``mask`` pixels generated from ``prompt``; same size.

        ``options`` override the engine's settings for this call (:data:`DEFAULTS`' keys). The
        pixels outside ``mask`` come back through the VAE (not identical); the caller pastes
        only the masked ones (:func:`anyseg.edit.base.paste_back`).
        """
        from PIL import Image

        from anyseg.models.base import check_image

        if not (isinstance(prompt, str) and prompt.strip()):
            raise InputError("the sd engine generates content from text: give --prompt")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 63:
            raise InputError(f"--seed must be a whole number in 0..2^63-1; got {seed!r}")
        settings = check_settings({**self.settings, **options})
        image = check_image(image)
        mask = np.asarray(mask)
        if mask.shape != image.shape[:2]:
            raise InputError(f"the sd engine: the mask is {mask.shape[::-1]} but the image is {image.shape[1::-1]}")
        h, w = image.shape[:2]
        rh, rw = self.run_size(h, w)
        src = Image.fromarray(image).resize((rw, rh), Image.BICUBIC)
        msk = Image.fromarray((mask > 0).astype(np.uint8) * 255).resize((rw, rh), Image.NEAREST)
        self.last_settings = settings
        out = self._generate(src, msk, prompt, int(seed), rh, rw, settings)
        if (rh, rw) != (h, w):
            out = np.asarray(Image.fromarray(out).resize((w, h), Image.BICUBIC if rh < h else Image.LANCZOS))
        return np.ascontiguousarray(out, dtype=np.uint8)

    def _generate(self, image: Any, mask: Any, prompt: str, seed: int, h: int, w: int,
                  settings: dict[str, Any]) -> np.ndarray:
        import torch

        generator = torch.Generator(device=self.device).manual_seed(seed)
        kwargs = dict(prompt=prompt, image=image, mask_image=mask, height=h, width=w,
                      num_inference_steps=settings["steps"], guidance_scale=settings["guidance"],
                      strength=settings["strength"], negative_prompt=settings["negative_prompt"],
                      generator=generator, output_type="np")
        try:
            result = _muted(lambda: self.pipeline(**kwargs).images[0])  # diffusers warns on every VAE cast
        except torch.cuda.OutOfMemoryError:
            raise ModelError(f"{self.spec.name}: out of GPU memory at {w}x{h}; use --device cpu or a smaller "
                             "model") from None
        result = np.asarray(result, dtype=np.float32)
        if result.shape[:2] != (h, w) or result.ndim != 3:
            raise ModelError(f"{self.spec.name} returned a {result.shape} image for {w}x{h}")
        if not math.isfinite(float(result.sum())):
            raise ModelError(f"{self.spec.name} produced NaN pixels in {self.dtype} (a numeric overflow); "
                             "try --dtype float32")
        return np.clip(np.rint(result * 255.0), 0, 255).astype(np.uint8)

    def __repr__(self) -> str:
        return f"SdInpaintEngine({self.model_id!r}, size={self.working_size}, device={self.device!r})"


def _check_dtype(dtype: str | None, device: str) -> str:
    """``dtype`` or the device's default (float16 on CUDA, float32 elsewhere); one-line errors."""
    if dtype is None:
        return "float16" if device.startswith("cuda") else "float32"
    if dtype not in _DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(_DTYPES)}; got {dtype!r}")
    return dtype

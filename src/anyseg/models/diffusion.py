"""Stable Diffusion through diffusers, for reading its UNet's self-attention (the ``diffusion`` loader).

:meth:`DiffusionModel.from_folder` loads, from a diffusers pipeline folder
(``model_index.json`` + ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``;
safetensors only), the ``UNet2DConditionModel``, the ``AutoencoderKL`` and the CLIP text
encoder; never the safety checker. :meth:`DiffusionModel.self_attention` runs what DiffSeg
(Tian et al., CVPR 2024, reference: google/diffseg) reads, as its keras-cv code does:

* the image is resized to ``size x size`` (512 for SD 1.x: the UNet's ``sample_size`` times the
  VAE's 8-pixel cell), scaled to ``[-1, 1]`` and encoded by the VAE: the latent is the
  posterior *mean* times ``scaling_factor`` (keras-cv's image encoder ends with
  ``mean * 0.18215``; no sampling);
* one UNet forward at timestep ``t`` (300) with the empty prompt's text embedding (BOS then
  EOS padding, keras-cv's unconditional tokens). The reference adds **no noise** to the latent
  (it feeds the clean latent with ``t``'s embedding); ``noise=True`` adds the scheduler's noise
  for ``t`` instead (an option, off by default);
* a recording attention processor (:class:`RecordingProcessor`, set with
  ``set_attn_processor`` on every ``attn1``) computes each self-attention layer exactly as the
  default processor does, in query chunks (at most ``chunk_elems`` scores at once), and adds
  ``softmax(QK^T / sqrt(d))`` averaged over heads to one ``(n, n)`` sum per token count ``n``
  (resolution): memory is one map per resolution, never one per layer or per head. The
  reference averages the layers of each resolution (``temp / 5`` over 5 layers, the mid block
  alone at 8 x 8); :attr:`SelfAttention.maps` holds those means.

The input of the last self-attention layer at the largest resolution (the UNet's last up
block, ``norm1`` output, ``(n, C)``) is kept as :attr:`SelfAttention.features`: a per-cell
descriptor for clustering segments across images (not in the reference).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anyseg.errors import InputError, ModelError
from anyseg.models.registry import ModelSpec

__all__ = ["DiffusionModel", "RecordingProcessor", "AttentionRecorder", "SelfAttention", "load_diffusion",
           "resolve_diffusion", "preprocess", "load_components", "first_line", "TIMESTEP", "CHUNK_ELEMS"]

#: the reference's timestep (diffseg.ipynb / benchmarks.ipynb: ``timestep=300``)
TIMESTEP = 300
#: at most this many attention scores are held at once per layer (query chunks): 64 MiB of float32
CHUNK_ELEMS = 1 << 24
_DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class SelfAttention:
    """What one UNet pass recorded.

    Attributes:
        maps: token count ``n`` (a ``s x s`` latent grid) -> ``(n, n)`` float32 torch tensor, the
            head-averaged self-attention probabilities averaged over that resolution's layers
            (row ``i``: where cell ``i`` attends; each row sums to 1).
        layers: token count -> the names of the layers that were recorded there.
        features: ``(n, C)`` float32 torch tensor at the largest ``n``: the input of its last
            self-attention layer.
    """

    maps: dict[int, Any]
    layers: dict[int, list[str]]
    features: Any = None

    @property
    def resolution(self) -> int:
        """The side of the largest attention grid (64 for SD 1.x at 512 pixels)."""
        return math.isqrt(max(self.maps))


@dataclass
class AttentionRecorder:
    """Running sums of head-averaged self-attention, one ``(n, n)`` buffer per token count."""

    sums: dict[int, Any] = field(default_factory=dict)
    layers: dict[int, list[str]] = field(default_factory=dict)
    features: dict[int, Any] = field(default_factory=dict)

    def buffer(self, n: int, device: Any) -> Any:
        import torch

        if n not in self.sums:
            self.sums[n] = torch.zeros((n, n), dtype=torch.float32, device=device)
            self.layers[n] = []
        return self.sums[n]

    def result(self) -> SelfAttention:
        if not self.sums:
            raise ModelError("the UNet ran no self-attention layer (is it a Stable Diffusion UNet?)")
        maps = {n: s / len(self.layers[n]) for n, s in self.sums.items()}
        top = max(maps)
        if math.isqrt(top) ** 2 != top:
            raise ModelError(f"the UNet's largest self-attention has {top} tokens: not a square latent grid")
        return SelfAttention(maps, {n: list(v) for n, v in self.layers.items()}, self.features.get(top))


class RecordingProcessor:
    """A diffusers attention processor that records softmax(QK^T) averaged over heads (module docstring).

    The output is the default processor's (``AttnProcessor``): the same projections, scale and
    softmax, computed in query chunks of at most ``chunk_elems`` scores. Cross-attention calls
    (``encoder_hidden_states`` given) are computed and not recorded.
    """

    def __init__(self, recorder: AttentionRecorder, name: str, chunk_elems: int = CHUNK_ELEMS) -> None:
        self.recorder, self.name, self.chunk_elems = recorder, name, int(chunk_elems)

    def __call__(self, attn: Any, hidden_states: Any, encoder_hidden_states: Any = None, attention_mask: Any = None,
                 temb: Any = None, *args: Any, **kwargs: Any) -> Any:
        import torch

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        ndim = hidden_states.ndim
        if ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        record = encoder_hidden_states is None and attention_mask is None
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        batch, n, _ = hidden_states.shape
        heads = attn.heads
        q = attn.to_q(hidden_states)
        k, v = attn.to_k(context), attn.to_v(context)
        q, k, v = (x.view(batch, x.shape[1], heads, -1).transpose(1, 2) for x in (q, k, v))
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, k.shape[2], batch)
            attention_mask = attention_mask.view(batch, heads, -1, k.shape[2])
        out = torch.empty_like(q)
        step = max(1, min(n, self.chunk_elems // max(1, batch * heads * k.shape[2])))
        acc = self.recorder.buffer(n, q.device) if record else None
        for s in range(0, n, step):
            scores = torch.matmul(q[:, :, s:s + step].float(), k.float().transpose(-1, -2)) * attn.scale
            if attention_mask is not None:
                scores = scores + attention_mask[:, :, s:s + step].float()
            probs = scores.softmax(dim=-1)
            out[:, :, s:s + step] = torch.matmul(probs.to(v.dtype), v)
            if acc is not None:
                acc[s:s + step] += probs.mean(dim=(0, 1))
        if record:
            self.recorder.layers[n].append(self.name)
            self.recorder.features[n] = hidden_states[0].detach().float()
        hidden_states = out.transpose(1, 2).reshape(batch, n, -1)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """``(1, 3, size, size)`` float32 in ``[-1, 1]``: the whole image resized (PIL bilinear), no crop.

    The reference centre-crops to a square before resizing to 512; here every pixel is kept
    (the aspect ratio is not), so that the partition covers the whole image.
    """
    from PIL import Image

    from anyseg.models.base import check_image

    image = check_image(image)
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), dtype=np.float32)
    return np.ascontiguousarray((resized / 127.5 - 1.0).transpose(2, 0, 1)[None])


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class DiffusionModel:
    """A Stable Diffusion UNet, VAE and text encoder (module docstring).

    Args:
        spec: the registry spec (or a local folder's).
        unet, vae, text_encoder, tokenizer: the loaded diffusers / transformers parts, in eval mode.
        device: torch device; dtype: their torch dtype.
        scheduler_config: ``scheduler/scheduler_config.json`` (used only with ``noise=True``).
    """

    def __init__(self, spec: ModelSpec, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, device: str = "cpu",
                 dtype: Any = None, scheduler_config: dict[str, Any] | None = None, folder: Path | None = None) -> None:
        self.spec, self.name, self.unet, self.vae, self.text_encoder, self.tokenizer = (
            spec, spec.name, unet, vae, text_encoder, tokenizer)
        self.device, self.dtype, self.folder = device, dtype if dtype is not None else unet.dtype, folder
        self.scheduler_config = dict(scheduler_config or {})
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.unet_factor = 2 ** (len(unet.config.down_block_types) - 1)
        sample = unet.config.sample_size
        sample = sample[0] if isinstance(sample, (list, tuple)) else sample
        self.default_size = int(sample) * self.vae_factor
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 0.18215) or 0.18215)
        self._context: Any = None

    @property
    def model_id(self) -> str:
        return self.name

    @classmethod
    def from_folder(cls, spec: ModelSpec, folder: Path, device: str | None = None, dtype: str | None = None,
                    **options: Any) -> "DiffusionModel":
        """Load ``spec``'s pipeline parts from a resolved diffusers folder (the family's ``diffusion`` loader).

        ``dtype``: ``float32`` (default), ``float16`` or ``bfloat16``; a folder with only the
        ``.fp16`` weight files is loaded from them (upcast to ``dtype``). Unknown ``options``
        are a one-line :class:`InputError`.
        """
        from anyseg.models.device import check_device
        from anyseg.models.weights import check_weights_dir

        if options:
            raise InputError(f"unknown diffusion model options: {', '.join(sorted(options))}")
        if dtype is not None and dtype not in _DTYPES:
            raise InputError(f"dtype must be one of {', '.join(_DTYPES)}; got {dtype!r}")
        device = check_device(device)
        spec.family_record.check_requires(spec.name)
        folder = check_weights_dir(Path(folder), spec)
        import torch

        torch_dtype = getattr(torch, dtype or "float32")
        parts = _load_parts(spec, folder, torch_dtype)
        for part in ("unet", "vae", "text_encoder"):
            parts[part] = parts[part].eval().to(device)
        return cls(spec, device=device, dtype=torch_dtype, folder=folder, **parts)

    # -- the pieces of one pass -----------------------------------------------------------
    def empty_context(self) -> Any:
        """The empty prompt's text embedding ``(1, L, D)`` (cached)."""
        import torch

        if self._context is None:
            tok = self.tokenizer
            ids = tok([""], padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids.to(self.device)
            with torch.inference_mode():
                self._context = self.text_encoder(ids)[0].to(self.dtype)
        return self._context

    def encode(self, pixels: np.ndarray) -> Any:
        """The VAE latent of ``(1, 3, S, S)`` pixels in ``[-1, 1]``: posterior mean x ``scaling_factor``."""
        import torch

        x = torch.from_numpy(pixels).to(self.device, self.dtype)
        with torch.inference_mode():
            return self.vae.encode(x).latent_dist.mean * self.scaling_factor

    def _noised(self, latent: Any, timestep: int, seed: int) -> Any:
        import torch
        from diffusers import DDPMScheduler

        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
        scheduler = DDPMScheduler(**{k: v for k, v in self.scheduler_config.items() if k in keys})
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.randn(latent.shape, generator=gen, dtype=torch.float32).to(latent.device, latent.dtype)
        return scheduler.add_noise(latent, noise, torch.tensor([int(timestep)]))

    def check_size(self, size: Any) -> int:
        """``size`` (``None``: :attr:`default_size`) as pixels the VAE and UNet can take; one-line errors."""
        if size is None:
            return self.default_size
        step = self.vae_factor * self.unet_factor
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2 * step or size % step:
            raise InputError(f"diffusion input size must be a multiple of {step} pixels, at least {2 * step}; "
                             f"got {size!r}")
        if size > 2 * self.default_size:
            raise InputError(f"diffusion input size {size} is above {2 * self.default_size} (2x the model's "
                             f"{self.default_size}): its (cells x cells) attention maps would not fit in memory")
        return int(size)

    def check_timestep(self, timestep: Any) -> int:
        """``timestep`` as a whole number in ``0..num_train_timesteps - 1``; one-line errors."""
        train_steps = int(self.scheduler_config.get("num_train_timesteps", 1000))
        if isinstance(timestep, bool) or not isinstance(timestep, (int, np.integer)) or not 0 <= timestep < train_steps:
            raise InputError(f"timestep must be a whole number in 0..{train_steps - 1}; got {timestep!r}")
        return int(timestep)

    def self_attention(self, image: np.ndarray, size: int | None = None, timestep: int = TIMESTEP,
                       noise: bool = False, seed: int = 0, chunk_elems: int = CHUNK_ELEMS) -> SelfAttention:
        """One UNet pass over ``image`` ``(H, W, 3)`` uint8; its recorded self-attention (module docstring)."""
        import torch

        size = self.check_size(size)
        timestep = self.check_timestep(timestep)
        latent = self.encode(preprocess(image, size))
        if noise:
            latent = self._noised(latent, int(timestep), seed)
        recorder = AttentionRecorder()
        original = dict(self.unet.attn_processors)
        self.unet.set_attn_processor({
            name: RecordingProcessor(recorder, name[: -len(".processor")], chunk_elems)
            if name.endswith("attn1.processor") else proc for name, proc in original.items()})
        try:
            with torch.inference_mode():
                self.unet(latent, torch.tensor([int(timestep)], device=self.device),
                          encoder_hidden_states=self.empty_context())
        finally:
            self.unet.set_attn_processor(dict(original))
        return recorder.result()

    def __repr__(self) -> str:
        return f"DiffusionModel({self.name!r}, size={self.default_size}, device={self.device!r})"


def _variant(sub: Path, stem: str) -> str | None:
    """``None`` when the main (fp32) weights file is there, else ``fp16`` (the folder check found one)."""
    return None if (sub / f"{stem}.safetensors").is_file() else "fp16"


def load_components(spec: ModelSpec, folder: Path, classes: dict[str, Any], tokenizers: tuple[str, ...],
                    torch_dtype: Any) -> dict[str, Any]:
    """``{component: model}`` for each ``classes`` entry (diffusers / transformers classes, loaded from
    ``folder/component`` with safetensors only, the ``.fp16`` files where the main ones are absent) and
    ``{tokenizer: CLIPTokenizer}`` for each of ``tokenizers``; the libraries' logs and bars muted, and
    any failure one :class:`ModelError` line. Shared by DiffSeg's loader and the inpainting engine."""
    import diffusers
    import transformers

    from anyseg.models.weights import DIFFUSERS_COMPONENTS

    stems = {c: w for weights, _ in DIFFUSERS_COMPONENTS.values() for c, w in weights.items()}
    levels = diffusers.logging.get_verbosity(), transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    diffusers.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    parts: dict[str, Any] = {}
    try:
        for part, cls in classes.items():
            variant = _variant(folder / part, stems.get(part, "model"))
            kwargs: dict[str, Any] = {"use_safetensors": True, "torch_dtype": torch_dtype}
            if variant:
                kwargs["variant"] = variant
            parts[part] = cls.from_pretrained(str(folder / part), **kwargs)
        for part in tokenizers:
            parts[part] = transformers.CLIPTokenizer.from_pretrained(str(folder / part))
    except Exception as e:  # noqa: BLE001 - every loading failure becomes one line
        raise ModelError(f"cannot load {spec.name} from {folder}: {first_line(e)}") from None
    finally:
        diffusers.logging.set_verbosity(levels[0])
        transformers.logging.set_verbosity(levels[1])
        if bars:
            transformers.utils.logging.enable_progress_bar()
    return parts


def _load_parts(spec: ModelSpec, folder: Path, torch_dtype: Any) -> dict[str, Any]:
    """The UNet, VAE, text encoder, tokenizer and scheduler config of a checked folder (one-line errors)."""
    import json

    import diffusers
    import transformers

    classes = {"unet": diffusers.UNet2DConditionModel, "vae": diffusers.AutoencoderKL,
               "text_encoder": transformers.CLIPTextModel}
    parts = load_components(spec, folder, classes, ("tokenizer",), torch_dtype)
    try:
        parts["scheduler_config"] = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError):
        parts["scheduler_config"] = {}
    return parts


def resolve_diffusion(name_or_path: str | os.PathLike = "sd-v1-4", allow_download: bool = True,
                      weights: str | os.PathLike | None = None) -> tuple[ModelSpec, Path]:
    """The spec and weights folder of a diffusion model: a registry name, ``auto`` or a diffusers folder
    (:func:`anyseg.models.resolver.resolve_folder` with capability ``diffusion``: one-line errors for
    a model of another family, an absent model, or a folder no family reads)."""
    from anyseg.models.families import DIFFUSION
    from anyseg.models.resolver import resolve_folder

    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ModelError(f"a model is a registry name or a folder path; got {type(name_or_path).__name__}")
    spec, folder = resolve_folder(name_or_path, DIFFUSION, weights=weights, allow_download=allow_download, quiet=True)
    spec.family_record.check_requires(spec.name)
    return spec, folder


def load_diffusion(name_or_path: str | os.PathLike = "sd-v1-4", device: str | None = None,
                   allow_download: bool = True, weights: str | os.PathLike | None = None,
                   **options: Any) -> DiffusionModel:
    """Load a diffusion model (capability ``diffusion``) by registry name, ``auto`` or local diffusers folder."""
    from anyseg.models.device import check_device

    if device is not None:
        device = check_device(device)
    spec, folder = resolve_diffusion(name_or_path, allow_download=allow_download, weights=weights)
    return spec.family_record.build("diffusion", spec, folder, device, **options)

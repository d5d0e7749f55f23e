"""Region style transfer: the masked region takes on a style image's look (``anyseg edit style``).

:func:`style` restyles the pixels of ``mask`` only; every pixel outside it is bit-identical to
the input, and the seam is feathered inside the mask's edge (:func:`anyseg.edit.base.run_inpaint`
with no dilation: check, crop, restyle the crop, :func:`~anyseg.edit.base.paste_back`).
``strength`` blends the restyled region with the original (0: the input unchanged, 1: fully
restyled; 0 returns the input exactly, at any size). Two engines:

**classical** (no weights; ``method`` = steps joined by ``+``, default ``reinhard+texture``):

* ``reinhard``: colour transfer of Reinhard, Ashikhmin, Gooch & Shirley (2001, "Color Transfer
  between Images"): each channel of the region is shifted and scaled so that its mean and
  standard deviation become the style image's, ``l' = (sigma_s / sigma_c) (l - mu_c) + mu_s``.
  The paper works in its lαβ space (decorrelated log-LMS); here CIE L*a*b* (float, D65; OpenCV)
  is used, as the widespread implementations do. The content statistics are the region's (the
  masked pixels), not the whole image's; a flat channel (sigma 0) takes the style's mean.
* ``histogram``: histogram matching per RGB channel of the region's pixels onto the style
  image's (:func:`skimage.exposure.match_histograms`): each channel's CDF becomes the style's.
* ``texture`` (after a colour step, or alone): "texture through guided filtering". The guided
  filter of He, Sun & Tang (ECCV 2010; its reference ``guidedfilter.m``: box means over a
  ``(2r+1)^2`` window divided by the window's in-image pixel count ``N``, ``a = cov(I,p) /
  (var(I) + eps)``, ``b = mean_p - a mean_I``, ``q = mean_a I + mean_b``), written with
  ``cv2.boxFilter`` and guided by the image's luminance, splits an image into an
  edge-preserving **base layer** and a **detail layer** (image minus base). The region keeps its
  own base layer (its structure: shapes, edges, shading, after the colour step) and its detail
  layer is replaced by the style image's detail layer, tiled over the region (mirrored tiles at
  a ``seed``-drawn offset; the style at its own resolution, at most 2048 px on its longest
  side): the style's fine texture (brush strokes, grain) at the style's own amplitude, on the
  content's shapes. Defaults ``radius`` 8, ``eps`` 0.01 (He et al.'s detail-enhancement example
  uses ``r`` 16 and ``eps`` 0.1^2 on images twice the size of a typical region crop).

**sd** (generative, ``--prompt`` required): masked img2img with a Stable Diffusion inpainting
pipeline (:class:`anyseg.edit.sd.SdInpaintEngine`) at ``denoise`` 0.6 (the pipeline's
``strength``: the region is noised 60 % of the way and regenerated from the prompt, so its
layout survives). Stable Diffusion inpainting has **no image encoder**: it cannot see the style
image, so the style must be described in words (``--prompt "an oil painting, thick brush
strokes"``); without one the call is a one-line error. The style image is still used: its
colours are transferred to the region first (``reinhard``, ``precolour=True``), and the
pipeline re-renders from there.

A style image that is not an image array is a one-line :class:`InputError` (reading files is
the task layer's job).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anyseg.edit.base import EditResult, run_inpaint
from anyseg.errors import InputError

__all__ = ["style", "check_style_image", "guided_filter", "reinhard_transfer", "histogram_transfer",
           "texture_transfer", "ClassicalStyleEngine", "GenerativeStyleEngine", "STYLE_ENGINES", "METHODS",
           "DEFAULT_METHOD", "DEFAULT_DENOISE"]

STYLE_ENGINES = ("classical", "sd")
#: the classical steps: one colour step (reinhard or histogram) and / or texture, joined by "+"
METHODS = ("reinhard", "histogram", "texture", "reinhard+texture", "histogram+texture")
DEFAULT_METHOD = "reinhard+texture"
#: the generative engine's img2img strength (how far the region is noised before regeneration)
DEFAULT_DENOISE = 0.6
#: the style image's longest side used (larger ones are reduced: memory stays bounded)
STYLE_MAX_SIDE = 2048
_CLASSICAL_OPTIONS = {"method", "radius", "eps", "working_size", "dilate"}
_SD_OPTIONS = {"model", "weights", "device", "allow_download", "steps", "guidance", "denoise", "negative_prompt",
               "dtype", "precolour", "dilate"}


# -- inputs ---------------------------------------------------------------------------------------
def check_style_image(style_image: Any) -> np.ndarray:
    """``style_image`` as ``(H, W, 3)`` uint8 (at most :data:`STYLE_MAX_SIDE` px on its longest side),
    or a one-line :class:`InputError` for anything that is not an image array."""
    import cv2

    from anyseg.models.base import check_image

    if hasattr(style_image, "convert") and hasattr(style_image, "size"):  # a PIL image
        style_image = np.asarray(style_image.convert("RGB"))
    if not isinstance(style_image, np.ndarray):
        raise InputError(f"style: the style image must be an image array (H, W, 3); got {type(style_image).__name__}")
    arr = style_image
    if arr.dtype.kind not in "uifb" or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise InputError(f"style: the style image must be an (H, W, 3) image array; got a {arr.dtype} array of "
                         f"shape {'x'.join(map(str, arr.shape))}")
    if min(arr.shape[:2]) < 4:
        raise InputError(f"style: the style image is {arr.shape[1]}x{arr.shape[0]}: too small (at least 4x4)")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError("style: the style image has NaN or infinite values")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    out = check_image(arr.astype(np.uint8) * 255 if arr.dtype == bool else arr)
    side = max(out.shape[:2])
    if side > STYLE_MAX_SIDE:
        s = STYLE_MAX_SIDE / side
        out = cv2.resize(out, (max(4, round(out.shape[1] * s)), max(4, round(out.shape[0] * s))),
                         interpolation=cv2.INTER_AREA)
    return out


def _check_number(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or not lo <= value <= hi:
        raise InputError(f"style: {name} must be a number in {lo:g}..{hi:g}; got {value!r}")
    return float(value)


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise InputError(f"style: {name} must be a whole number in {lo}..{hi}; got {value!r}")
    return int(value)


def _check_method(method: Any) -> tuple[str, ...]:
    if not isinstance(method, str) or method not in METHODS:
        raise InputError(f"style: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return tuple(method.split("+"))


# -- the classical steps --------------------------------------------------------------------------
def _to_lab(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def _from_lab(lab: np.ndarray) -> np.ndarray:
    import cv2

    return np.clip(cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB), 0.0, 1.0) * 255.0


def reinhard_transfer(image: np.ndarray, mask: np.ndarray, style_image: np.ndarray) -> np.ndarray:
    """``image`` (float RGB 0..255 or uint8) with every pixel mapped by the Lab mean / std transfer that
    takes the ``mask`` region's statistics to ``style_image``'s (module docstring); float32 RGB 0..255."""
    if not mask.any():  # a sliver lost to the crop's resizing: nothing to measure
        return np.asarray(image, np.float32)
    lab, ref = _to_lab(image), _to_lab(style_image).reshape(-1, 3)
    region = lab[mask]
    mu_c, sd_c = region.mean(0), region.std(0)
    mu_s, sd_s = ref.mean(0), ref.std(0)
    gain = np.where(sd_c > 1e-6, sd_s / np.maximum(sd_c, 1e-6), 0.0).astype(np.float32)
    return _from_lab((lab - mu_c) * gain + mu_s)


def histogram_transfer(image: np.ndarray, mask: np.ndarray, style_image: np.ndarray) -> np.ndarray:
    """``image`` with the ``mask`` region's pixels histogram-matched per RGB channel to ``style_image``
    (:func:`skimage.exposure.match_histograms`); the other pixels as they are. float32 RGB 0..255."""
    from skimage.exposure import match_histograms

    img = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    out = img.astype(np.float32)
    if not mask.any():
        return out
    region = img[mask][:, None, :]  # (n, 1, 3): the region's pixels as an image
    out[mask] = match_histograms(region, style_image, channel_axis=-1)[:, 0, :].astype(np.float32)
    return out


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter (module docstring): ``guide`` ``(H, W)``, ``src`` ``(H, W)`` or
    ``(H, W, C)``, float32; box means divided by the in-image window size, as ``guidedfilter.m``."""
    import cv2

    k = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)

    def per_channel(x: np.ndarray) -> np.ndarray:  # (H, W) -> broadcastable against src
        return x[..., None] if src.ndim == 3 else x

    guide = guide.astype(np.float32)
    src = src.astype(np.float32)
    n = box(np.ones(guide.shape, np.float32))  # the window's pixel count inside the image
    mean_guide = box(guide) / n
    var_i = per_channel(box(guide * guide) / n - mean_guide * mean_guide)
    g, nn, mean_i = per_channel(guide), per_channel(n), per_channel(mean_guide)
    mean_p = box(src) / nn
    cov_ip = box(src * g) / nn - mean_i * mean_p
    a = cov_ip / (var_i + eps)  # He et al. eq. (5)
    b = mean_p - a * mean_i  # eq. (6)
    return box(a) / nn * g + box(b) / nn  # eq. (8)


def _luma(rgb01: np.ndarray) -> np.ndarray:
    return rgb01 @ np.array([0.299, 0.587, 0.114], np.float32)


def _detail(rgb01: np.ndarray, radius: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(base, detail)`` of a float RGB image in 0..1: the luminance-guided filter and the rest."""
    base = guided_filter(_luma(rgb01), rgb01, radius, eps)
    return base, rgb01 - base


def _tile(layer: np.ndarray, h: int, w: int, seed: int) -> np.ndarray:
    """``layer`` mirror-tiled to ``(h, w)`` from an offset drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    sh, sw = layer.shape[:2]
    y0, x0 = int(rng.integers(0, sh)), int(rng.integers(0, sw))
    reps = (-(-(h + y0) // sh) + 1, -(-(w + x0) // sw) + 1)
    rows = [np.flip(layer, 0) if i % 2 else layer for i in range(reps[0])]
    column = np.concatenate(rows, 0)
    tiles = [np.flip(column, 1) if j % 2 else column for j in range(reps[1])]
    return np.concatenate(tiles, 1)[y0:y0 + h, x0:x0 + w]


def texture_transfer(image: np.ndarray, style_image: np.ndarray, radius: int = 8, eps: float = 0.01,
                     seed: int = 0) -> np.ndarray:
    """``image``'s guided-filter base layer plus ``style_image``'s detail layer tiled over it (module
    docstring); float32 RGB 0..255."""
    content = np.asarray(image, np.float32) / 255.0
    base, _ = _detail(content, radius, eps)
    _, style_detail = _detail(style_image.astype(np.float32) / 255.0, radius, eps)
    h, w = content.shape[:2]
    return np.clip(base + _tile(style_detail, h, w, seed), 0.0, 1.0) * 255.0


# -- the engines run_inpaint drives -------------------------------------------------------------
def _blend(original: np.ndarray, styled: np.ndarray, strength: float) -> np.ndarray:
    """``(1 - strength) original + strength styled``, rounded to uint8 (strength 0: ``original`` exactly)."""
    if strength <= 0.0:
        return original.copy()
    out = (1.0 - strength) * original.astype(np.float32) + strength * np.asarray(styled, np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class ClassicalStyleEngine:
    """The classical style engine as an :class:`~anyseg.edit.base.InpaintEngine`: ``inpaint`` restyles
    the crop from the ``mask`` region's statistics (only the mask is pasted back)."""

    name = "classical"
    generative = False

    def __init__(self, style_image: np.ndarray, strength: float = 1.0, method: str = DEFAULT_METHOD,
                 radius: int = 8, eps: float = 0.01, working_size: int = 2048) -> None:
        self.style_image = check_style_image(style_image)
        self.strength = _check_number("--strength", strength, 0.0, 1.0)
        self.steps = _check_method(method)
        self.method = method
        self.radius = _check_int("radius", radius, 1, 64)
        self.eps = _check_number("eps", eps, 1e-8, 1.0)
        self.working_size: int | None = _check_int("working_size", working_size, 64, 8192)

    @property
    def model_id(self) -> str:
        texture = f",r={self.radius},eps={self.eps:g}" if "texture" in self.steps else ""
        return f"classical-style({self.method}{texture})"

    def inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str | None = None, seed: int = 0,
                **options: Any) -> np.ndarray:
        if options:
            raise InputError(f"unknown option(s) for the classical style engine: {', '.join(sorted(options))}")
        if self.strength <= 0.0:
            return image.copy()
        out = image.astype(np.float32)
        for step in self.steps:
            if step == "reinhard":
                out = reinhard_transfer(out, mask, self.style_image)
            elif step == "histogram":
                out = histogram_transfer(out, mask, self.style_image)
            else:
                out = texture_transfer(out, self.style_image, self.radius, self.eps, seed)
        return _blend(image, out, self.strength)


class GenerativeStyleEngine:
    """The ``sd`` style engine: the style image's colours (Reinhard, unless ``precolour`` is off), then
    masked img2img with an :class:`~anyseg.edit.sd.SdInpaintEngine` at ``denoise``, blended by ``strength``."""

    name = "sd"
    generative = True

    def __init__(self, sd: Any, style_image: np.ndarray, strength: float = 1.0, denoise: float = DEFAULT_DENOISE,
                 precolour: bool = True) -> None:
        self.sd, self.style_image = sd, check_style_image(style_image)
        self.strength = _check_number("--strength", strength, 0.0, 1.0)
        self.denoise = _check_number("denoise", denoise, 1e-3, 1.0)
        if not isinstance(precolour, bool):
            raise InputError(f"style: precolour must be true or false; got {precolour!r}")
        self.precolour = precolour
        self.working_size: int | None = sd.working_size

    @property
    def model_id(self) -> str:
        return f"{self.sd.model_id}+style(denoise={self.denoise:g}{',reinhard' if self.precolour else ''})"

    def inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str | None = None, seed: int = 0,
                **options: Any) -> np.ndarray:
        if self.strength <= 0.0:
            return image.copy()
        start = image
        if self.precolour:
            start = np.clip(np.rint(reinhard_transfer(image, mask, self.style_image)), 0, 255).astype(np.uint8)
        out = self.sd.inpaint(start, mask, prompt=prompt, seed=seed, strength=self.denoise, **options)
        return _blend(image, out, self.strength)


def _split(options: dict[str, Any], allowed: set[str], engine: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"style: unknown option(s) for the {engine} engine: {', '.join(unknown)}; expected "
                         f"{', '.join(sorted(allowed))}")


def _sd_engine(style_image: np.ndarray, strength: float, prompt: str | None, options: dict[str, Any]) -> Any:
    if not (isinstance(prompt, str) and prompt.strip()):
        raise InputError("style: the sd engine cannot see the style image (Stable Diffusion inpainting has no image "
                         "encoder): describe the style with --prompt, e.g. --prompt 'an oil painting, thick brush "
                         "strokes', or use --engine classical")
    from anyseg.edit.sd import SdInpaintEngine

    keys = ("steps", "guidance", "negative_prompt")
    settings = {k: options[k] for k in keys if k in options}
    loader = {k: options[k] for k in ("model", "weights", "device", "allow_download", "dtype") if k in options}
    denoise = options.get("denoise", DEFAULT_DENOISE)
    _check_number("denoise", denoise, 1e-3, 1.0)
    sd = SdInpaintEngine.from_options(strength=float(denoise), **loader, **settings)
    return GenerativeStyleEngine(sd, style_image, strength, float(denoise), options.get("precolour", True))


def style(image: np.ndarray, mask: np.ndarray, style_image: Any, engine: str = "classical", strength: float = 1.0,
          feather: int = 8, seed: int = 0, prompt: str | None = None, **options: Any) -> EditResult:
    """Restyle the ``mask`` region of ``image`` after ``style_image`` (module docstring).

    Args:
        image: ``(H, W, 3)`` uint8 RGB. mask: ``(H, W)`` bool (an all-image mask is allowed).
        style_image: ``(h, w, 3)`` image array (or a PIL image) whose look the region takes on.
        engine: ``classical`` or ``sd``. strength: 0..1, the blend of restyled and original.
        feather: the seam's ramp inside the mask, in pixels. seed: the texture tiling offset
            (classical) or the diffusion noise (sd). prompt: the style in words (``sd``: required).
        options: classical: ``method`` (:data:`METHODS`), ``radius``, ``eps``, ``working_size``,
            ``dilate`` (0); ``device`` and ``allow_download`` are ignored, ``model`` / ``weights``
            refused; sd: ``model``, ``weights``, ``device``, ``allow_download``, ``steps``,
            ``guidance``, ``denoise`` (:data:`DEFAULT_DENOISE`), ``negative_prompt``, ``dtype``,
            ``precolour``, ``dilate``.

    Returns:
        :class:`EditResult` whose record adds ``strength``, ``style_size`` (and ``method`` or ``denoise``).
    """
    if engine not in STYLE_ENGINES:
        raise InputError(f"style: unknown engine {engine!r}; expected one of {', '.join(STYLE_ENGINES)}")
    style_image = check_style_image(style_image)
    strength = _check_number("--strength", strength, 0.0, 1.0)
    feather = _check_int("--feather", feather, 0, 256)
    seed = _check_int("--seed", seed, 0, 2 ** 63 - 1)
    dilate = options.pop("dilate", 0)
    if engine == "classical":
        for key in ("model", "weights"):
            if options.get(key) is not None:
                raise InputError(f"style: the classical engine uses no {key}; got --{key} {str(options[key])!r} "
                                 "(it goes with --engine sd)")
        for key in ("model", "weights", "device", "allow_download"):  # no torch, nothing to fetch: ignored
            options.pop(key, None)
        _split(options, _CLASSICAL_OPTIONS, engine)
        runner: Any = ClassicalStyleEngine(style_image, strength, **options)
        extra = {"method": runner.method}
    else:
        _split(options, _SD_OPTIONS, engine)
        runner = _sd_engine(style_image, strength, prompt, options)
        extra = {"denoise": runner.denoise, "precolour": runner.precolour}
    if strength == 0.0:
        runner.working_size = None  # nothing changes: no resizing either, so the output is the input exactly
    result = run_inpaint(runner, image, mask, "style", prompt=prompt, seed=seed, dilate=dilate, feather=feather,
                         allow_full=True)
    result.record.update({"strength": strength, "style_size": [int(style_image.shape[1]), int(style_image.shape[0])],
                          **extra})
    return result

"""What every mask-driven edit shares: the mask checks, dilation, the working crop, the seam.

An edit takes an RGB image and a boolean mask and returns an :class:`EditResult`: the edited
image, the mask that was used (after dilation), and a JSON-ready record (engine, seed,
prompt, the mask as RLE, the crop, seconds). The common steps, in order:

1. :func:`check_mask`: the mask must match the image's size and mark something; ``remove``
   also refuses a mask that covers the whole image (nothing is left to fill from), while
   ``fill`` / ``replace`` accept it.
2. :func:`dilate_mask`: grown by ``dilate`` pixels (an elliptical kernel), as Inpaint Anything
   dilates SAM's mask before LaMa (its default 15 px), so that the object's soft boundary and
   shadow fringe go too.
3. :func:`working_crop`: the box around the dilated mask plus a context margin (half the box's
   size, at least 32 px), clipped to the image, and the scale that brings its longest side to
   the engine's ``working_size`` when it is larger (engines that work at a fixed size, LaMa and
   Stable Diffusion, see the crop resized, not the whole image).
4. the engine runs on the crop (:class:`InpaintEngine`): ``inpaint(crop, crop_mask, prompt, seed)``
   returns the filled crop at the crop's size (the engine resizes internally if it must).
5. :func:`paste_back`: the result is resized to the crop's size if it was scaled and pasted with
   a feathered seam (``feather`` px, a Gaussian ramp *inside* the dilated mask), so every pixel
   outside the dilated mask is bit-identical to the input (checked).

Engines are registered by import path in :data:`ENGINES` (imported on first use) and built by
``factory(weights=..., model=..., device=..., allow_download=..., **options)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from anyseg.errors import InputError
from anyseg.models.base import check_image

__all__ = ["EditResult", "InpaintEngine", "ENGINES", "register_engine", "engine_factory", "check_mask",
           "dilate_mask", "working_crop", "paste_back", "run_inpaint", "DEFAULT_DILATE", "DEFAULT_FEATHER", "Crop"]

#: pixels the mask is grown by before removal (Inpaint Anything's ``--dilate_kernel_size 15``)
DEFAULT_DILATE = 15
#: width of the seam's ramp, in pixels, inside the dilated mask
DEFAULT_FEATHER = 4


@dataclass(frozen=True, eq=False)
class EditResult:
    """An edit's output: ``image`` ``(H, W, 3)`` (or ``(H, W, 4)`` RGBA for a cut-out) uint8, the
    ``mask`` ``(H, W)`` bool it was made with (after dilation), and its ``record``."""

    image: np.ndarray
    mask: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class InpaintEngine(Protocol):
    """Fills the masked pixels of an image.

    Attributes:
        name: the engine's name (``telea``, ``lama``, ``sd`` ...), recorded.
        generative: whether it makes new content from a text prompt (``sd``); a generative
            engine needs a prompt for ``fill`` / ``replace``.
        working_size: the longest side it works at (``None``: the crop's own size, bounded by
            the crop logic).
        model_id: what computed it (weights and settings), recorded.
    """

    name: str
    generative: bool
    working_size: int | None

    @property
    def model_id(self) -> str: ...

    def inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str | None = None, seed: int = 0,
                **options: Any) -> np.ndarray:
        """``image`` ``(h, w, 3)`` uint8 with the ``mask`` ``(h, w)`` bool pixels filled; same size."""


#: engine name -> ``"package.module:attr"`` of its factory (or the factory itself)
ENGINES: dict[str, str | Callable[..., InpaintEngine]] = {
    "telea": "anyseg.edit.classical:TeleaEngine.from_options",
    "ns": "anyseg.edit.classical:NavierStokesEngine.from_options",
    "fsr": "anyseg.edit.classical:FsrEngine.from_options",
    "biharmonic": "anyseg.edit.classical:BiharmonicEngine.from_options",
    "mean": "anyseg.edit.classical:MeanColourEngine.from_options",
    "lama": "anyseg.edit.lama:LamaEngine.from_options",
    "sd": "anyseg.edit.sd:SdInpaintEngine.from_options",
}


def register_engine(name: str, factory: str | Callable[..., InpaintEngine], replace: bool = False) -> None:
    """Add an engine (a factory or its import path) under ``name``."""
    from anyseg.errors import ModelError

    if name in ENGINES and not replace:
        raise ModelError(f"an edit engine named {name!r} is already registered")
    ENGINES[name] = factory


def engine_factory(name: str) -> Callable[..., InpaintEngine]:
    """The factory of engine ``name`` (imported now); unknown names are one line naming the known ones."""
    target = ENGINES.get(name)
    if target is None:
        raise InputError(f"unknown edit engine {name!r}; expected one of {', '.join(ENGINES)}")
    if not isinstance(target, str):
        return target
    from anyseg.models.families import import_path

    return import_path(target, f"the edit engine {name!r}")


# -- the mask -------------------------------------------------------------------------------------
def check_mask(mask: Any, image_size: tuple[int, int], operation: str, allow_full: bool = False) -> np.ndarray:
    """``mask`` as ``(H, W)`` bool of the image's size; one-line errors for another size, an empty
    mask, and (unless ``allow_full``) a mask covering the whole image."""
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] in (1, 3, 4):
        m = m[..., 0]
    if m.ndim != 2:
        raise InputError(f"{operation}: the mask must have shape (H, W); got {'x'.join(map(str, m.shape))}")
    m = m > 0 if m.dtype != bool else m
    h, w = image_size
    if m.shape != (h, w):
        raise InputError(f"{operation}: the mask is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h}")
    if not m.any():
        raise InputError(f"{operation}: the mask is empty: nothing to edit")
    if m.all() and not allow_full:
        raise InputError(f"{operation}: the mask covers the whole image, so nothing is left to fill it from "
                         "(fill or replace regenerate a whole image; remove needs some background)")
    return np.ascontiguousarray(m)


def dilate_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` (an elliptical kernel of radius ``pixels``); 0 leaves it as it is."""
    import cv2

    if isinstance(pixels, bool) or not isinstance(pixels, (int, np.integer)) or not 0 <= pixels <= 512:
        raise InputError(f"--dilate must be a whole number of pixels in 0..512; got {pixels!r}")
    if pixels == 0:
        return mask.copy()
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), k) > 0


@dataclass(frozen=True)
class Crop:
    """The working region: ``box`` ``(x0, y0, x1, y1)`` in image pixels, and ``scale`` (<= 1) the
    crop is resized by before the engine sees it."""

    box: tuple[int, int, int, int]
    scale: float

    @property
    def size(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.box
        return y1 - y0, x1 - x0


def working_crop(mask: np.ndarray, working_size: int | None, margin: float = 0.5, min_margin: int = 32,
                 full: bool = False) -> Crop:
    """The box around ``mask`` with context (module docstring, step 3); ``full``: the whole image."""
    h, w = mask.shape
    if full:
        box = (0, 0, w, h)
    else:
        ys, xs = np.nonzero(mask)
        x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
        mx = max(min_margin, int(round(margin * (x1 - x0))))
        my = max(min_margin, int(round(margin * (y1 - y0))))
        box = (max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my))
    side = max(box[2] - box[0], box[3] - box[1])
    scale = 1.0 if working_size is None or side <= working_size else working_size / side
    return Crop(box, scale)


def paste_back(image: np.ndarray, filled: np.ndarray, mask: np.ndarray, crop: Crop,
               feather: int = DEFAULT_FEATHER) -> np.ndarray:
    """``filled`` (the crop's result, at the crop's size or scaled) pasted into a copy of ``image``
    inside ``mask`` only, with a ``feather``-pixel ramp inward from the mask's edge."""
    import cv2

    x0, y0, x1, y1 = crop.box
    ch, cw = y1 - y0, x1 - x0
    if filled.shape[:2] != (ch, cw):
        filled = cv2.resize(filled, (cw, ch), interpolation=cv2.INTER_CUBIC if filled.shape[0] < ch else cv2.INTER_AREA)
    region = mask[y0:y1, x0:x1]
    if feather > 0:
        # the image border is no seam: pad with the region itself, so the ramp starts at the mask's edge only
        inside = cv2.distanceTransform(np.pad(region, 1, mode="edge").astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
        alpha = np.clip(inside / float(feather), 0.0, 1.0)[..., None]
    else:
        alpha = region.astype(np.float32)[..., None]
    out = image.copy()
    src = image[y0:y1, x0:x1].astype(np.float32)
    blend = np.clip(np.rint(alpha * filled.astype(np.float32) + (1.0 - alpha) * src), 0, 255).astype(np.uint8)
    patch = out[y0:y1, x0:x1]
    patch[region] = blend[region]
    return out


def run_inpaint(engine: InpaintEngine, image: np.ndarray, mask: np.ndarray, operation: str,
                prompt: str | None = None, seed: int = 0, dilate: int = DEFAULT_DILATE,
                feather: int = DEFAULT_FEATHER, full: bool = False, allow_full: bool = False,
                **options: Any) -> EditResult:
    """The common edit (module docstring): check, dilate, crop, run ``engine``, paste back, record."""
    import cv2

    from anyseg.masks.rle import encode

    image = check_image(image)
    mask = check_mask(mask, image.shape[:2], operation, allow_full=allow_full)
    if engine.generative and not (prompt and prompt.strip()):
        raise InputError(f"{operation}: the {engine.name} engine generates content from text: give --prompt")
    used = dilate_mask(mask, dilate)
    crop = working_crop(used, engine.working_size, full=full)
    x0, y0, x1, y1 = crop.box
    sub, sub_mask = image[y0:y1, x0:x1], used[y0:y1, x0:x1]
    if crop.scale < 1.0:
        size = (max(1, round((x1 - x0) * crop.scale)), max(1, round((y1 - y0) * crop.scale)))
        sub = cv2.resize(sub, size, interpolation=cv2.INTER_AREA)
        # any overlap with the hole counts as hole: nearest sampling would keep object-coloured edge pixels as known
        sub_mask = cv2.resize(sub_mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
    t = time.perf_counter()
    filled = engine.inpaint(np.ascontiguousarray(sub), sub_mask, prompt=prompt, seed=seed, **options)
    seconds = time.perf_counter() - t
    if filled.shape[:2] != sub.shape[:2] or filled.dtype != np.uint8:
        raise InputError(f"the {engine.name} engine returned a {filled.dtype} {filled.shape} image for a "
                         f"{sub.shape} crop")
    out = paste_back(image, filled, used, crop, feather=feather)
    if not np.array_equal(out[~used], image[~used]):  # the promise of every edit: checked, not assumed
        raise RuntimeError(f"{operation}: the edit changed pixels outside its mask (a bug: please report it)")
    record = {"operation": operation, "engine": engine.name, "model": engine.model_id, "seed": int(seed),
              "prompt": prompt, "dilate": int(dilate), "feather": int(feather), "crop": list(crop.box),
              "scale": round(crop.scale, 6), "seconds": round(seconds, 3), "mask": encode(used),
              "mask_area": int(used.sum())}
    return EditResult(out, used, record)

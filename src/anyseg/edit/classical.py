"""The classical fill engines: no weights, deterministic, CPU only.

Each engine fills the masked pixels of a crop from the pixels around them
(:class:`anyseg.edit.base.InpaintEngine`); :func:`anyseg.edit.base.run_inpaint` does the
checks, dilation, crop and feathered paste. Scores do not apply to fills, and no engine
draws random numbers, so ``seed`` is accepted and ignored.

* ``telea``: :func:`cv2.inpaint` with ``INPAINT_TELEA``, Telea's fast marching method
  ("An Image Inpainting Technique Based on the Fast Marching Method", JGT 2004): pixels are
  filled from the hole's boundary inward, each as a weighted first-order extrapolation of
  its known neighbours within ``radius``.
* ``ns``: :func:`cv2.inpaint` with ``INPAINT_NS`` (Bertalmio, Bertozzi and Sapiro,
  "Navier-Stokes, Fluid Dynamics, and Image and Video Inpainting", CVPR 2001): isophotes are
  continued into the hole by a fluid-dynamics transport.
  ``radius`` defaults to 5 px (OpenCV's samples use 3 to 5; the wider neighbourhood gives
  fewer streaks on the 15 px dilated masks anyseg removes). Both run at most at
  ``working_size`` 1024 px (the crop's longest side): measured on a 2-core machine with the
  hole a quarter of the crop, a 1024 px crop takes about 0.33 s for either method and a
  2048 px one about 1.4 s, so larger crops are scaled down by ``run_inpaint``.
* ``fsr``: OpenCV contrib's frequency selective reconstruction (``cv2.xphoto.inpaint`` with
  ``INPAINT_FSR_FAST`` or ``INPAINT_FSR_BEST``; Genser et al. PCS 2018, Seiler et al.
  TIP 2015). opencv-contrib is a *replacement* of the opencv-python-headless wheel anyseg
  installs (the two cannot live in one environment), so anyseg does not depend on it: the
  engine exists, and without ``cv2.xphoto`` it raises a one-line :class:`ModelError` saying
  how to switch wheels. xphoto's mask is the other way round from :func:`cv2.inpaint`
  (non-zero marks the *valid* pixels), which the engine handles. ``working_size`` 512: FSR
  works block-wise and its ``best`` profile is slow (seconds to minutes per crop).
* ``biharmonic``: :func:`skimage.restoration.inpaint_biharmonic` (Damelin and Hoang 2018):
  the smoothest fill, a biharmonic function matching the boundary. Its sparse solve grows
  quickly with the hole (measured: 0.25 s at 256 px, 0.6 s at 384 px, 1.3 s at 512 px,
  4.5 s at 768 px), and the result is smooth anyway, so ``working_size`` is 384.
* ``mean``: the flat mean colour of a ``ring``-pixel band around the hole (the evaluation's
  baseline: each engine is compared against it).

Every engine accepts ``working_size`` (32..8192) to change its bound. ``device`` is ignored
(all run on the CPU), so a ``--device`` meant for the segmentation model does no harm.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from anyseg.errors import InputError, ModelError
from anyseg.models.base import check_image

__all__ = ["TeleaEngine", "NavierStokesEngine", "FsrEngine", "BiharmonicEngine", "MeanColourEngine",
           "CONTRIB_HINT"]

#: how to get ``cv2.xphoto`` (opencv-contrib replaces the headless wheel; same version)
CONTRIB_HINT = ("pip uninstall opencv-python-headless && pip install opencv-contrib-python-headless=={version} "
                "(the contrib wheel replaces the headless one; keep the same version)")


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in ``low..high``, or a one-line :class:`InputError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InputError(f"{name} must be a whole number in {low}..{high}; got {value!r}")
    return int(value)


def check_pair(engine: str, image: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """``image`` as ``(h, w, 3)`` uint8 and ``mask`` as ``(h, w)`` bool of its size (one-line errors)."""
    image = check_image(image)
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.shape != image.shape[:2]:
        raise InputError(f"the {engine} engine got a {'x'.join(map(str, m.shape))} mask for a "
                         f"{image.shape[1]}x{image.shape[0]} image")
    m = m if m.dtype == bool else m > 0
    if m.all():
        raise InputError(f"the {engine} engine fills a hole from the pixels around it, but the mask covers the "
                         "whole crop: nothing is left to fill from")
    return image, np.ascontiguousarray(m)


class ClassicalEngine:
    """What the classical engines share: options, ``from_options``, the checks around ``fill``."""

    name: ClassVar[str] = "classical"
    generative: ClassVar[bool] = False
    #: option name -> default (``working_size`` is every engine's)
    defaults: ClassVar[dict[str, Any]] = {}
    default_working_size: ClassVar[int] = 1024

    def __init__(self, working_size: int | None = None, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise InputError(f"unknown option(s) for the {self.name} engine: {', '.join(unknown)}; expected "
                             f"{', '.join(sorted({*self.defaults, 'working_size'}))}")
        size = self.default_working_size if working_size is None else working_size
        self.working_size: int | None = check_int(f"{self.name} working_size", size, 32, 8192)
        self.params = {**self.defaults, **params}
        self.check_params()

    def check_params(self) -> None:
        """Validate ``self.params`` (one-line :class:`InputError`)."""

    @classmethod
    def from_options(cls, weights: Any = None, model: Any = None, device: str | None = None,
                     allow_download: bool = True, **options: Any) -> "ClassicalEngine":
        """The engine factory of :data:`anyseg.edit.base.ENGINES`: no weights and no model are taken;
        ``device`` and ``allow_download`` are ignored (CPU, nothing to download)."""
        if weights is not None:
            raise InputError(f"the {cls.name} engine uses no weights; got --weights {str(weights)!r}")
        if model is not None:
            raise InputError(f"the {cls.name} engine uses no model; got --model {str(model)!r}")
        return cls(**options)

    @property
    def model_id(self) -> str:
        settings = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}({settings})" if settings else self.name

    def inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str | None = None, seed: int = 0,
                **options: Any) -> np.ndarray:
        """``image`` with the ``mask`` pixels filled (same size, uint8); the other pixels unchanged.
        ``prompt`` and ``seed`` are ignored (nothing generative or random)."""
        if options:
            raise InputError(f"unknown inpaint option(s) for the {self.name} engine: {', '.join(sorted(options))}")
        image, mask = check_pair(self.name, image, mask)
        if not mask.any():
            return image.copy()
        out = np.asarray(self.fill(image, mask))
        if out.shape != image.shape:
            raise ModelError(f"the {self.name} engine returned a {out.shape} image for a {image.shape} one")
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8) if out.dtype != np.uint8 else out.copy()
        out[~mask] = image[~mask]
        return out

    def fill(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The engine's own fill of ``mask`` (not empty, not everything) in ``image``."""
        raise NotImplementedError


class TeleaEngine(ClassicalEngine):
    """:func:`cv2.inpaint` with Telea's fast marching method (module docstring)."""

    name = "telea"
    defaults = {"radius": 5}
    flag_name: ClassVar[str] = "INPAINT_TELEA"

    def check_params(self) -> None:
        self.params["radius"] = check_int(f"{self.name} radius", self.params["radius"], 1, 64)

    @property
    def model_id(self) -> str:
        import cv2

        return f"opencv-{cv2.__version__}:{self.name}(radius={self.params['radius']})"

    def fill(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.inpaint(image, mask.astype(np.uint8), float(self.params["radius"]), getattr(cv2, self.flag_name))


class NavierStokesEngine(TeleaEngine):
    """:func:`cv2.inpaint` with the Navier-Stokes method (module docstring)."""

    name = "ns"
    flag_name = "INPAINT_NS"


def xphoto() -> Any:
    """``cv2.xphoto`` (opencv-contrib), or a one-line :class:`ModelError` saying how to get it."""
    import cv2

    module = getattr(cv2, "xphoto", None)
    if module is None or not hasattr(module, "inpaint"):
        raise ModelError("the fsr engine needs OpenCV's contrib module cv2.xphoto, which anyseg's "
                         f"opencv-python-headless {cv2.__version__} lacks; to get it: "
                         + CONTRIB_HINT.format(version=cv2.__version__.split("-")[0])
                         + "; or use --engine telea, ns or lama")
    return module


class FsrEngine(ClassicalEngine):
    """opencv-contrib's frequency selective reconstruction (module docstring); ``mode`` ``fast`` or ``best``."""

    name = "fsr"
    defaults = {"mode": "fast"}
    default_working_size = 512

    def check_params(self) -> None:
        if self.params["mode"] not in ("fast", "best"):
            raise InputError(f"fsr mode must be 'fast' or 'best'; got {self.params['mode']!r}")
        xphoto()  # fail at construction, before any image is read

    @property
    def model_id(self) -> str:
        import cv2

        return f"opencv-contrib-{cv2.__version__}:fsr(mode={self.params['mode']})"

    def fill(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import cv2

        module = xphoto()
        algorithm = module.INPAINT_FSR_BEST if self.params["mode"] == "best" else module.INPAINT_FSR_FAST
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        valid = np.where(mask, 0, 255).astype(np.uint8)  # xphoto: non-zero marks the known pixels
        dst = np.zeros_like(bgr)
        returned = module.inpaint(bgr, valid, dst, algorithm)
        out = returned if isinstance(returned, np.ndarray) and returned.shape == bgr.shape else dst
        return cv2.cvtColor(np.ascontiguousarray(out, dtype=np.uint8), cv2.COLOR_BGR2RGB)


class BiharmonicEngine(ClassicalEngine):
    """scikit-image's biharmonic fill (module docstring)."""

    name = "biharmonic"
    default_working_size = 384

    @property
    def model_id(self) -> str:
        import skimage

        return f"scikit-image-{skimage.__version__}:biharmonic"

    def fill(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        from skimage.restoration import inpaint_biharmonic

        filled = inpaint_biharmonic(image.astype(np.float64) / 255.0, mask, channel_axis=-1)
        return np.clip(filled, 0.0, 1.0) * 255.0


class MeanColourEngine(ClassicalEngine):
    """The flat mean colour of a ``ring``-pixel band around the hole (the evaluation's baseline)."""

    name = "mean"
    defaults = {"ring": 8}
    default_working_size = 2048

    def check_params(self) -> None:
        self.params["ring"] = check_int("mean ring", self.params["ring"], 1, 256)

    def fill(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import cv2

        r = self.params["ring"]
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        ring = (cv2.dilate(mask.astype(np.uint8), kernel) > 0) & ~mask
        source = image[ring] if ring.any() else image[~mask]
        out = image.copy()
        out[mask] = np.clip(np.rint(source.astype(np.float64).mean(axis=0)), 0, 255).astype(np.uint8)
        return out

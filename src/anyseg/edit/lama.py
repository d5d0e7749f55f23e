"""LaMa (Suvorov et al., "Resolution-robust Large Mask Inpainting with Fourier Convolutions",
WACV 2022) from a file the user provides: TorchScript or ONNX.

The network fills a hole in one feed-forward pass: its input is the image with the hole and
the mask as a fourth channel, its fast Fourier convolutions see the whole image from the
first layer, and it was trained at 256 px but runs at other sizes.

**Weights.** anyseg downloads nothing for this engine: ``--weights`` names the file.

* ``big-lama.pt`` (``.pt`` / ``.pth`` / ``.jit`` / ``.torchscript``) is the TorchScript export
  IOPaint (formerly lama-cleaner) publishes. It is loaded with ``torch.jit.load`` onto the
  device and called as IOPaint's ``iopaint/model/lama.py`` calls it: ``model(image, mask)``,
  with ``image`` ``(1, 3, H, W)`` float RGB in 0..1 and ``mask`` ``(1, 1, H, W)`` float 0/1.
  Its output is ``(1, 3, H, W)`` in 0..1. Like IOPaint's ``pad_img_to_modulo``, image and
  mask are padded at the bottom and right to a multiple of 8 with ``numpy.pad(mode="symmetric")``,
  and the result is cropped back.
* ``lama_fp32.onnx`` (``.onnx``) is an ONNX export such as Carve/LaMa-ONNX. That one has inputs
  ``image`` ``(1, 3, 512, 512)`` and ``mask`` ``(1, 1, 512, 512)`` in 0..1 and answers in
  0..255. Exports differ, so the graph is read rather than assumed:
  - fixed ``H``, ``W`` in the graph: the crop is resized to them and back;
  - dynamic sizes: padding as for TorchScript;
  - one 4-channel input: that is the masked image plus the mask, as other exports use.

**Output range.** Exports disagree on 0..1 against 0..255, so ``output_range="auto"`` picks
the scale that reproduces the known pixels (every LaMa export returns the input outside the
hole, give or take). ``0-1`` or ``0-255`` forces one. Outside the mask, the result keeps the
input's pixels.

**Where this differs from IOPaint.** The upstream wrapper package is not used: it pins old
numpy and pillow and needs torchvision. ``working_size`` is 512 by default: IOPaint's resize
limit is larger, but CPU time has to stay bounded (big-lama takes seconds at 512 px on a
CPU). Give ``working_size=1024`` (up to 4096) for a TorchScript file or a dynamic ONNX graph
on a GPU. IOPaint's crop strategy is replaced by anyseg's own working crop
(:func:`anyseg.edit.base.working_crop`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from anyseg.edit.classical import check_int, check_pair
from anyseg.errors import InputError, ModelError

__all__ = ["LamaEngine", "TORCHSCRIPT_SUFFIXES", "ONNX_SUFFIXES", "WEIGHTS_HINT", "pad_to_multiple"]

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".jit", ".torchscript")
ONNX_SUFFIXES = (".onnx",)
#: where big-lama comes from (named in every "no weights" message)
WEIGHTS_HINT = ("big-lama.pt, the TorchScript export of IOPaint / lama-cleaner "
                "(https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt), or an ONNX "
                "export such as lama_fp32.onnx from https://huggingface.co/Carve/LaMa-ONNX")
OUTPUT_RANGES = ("auto", "0-1", "0-255")
#: names a folder given as --weights is searched for
FILE_NAMES = ("big-lama.pt", "lama_fp32.onnx", "lama.onnx", "big-lama.onnx")


def pad_to_multiple(array: np.ndarray, multiple: int) -> np.ndarray:
    """``array`` ``(h, w, ...)`` padded at the bottom and right to multiples of ``multiple``,
    mirroring its edge (``numpy.pad(mode="symmetric")``, as IOPaint's ``pad_img_to_modulo``)."""
    h, w = array.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return array
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="symmetric")  # wider than the array itself: numpy repeats the mirror


def short(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` of ``exc``, at most ``limit`` characters."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def resolve_weights(weights: Any) -> Path:
    """The weights file: ``weights`` itself, or the one known file in a folder (one-line errors)."""
    if weights is None:
        raise ModelError(f"the lama engine needs LaMa weights: give --weights with {WEIGHTS_HINT}; anyseg does not "
                         "download them")
    path = Path(os.fspath(weights)).expanduser()
    if path.is_dir():
        found = [path / n for n in FILE_NAMES if (path / n).is_file()]
        if not found:
            raise ModelError(f"--weights {path}: the folder holds none of {', '.join(FILE_NAMES)}")
        path = found[0]
    if not path.is_file():
        raise ModelError(f"--weights {path}: no such file; the lama engine needs {WEIGHTS_HINT}")
    suffix = path.suffix.lower()
    if suffix not in TORCHSCRIPT_SUFFIXES + ONNX_SUFFIXES:
        raise ModelError(f"--weights {path}: expected a TorchScript file ({', '.join(TORCHSCRIPT_SUFFIXES)}) or an "
                         f"ONNX graph (.onnx); got {suffix or 'no suffix'}")
    return path


class TorchScriptRunner:
    """big-lama as TorchScript: ``model(image, mask)`` on ``device``."""

    kind = "torchscript"
    fixed_size: tuple[int, int] | None = None

    def __init__(self, path: Path, device: str) -> None:
        import torch

        try:
            self.model = torch.jit.load(str(path), map_location=device).eval()
        except Exception as exc:  # a state dict, a checkpoint, a truncated or foreign file
            raise ModelError(f"--weights {path}: not a loadable TorchScript file ({short(exc)}); the lama engine "
                             f"needs {WEIGHTS_HINT} (the original best.ckpt must be exported first)") from exc
        self.device = device

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``image`` ``(H, W, 3)`` float32 0..1 and ``mask`` ``(H, W)`` float32 0/1 -> ``(H, W, 3)``."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(self.device)
        m = torch.from_numpy(np.ascontiguousarray(mask))[None, None].to(self.device)
        try:
            with torch.inference_mode():
                out = self.model(x, m)
        except Exception as exc:
            raise ModelError(f"the LaMa TorchScript model failed on a {image.shape[1]}x{image.shape[0]} input "
                             f"({short(exc)})") from exc
        if isinstance(out, (tuple, list)) and out:
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ModelError(f"the LaMa TorchScript model returned a {type(out).__name__}, not an image tensor")
        return out.detach().float().cpu().numpy()


class OnnxRunner:
    """A LaMa ONNX graph in onnxruntime: two inputs (image, mask) or one 4-channel input."""

    kind = "onnx"

    def __init__(self, path: Path, device: str) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError(f"--weights {path}: an ONNX graph needs onnxruntime ({exc}); pip install "
                             "'anyseg[onnx]' or give the TorchScript big-lama.pt") from exc
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:
            raise ModelError(f"--weights {path}: onnxruntime cannot load it ({short(exc)}); the lama engine needs "
                             f"{WEIGHTS_HINT}") from exc
        self.path = path
        self.inputs = self.session.get_inputs()
        self.layout = self.read_layout()
        shape = self.inputs[0].shape
        fixed = all(isinstance(d, int) and d > 0 for d in shape[2:4]) if len(shape) == 4 else False
        self.fixed_size = (int(shape[2]), int(shape[3])) if fixed else None

    def read_layout(self) -> dict[str, str]:
        """Which input is the image and which the mask (``{"image": name, "mask": name}``), or
        ``{"combined": name}`` for one 4-channel input."""
        described = ", ".join(f"{i.name}{list(i.shape)}" for i in self.inputs)
        channels = {i.name: (i.shape[1] if len(i.shape) == 4 else None) for i in self.inputs}
        if len(self.inputs) == 1 and channels[self.inputs[0].name] in (4, None):
            return {"combined": self.inputs[0].name}
        if len(self.inputs) == 2:
            by_name = {k: next((i.name for i in self.inputs if k in i.name.lower()), None) for k in ("image", "mask")}
            if by_name["image"] and by_name["mask"] and by_name["image"] != by_name["mask"]:
                return by_name  # type: ignore[return-value]
            by_channels = {c: n for n, c in channels.items()}
            if 3 in by_channels and 1 in by_channels:
                return {"image": by_channels[3], "mask": by_channels[1]}
        raise ModelError(f"--weights {self.path}: not a LaMa graph: expected inputs image (1,3,H,W) and mask "
                         f"(1,1,H,W), or one (1,4,H,W) input; it has {described}")

    def feed(self, name: str, array: np.ndarray) -> np.ndarray:
        kind = next(i.type for i in self.inputs if i.name == name)
        return array.astype(np.float16 if "float16" in kind else np.float32)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """As :meth:`TorchScriptRunner.__call__`, through onnxruntime."""
        x = image.transpose(2, 0, 1)[None]
        m = mask[None, None]
        if "combined" in self.layout:
            feeds = {self.layout["combined"]: self.feed(self.layout["combined"],
                                                        np.concatenate([x * (1.0 - m), m], axis=1))}
        else:
            feeds = {self.layout["image"]: self.feed(self.layout["image"], x),
                     self.layout["mask"]: self.feed(self.layout["mask"], m)}
        try:
            out = self.session.run(None, feeds)[0]
        except Exception as exc:
            raise ModelError(f"the LaMa ONNX graph failed on a {image.shape[1]}x{image.shape[0]} input "
                             f"({short(exc)})") from exc
        return np.asarray(out, dtype=np.float32)


def output_scale(out: np.ndarray, image: np.ndarray, mask: np.ndarray, wanted: str) -> float:
    """255 when ``out`` (``(H, W, 3)``) is in 0..255, 1 when in 0..1 (module docstring, "Output range")."""
    if wanted != "auto":
        return 255.0 if wanted == "0-255" else 1.0
    known = ~mask
    if known.any():
        a, b = out[known], image[known]
        return 255.0 if np.abs(a / 255.0 - b).mean() < np.abs(a - b).mean() else 1.0
    return 255.0 if float(out.max(initial=0.0)) > 1.5 else 1.0


class LamaEngine:
    """LaMa from a user-provided TorchScript or ONNX file (module docstring)."""

    name = "lama"
    generative = False

    def __init__(self, weights: Any, device: str | None = None, working_size: int | None = None,
                 output_range: str = "auto", pad_multiple: int = 8) -> None:
        from anyseg.models.device import check_device

        self.path = resolve_weights(weights)
        if output_range not in OUTPUT_RANGES:
            raise InputError(f"lama output_range must be one of {', '.join(OUTPUT_RANGES)}; got {output_range!r}")
        self.output_range = output_range
        self.pad_multiple = check_int("lama pad_multiple", pad_multiple, 1, 128)
        self.device = check_device(device)
        onnx = self.path.suffix.lower() in ONNX_SUFFIXES
        self.runner: Any = OnnxRunner(self.path, self.device) if onnx else TorchScriptRunner(self.path, self.device)
        fixed = self.runner.fixed_size
        default = max(fixed) if fixed else 512
        self.working_size = check_int("lama working_size", default if working_size is None else working_size, 64, 4096)

    @classmethod
    def from_options(cls, weights: Any = None, model: Any = None, device: str | None = None,
                     allow_download: bool = True, **options: Any) -> "LamaEngine":
        """The engine factory: ``weights`` (required) names the file; options ``working_size``,
        ``output_range``, ``pad_multiple``. ``allow_download`` is moot: nothing is downloaded."""
        if model is not None:
            raise InputError(f"the lama engine takes its file with --weights, not --model; got --model {str(model)!r}")
        known = {"working_size", "output_range", "pad_multiple"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown option(s) for the lama engine: {', '.join(unknown)}; expected "
                             f"{', '.join(sorted(known))}")
        return cls(weights, device=device, **options)

    @property
    def model_id(self) -> str:
        return f"lama:{self.runner.kind}:{self.path.name}"

    def inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str | None = None, seed: int = 0,
                **options: Any) -> np.ndarray:
        """``image`` with the ``mask`` pixels filled by LaMa (same size, uint8); ``prompt`` and
        ``seed`` are ignored (LaMa is deterministic and takes no text)."""
        import cv2

        if options:
            raise InputError(f"unknown inpaint option(s) for the lama engine: {', '.join(sorted(options))}")
        image, mask = check_pair(self.name, image, mask)
        if not mask.any():
            return image.copy()
        h, w = image.shape[:2]
        target = self.runner.fixed_size
        if target is None and max(h, w) > self.working_size:  # called directly on a large image
            s = self.working_size / max(h, w)
            target = (max(1, round(h * s)), max(1, round(w * s)))
        work, work_mask = image, mask
        if target is not None and target != (h, w):
            work = cv2.resize(image, (target[1], target[0]), interpolation=cv2.INTER_AREA if target[0] < h
                              else cv2.INTER_CUBIC)
            # any pixel the hole touches stays in it: a resized edge pixel carries the object's colour
            work_mask = cv2.resize(mask.astype(np.float32), (target[1], target[0]), interpolation=cv2.INTER_AREA
                                   if target[0] < h else cv2.INTER_LINEAR) > 0
        filled = self.run(work, work_mask)
        if filled.shape[:2] != (h, w):
            up = filled.shape[0] < h
            filled = cv2.resize(filled, (w, h), interpolation=cv2.INTER_CUBIC if up else cv2.INTER_AREA)
        filled[~mask] = image[~mask]
        return filled

    def run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One pass at ``image``'s size: pad (unless the graph's size is fixed), run, crop, scale to uint8."""
        h, w = image.shape[:2]
        x = image.astype(np.float32) / 255.0
        m = mask.astype(np.float32)
        if self.runner.fixed_size is None:
            x, m = pad_to_multiple(x, self.pad_multiple), pad_to_multiple(m, self.pad_multiple)
        out = self.runner(x, m)
        if out.ndim != 4 or out.shape[0] != 1 or out.shape[1] != 3 or out.shape[2] < h or out.shape[3] < w:
            raise ModelError(f"the LaMa model returned shape {tuple(out.shape)} for a (1, 3, {x.shape[0]}, "
                             f"{x.shape[1]}) input; expected (1, 3, H, W)")
        out = out[0, :, :h, :w].transpose(1, 2, 0)
        if not np.isfinite(out).all():
            raise ModelError("the LaMa model returned NaN or infinite values (a broken export, or fp16 overflow)")
        scale = output_scale(out, x[:h, :w], mask, self.output_range)
        return np.clip(np.rint(out * (255.0 / scale)), 0, 255).astype(np.uint8)

"""Training pairs and the prompts sampled from their ground truth.

Data layout: ``DIR/images/NAME.*`` + ``DIR/masks/NAME.*`` paired by stem
(:func:`anyseg.eval.datasets.read_mask_folder`; masks read by its binary rule). Ignored pixels
(``ignore_value``: ``"auto"`` = GrabCut's / :mod:`anyseg.finetune.pseudolabel`'s 128 band in
grey 0/128/255 masks, 255 in label maps; an int; ``None`` = nothing ignored) are excluded from
the loss and from the prompts.

Prompt sampling follows the SAM paper's interactive training (Kirillov et al. 2023, appendix
A "Training algorithm") and micro-sam's iterative trainer:

* **box**: the mask's bounding box with each coordinate shifted by Gaussian noise of standard
  deviation 10 % of the box side, clipped to 20 pixels (SAM). The noise is drawn in the
  model's input frame (1024 px for the real models), where SAM's 20-pixel cap is defined;
  MedSAM's uniform 0-20 px shift is the same order of magnitude. Validation uses the exact box.
* **points**: 1..k positive points drawn uniformly from the (non-ignored) foreground.
* **corrective clicks**: after a prediction, the next point is drawn uniformly from the error
  region: a positive click in the false negatives or a negative one in the false positives,
  whichever region is larger (SAM draws from the union; choosing the larger region first keeps
  the click where most of the error is, as micro-sam's sampler does). Clicks are drawn on the
  decoder's low-resolution grid (where the loss is computed, see :mod:`.losses`) and mapped to
  the model frame at the pixel centre.

Everything here is numpy on ``(H, W)`` bool masks, driven by an explicit ``numpy`` Generator
so that a run is reproducible from its seed and step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anyseg.errors import InputError

__all__ = ["load_pairs", "load_samples", "TrainSample", "sample_box", "sample_points", "corrective_click",
           "low_res_target", "BOX_NOISE", "BOX_NOISE_MAX"]

#: SAM's box noise: standard deviation as a fraction of the box side ...
BOX_NOISE = 0.1
#: ... clipped to this many pixels of the model frame
BOX_NOISE_MAX = 20.0
#: files named in an error message before "... and N more"
_SHOWN = 5


@dataclass(frozen=True)
class TrainSample:
    """One image with its binary mask (read lazily) and the void rule of its data folder."""

    name: str
    image_path: Path
    mask_path: Path
    ignore_value: int | None | str = "auto"

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(image (H, W, 3) uint8, gt (H, W) bool, ignore (H, W) bool or None)``."""
        from anyseg.eval.datasets import read_binary_mask
        from anyseg.io.images import load_image

        image = load_image(self.image_path)
        gt, ignore = read_binary_mask(self.mask_path, self.ignore_value, size=image.shape[:2],
                                      reference=f"its image {self.image_path.name}")
        return image, gt, ignore


def _oriented_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image as :func:`anyseg.io.images.load_image` returns it (EXIF orientation)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                orientation = int(im.getexif().get(0x0112, 1))
            except Exception:  # malformed EXIF: load_image ignores it too
                orientation = 1
    except Exception as e:  # noqa: BLE001 - any decoder failure is the user's file
        raise InputError(f"cannot read image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _check_void(ignore_value: Any) -> int | None | str:
    if ignore_value is None or ignore_value == "auto":
        return ignore_value
    if isinstance(ignore_value, (int, np.integer)) and not isinstance(ignore_value, bool) and 0 <= ignore_value <= 255:
        return int(ignore_value)
    raise InputError(f"ignore_value must be 'auto', None or a pixel value 0..255; got {ignore_value!r}")


def load_samples(data_dir: str | os.PathLike, ignore_value: int | None | str = "auto",
                 what: str = "training") -> list[TrainSample]:
    """The checked samples of ``data_dir`` (see :func:`load_pairs`)."""
    from anyseg.eval.datasets import read_binary_mask, read_mask_folder

    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"{what} data folder not found: {root} (expected {root}/images and {root}/masks)")
    void = _check_void(ignore_value)
    pairs = read_mask_folder(root, ignore_value=void)
    wrong: list[str] = []
    empty: list[str] = []
    for s in pairs:
        h, w = _oriented_size(s.image_path)
        gt, ignore = read_binary_mask(s.mask_path, void)
        if gt.shape != (h, w):
            wrong.append(f"{s.mask_path.name} ({gt.shape[1]}x{gt.shape[0]}, image {w}x{h})")
        elif not gt.any():
            empty.append(s.mask_path.name)
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} mask(s) of the wrong size in {root / 'masks'}: {_listing(wrong)}")
    if empty:
        problems.append(f"{len(empty)} empty mask(s) (no foreground pixel) in {root / 'masks'}: {_listing(empty)}")
    if problems:
        raise InputError(f"{what} data: " + "; ".join(problems))
    return [TrainSample(s.name, s.image_path, s.mask_path, void) for s in pairs]


def load_pairs(data_dir: str | os.PathLike, ignore_value: int | None | str = "auto") -> list[tuple[Path, Path]]:
    """``[(image path, mask path)]`` of ``data_dir/images`` + ``data_dir/masks``, every pair checked.

    A missing folder, an image without a mask, masks whose size differs from their image's, and
    masks with no foreground pixel are one-line :class:`InputError` s naming the files (all the
    wrong ones, a few shown). ``ignore_value``: ``"auto"`` (default; 128 in grey 0/128/255 masks,
    as :mod:`anyseg.finetune.pseudolabel` writes them), an int, or ``None`` (nothing ignored).
    """
    return [(s.image_path, s.mask_path) for s in load_samples(data_dir, ignore_value)]


# -- prompts -------------------------------------------------------------------------------------


def sample_box(gt: np.ndarray, geo: Any, rng: np.random.Generator | None) -> np.ndarray:
    """``(4,)`` XYXY box of ``gt`` in the model frame; jittered as SAM does when ``rng`` is given.

    ``geo`` is the predictor's :class:`~anyseg.models.sam.Geometry` of the image.
    """
    ys, xs = np.nonzero(gt)
    box = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.max() + 1]], dtype=np.float64)
    box = geo.to_model(box).reshape(4)
    if rng is not None:
        side = np.array([box[2] - box[0], box[3] - box[1]] * 2)
        noise = np.clip(rng.normal(0.0, 1.0, 4) * BOX_NOISE * side, -BOX_NOISE_MAX, BOX_NOISE_MAX)
        box = box + noise
        nh, nw = geo.input_size
        box = np.clip(box, 0.0, [nw, nh, nw, nh])
        box = np.array([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])])
    return box.astype(np.float32)


def sample_points(gt: np.ndarray, ignore: np.ndarray | None, k: int, geo: Any,
                  rng: np.random.Generator) -> np.ndarray:
    """``(k, 2)`` XY positive points drawn uniformly (with replacement when needed) from the
    non-ignored foreground, at pixel centres, mapped into the model frame."""
    fg = gt if ignore is None else gt & ~ignore
    if not fg.any():
        fg = gt
    ys, xs = np.nonzero(fg)
    idx = rng.choice(len(xs), size=k, replace=len(xs) < k)
    xy = np.stack([xs[idx] + 0.5, ys[idx] + 0.5], axis=1)
    return geo.to_model(xy).astype(np.float32)


def corrective_click(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, frame: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, int] | None:
    """The next click from the error region of a low-resolution prediction.

    ``pred``, ``target``, ``valid``: ``(h, w)`` bool on the decoder's grid. Returns ``(xy in the
    model frame (2,), label)``: positive (1) in the false negatives or negative (0) in the false
    positives, whichever is larger; ``None`` when the prediction has no error.
    """
    fn = target & ~pred & valid
    fp = pred & ~target & valid
    n_fn, n_fp = int(fn.sum()), int(fp.sum())
    if n_fn == 0 and n_fp == 0:
        return None
    region, label = (fn, 1) if n_fn >= n_fp else (fp, 0)
    ys, xs = np.nonzero(region)
    i = int(rng.integers(len(xs)))
    scale = frame / pred.shape[-1]
    return np.array([(xs[i] + 0.5) * scale, (ys[i] + 0.5) * scale], dtype=np.float32), label


def low_res_target(gt: np.ndarray, ignore: np.ndarray | None, geo: Any, low: int) -> tuple[np.ndarray, np.ndarray]:
    """``(target, valid)`` ``(low, low)`` bool: the mask in the decoder's low-resolution frame.

    The mask goes through the image's own preprocessing geometry (resized to the input size
    with area averaging, padded to the frame for SAM's longest-side geometry, or stretched for
    SAM 2's square one), then area-averaged to the decoder's grid and thresholded at 0.5, as
    MedSAM computes its loss at 256 x 256. The padding and ignored pixels are not valid.
    """
    import cv2

    nh, nw = geo.input_size

    def to_grid(m: np.ndarray) -> np.ndarray:
        frame = np.zeros((geo.frame, geo.frame), dtype=np.float32)
        frame[:nh, :nw] = cv2.resize(m.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)
        return cv2.resize(frame, (low, low), interpolation=cv2.INTER_AREA)

    target = to_grid(gt) >= 0.5
    valid = to_grid(np.ones(gt.shape, dtype=bool)) >= 0.5
    if ignore is not None and ignore.any():
        valid &= to_grid(ignore) < 0.5
    return target, valid

"""SegGPT: in-context segmentation by painting, as a learned alternative to prompting SAM.

Wang et al. 2023, "SegGPT: Segmenting Everything In Context" (ICCV 2023), reference code
baaivision/Painter (``SegGPT/SegGPT_inference/seggpt_engine.py``), through transformers'
``SegGptForImageSegmentation`` and its PIL image processor ``SegGptImageProcessorPil``
(no torchvision). The checkpoint is ``BAAI/seggpt-vit-large`` (registry name
``seggpt-vit-large``, MIT licence).

* **fit** preprocesses every reference once (kept on the model's device): the image resized
  to the model's half-frame (448 x 448 for the real model, bicubic), rescaled and normalised
  (ImageNet mean/std, or the folder's ``preprocessor_config.json``); the mask painted with the
  two-colour palette (background black, foreground white: transformers' ``build_palette(1)``),
  resized with nearest neighbours and normalised the same way, as the reference paints its
  prompt targets. SegGPT attends jointly over the prompt and the target, so there are no
  reference features to keep beyond these tensors.
* **predict** stacks the target under each prompt pair (the model does it) and paints the
  target's half. Several references use SegGPT's *feature ensemble* (``feature_ensemble=True``:
  the target's features are averaged over the prompts inside the encoder); anyseg then averages
  the painted outputs over the prompts (the reference keeps the first: all are alike after
  the ensemble, and the mean does not depend on the order of the references).
* **back to a mask**: the painting is de-normalised to RGB, resized bilinearly to the image
  (the reference: nearest) and every pixel takes the nearest palette colour; its confidence
  is ``(d_bg - d_fg) / (d_bg + d_fg)`` from the squared distances to the two colours (1 = pure
  white, 0 = half-way). A mask's score is the mean confidence over its pixels.
* **instances**: SegGPT paints a concept, not instances: ``instances="one"`` returns the whole
  painted foreground as one mask; ``"all"`` returns its connected components (8-connected, at
  least ``min_area`` pixels), best first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anyseg.errors import InputError, ModelError
from anyseg.fewshot.base import Reference, empty_masks
from anyseg.models.base import check_image
from anyseg.models.registry import ModelSpec
from anyseg.types import Masks

__all__ = ["SegGptModel", "SegGptMethod", "SegGptPrompts", "PALETTE", "DEFAULT_MODEL", "MIN_AREA"]

#: the registry name ``--method seggpt`` loads by default
DEFAULT_MODEL = "seggpt-vit-large"
#: prompt colours of background and foreground (transformers' ``build_palette(1)``)
PALETTE = ((0, 0, 0), (255, 255, 255))
#: ``instances="all"``: components smaller than this fraction of the image are dropped (and never below 16 pixels)
MIN_AREA = 0.0005
EMBEDDING_TYPES = ("instance", "semantic")


@dataclass(frozen=True, eq=False)
class SegGptPrompts:
    """The references, preprocessed once: ``pixel_values`` and ``masks`` ``(K, 3, h, w)`` on the device."""

    pixel_values: Any
    masks: Any

    def __len__(self) -> int:
        return int(self.pixel_values.shape[0])


class SegGptModel:
    """A loaded SegGPT: transformers' model and image processor (the ``seggpt`` family's ``fewshot`` loader)."""

    def __init__(self, spec: ModelSpec, model: Any, processor: Any, folder: Path | None = None, device: str = "cpu"):
        self.spec, self.name, self.model, self.processor, self.folder, self.device = (
            spec, spec.name, model, processor, folder, device)
        height, width = (int(v) for v in model.config.image_size)
        self.size = (height // 2, width)  # each of the two stacked images

    @classmethod
    def from_folder(cls, spec: ModelSpec, folder: Path, device: str | None = None) -> "SegGptModel":
        """Load from a resolved weights folder; the half-frame size comes from the model config, the
        mean/std from ``preprocessor_config.json`` (else the family's ImageNet values)."""
        from transformers import SegGptImageProcessorPil

        from anyseg.models.device import check_device
        from anyseg.models.hf import load_pretrained, normalization, read_preprocessor

        device = check_device(device)
        model = load_pretrained(spec, folder, spec.family_record.classes["fewshot"], device)
        size = model.config.image_size
        if not isinstance(size, (list, tuple)) or len(size) != 2 or int(size[0]) != 2 * int(size[1]):
            raise ModelError(f"{folder}: a SegGPT config has image_size [2 * S, S] (two stacked images); got {size!r}")
        mean, std = normalization(read_preprocessor(folder), *spec.family_record.normalize)
        processor = SegGptImageProcessorPil(size={"height": int(size[0]) // 2, "width": int(size[1])},
                                            image_mean=list(mean), image_std=list(std))
        return cls(spec, model, processor, folder=folder, device=device)

    def prompts(self, refs: Sequence[Reference]) -> SegGptPrompts:
        """Reference images and palette-painted masks, resized and normalised as the model takes them."""
        enc = self.processor(images=None, prompt_images=[r.image for r in refs],
                             prompt_masks=[r.mask.astype(np.uint8) for r in refs], num_labels=1, return_tensors="pt")
        return SegGptPrompts(enc["prompt_pixel_values"].to(self.device), enc["prompt_masks"].to(self.device))

    def paint(self, image: np.ndarray, prompts: SegGptPrompts, embedding_type: str = "instance") -> np.ndarray:
        """The painted target half ``(h, w, 3)`` float32 RGB in ``[0, 255]``, averaged over the prompts."""
        import torch

        image = check_image(image)
        pixel_values = self.processor(images=[image], return_tensors="pt")["pixel_values"].to(self.device)
        k = len(prompts)
        with torch.inference_mode():
            out = self.model(pixel_values=pixel_values.expand(k, -1, -1, -1), prompt_pixel_values=prompts.pixel_values,
                             prompt_masks=prompts.masks, feature_ensemble=k > 1, embedding_type=embedding_type)
        pred = out.pred_masks.float()
        pred = pred[:, :, pred.shape[2] // 2:, :].mean(0)  # (3, h, w): the target's half
        mean = torch.tensor(self.processor.image_mean, device=pred.device).view(3, 1, 1)
        std = torch.tensor(self.processor.image_std, device=pred.device).view(3, 1, 1)
        return ((pred * std + mean) * 255).clamp(0, 255).permute(1, 2, 0).cpu().numpy()


def palette_confidence(painted: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` signed confidence in ``[-1, 1]`` that a pixel is painted foreground (> 0: nearer
    the foreground colour than the background one), the painting resized bilinearly to ``size``."""
    import cv2

    h, w = size
    rgb = cv2.resize(painted.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    bg, fg = (np.asarray(c, np.float32) for c in PALETTE)
    d_bg = ((rgb - bg) ** 2).sum(-1)
    d_fg = ((rgb - fg) ** 2).sum(-1)
    return (d_bg - d_fg) / np.maximum(d_bg + d_fg, 1e-6)


class SegGptMethod:
    """``--method seggpt``. Options: ``embedding_type`` (``instance``, the reference's default, or
    ``semantic``) and ``min_area`` (``instances="all"``: fraction of the image)."""

    name = "seggpt"
    options = ("embedding_type", "min_area")

    def __init__(self, model: SegGptModel, embedding_type: str = "instance", min_area: float = MIN_AREA) -> None:
        if embedding_type not in EMBEDDING_TYPES:
            raise InputError(f"embedding_type must be one of {', '.join(EMBEDDING_TYPES)}; got {embedding_type!r}")
        if not 0.0 <= float(min_area) < 1.0:
            raise InputError(f"min_area must be a fraction of the image in [0, 1); got {min_area!r}")
        self.model, self.embedding_type, self.min_area = model, embedding_type, float(min_area)

    @classmethod
    def from_options(cls, model: Any = None, features: Any = None, device: str | None = None,
                     allow_download: bool = True, **options: Any) -> "SegGptMethod":
        if features is not None:
            raise InputError("seggpt paints with its own encoder; --features is for --method matcher")
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            raise InputError(f"unknown option(s) for seggpt: {', '.join(unknown)}; expected {', '.join(cls.options)}")
        return cls(load_seggpt(model, device, allow_download), **options)

    def fit(self, refs: Sequence[Reference]) -> SegGptPrompts:
        return self.model.prompts(refs)

    def predict(self, fitted: SegGptPrompts, image: np.ndarray, instances: str = "one") -> Masks:
        import cv2

        image = check_image(image)
        size = image.shape[:2]
        conf = palette_confidence(self.model.paint(image, fitted, self.embedding_type), size)
        fg = conf > 0
        if not fg.any():
            return empty_masks(size)
        if instances == "one":
            return Masks(masks=fg[None], scores=np.array([conf[fg].mean()], np.float32))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
        min_px = max(16, int(self.min_area * size[0] * size[1]))
        keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_px]
        if not keep:
            return empty_masks(size)
        masks = np.stack([labels == i for i in keep])
        scores = np.array([conf[m].mean() for m in masks], np.float32)
        return Masks(masks=masks, scores=scores).sort_by("scores")


def load_seggpt(model: Any, device: str | None, allow_download: bool) -> SegGptModel:
    """A :class:`SegGptModel` from a registry name or folder (default :data:`DEFAULT_MODEL`), or one given loaded."""
    if isinstance(model, SegGptModel):
        return model
    from anyseg.models.families import FEWSHOT
    from anyseg.models.resolver import resolve_folder

    spec, folder = resolve_folder(model or DEFAULT_MODEL, FEWSHOT, allow_download=allow_download, quiet=True)
    if spec.family_record.loader("fewshot") != SegGptModel.from_folder:  # e.g. SAM 3, the other in-context family
        raise ModelError(f"--method seggpt needs a SegGPT model; {spec.name} is a {spec.family_record.title} model "
                         f"(e.g. --model {DEFAULT_MODEL})")
    return spec.family_record.build("fewshot", spec, folder, device)

"""SAM 3 exemplar prompts: every instance like the marked ones, in the image they are marked on.

SAM 3 (Carion et al. 2025, "SAM 3: Segment Anything with Concepts") takes, besides text, *image
exemplars*: positive (or negative) boxes around instances, and detects every instance of the
concept they show. In transformers' ``Sam3Model`` the exemplars are ``input_boxes`` (normalised
``cx, cy, w, h``) that its geometry encoder pools (ROI-align) from the vision features of the
image being segmented: an exemplar is a box *on the target image itself*. A reference from
another image cannot prompt it (its features would have to be pooled from that image, which
the model was not trained for), so this method segments the reference images themselves:

* **fit** turns every reference mask into exemplar boxes, one per connected component (8-
  connected, components below 1% of the largest dropped), and keeps them with the image's hash;
* **predict** on an image that is one of the references runs the detector with that image's
  exemplar boxes (and the text ``"visual"``, as transformers' ``Sam3Processor`` does for box-only
  prompts); on any other image it is a one-line :class:`ModelError` saying what SAM 3 supports;
* **scores** are SAM 3's ``sigmoid(logit) * sigmoid(presence)``, kept above ``threshold``
  (0.3, as the text interface); ``instances="one"`` returns the best detection, ``"all"`` every one.

Pre- and post-processing are those of :mod:`anyseg.text.sam3` (its ``Sam3TextSegmenter`` is
loaded and driven here: no torchvision). The geometry encoder itself calls
``torchvision.ops.roi_align``; when torchvision is not installed, anyseg gives transformers'
SAM 3 module :func:`roi_align`, a pure-torch equivalent of torchvision's kernel (``aligned=False``,
adaptive sampling), and leaves torchvision's own in place when it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

from anyseg.errors import InputError, ModelError
from anyseg.fewshot.base import Reference, empty_masks
from anyseg.io.images import image_hash
from anyseg.models.base import check_image
from anyseg.models.registry import ModelSpec
from anyseg.types import Masks

__all__ = ["build_sam3_exemplars", "Sam3Exemplars", "Sam3ExemplarMethod", "Sam3ExemplarFit", "exemplar_boxes",
           "roi_align", "DEFAULT_MODEL", "UNSUPPORTED"]

#: the registry name ``--method sam3`` loads by default
DEFAULT_MODEL = "sam3"
#: the one line for a target that is not one of the references
UNSUPPORTED = ("SAM 3 exemplar prompts are boxes on the image being segmented (its geometry encoder pools each "
               "exemplar from that image's own features), so a reference from another image cannot prompt it: give "
               "the image itself as the reference (e.g. one marked coin -> every coin), or use --method seggpt, "
               "persam or matcher for other images")
#: components smaller than this fraction of the reference's largest one give no exemplar box
MIN_COMPONENT = 0.01


def roi_align(input: Any, boxes: Any, output_size: Any, spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> Any:
    """``torchvision.ops.roi_align`` in pure torch (its CPU kernel's arithmetic).

    ``input`` ``(B, C, H, W)``; ``boxes`` a list of ``(K_b, 4)`` XYXY tensors (one per batch
    item) or a ``(K, 5)`` tensor ``(b, x1, y1, x2, y2)``. Returns ``(K, C, oh, ow)``. Bilinear
    sampling on a grid of ``ceil(roi / bin)`` points per bin (``sampling_ratio <= 0``), zero
    outside ``[-1, size]``, clamped at the border; the sampling is separable, so each box is
    two small interpolation matrices: ``Ay @ F @ Ax^T``.
    """
    import torch

    oh, ow = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if isinstance(boxes, (list, tuple)):
        rois = [(b, box) for b, t in enumerate(boxes) for box in t]
    else:
        rois = [(int(r[0]), r[1:]) for r in boxes]
    height, width = input.shape[-2:]
    offset = 0.5 if aligned else 0.0
    out = []
    for b, box in rois:
        x1, y1, x2, y2 = (float(v) * spatial_scale - offset for v in box)
        rh, rw = y2 - y1, x2 - x1
        if not aligned:
            rh, rw = max(rh, 1.0), max(rw, 1.0)
        gh = sampling_ratio if sampling_ratio > 0 else max(1, math.ceil(rh / oh))
        gw = sampling_ratio if sampling_ratio > 0 else max(1, math.ceil(rw / ow))
        ay = _interpolation(y1, rh / oh, oh, gh, height, input)
        ax = _interpolation(x1, rw / ow, ow, gw, width, input)
        out.append(torch.einsum("ph,chw,qw->cpq", ay, input[b], ax))
    if not out:
        return input.new_zeros((0, input.shape[1], oh, ow))
    return torch.stack(out)


def _interpolation(start: float, bin_size: float, bins: int, grid: int, size: int, like: Any) -> Any:
    """``(bins, size)``: row ``p`` averages the bilinear weights of bin ``p``'s ``grid`` samples."""
    import torch

    steps = torch.arange(bins, dtype=torch.float64)[:, None] * bin_size
    pos = (start + steps + (torch.arange(grid, dtype=torch.float64)[None] + 0.5) * bin_size / grid).reshape(-1)
    valid = ((pos >= -1.0) & (pos <= size)).double()
    pos = pos.clamp(min=0.0)
    low = pos.floor().long()
    edge = low >= size - 1
    low = torch.where(edge, torch.full_like(low, size - 1), low)
    high = torch.where(edge, low, low + 1)
    frac = torch.where(edge, torch.zeros_like(pos), pos - low.double())
    m = torch.zeros(pos.numel(), size, dtype=torch.float64)
    rows = torch.arange(pos.numel())
    m.index_put_((rows, low), (1 - frac) * valid, accumulate=True)
    m.index_put_((rows, high), frac * valid, accumulate=True)
    return m.view(bins, grid, size).mean(1).to(dtype=like.dtype, device=like.device)


def _provide_roi_align() -> None:
    """Give transformers' SAM 3 module :func:`roi_align` where torchvision is not installed."""
    from transformers.models.sam3 import modeling_sam3

    if getattr(modeling_sam3, "torchvision", None) is None:
        modeling_sam3.torchvision = SimpleNamespace(ops=SimpleNamespace(roi_align=roi_align))


def exemplar_boxes(mask: np.ndarray) -> np.ndarray:
    """``(K, 4)`` XYXY pixel boxes, one per 8-connected component of ``mask`` (largest first; those
    below :data:`MIN_COMPONENT` of the largest dropped)."""
    import cv2

    n, _labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    comps = sorted(range(1, n), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    if not comps:
        return np.zeros((0, 4), np.float32)
    biggest = stats[comps[0], cv2.CC_STAT_AREA]
    keep = [i for i in comps if stats[i, cv2.CC_STAT_AREA] >= MIN_COMPONENT * biggest]
    x, y = stats[keep, cv2.CC_STAT_LEFT], stats[keep, cv2.CC_STAT_TOP]
    w, h = stats[keep, cv2.CC_STAT_WIDTH], stats[keep, cv2.CC_STAT_HEIGHT]
    return np.stack([x, y, x + w, y + h], axis=1).astype(np.float32)


def build_sam3_exemplars(spec: ModelSpec, folder: Path, device: str | None = None) -> "Sam3Exemplars":
    """The SAM 3 family's ``fewshot`` loader: the detector of a full SAM 3 checkpoint (``sam3`` /
    ``sam3_video``; a tracker-only folder is a one-line error, as for text prompts)."""
    from anyseg.text.sam3 import build_sam3_text

    return Sam3Exemplars(build_sam3_text(spec, folder, device))


class Sam3Exemplars:
    """SAM 3's detector prompted with exemplar boxes on the image itself."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector  # anyseg.text.sam3.Sam3TextSegmenter: preprocessing, tokenizer, model
        self.name, self.spec, self.model, self.device = detector.name, detector.spec, detector.model, detector.device

    def segment(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray | None = None,
                threshold: float = 0.3, mask_threshold: float = 0.5) -> Masks:
        """Every detection of the concept the ``boxes`` ``(K, 4)`` XYXY pixels (``labels`` 1 positive,
        0 negative; default all positive) show in ``image``, above ``threshold``, best first."""
        import torch

        image = check_image(image)
        h, w = image.shape[:2]
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        labels = np.ones(len(boxes), np.int64) if labels is None else np.asarray(labels, np.int64)
        if len(boxes) == 0 or labels.shape != (len(boxes),):
            raise InputError("SAM 3 exemplars need at least one box, with one label (1 or 0) per box")
        _provide_roi_align()
        det = self.detector
        embedding = det.embed(image)
        ids, att = det.tokenize(["visual"])
        xyxy = torch.tensor(boxes / np.array([w, h, w, h], np.float32), device=self.device)
        cxcywh = torch.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                              xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], dim=1)
        with torch.inference_mode():
            out = self.model(vision_embeds=embedding.features, input_ids=ids, attention_mask=att,
                             input_boxes=cxcywh[None], input_boxes_labels=torch.tensor(labels, device=self.device)[None])
        scores = out.pred_logits[0].float().sigmoid()
        if out.presence_logits is not None:
            scores = scores * out.presence_logits[0].float().sigmoid()
        keep = torch.nonzero(scores > float(threshold)).flatten()
        if keep.numel() == 0:
            return empty_masks((h, w))
        return Masks(masks=_masks(out.pred_masks[0, keep], (h, w), mask_threshold),
                     scores=scores[keep].cpu().numpy(), boxes=_boxes(out.pred_boxes[0, keep], (h, w))).sort_by("scores")


def _boxes(boxes: Any, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    b = boxes.float().cpu().numpy() * np.array([w, h, w, h], np.float32)
    b[:, 0::2] = np.clip(b[:, 0::2], 0, w)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, h)
    return b.astype(np.float32)


def _masks(logits: Any, size: tuple[int, int], threshold: float, chunk: int = 8) -> np.ndarray:
    import torch.nn.functional as F

    out = np.zeros((logits.shape[0], *size), bool)
    for s in range(0, logits.shape[0], chunk):
        up = F.interpolate(logits[s:s + chunk].float().sigmoid()[None], size=size, mode="bilinear", align_corners=False)
        out[s:s + chunk] = (up[0] > threshold).cpu().numpy()
    return out


@dataclass(frozen=True, eq=False)
class Sam3ExemplarFit:
    """Per reference image (by content hash): its exemplar boxes ``(K, 4)`` XYXY pixels."""

    boxes: dict[str, np.ndarray]
    sizes: dict[str, tuple[int, int]]


class Sam3ExemplarMethod:
    """``--method sam3``. Options: ``threshold`` (detection score, default 0.3), ``mask_threshold`` (0.5)."""

    name = "sam3"
    options = ("threshold", "mask_threshold")

    def __init__(self, exemplars: Sam3Exemplars, threshold: float = 0.3, mask_threshold: float = 0.5) -> None:
        for what, v in (("threshold", threshold), ("mask_threshold", mask_threshold)):
            if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise InputError(f"{what} must be a number in [0, 1]; got {v!r}")
        self.exemplars, self.threshold, self.mask_threshold = exemplars, float(threshold), float(mask_threshold)

    @classmethod
    def from_options(cls, model: Any = None, features: Any = None, device: str | None = None,
                     allow_download: bool = True, **options: Any) -> "Sam3ExemplarMethod":
        if features is not None:
            raise InputError("sam3 pools its exemplars from its own features; --features is for --method matcher")
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            raise InputError(f"unknown option(s) for sam3: {', '.join(unknown)}; expected {', '.join(cls.options)}")
        return cls(load_sam3_exemplars(model, device, allow_download), **options)

    def fit(self, refs: Sequence[Reference]) -> Sam3ExemplarFit:
        boxes: dict[str, list[np.ndarray]] = {}
        sizes: dict[str, tuple[int, int]] = {}
        for ref in refs:
            key = image_hash(ref.image)
            boxes.setdefault(key, []).append(exemplar_boxes(ref.mask))
            sizes[key] = ref.size
        return Sam3ExemplarFit({k: np.concatenate(v) for k, v in boxes.items()}, sizes)

    def predict(self, fitted: Sam3ExemplarFit, image: np.ndarray, instances: str = "one") -> Masks:
        image = check_image(image)
        boxes = fitted.boxes.get(image_hash(image))
        if boxes is None:
            raise ModelError(UNSUPPORTED)
        found = self.exemplars.segment(image, boxes, threshold=self.threshold, mask_threshold=self.mask_threshold)
        return found[:1] if instances == "one" else found


def load_sam3_exemplars(model: Any, device: str | None, allow_download: bool) -> Sam3Exemplars:
    """:class:`Sam3Exemplars` from a registry name or folder (default :data:`DEFAULT_MODEL`), or one given loaded."""
    if isinstance(model, Sam3Exemplars):
        return model
    from anyseg.models.families import FEWSHOT
    from anyseg.models.resolver import resolve_folder

    spec, folder = resolve_folder(model or DEFAULT_MODEL, FEWSHOT, allow_download=allow_download, quiet=True)
    if spec.family_record.loader("fewshot") is not build_sam3_exemplars:  # e.g. SegGPT, the other in-context family
        raise ModelError(f"--method sam3 needs a SAM 3 model; {spec.name} is a {spec.family_record.title} model "
                         f"(e.g. --model {DEFAULT_MODEL})")
    return spec.family_record.build("fewshot", spec, folder, device)

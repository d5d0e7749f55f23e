"""SAM 3 concept prompts: every instance of a phrase, with masks, boxes and scores.

SAM 3 (Carion et al. 2025, "SAM 3: Segment Anything with Concepts") has a DETR-style
detector conditioned on a text prompt next to its SAM 2 style tracker; both share one
vision backbone and ship in one checkpoint (``facebook/sam3``). This module drives the
detector through transformers' ``Sam3Model`` and does the pre- and post-processing itself
(transformers' ``Sam3ImageProcessor`` needs torchvision, which anyseg does not depend on),
following transformers' ``Sam3Processor`` / ``Sam3ImageProcessor`` (v5):

* **image**: resized to ``S x S`` (``S`` = 1008 for the real model, from the model config)
  without keeping the aspect ratio, bilinear with antialiasing on the 0..255 values, rounded
  to integers like transformers' uint8 resize, then rescaled by 1/255 and normalised with
  the checkpoint's ``preprocessor_config.json`` mean/std (0.5/0.5 for SAM 3, the default
  when the file lacks them). The vision encoder runs once per image (:meth:`embed`).
* **text**: each name (every synonym of every class) is one prompt, tokenized with the
  checkpoint's CLIP tokenizer padded to the text encoder's ``max_position_embeddings``
  tokens (32 for SAM 3, as ``Sam3Processor`` pads); longer text is truncated to that many
  tokens (the end-of-text token kept) with a :class:`~anyseg.text.vocab.TextTruncatedWarning`.
  Prompts are decoded in batches of :attr:`Sam3TextSegmenter.prompt_batch` against the one
  set of vision features.
* **scores**: ``sigmoid(pred_logits) * sigmoid(presence_logits)`` per query, kept when
  strictly greater than ``threshold`` (default :data:`DEFAULT_THRESHOLD` = 0.3, the default
  of transformers' ``post_process_instance_segmentation``; the usage examples in
  transformers' SAM 3 documentation pass 0.5, a stricter choice for fewer false positives).
* **boxes**: the model predicts normalised XYXY boxes in the ``S x S`` frame; since the
  frame is the whole image stretched, ``x`` scales by ``W`` and ``y`` by ``H``. Boxes are
  then clipped to the image (transformers does not clip).
* **masks**: sigmoid of the low-resolution mask logits (``4 * S / 14`` = 288 pixels square
  for SAM 3), upsampled bilinearly (``align_corners=False``) to ``(H, W)`` and kept where
  strictly greater than ``mask_threshold`` (0.5), as transformers does.

Synonyms: every detection of a synonym belongs to the synonym's class (``labels`` is the
class label, ``data["phrase"]`` the synonym). When a class has several names, a detection
is dropped if a higher-scoring kept detection of *another* name of the same class has mask
IoU greater than :data:`SYNONYM_NMS_IOU` (0.5). Detections of one name are never
suppressed against each other (SAM 3's image output has no NMS), so a one-name class gives
exactly the model's output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anyseg import cancel
from anyseg.errors import InputError, ModelError
from anyseg.io.images import image_hash
from anyseg.models.base import check_image
from anyseg.models.registry import ModelSpec
from anyseg.text.vocab import ClassName, flatten, parse_classes, warn_truncated
from anyseg.types import Embedding, Masks

__all__ = ["load_sam3_text", "build_sam3_text", "Sam3TextSegmenter", "DEFAULT_THRESHOLD", "SYNONYM_NMS_IOU"]

#: default detection-score threshold: transformers' ``Sam3Processor.post_process_instance_segmentation``
DEFAULT_THRESHOLD = 0.3
#: mask IoU above which a lower-scoring detection of another synonym of the same class is a duplicate
SYNONYM_NMS_IOU = 0.5
#: model types whose checkpoints hold the SAM 3 detector (``sam3_video`` = detector + tracker, the hub layout)
DETECTOR_MODEL_TYPES = ("sam3", "sam3_video")
#: model types that hold only the point/box tracker
TRACKER_ONLY_MODEL_TYPES = ("sam3_tracker", "sam3_tracker_video")
HALF = (0.5, 0.5, 0.5)


def _read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"weights folder {folder}: cannot read config.json ({e})") from None


def _check_detector(spec: ModelSpec, folder: Path) -> None:
    """A one-line :class:`ModelError` unless ``folder`` holds the SAM 3 detector."""
    model_type = _read_config(folder).get("model_type")
    if model_type in TRACKER_ONLY_MODEL_TYPES:
        raise ModelError(
            f"weights folder {folder} holds only the SAM 3 tracker ({model_type!r}), which has no text detector; "
            f"text prompts need the full SAM 3 checkpoint ({spec.hub_id}, model_type 'sam3' or 'sam3_video')"
        )
    if model_type not in DETECTOR_MODEL_TYPES:
        raise ModelError(
            f"weights folder {folder} holds a {model_type!r} model; SAM 3 text prompts need one of {list(DETECTOR_MODEL_TYPES)}"
        )


def load_sam3_text(name: str = "sam3", weights: str | None = None, device: str | None = None,
                   allow_download: bool = True) -> "Sam3TextSegmenter":
    """Load SAM 3's text (concept) interface.

    Args:
        name: a registry name of the SAM 3 family (``sam3``) or the path of a local SAM 3
            folder; another model is a one-line :class:`ModelError`.
        weights: a transformers folder (or a ``.safetensors`` file in one) holding the full
            SAM 3 checkpoint; by default ``$ANYSEG_MODELS/<name>``, the Hugging Face cache,
            then a download when ``allow_download`` and online.
        device: torch device; default ``$ANYSEG_DEVICE``, else CUDA when available, else CPU.
        allow_download: whether missing weights may be downloaded.

    Raises:
        ModelError: unknown or non-SAM 3 name, a tracker-only or broken folder, missing
            weights (offline: :class:`~anyseg.errors.ModelNotAvailable`, one line saying how
            to provide them).
    """
    from anyseg.models.families import CONCEPTS
    from anyseg.models.resolver import resolve_folder

    spec, folder = resolve_folder(name, CONCEPTS, weights=weights, allow_download=allow_download)
    return build_sam3_text(spec, folder, device)


def build_sam3_text(spec: ModelSpec, folder: Path, device: str | None = None) -> "Sam3TextSegmenter":
    """SAM 3's text interface from a resolved spec and weights folder (the SAM 3 family's ``text`` loader).

    The normalisation (the family's 0.5 / 0.5 by default) and ``rescale_factor`` (1/255) come
    from the folder's ``preprocessor_config.json`` when it has them.
    """
    from anyseg.models.hf import load_pretrained, load_tokenizer, normalization, read_preprocessor
    from anyseg.models.device import check_device

    _check_detector(spec, folder)
    device = check_device(device)
    model = load_pretrained(spec, folder, spec.family_record.classes["text"], device)
    tokenizer = load_tokenizer(spec, folder)
    cfg = read_preprocessor(folder)
    mean, std = normalization(cfg, *spec.family_record.normalize)
    try:
        rescale = float(cfg.get("rescale_factor", 1.0 / 255.0))
    except (TypeError, ValueError):
        rescale = 1.0 / 255.0
    return Sam3TextSegmenter(spec, model, tokenizer, folder=folder, device=device, mean=mean, std=std,
                             rescale_factor=rescale)


class Sam3TextSegmenter:
    """SAM 3's detector behind anyseg's :class:`~anyseg.text.base.TextSegmenter` interface.

    Attributes:
        name: registry name (``sam3``).
        spec: the registry spec.
        model: transformers ``Sam3Model`` (eval mode, on ``device``).
        tokenizer: the checkpoint's CLIP tokenizer.
        device: torch device string.
        frame: ``S``, the square input size of the vision encoder in pixels.
        max_text_tokens: tokens per prompt (start and end tokens included); longer text is cut.
        prompt_batch: prompts decoded per model call (each costs a copy of the image features
            and the pixel decoder's activations: about 0.4 GB in float32 for the real model).
        synonym_nms_iou: mask IoU above which detections of two names of one class are duplicates.
    """

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, folder: Path | None = None, device: str = "cpu",
                 mean: Sequence[float] = HALF, std: Sequence[float] = HALF, rescale_factor: float = 1.0 / 255.0,
                 prompt_batch: int = 4):
        self.spec = spec
        self.name = spec.name
        self.model = model
        self.tokenizer = tokenizer
        self.folder = folder
        self.device = device
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.rescale_factor = float(rescale_factor)
        self.prompt_batch = max(1, int(prompt_batch))
        self.synonym_nms_iou = SYNONYM_NMS_IOU
        size = model.config.vision_config.backbone_config.image_size
        self.frame = int(size[0] if isinstance(size, (list, tuple)) else size)
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)
        self._id = f"{spec.name}:text:{folder}" if folder else f"{spec.name}:text"

    @property
    def model_id(self) -> str:
        """Identity of the loaded weights (embeddings carry it; the tracker's differ)."""
        return self._id

    # -- image ----------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> Any:
        """``(1, 3, S, S)`` normalised pixel values of an ``(H, W, 3)`` uint8 RGB image, on the device."""
        import torch
        import torch.nn.functional as F

        image = check_image(image)
        dtype = next(self.model.parameters()).dtype
        x = torch.tensor(image).to(self.device).permute(2, 0, 1)[None].float()
        if x.shape[-2:] != (self.frame, self.frame):
            x = F.interpolate(x, size=(self.frame, self.frame), mode="bilinear", align_corners=False, antialias=True)
            x = x.round().clamp(0, 255)  # transformers resizes the uint8 image
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return ((x * self.rescale_factor - mean) / std).to(dtype)

    def embed(self, image: np.ndarray) -> Embedding:
        """Run the vision encoder once: an :class:`Embedding` whose ``features`` are the FPN maps.

        ``features`` is a transformers ``Sam3VisionEncoderOutput`` holding only
        ``fpn_hidden_states`` and ``fpn_position_encoding`` (batch 1), what the detector reads.
        """
        import torch
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        image = check_image(image)
        pixel_values = self.preprocess(image)
        with torch.inference_mode():
            out = self.model.get_vision_features(pixel_values=pixel_values)
        features = Sam3VisionEncoderOutput(fpn_hidden_states=tuple(out.fpn_hidden_states),
                                           fpn_position_encoding=tuple(out.fpn_position_encoding))
        return Embedding(self.model_id, tuple(image.shape[:2]), (self.frame, self.frame), features, image_hash(image))

    # -- text -----------------------------------------------------------------------------
    def tokenize(self, phrases: Sequence[str]) -> tuple[Any, Any]:
        """``(input_ids, attention_mask)``, ``(P, max_text_tokens)`` int64 tensors on the device.

        Phrases longer than :attr:`max_text_tokens` tokens are truncated (warning once each).
        """
        limit = self.max_text_tokens
        for p in phrases:
            n = len(self.tokenizer(p, truncation=False, verbose=False)["input_ids"])
            if n > limit:
                warn_truncated(self.name, p, n, limit)
        enc = self.tokenizer(list(phrases), padding="max_length", truncation=True, max_length=limit,
                             return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    # -- segmentation ---------------------------------------------------------------------
    def segment(self, image: np.ndarray, classes: Sequence[ClassName] | str, threshold: float | None = None,
                mask_threshold: float = 0.5, embedding: Embedding | None = None) -> Masks:
        """All instances of every class, at the image's original resolution.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            classes: the classes (see :func:`~anyseg.text.vocab.parse_classes`; a string or
                list of strings is parsed the same way). Every name is one prompt.
            threshold: keep detections whose score is strictly greater (``[0, 1]``; default
                :data:`DEFAULT_THRESHOLD`).
            mask_threshold: a pixel is in a mask when its upsampled mask probability is
                strictly greater (``[0, 1]``).
            embedding: from :meth:`embed` of this image, to skip the vision encoder.

        Returns:
            ``Masks`` sorted by descending score: ``masks`` ``(N, H, W)``, ``scores`` (presence
            times query probability), ``boxes`` (the model's boxes in original pixels, clipped
            to the image), ``labels`` (class labels), ``data["class_id"]`` (int64 index into
            ``classes``) and ``data["phrase"]`` (the name that found it).
        """
        import torch

        image = check_image(image)
        classes = self._classes(classes)
        threshold = DEFAULT_THRESHOLD if threshold is None else threshold
        for what, value in (("threshold", threshold), ("mask_threshold", mask_threshold)):
            if not isinstance(value, (int, float, np.floating, np.integer)) or not 0.0 <= float(value) <= 1.0:
                raise InputError(f"{what} must be a number in [0, 1]; got {value!r}")
        h, w = image.shape[:2]
        if embedding is None:
            embedding = self.embed(image)
        else:
            self._check_embedding(embedding, image)
        names, owner = flatten(classes)
        input_ids, attention_mask = self.tokenize(names)

        scores_l, boxes_l, masks_l, name_l = [], [], [], []
        feats = embedding.features
        for start in range(0, len(names), self.prompt_batch):
            cancel.check()
            stop = min(start + self.prompt_batch, len(names))
            b = stop - start
            vision = type(feats)(
                fpn_hidden_states=tuple(t.expand(b, *t.shape[1:]) for t in feats.fpn_hidden_states),
                fpn_position_encoding=tuple(t.expand(b, *t.shape[1:]) for t in feats.fpn_position_encoding),
            )
            with torch.inference_mode():
                out = self.model(vision_embeds=vision, input_ids=input_ids[start:stop],
                                 attention_mask=attention_mask[start:stop])
                scores = out.pred_logits.float().sigmoid()
                if out.presence_logits is not None:
                    scores = scores * out.presence_logits.float().sigmoid()
                for j in range(b):
                    keep = torch.nonzero(scores[j] > float(threshold)).flatten()
                    if keep.numel() == 0:
                        continue
                    scores_l.append(scores[j, keep].cpu().numpy())
                    boxes_l.append(self._boxes(out.pred_boxes[j, keep], (h, w)))
                    masks_l.append(self._masks(out.pred_masks[j, keep], (h, w), float(mask_threshold)))
                    name_l.append(np.full(keep.numel(), start + j, dtype=np.int64))
        if not scores_l:
            return Masks(np.zeros((0, h, w), dtype=bool), scores=np.zeros(0, np.float32),
                         boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, dtype=str),
                         data={"class_id": np.zeros(0, np.int64), "phrase": np.zeros(0, dtype=str)})
        name_idx = np.concatenate(name_l)
        class_id = np.asarray(owner, dtype=np.int64)[name_idx]
        result = Masks(
            masks=np.concatenate(masks_l),
            scores=np.concatenate(scores_l),
            boxes=np.concatenate(boxes_l),
            labels=np.array([classes[c].label for c in class_id], dtype=str),
            data={"class_id": class_id, "phrase": np.array([names[i] for i in name_idx], dtype=str),
                  "_name": name_idx},
        ).sort_by("scores")
        result = self._merge_synonyms(result, classes)
        data = {k: v for k, v in result.data.items() if k != "_name"}
        return result.with_columns(data=data)

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _classes(classes: Sequence[ClassName] | str) -> list[ClassName]:
        if classes is None or isinstance(classes, str):
            return parse_classes(classes)
        classes = list(classes)
        if not classes:
            raise InputError("the class list is empty: give at least one class name")
        if all(isinstance(c, ClassName) for c in classes):
            return classes
        if all(isinstance(c, str) for c in classes):
            return parse_classes(classes)
        raise InputError("classes must be ClassName objects or class-name strings")

    def _check_embedding(self, embedding: Embedding, image: np.ndarray) -> None:
        if embedding.model_id != self.model_id:
            raise InputError(f"the embedding was made by {embedding.model_id!r}, not by {self.model_id!r}; "
                             "embed the image with this model")
        if tuple(embedding.original_size) != tuple(image.shape[:2]) or (
                embedding.image_hash and embedding.image_hash != image_hash(image)):
            raise InputError("the embedding was made from another image; embed this image first")

    @staticmethod
    def _boxes(boxes: Any, size: tuple[int, int]) -> np.ndarray:
        """Normalised XYXY boxes of the stretched frame -> original pixels, clipped to the image."""
        h, w = size
        b = boxes.float().cpu().numpy().astype(np.float32) * np.array([w, h, w, h], dtype=np.float32)
        b[:, 0::2] = np.clip(b[:, 0::2], 0, w)
        b[:, 1::2] = np.clip(b[:, 1::2], 0, h)
        return b

    @staticmethod
    def _masks(logits: Any, size: tuple[int, int], mask_threshold: float, chunk: int = 8) -> np.ndarray:
        """``(K, h, w)`` low-res mask logits -> ``(K, H, W)`` bool: sigmoid, bilinear to ``size``, ``> mask_threshold``."""
        import torch.nn.functional as F

        out = np.zeros((logits.shape[0], *size), dtype=bool)
        for s in range(0, logits.shape[0], chunk):  # a few at a time: bounded memory on large images
            probs = logits[s:s + chunk].float().sigmoid()[None]
            up = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)[0]
            out[s:s + chunk] = (up > mask_threshold).cpu().numpy()
        return out

    def _merge_synonyms(self, masks: Masks, classes: Sequence[ClassName]) -> Masks:
        """Drop a detection when a higher-scoring kept one of another name of its class overlaps it.

        ``masks`` must be sorted by descending score; the order is kept.
        """
        from anyseg.masks.boxes import mask_iou

        multi = [i for i, c in enumerate(classes) if len(c.names) > 1]
        if not multi or len(masks) < 2:
            return masks
        class_id, name_idx = masks.data["class_id"], masks.data["_name"]
        drop = np.zeros(len(masks), dtype=bool)
        for c in multi:
            members = np.flatnonzero(class_id == c)
            if len(np.unique(name_idx[members])) < 2:
                continue
            iou = mask_iou(masks.masks[members], masks.masks[members])
            kept: list[int] = []
            for a in range(len(members)):  # members are in descending score order
                dup = any(name_idx[members[k]] != name_idx[members[a]] and iou[a, k] > self.synonym_nms_iou
                          for k in kept)
                if dup:
                    drop[members[a]] = True
                else:
                    kept.append(a)
        return masks[~drop] if drop.any() else masks

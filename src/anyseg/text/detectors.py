"""Open-vocabulary box detectors: words -> boxes in original image pixels (Grounding DINO, OWLv2).

Both detectors take an ``(H, W, 3)`` uint8 RGB image of any aspect ratio and a list of
classes (each with synonyms, see :mod:`anyseg.text.vocab`) and return
:class:`~anyseg.text.base.Detections`: XYXY float32 boxes in the original image's pixels,
clipped to the image, with ``labels`` indexing the classes and ``phrases`` naming the synonym
that matched. No NMS and no top-k here: the caller applies them. Preprocessing is done here
(no torchvision), following each model's reference:

* **Grounding DINO** (Liu et al. 2023; transformers' ``GroundingDinoImageProcessor``): resize
  so that the shortest edge is 800 pixels and the longest at most 1333 (bilinear,
  antialiased), normalise with ImageNet mean/std, ``pixel_mask`` all ones (one image, no
  batch padding). The caption is every name of every class, lower-cased, written
  ``"name1 . name2 . name3 ."`` as in the original. The model scores each box against every
  caption token; a name's score is the max over its tokens of ``sigmoid(logit)`` (Grounded-SAM
  takes the max over a phrase's tokens), found through the tokenizer's character offsets.
  Boxes are normalised ``cx, cy, w, h`` of the resized image, which is the whole original
  image: they scale by ``(W, H)``.
* **OWLv2** (Minderer et al. 2023; ``Owlv2ImageProcessor``): scale to ``[0, 1]``, pad
  bottom/right to a square of side ``max(H, W)`` with grey 0.5 (the official OWLv2 inference
  code's padding; transformers 5's processor pads with 0.0, ``Owlv2Detector(pad_value=...)``
  selects), resize to the model's ``vision_config.image_size`` (bilinear,
  antialiased; transformers uses a Gaussian prefilter plus linear zoom, which differs by
  interpolation noise) and normalise with CLIP mean/std. Each name is its own text query
  (CLIP tokenizer, padded to OWL's 16 tokens), all queries in one forward. Boxes are
  normalised ``cx, cy, w, h`` of the PADDED square: they scale by ``max(H, W)`` on both axes,
  never by ``(W, H)``.

Mean, std and (for Grounding DINO) the resize edges come from the weights folder's
``preprocessor_config.json`` when it has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anyseg.errors import InputError
from anyseg.models.base import check_image
from anyseg.models.registry import ModelSpec
from anyseg.text.base import Detections, TextDetector
from anyseg.text.vocab import ClassName, flatten, parse_classes, warn_truncated

#: default ``(box_threshold, text_threshold)`` per family. Grounding DINO: 0.35 / 0.25, the
#: ``BOX_TRESHOLD`` / ``TEXT_TRESHOLD`` of GroundingDINO's README inference example, which the
#: Grounded-SAM examples copy (Grounded-SAM's ``grounded_sam_demo.py`` CLI defaults to a slightly
#: looser 0.3 box threshold). OWLv2: 0.1, the threshold of the OWLv2 examples and the default of
#: transformers' ``post_process_object_detection``; OWLv2 has no text threshold.
DEFAULT_THRESHOLDS: dict[str, tuple[float, float | None]] = {"grounding_dino": (0.35, 0.25), "owlv2": (0.1, None)}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Grounding DINO's resize: shortest edge, and the cap on the longest edge (pixels)
DINO_SHORTEST_EDGE, DINO_LONGEST_EDGE = 800, 1333
#: OWL's text length (CLIP tokens, start and end included)
OWL_MAX_TOKENS = 16
#: OWLv2's padding value, in [0, 1] pixel space before normalisation
OWL_PAD_VALUE = 0.5


# -- validation -----------------------------------------------------------------------------
def _threshold(value: float | None, default: float | None, what: str) -> float | None:
    """``value`` (or ``default`` when None) as a float in ``[0, 1]``; anything else is an InputError."""
    if value is None:
        return default
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number in [0, 1]; got {value!r}") from None
    if not 0.0 <= v <= 1.0:  # NaN fails too
        raise InputError(f"{what} must be in [0, 1]; got {value!r}")
    return v


def _classes(classes: Sequence[ClassName] | str) -> list[ClassName]:
    """The classes as a list; strings (``"cat,person|pedestrian"``) are parsed; empty is an InputError."""
    if isinstance(classes, str):
        return parse_classes(classes)
    items = list(classes) if classes is not None else []
    if not items:
        raise InputError("the class list is empty: give at least one class name")
    if all(isinstance(c, str) for c in items):
        return parse_classes(items)
    out: list[ClassName] = []
    for c in items:
        out.extend([c] if isinstance(c, ClassName) else parse_classes(str(c)))
    return out


# -- geometry --------------------------------------------------------------------------------
def dino_resize_shape(height: int, width: int, shortest: int = DINO_SHORTEST_EDGE,
                      longest: int | None = DINO_LONGEST_EDGE) -> tuple[int, int]:
    """``(h, w)`` of Grounding DINO's input: shortest edge -> ``shortest``, longest edge <= ``longest``.

    The aspect ratio is kept up to whole pixels, with DETR's rounding (``RandomResize`` /
    transformers' ``get_size_with_aspect_ratio``): the short side is the target (rounded when
    the long side's cap decides it) and the long side is truncated. Unlike transformers, an
    image whose short side already equals the rounded target still has its long side capped.
    """
    short, long_ = min(height, width), max(height, width)
    raw = float(shortest)
    if longest is not None and long_ / short * shortest > longest:
        raw = longest * short / long_
    new_short = max(1, round(raw))
    new_long = max(1, int(raw * long_ / short))
    return (new_short, new_long) if height <= width else (new_long, new_short)


def cxcywh_to_pixels(boxes: np.ndarray, scale_x: float, scale_y: float, height: int, width: int) -> np.ndarray:
    """Normalised ``(N, 4)`` ``cx, cy, w, h`` -> XYXY pixels (``x * scale_x``, ``y * scale_y``), clipped to the image.

    ``height`` / ``width`` are the original image's, in pixels.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy, bw, bh = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    xyxy = np.stack([(cx - bw / 2) * scale_x, (cy - bh / 2) * scale_y,
                     (cx + bw / 2) * scale_x, (cy + bh / 2) * scale_y], axis=1)
    xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, width)
    xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, height)
    return xyxy.astype(np.float32)


def _non_empty(xyxy: np.ndarray) -> np.ndarray:
    """Boxes with positive width and height after clipping (a box wholly in padding has none)."""
    return (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])


def _to_tensor(image: np.ndarray, device: str) -> Any:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float32 in ``[0, 1]`` on ``device``."""
    import torch

    x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).to(device)
    return x.permute(2, 0, 1)[None].float().div_(255.0)


def _normalize(x: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    import torch

    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def _model_dtype(model: Any) -> Any:
    return next(model.parameters()).dtype


# -- Grounding DINO ----------------------------------------------------------------------------
@dataclass
class Caption:
    """Grounding DINO's text input and where each name's tokens are.

    Attributes:
        text: the caption, ``"name1 . name2 ."`` (lower-cased).
        names: every name of every class, in :func:`~anyseg.text.vocab.flatten` order.
        owner: class index of each name.
        tokens: token positions (in ``input_ids``) of each name; empty for a name cut by truncation.
        encoding: the tokenizer's output (``input_ids``, ``attention_mask``, ``token_type_ids``) as lists.
        n_tokens: the caption's length before truncation (special tokens included).
    """

    text: str
    names: list[str]
    owner: list[int]
    tokens: list[list[int]]
    encoding: dict[str, list[int]]
    n_tokens: int


def build_caption(names: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """``"a . b . c ."`` (lower-cased, whitespace collapsed) and each name's ``[start, end)`` characters."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for name in names:
        clean = " ".join(name.lower().split())
        spans.append((pos, pos + len(clean)))
        parts.append(clean + " .")
        pos += len(clean) + 3  # the name, " ." and the joining space
    return " ".join(parts), spans


class _Detector:
    """What every open-vocabulary detector wrapper carries: its spec, model, tokenizer, device, normalisation."""

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, device: str,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        self.spec = spec
        self.name = spec.name
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.mean, self.std = tuple(mean), tuple(std)

    @classmethod
    def from_folder(cls, spec: ModelSpec, folder: Path, device: str | None = None) -> Any:
        """The detector of a resolved spec and weights folder: the family record's ``text`` loader
        (its transformers class is the record's ``classes["text"]``)."""
        from anyseg.models.hf import load_pretrained, load_tokenizer
        from anyseg.models.device import check_device

        device = check_device(device)
        model = load_pretrained(spec, folder, spec.family_record.classes["text"], device)
        return cls.from_pretrained(spec, model, load_tokenizer(spec, folder), folder, device)  # type: ignore[attr-defined]


class GroundingDinoDetector(_Detector):
    """Grounding DINO through transformers: one caption of all names, token scores mapped back to names."""

    family = "grounding_dino"

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, device: str = "cpu",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 shortest_edge: int = DINO_SHORTEST_EDGE, longest_edge: int | None = DINO_LONGEST_EDGE):
        super().__init__(spec, model, tokenizer, device, mean, std)
        self.shortest_edge, self.longest_edge = int(shortest_edge), longest_edge

    @classmethod
    def from_pretrained(cls, spec: ModelSpec, model: Any, tokenizer: Any, folder: Path | None,
                        device: str) -> GroundingDinoDetector:
        """A detector whose resize and normalisation come from ``folder``'s ``preprocessor_config.json``."""
        from anyseg.models.hf import normalization, read_preprocessor

        cfg = read_preprocessor(folder)
        mean, std = normalization(cfg, *spec.family_record.normalize)  # ImageNet's by default
        size = cfg.get("size") if isinstance(cfg.get("size"), dict) else {}
        shortest = size.get("shortest_edge") or DINO_SHORTEST_EDGE
        longest = size.get("longest_edge") or cfg.get("max_size") or DINO_LONGEST_EDGE
        return cls(spec, model, tokenizer, device, mean, std, int(shortest), int(longest))

    @property
    def text_limit(self) -> int:
        """Most caption tokens the text encoder takes (``config.max_text_len``, or the tokenizer's limit if lower)."""
        limit = int(self.model.config.max_text_len)
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < limit:
            limit = tok_max
        return limit

    def encode_text(self, classes: Sequence[ClassName]) -> Caption:
        """Tokenize the caption of ``classes``, truncating (with a warning) past :attr:`text_limit`.

        A name whose tokens do not all fit is not detectable (its ``tokens`` are empty); the
        warning lists those names.
        """
        names, owner = flatten(classes)
        text, spans = build_caption(names)
        limit = self.text_limit
        full = self.tokenizer(text, add_special_tokens=True, verbose=False)
        n_tokens = len(full["input_ids"])
        enc = self.tokenizer(text, add_special_tokens=True, truncation=True, max_length=limit,
                             return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc.pop("offset_mapping")]
        kept_end = max((e for s, e in offsets if e > s), default=0)
        tokens = []
        for start, end in spans:
            inside = [i for i, (s, e) in enumerate(offsets) if start <= s < e <= end]
            tokens.append(inside if end <= kept_end else [])
        if n_tokens > limit:
            cut = [n for n, t in zip(names, tokens) if not t]
            lost = f" (cannot detect the names cut off: {', '.join(repr(n) for n in cut)})" if cut else ""
            warn_truncated(self.name + lost, text, n_tokens, limit)
        encoding = {k: list(v) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        return Caption(text, names, owner, tokens, encoding, n_tokens)

    def preprocess(self, image: np.ndarray) -> tuple[Any, Any]:
        """``(1, 3, h, w)`` normalised pixels (the resized image) and the ``(1, h, w)`` pixel mask (all ones)."""
        import torch
        import torch.nn.functional as F

        h, w = dino_resize_shape(image.shape[0], image.shape[1], self.shortest_edge, self.longest_edge)
        x = _to_tensor(image, self.device)
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        x = _normalize(x, self.mean, self.std).to(_model_dtype(self.model))
        return x, torch.ones((1, h, w), dtype=torch.long, device=self.device)

    def detect(self, image: np.ndarray, classes: Sequence[ClassName], box_threshold: float | None = None,
               text_threshold: float | None = None) -> Detections:
        """Boxes of every class, kept when their score is above both thresholds.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            classes: the classes; every synonym is a name in the caption.
            box_threshold: keep a box when its best name score is ``> box_threshold``
                (default 0.35).
            text_threshold: ... and the matched name's score is ``> text_threshold``
                (default 0.25). The box's best score is its matched name's score (both are
                maxima over that name's tokens), so this only bites above ``box_threshold``.

        Returns:
            Detections with scores ``max over the name's tokens of sigmoid(logit)``, labels the
            class owning the matched name and phrases that name (as given, not lower-cased).
        """
        import torch

        box_default, text_default = DEFAULT_THRESHOLDS[self.family]
        box_t = _threshold(box_threshold, box_default, "box_threshold")
        text_t = _threshold(text_threshold, text_default, "text_threshold")
        classes = _classes(classes)
        image = check_image(image)
        caption = self.encode_text(classes)
        pixel_values, pixel_mask = self.preprocess(image)
        text = {k: torch.tensor([v], dtype=torch.long, device=self.device) for k, v in caption.encoding.items()}
        with torch.inference_mode():
            out = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask, **text)
            probs = out.logits[0].float().sigmoid()  # (queries, max_text_len); padding positions are 0
            name_scores = torch.zeros((probs.shape[0], len(caption.names)), device=probs.device)
            for k, toks in enumerate(caption.tokens):
                if toks:
                    name_scores[:, k] = probs[:, toks].amax(dim=1)
            scores, best = name_scores.max(dim=1)
            boxes = out.pred_boxes[0].float()
        return self._collect(scores.cpu().numpy(), best.cpu().numpy(), boxes.cpu().numpy(), caption,
                             image.shape[:2], box_t, text_t)

    @staticmethod
    def _collect(scores: np.ndarray, best: np.ndarray, boxes: np.ndarray, caption: Caption,
                 size: tuple[int, int], box_t: float, text_t: float | None) -> Detections:
        h, w = size
        keep = scores > box_t
        if text_t is not None:
            keep &= scores > text_t
        xyxy = cxcywh_to_pixels(boxes[keep], w, h, h, w)
        scores, best = scores[keep], best[keep]
        ok = _non_empty(xyxy)
        xyxy, scores, best = xyxy[ok], scores[ok], best[ok]
        return Detections(xyxy, scores, [caption.owner[k] for k in best], [caption.names[k] for k in best])


# -- OWLv2 -------------------------------------------------------------------------------------
@dataclass
class Queries:
    """OWLv2's text queries: one per name, padded to OWL's token length."""

    names: list[str]
    owner: list[int]
    input_ids: list[list[int]]
    attention_mask: list[list[int]]


class Owlv2Detector(_Detector):
    """OWLv2 through transformers: one query per name, padding to a square, boxes mapped via the square's side."""

    family = "owlv2"

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, device: str = "cpu",
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD, pad_value: float = OWL_PAD_VALUE):
        super().__init__(spec, model, tokenizer, device, mean, std)
        self.pad_value = float(pad_value)
        self.frame = int(model.config.vision_config.image_size)

    @classmethod
    def from_pretrained(cls, spec: ModelSpec, model: Any, tokenizer: Any, folder: Path | None,
                        device: str) -> Owlv2Detector:
        """A detector whose normalisation comes from ``folder``'s ``preprocessor_config.json``.

        The input side is always the model's ``vision_config.image_size`` (its box bias and
        position embeddings are built for that grid).
        """
        from anyseg.models.hf import preprocessor_normalization

        mean, std = preprocessor_normalization(folder, spec.family_record.normalize)  # CLIP's by default
        return cls(spec, model, tokenizer, device, mean, std)

    @property
    def text_limit(self) -> int:
        """Tokens per query: OWL's 16 (the text tower's position embeddings)."""
        return int(getattr(self.model.config.text_config, "max_position_embeddings", OWL_MAX_TOKENS))

    def encode_text(self, classes: Sequence[ClassName]) -> Queries:
        """One CLIP-tokenized query per name, padded to :attr:`text_limit`; longer names are cut (with a warning)."""
        names, owner = flatten(classes)
        limit = self.text_limit
        for name, ids in zip(names, self.tokenizer(names, verbose=False)["input_ids"]):
            if len(ids) > limit:
                warn_truncated(self.name, name, len(ids), limit)
        enc = self.tokenizer(names, padding="max_length", truncation=True, max_length=limit)
        return Queries(names, owner, [list(v) for v in enc["input_ids"]], [list(v) for v in enc["attention_mask"]])

    def preprocess(self, image: np.ndarray) -> tuple[Any, int]:
        """``(1, 3, S, S)`` normalised pixels and the padded square's side ``max(H, W)`` in original pixels."""
        import torch.nn.functional as F

        h, w = image.shape[:2]
        side = max(h, w)
        x = _to_tensor(image, self.device)
        x = F.pad(x, (0, side - w, 0, side - h), value=self.pad_value)
        x = F.interpolate(x, size=(self.frame, self.frame), mode="bilinear", align_corners=False, antialias=True)
        return _normalize(x, self.mean, self.std).to(_model_dtype(self.model)), side

    def detect(self, image: np.ndarray, classes: Sequence[ClassName], box_threshold: float | None = None,
               text_threshold: float | None = None) -> Detections:
        """Boxes of every class, kept when their best query's ``sigmoid(logit)`` is ``> box_threshold``.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            classes: the classes; every synonym is its own query.
            box_threshold: default 0.1.
            text_threshold: not used by OWLv2 (validated, then ignored).

        Returns:
            Detections: one per image patch above the threshold, labelled with the class of its
            best-scoring query and that query's name as the phrase.
        """
        import torch

        box_t = _threshold(box_threshold, DEFAULT_THRESHOLDS[self.family][0], "box_threshold")
        _threshold(text_threshold, None, "text_threshold")
        classes = _classes(classes)
        image = check_image(image)
        queries = self.encode_text(classes)
        pixel_values, side = self.preprocess(image)
        ids = torch.tensor(queries.input_ids, dtype=torch.long, device=self.device)
        mask = torch.tensor(queries.attention_mask, dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, pixel_values=pixel_values)
            scores, best = out.logits[0].float().sigmoid().max(dim=-1)  # per patch: best query
            boxes = out.pred_boxes[0].float()
        scores, best, boxes = scores.cpu().numpy(), best.cpu().numpy(), boxes.cpu().numpy()
        h, w = image.shape[:2]
        keep = scores > box_t
        xyxy = cxcywh_to_pixels(boxes[keep], side, side, h, w)
        scores, best = scores[keep], best[keep]
        ok = _non_empty(xyxy)
        xyxy, scores, best = xyxy[ok], scores[ok], best[ok]
        return Detections(xyxy, scores, [queries.owner[k] for k in best], [queries.names[k] for k in best])


# -- loading -------------------------------------------------------------------------------------
def load_detector(name: str, weights: str | None = None, device: str | None = None,
                  allow_download: bool = True) -> TextDetector:
    """A text -> boxes detector by registry name (``grounding-dino-tiny``, ``owlv2-base``, ...) or local folder.

    Weights resolve like every model (``weights`` path, ``$ANYSEG_MODELS/<name>``, the Hugging
    Face cache, then a download when allowed); the folder must hold the tokenizer files too.
    An unknown name, a name that is not a detector, or missing / broken weights are one-line
    :class:`~anyseg.errors.ModelError` (``ModelNotAvailable`` when offline). The detector class
    is the family record's ``text`` loader (:meth:`GroundingDinoDetector.from_folder`, ...).
    """
    from anyseg.models.families import DETECT
    from anyseg.models.resolver import resolve_folder

    spec, folder = resolve_folder(name, DETECT, weights=weights, allow_download=allow_download)
    return spec.family_record.build("text", spec, folder, device)


__all__ = ["DEFAULT_THRESHOLDS", "GroundingDinoDetector", "Owlv2Detector", "build_caption", "cxcywh_to_pixels",
           "dino_resize_shape", "load_detector"]

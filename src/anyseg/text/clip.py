"""CLIP for open vocabulary: labelling masks, and training-free dense CLIP (MaskCLIP / SCLIP).

CLIP (Radford et al. 2021) is run through transformers' ``CLIPModel``; the pre-processing is
done here with OpenCV and torch (transformers' CLIP image processor is not used). The
model-free helpers (:func:`mask_crop`, :func:`crop_box`, :func:`sliding_windows`,
:func:`vote_in_masks`) live in :mod:`anyseg.text.clip_geometry` and are re-exported here.

* **text** (:meth:`ClipModel.text_embeddings`): every name of a class (its label and its
  synonyms) is put in every prompt template (:data:`~anyseg.text.vocab.TEMPLATES`, the
  prompt ensemble of CLIP's ImageNet zero-shot recipe as used by MaskCLIP and SCLIP). Each
  prompt's projected text embedding is L2-normalised, the class embedding is the mean over
  all ``templates x names`` prompts, L2-normalised again. Text longer than the tokenizer's
  limit (77 tokens for CLIP) is truncated, keeping the end-of-text token that CLIP pools,
  with a :class:`~anyseg.text.vocab.TextTruncatedWarning`. Embeddings are cached per
  ``(names of the class, templates)``.
* **mask classification** (:meth:`ClipModel.classify_masks`): each mask's tight box is
  enlarged by ``margin`` times its width / height on each side and clipped to the image; the
  crop is padded to a square with the normalisation mean colour (centred), resized to the
  model's input size (``image_size``, 224 for the real models; area interpolation when
  shrinking, bicubic when enlarging, as CLIP's bicubic resize) and the pixels outside the
  mask are replaced per ``background``: ``"blur"`` a Gaussian blur of standard deviation
  :data:`BLUR_SIGMA` x the crop side (a heavy blur that keeps the context's colours but not
  its objects), ``"grey"`` the mean colour (zero after normalisation, as in the masked crops
  of OpenSeg-style mask classification), ``"none"`` the plain crop. Probabilities are the
  softmax over classes of ``logit_scale * cosine`` (CLIP's zero-shot classifier; the real
  models' logit scale is 100). An empty mask gets a uniform row ``1 / C``.
* **dense CLIP** (:meth:`ClipModel.dense_logits`): the patch tokens of the last layer are
  taken through ``post_layernorm`` and ``visual_projection`` (the layers CLIP applies to the
  class token) and compared to the text embeddings by cosine similarity. CLIP's last
  attention spreads global information over all tokens; the two training-free methods change
  only the last block's attention, here by a forward hook on that block's ``self_attn``:

  - ``"maskclip"`` (Zhou et al. 2022, "Extract Free Dense Labels from CLIP"): the attention
    output is replaced by the value embeddings, i.e. ``out_proj(v_proj(x))`` per token (query
    and key are unused: each token attends only to itself).
  - ``"sclip"`` (Wang et al. 2023, "SCLIP: Rethinking Self-Attention for Dense
    Vision-Language Inference"): correlative self-attention, per head
    ``softmax(q q^T * s) + softmax(k k^T * s)`` (``s = head_dim ** -0.5``) applied to the
    values, then ``out_proj``; over all tokens, the class token included.

  In both, the block's residual connection and its feed-forward network are kept, as in the
  authors' code (MaskCLIP's ``TransformerEncoderLayer.forward(return_qkv=True)``: ``v += x;
  v = ffn(norm2(v), identity=v)``; SCLIP's ``VisionTransformer.forward``: ``x = x +
  custom_attn(...); x = x + mlp(ln_2(x))``). MaskCLIP's optional key smoothing and prompt
  denoising, and SCLIP's optional PAMR refinement, are not applied.

  Large images follow SCLIP's evaluation (mmseg ``Resize(scale=(2048, 336), keep_ratio=True)``
  then sliding windows of 224 with stride 112): the image is resized so that its short side
  is ``window`` pixels (default ``round(1.5 * image_size)`` = 336 for 224-pixel models; the
  long side is capped at ``6 * window``, as mmseg's 2048 for 336), cut into square windows of
  ``image_size`` pixels every ``stride`` pixels (default ``image_size // 2`` = 112; the last
  window of a row / column is shifted back to end at the image edge, so every pixel is
  covered), each window's ``(C, h / p, w / p)`` cosine map is upsampled bilinearly to the
  window, overlapping windows are averaged, and the result is resized bilinearly to ``(H,
  W)``. Windows other than the training size use bicubic position-embedding interpolation
  (transformers' ``interpolate_pos_encoding``).

* :func:`vote_in_masks`: replaces the dense scores inside each mask by the mask's mean scores,
  so that class maps follow SAM's boundaries (masks painted largest first, so where masks
  overlap the smallest one decides).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from anyseg import cancel
from anyseg.errors import InputError
from anyseg.models.base import check_image
from anyseg.models.registry import ModelSpec
# the model-free helpers live in their own module; re-exported so that this stays the one import
from anyseg.text.clip_geometry import (
    BACKGROUNDS, BLUR_SIGMA, as_mask_stack, crop_box, mask_crop, resize_image, sliding_windows, vote_in_masks,
)
from anyseg.text.vocab import TEMPLATES, ClassName, warn_truncated
from anyseg.types import Masks

if TYPE_CHECKING:
    import torch

__all__ = ["load_clip", "ClipModel", "vote_in_masks", "mask_crop", "crop_box", "sliding_windows",
           "CLIP_MEAN", "CLIP_STD", "BLUR_SIGMA", "METHODS", "BACKGROUNDS"]

#: CLIP's normalisation (OpenAI's ``clip.py``; the hub checkpoints' ``preprocessor_config.json``)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: dense methods accepted by :meth:`ClipModel.dense_logits`
METHODS = ("maskclip", "sclip")
#: ratio of the longest to the shortest resized side in :meth:`ClipModel.dense_logits` (mmseg's 2048 / 336)
MAX_ASPECT = 6


# -- the model ---------------------------------------------------------------------------------
def _check_classes(classes: Sequence[ClassName]) -> list[ClassName]:
    classes = list(classes)
    if not classes:
        raise InputError("the class list is empty: give at least one class name")
    for c in classes:
        if not isinstance(c, ClassName):
            raise InputError(f"classes must be ClassName items (see anyseg.text.vocab.parse_classes); got {c!r}")
    return classes


def _check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    templates = (templates,) if isinstance(templates, str) else tuple(templates)
    if not templates:
        raise InputError("the prompt template list is empty")
    for t in templates:
        if "{}" not in str(t):
            raise InputError(f"prompt template {t!r} has no '{{}}' where the class name goes")
    return templates


class ClipModel:
    """A loaded CLIP model: text and image embeddings, mask labels and dense class scores.

    Attributes:
        name: registry name (``clip-vit-b16``...).
        spec: the registry :class:`~anyseg.models.registry.ModelSpec`.
        model: transformers ``CLIPModel`` in eval mode on ``device``.
        tokenizer: the checkpoint's CLIP tokenizer.
        device: torch device string.
        mean, std: RGB normalisation of ``[0, 1]`` pixel values.
        image_size: the vision tower's training input size in pixels (224 for the real models).
        patch_size: ViT patch size in pixels (32, 16 or 14).
        folder: the weights folder it was loaded from.
    """

    #: crops per forward pass of :meth:`image_embeddings` (bounds memory)
    batch_size = 32
    #: prompts per forward pass of the text encoder
    text_batch_size = 256
    #: sliding windows per forward pass of :meth:`dense_logits`
    window_batch_size = 8

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, device: str = "cpu",
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD, folder: Path | None = None):
        self.spec = spec
        self.name = spec.name
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.folder = folder
        vision = model.config.vision_config
        self.image_size = int(vision.image_size)
        self.patch_size = int(vision.patch_size)
        self._text_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], Any] = {}

    def __repr__(self) -> str:
        return f"ClipModel({self.name}, image_size={self.image_size}, patch={self.patch_size}, device={self.device})"

    # -- basics ----------------------------------------------------------------------------
    @property
    def dtype(self) -> "torch.dtype":
        return next(self.model.parameters()).dtype

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature ``exp(logit_scale)``, capped at 100 as in training."""
        return float(min(self.model.logit_scale.detach().float().exp().item(), 100.0))

    @property
    def text_max_length(self) -> int:
        """Most tokens (special tokens included) a prompt may have: tokenizer and position limits."""
        limit = int(self.model.config.text_config.max_position_embeddings)
        tok = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok, int) and 0 < tok < limit:
            limit = tok
        return limit

    @property
    def fill(self) -> tuple[int, int, int]:
        """The normalisation mean as a uint8 RGB colour (zero after normalisation)."""
        return tuple(int(round(255 * m)) for m in self.mean)  # type: ignore[return-value]

    def _normalise(self, images: np.ndarray) -> "torch.Tensor":
        """``(N, h, w, 3)`` uint8 -> ``(N, 3, h, w)`` normalised pixel values on the device."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.dtype)

    # -- text --------------------------------------------------------------------------------
    def _encode_texts(self, texts: list[str]) -> "torch.Tensor":
        """``(n, D)`` float32 L2-normalised projected text embeddings (CLIP's end-of-text token)."""
        import torch
        import torch.nn.functional as F

        limit = self.text_max_length
        specials = self.tokenizer.num_special_tokens_to_add(pair=False)
        for t in dict.fromkeys(texts):
            n = len(self.tokenizer.tokenize(t)) + specials
            if n > limit:
                warn_truncated(self.name, t, n, limit)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.text_batch_size):
                enc = self.tokenizer(texts[i:i + self.text_batch_size], padding=True, truncation=True,
                                     max_length=limit, return_tensors="pt")
                res = self.model.text_model(input_ids=enc["input_ids"].to(self.device),
                                            attention_mask=enc["attention_mask"].to(self.device))
                out.append(F.normalize(self.model.text_projection(res.pooler_output).float(), dim=-1))
        return torch.cat(out)

    def text_embeddings(self, classes: Sequence[ClassName], templates: Sequence[str] = TEMPLATES) -> "torch.Tensor":
        """``(C, D)`` float32 L2-normalised class embeddings on the model's device.

        Per class: every name (label and synonyms) in every template, each prompt's embedding
        L2-normalised, averaged over ``templates x names``, L2-normalised again (CLIP's prompt
        ensembling, extended to synonyms). Cached per ``(names, templates)``.
        """
        import torch
        import torch.nn.functional as F

        classes = _check_classes(classes)
        templates = _check_templates(templates)
        keys = [(c.names, templates) for c in classes]
        missing = [k for k in dict.fromkeys(keys) if k not in self._text_cache]
        if missing:
            prompts = [t.format(n) for names, _ in missing for n in names for t in templates]
            emb = self._encode_texts(prompts)
            start = 0
            for k in missing:
                n = len(k[0]) * len(templates)
                self._text_cache[k] = F.normalize(emb[start:start + n].mean(dim=0), dim=-1)
                start += n
        return torch.stack([self._text_cache[k] for k in keys])

    # -- images --------------------------------------------------------------------------------
    def _square(self, crop: np.ndarray) -> np.ndarray:
        """A crop padded to a centred square with the mean colour and resized to ``image_size``."""
        crop = check_image(crop)
        h, w = crop.shape[:2]
        if h != w:
            side = max(h, w)
            square = np.empty((side, side, 3), dtype=np.uint8)
            square[:] = np.asarray(self.fill, dtype=np.uint8)
            top, left = (side - h) // 2, (side - w) // 2
            square[top:top + h, left:left + w] = crop
            crop = square
        return resize_image(crop, (self.image_size, self.image_size))

    def image_embeddings(self, crops: Sequence[np.ndarray]) -> "torch.Tensor":
        """``(N, D)`` float32 L2-normalised image embeddings of ``(h, w, 3)`` uint8 RGB crops.

        Each crop is padded to a centred square with the mean colour, resized to ``image_size``
        and normalised; CLIP's projected class token is the embedding. Batches of
        :attr:`batch_size` crops.
        """
        import torch
        import torch.nn.functional as F

        crops = list(crops)
        if not crops:
            return torch.zeros((0, int(self.model.config.projection_dim)), device=self.device)
        out = []
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch_size):
                pixels = self._normalise(np.stack([self._square(c) for c in crops[i:i + self.batch_size]]))
                res = self.model.vision_model(pixel_values=pixels)
                out.append(F.normalize(self.model.visual_projection(res.pooler_output).float(), dim=-1))
        return torch.cat(out)

    def classify_masks(self, image: np.ndarray, masks: Masks | np.ndarray, classes: Sequence[ClassName],
                       background: str = "blur", margin: float = 0.1,
                       templates: Sequence[str] = TEMPLATES) -> np.ndarray:
        """``(N, C)`` float32 class probabilities of each mask's crop (rows sum to 1).

        Crops are made by :func:`mask_crop` at ``image_size`` (box enlarged by ``margin`` per
        side, square, ``background`` outside the mask); probabilities are
        ``softmax(logit_scale * cosine(image, class))`` over the classes. An empty mask has no
        crop and gets the uniform row ``1 / C``.
        """
        import torch

        image = check_image(image)
        classes = _check_classes(classes)
        if background not in BACKGROUNDS:
            raise InputError(f"unknown background {background!r}; expected one of {', '.join(BACKGROUNDS)}")
        given = margin
        try:
            margin = float(margin)
        except (TypeError, ValueError):
            margin = math.nan
        if not 0 <= margin < math.inf:
            raise InputError(f"margin must be a number >= 0 (a fraction of the mask's box); got {given!r}")
        m = as_mask_stack(masks, image.shape[:2])
        text = self.text_embeddings(classes, templates)
        probs = np.full((len(m), len(classes)), 1.0 / len(classes), dtype=np.float32)
        # crop and embed in chunks so that at most `batch_size` crops are held at once
        nonempty = np.flatnonzero(m.any(axis=(1, 2)))
        for i in range(0, len(nonempty), self.batch_size):
            cancel.check()
            idx = nonempty[i:i + self.batch_size]
            crops = [mask_crop(image, m[j], background, margin, self.image_size, self.fill) for j in idx]
            emb = self.image_embeddings(crops)
            with torch.inference_mode():
                p = torch.softmax(self.logit_scale * emb @ text.T, dim=-1)
            probs[idx] = p.cpu().numpy()
        return probs

    # -- dense ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _dense_attention(self, method: str) -> Iterator[None]:
        """Replace the last vision block's attention output by MaskCLIP's / SCLIP's (a forward hook).

        The hook lives only inside this context; a ``ClipModel`` is not meant to be shared by
        threads that embed crops while another computes dense maps.
        """
        attn = self.model.vision_model.encoder.layers[-1].self_attn

        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            new = _dense_attention(module, hidden, method)
            return (new, *output[1:]) if isinstance(output, tuple) else new

        handle = attn.register_forward_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    def patch_embeddings(self, pixels: "torch.Tensor", method: str = "sclip") -> "torch.Tensor":
        """``(B, D, h / p, w / p)`` float32 L2-normalised projected patch embeddings.

        ``pixels``: ``(B, 3, h, w)`` normalised, ``h`` and ``w`` multiples of the patch size
        ``p``. The last block's attention follows ``method`` (``"maskclip"`` or ``"sclip"``);
        the patch tokens then go through ``post_layernorm`` and ``visual_projection``.
        """
        import torch
        import torch.nn.functional as F

        if method not in METHODS:
            raise InputError(f"unknown dense method {method!r}; expected one of {', '.join(METHODS)}")
        b, _, h, w = pixels.shape
        gh, gw = h // self.patch_size, w // self.patch_size
        vision = self.model.vision_model
        with torch.inference_mode(), self._dense_attention(method):
            tokens = vision(pixel_values=pixels.to(self.dtype), interpolate_pos_encoding=True).last_hidden_state
            feats = self.model.visual_projection(vision.post_layernorm(tokens[:, 1:])).float()
        feats = F.normalize(feats, dim=-1)
        return feats.transpose(1, 2).reshape(b, -1, gh, gw)

    def dense_logits(self, image: np.ndarray, classes: Sequence[ClassName], method: str = "sclip",
                     window: int | None = None, stride: int | None = None,
                     templates: Sequence[str] = TEMPLATES) -> np.ndarray:
        """``(C, H, W)`` float32 cosine similarities between each pixel and each class, in ``[-1, 1]``.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            classes: the classes (see :meth:`text_embeddings`).
            method: ``"sclip"`` (default) or ``"maskclip"``: how the last block attends.
            window: the short side, in pixels, the image is resized to before the sliding
                windows (default ``round(1.5 * image_size)``: SCLIP's 336 for 224).
            stride: step between windows of ``image_size`` pixels, in resized pixels
                (default ``image_size // 2``: SCLIP's 112 for 224).
            templates: prompt templates.
        """
        import torch
        import torch.nn.functional as F

        image = check_image(image)
        classes = _check_classes(classes)
        if method not in METHODS:
            raise InputError(f"unknown dense method {method!r}; expected one of {', '.join(METHODS)}")
        window = int(round(1.5 * self.image_size)) if window is None else window
        stride = self.image_size // 2 if stride is None else stride
        if not isinstance(window, (int, np.integer)) or window < self.patch_size:
            raise InputError(f"window must be an integer >= the patch size {self.patch_size}; got {window!r}")
        if not isinstance(stride, (int, np.integer)) or stride < 1:
            raise InputError(f"stride must be a positive integer; got {stride!r}")
        text = self.text_embeddings(classes, templates)
        H, W = image.shape[:2]
        scale = min(window / min(H, W), MAX_ASPECT * window / max(H, W))
        rh, rw = max(1, int(round(H * scale))), max(1, int(round(W * scale)))
        pixels = self._normalise(resize_image(image, (rh, rw))[None])
        wins = sliding_windows(rh, rw, self.image_size, int(stride))
        wh, ww = wins[0][2] - wins[0][0], wins[0][3] - wins[0][1]
        p = self.patch_size
        mh, mw = max(p, round(wh / p) * p), max(p, round(ww / p) * p)  # model input: multiples of the patch
        preds = torch.zeros((len(classes), rh, rw), dtype=torch.float32, device=self.device)
        count = torch.zeros((rh, rw), dtype=torch.float32, device=self.device)
        for i in range(0, len(wins), self.window_batch_size):
            cancel.check()
            batch = wins[i:i + self.window_batch_size]
            x = torch.cat([pixels[:, :, y0:y1, x0:x1] for y0, x0, y1, x1 in batch])
            if (mh, mw) != (wh, ww):
                x = F.interpolate(x.float(), size=(mh, mw), mode="bilinear", align_corners=False).to(self.dtype)
            feats = self.patch_embeddings(x, method)
            logits = torch.einsum("bdhw,cd->bchw", feats, text)
            logits = F.interpolate(logits, size=(wh, ww), mode="bilinear", align_corners=False)
            for (y0, x0, y1, x1), lg in zip(batch, logits):
                preds[:, y0:y1, x0:x1] += lg
                count[y0:y1, x0:x1] += 1
        preds /= count
        if (rh, rw) == (H, W):
            return preds.cpu().numpy()
        out = np.empty((len(classes), H, W), dtype=np.float32)
        chunk = max(1, int(2**26 // max(1, H * W)))  # classes per resize: bounds the float32 temporaries
        for c in range(0, len(classes), chunk):
            up = F.interpolate(preds[None, c:c + chunk], size=(H, W), mode="bilinear", align_corners=False)
            out[c:c + chunk] = up[0].cpu().numpy()
        return out


def _dense_attention(attn: Any, hidden: "torch.Tensor", method: str) -> "torch.Tensor":
    """The last block's attention output for dense prediction, from its ``CLIPAttention`` weights.

    ``hidden``: ``(B, L, d)``, the block's ``layer_norm1`` output (class token first).
    ``"maskclip"``: ``out_proj(v_proj(hidden))`` (Zhou et al. 2022, value embeddings).
    ``"sclip"``: per head ``(softmax(q q^T s) + softmax(k k^T s)) v``, then ``out_proj``
    (Wang et al. 2023, correlative self-attention).
    """
    import torch

    v = attn.v_proj(hidden)
    if method == "maskclip":
        return attn.out_proj(v)
    b, n, d = hidden.shape
    heads = attn.num_heads
    hd = d // heads
    scale = hd ** -0.5

    def split(t: "torch.Tensor") -> "torch.Tensor":
        return t.view(b, n, heads, hd).transpose(1, 2)

    q, k, v = split(attn.q_proj(hidden)), split(attn.k_proj(hidden)), split(v)
    weights = (torch.softmax((q @ q.transpose(-1, -2)).float() * scale, dim=-1)
               + torch.softmax((k @ k.transpose(-1, -2)).float() * scale, dim=-1)).to(v.dtype)
    out = (weights @ v).transpose(1, 2).reshape(b, n, d)
    return attn.out_proj(out)


def load_clip(name: str = "clip-vit-b16", weights: str | None = None, device: str | None = None,
              allow_download: bool = True) -> ClipModel:
    """Load a registered CLIP model (``clip-vit-b32``, ``clip-vit-b16``, ``clip-vit-l14``) or a local CLIP folder.

    Weights are resolved like every anyseg model (``weights`` folder, ``$ANYSEG_MODELS/<name>``,
    the Hugging Face cache, then a download unless offline); a name that is not a CLIP model,
    missing weights or a folder without tokenizer files are one-line :class:`ModelError`.
    The normalisation comes from the folder's ``preprocessor_config.json`` (CLIP's when absent).
    """
    from anyseg.models.families import LABELS
    from anyseg.models.resolver import resolve_folder

    spec, folder = resolve_folder(name, LABELS, weights=weights, allow_download=allow_download)
    return build_clip(spec, folder, device)


def build_clip(spec: ModelSpec, folder: Path, device: str | None = None) -> ClipModel:
    """The CLIP model of a resolved spec and weights folder (the CLIP family's ``text`` loader)."""
    from anyseg.models.hf import load_pretrained, load_tokenizer, preprocessor_normalization
    from anyseg.models.device import check_device

    device = check_device(device)
    model = load_pretrained(spec, folder, spec.family_record.classes["text"], device)
    tokenizer = load_tokenizer(spec, folder)
    mean, std = preprocessor_normalization(folder, spec.family_record.normalize)
    return ClipModel(spec, model, tokenizer, device=device, mean=mean, std=std, folder=folder)

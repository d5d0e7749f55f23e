"""SAM-family promptable models through transformers: SAM, SlimSAM, SAM-HQ, SAM 2/2.1, EdgeTAM, SAM 3.

Preprocessing and postprocessing are done here (transformers' SAM 2 / SAM 3 image processors
need torchvision, which anyseg does not depend on), following each family's reference:

* ``sam`` / ``sam_hq`` (segment-anything): resize the longest side to the model's input size
  S (1024) with PIL bilinear, normalise with ImageNet mean/std, pad bottom/right to S x S.
  Prompts scale by ``new_size / old_size`` per axis (``ResizeLongestSide``). Low-res logits
  (256 x 256) are upsampled to S x S, cropped to the resized image, upsampled to the original
  size and thresholded at 0.
* ``sam2`` / ``edgetam`` / ``sam3_tracker`` (SAM 2 predictor): resize to S x S (1024, or 1008
  for SAM 3) without keeping the aspect ratio (bilinear, antialiased, on [0, 1] floats),
  normalise (ImageNet for SAM 2, 0.5/0.5 for SAM 3), prompts scale by ``S / W`` and ``S / H``;
  low-res logits are upsampled straight to the original size and thresholded at 0.

The mean/std (and S) come from the checkpoint's ``preprocessor_config.json`` when it has them.
Which of the two geometries, the default normalisation, the transformers class and the few
family quirks (SAM-HQ's intermediate embeddings, SAM 3's checkpoint renaming) are read from
the family record (:mod:`anyseg.models.families`), never from the family's name.

A :class:`SamFamilyPredictor` is composed of two parts passed to its constructor: an image
encoder (:class:`TorchEncoder` by default: ``model.get_image_embeddings`` in fp32) and a
prompt decoder (:class:`TorchDecoder`: the rescheduled or transformers' mask decoder). The
runtimes (:mod:`anyseg.runtime`) build predictors from other parts (autocast, compiled, ONNX
Runtime) through the same constructor; the model's weights are shared, never copied.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from anyseg.errors import ModelError, PromptError
from anyseg.io.images import image_hash
from anyseg.models.base import Predictor, check_embedding, check_image
from anyseg.models.device import check_device, default_device
from anyseg.models.families import PROMPTABLE, get_family
from anyseg.models.registry import ModelSpec
from anyseg.types import Embedding, Masks, Prompt

__all__ = ["SamFamilyPredictor", "Geometry", "TorchEncoder", "TorchDecoder", "ImageEncoder", "PromptDecoder",
           "bind_model", "group_prompts", "shared_rows", "check_device", "default_device"]

#: float pixels upsampled at once in ``postprocess`` (masks are done in groups below this)
POSTPROCESS_PIXELS = 8_000_000

#: logit magnitude given to a binary ``Prompt.mask`` when it is fed as SAM's mask input
MASK_INPUT_LOGIT = 10.0


@dataclass(frozen=True)
class Geometry:
    """How an ``(H, W)`` image maps into the model's ``S x S`` input frame."""

    original_size: tuple[int, int]
    input_size: tuple[int, int]  # resized image inside the frame (h, w)
    frame: int  # S

    @classmethod
    def for_family(cls, family: str, original_size: tuple[int, int], frame: int) -> "Geometry":
        """The geometry of ``family``'s record (``longest_side``: resize and pad; ``square``: stretch)."""
        h, w = original_size
        if get_family(family).geometry == "longest_side":
            scale = frame / max(h, w)
            # segment-anything's ResizeLongestSide.get_preprocess_shape
            return cls(original_size, (int(h * scale + 0.5), int(w * scale + 0.5)), frame)
        return cls(original_size, (frame, frame), frame)

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        """Map ``(..., 2)`` XY pixel coordinates of the original image into the model frame."""
        (h, w), (nh, nw) = self.original_size, self.input_size
        out = np.array(xy, dtype=np.float64, copy=True)
        out[..., 0] *= nw / w
        out[..., 1] *= nh / h
        return out


def _upsample_to_input(x: Any, geo: "Geometry") -> Any:
    """SAM's ``interpolate(low-res -> frame x frame)[:nh, :nw]`` without computing the padding.

    With an integer factor ``f = frame / low`` (4), output pixel ``i`` reads source rows
    ``floor((i + 0.5) / f - 0.5)`` and the next one, so rows ``< nh`` need only the first
    ``ceil(nh / f) + 1`` source rows: the cropped source upsampled by the same ``scale_factor``
    gives the same values there (the edge clamp only touches rows ``>= nh``). The reference's
    own two-step path runs when the factor is not an integer.
    """
    import torch.nn.functional as F

    nh, nw = geo.input_size
    low = int(x.shape[-1])
    if geo.frame % low or x.shape[-2] != low:
        return F.interpolate(x, (geo.frame, geo.frame), mode="bilinear", align_corners=False)[..., :nh, :nw]
    f = geo.frame // low
    sh, sw = min(low, -(-nh // f) + 1), min(low, -(-nw // f) + 1)
    up = F.interpolate(x[..., :sh, :sw], scale_factor=f, mode="bilinear", align_corners=False)
    return up[..., :nh, :nw]


class _SharedRowsLinear:
    """Wraps a decoder ``nn.Linear`` whose input rows are identical copies in a point batch.

    In the first two-way attention block, the image-side projections (token->image keys and
    values, image->token queries) read only the image embedding and its positional encoding,
    which transformers repeats once per click (``repeat_interleave(point_batch_size)``). While
    :data:`_SHARED_ROWS` is set (:func:`shared_rows`, by :meth:`TorchDecoder.decode_points`
    without mask inputs, where the rows are identical by construction) the projection runs on
    the first row and is broadcast: the same numbers, a fraction of the work.
    """

    def __init__(self, linear: Any) -> None:
        self.linear = linear

    def __call__(self, x: Any) -> Any:
        if _SHARED_ROWS.get() and x.dim() >= 3 and x.shape[0] > 1:
            out = self.linear(x[:1])
            return out.expand(x.shape[0], *out.shape[1:])
        return self.linear(x)


_SHARED_ROWS: "contextvars.ContextVar[bool]" = contextvars.ContextVar("anyseg_shared_rows", default=False)


@contextlib.contextmanager
def shared_rows(enabled: bool = True) -> Iterator[None]:
    """Within the block, the decoder's first-layer image-side projections run once per batch of
    identical rows (see :class:`_SharedRowsLinear`); only for batches without mask inputs."""
    token = _SHARED_ROWS.set(bool(enabled))
    try:
        yield
    finally:
        _SHARED_ROWS.reset(token)


def unshare_first_layer_projections(model: Any) -> Any:
    """Remove the :class:`_SharedRowsLinear` wrappers (fine-tuning: they hide three decoder
    ``nn.Linear`` modules from peft); the Linear modules stay registered. Returns ``model``."""
    for module in model.modules():
        for key in [k for k, v in vars(module).items() if isinstance(v, _SharedRowsLinear)]:
            del module.__dict__[key]
    return model


def share_first_layer_projections(model: Any) -> bool:
    """Install :class:`_SharedRowsLinear` on the first block's image-side projections, if present."""
    try:
        block = model.mask_decoder.transformer.layers[0]
        targets = ((block.cross_attn_token_to_image, "k_proj"), (block.cross_attn_token_to_image, "v_proj"),
                   (block.cross_attn_image_to_token, "q_proj"))
    except (AttributeError, IndexError):
        return False
    for module, name in targets:
        linear = getattr(module, name)
        if isinstance(linear, _SharedRowsLinear):
            continue
        object.__setattr__(module, name, _SharedRowsLinear(linear))  # not a submodule: weights stay registered
        module._modules[name] = linear  # keep it in the state dict / .to() under its own name
    return True


def group_prompts(prompts: list[Prompt], original_size: tuple[int, int], name: str) -> list[list[int]]:
    """Indices of ``prompts`` that can share one decoder call (same number of clicks, box or
    not; a prompt with a mask input goes alone), each prompt checked against the image."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(prompts):
        p.check_within(original_size)
        if p.points is None and p.box is None and p.mask_logits is None and p.mask is None:
            raise PromptError(f"{name} needs a point, box or mask prompt (text prompts need a text backend)")
        has_mask = p.mask_logits is not None or p.mask is not None
        key = ("single", i) if has_mask else (len(p.points) if p.points is not None else 0, p.box is not None)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def bind_model(obj: Any, spec: ModelSpec, model: Any, folder: Path | None, device: str,
               mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> None:
    """The attributes every SAM-family wrapper (image predictor, video tracker) carries;
    ``mean`` / ``std`` default to the family record's normalisation."""
    obj.spec, obj.name, obj.family, obj.model, obj.folder, obj.device = spec, spec.name, spec.family, model, folder, device
    d_mean, d_std = spec.family_record.normalize
    obj.mean = tuple(mean or d_mean)
    obj.std = tuple(std or d_std)


def _hq(family: str) -> bool:
    """SAM-HQ's encoder returns intermediate embeddings, which its decoder takes."""
    return "hq_features" in get_family(family).traits


def _longest_side(family: str) -> bool:
    return get_family(family).geometry == "longest_side"


# -- the two parts a predictor is composed of ---------------------------------------------------
class ImageEncoder(Protocol):
    """The encoder part: pixel values ``(1, 3, S, S)`` on the predictor's device -> what
    ``model.get_image_embeddings`` returns (a tensor; SAM 2: ``[high_res_0, high_res_1,
    embedding]``; SAM-HQ: ``(embedding, intermediate)``)."""

    def __call__(self, pixel_values: Any) -> Any: ...


class PromptDecoder(Protocol):
    """The decoder part: prompts against an embedding -> :class:`Masks` (the predictor supplies
    geometry, mask inputs and postprocessing), and one click per row for the point-grid loop."""

    def decode(self, predictor: "SamFamilyPredictor", embedding: Embedding, geo: "Geometry", prompts: list[Prompt],
               multimask: bool) -> list[Masks]: ...

    def decode_points(self, predictor: "SamFamilyPredictor", embedding: Embedding, points_xy: np.ndarray,
                      multimask: bool, mask_inputs: Any | None) -> tuple[Any, Any]: ...


class TorchEncoder:
    """The default encoder part: ``model.get_image_embeddings`` in eager fp32."""

    compile_failed: str | None = None

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, pixel_values: Any) -> Any:
        return self.model.get_image_embeddings(pixel_values)


class TorchDecoder:
    """The torch decoder part: point / box prompts through
    :class:`~anyseg.models.sam_decoder.FastMaskDecoder` where the family has it (``fast_decoder``
    trait, the predictor's ``fast_decoder`` switch on), mask inputs and the rest through the
    model's own forward.

    Args:
        chunk: prompts per decoder call in :meth:`decode` (``None``: each group at once). The
            decoder repeats the image embedding per prompt, so small chunks bound memory and run
            faster on a CPU with the same numbers.
        share_rows: run the first block's image-side projections once per chunk of prompts
            without mask inputs (:func:`shared_rows`; identical rows, the same numbers).
    """

    def __init__(self, chunk: int | None = None, share_rows: bool = False) -> None:
        if chunk is not None and int(chunk) < 1:
            raise ModelError(f"the decoder chunk must be >= 1; got {chunk}")
        self.chunk = None if chunk is None else int(chunk)
        self.share_rows = bool(share_rows)

    def decode(self, predictor: "SamFamilyPredictor", embedding: Embedding, geo: "Geometry", prompts: list[Prompt],
               multimask: bool) -> list[Masks]:
        """Decode prompts of one structure (see :func:`group_prompts`), ``chunk`` at a time."""
        first = prompts[0]
        share = self.share_rows and first.mask_logits is None and first.mask is None
        step = self.chunk or len(prompts)
        with shared_rows(share) if self.share_rows else contextlib.nullcontext():
            out: list[Masks] = []
            for i in range(0, len(prompts), step):  # small chunks: the per-prompt image-sized tensors stay in cache
                out += self._decode(predictor, embedding, geo, prompts[i:i + step], multimask)
            return out

    def _decode(self, p: "SamFamilyPredictor", embedding: Embedding, geo: "Geometry", prompts: list[Prompt],
                multimask: bool) -> list[Masks]:
        import torch

        n = len(prompts)
        first = prompts[0]
        kwargs: dict[str, Any] = {}
        if first.points is not None:
            pts = np.stack([geo.to_model(q.points) for q in prompts])  # (n, K, 2)
            kwargs["input_points"] = torch.tensor(pts, dtype=torch.float32, device=p.device)[None]
            labels = np.stack([q.labels for q in prompts])
            kwargs["input_labels"] = torch.tensor(labels, dtype=torch.long, device=p.device)[None]
        if first.box is not None:
            boxes = np.stack([geo.to_model(q.box.reshape(2, 2)).reshape(4) for q in prompts])
            kwargs["input_boxes"] = torch.tensor(boxes, dtype=torch.float32, device=p.device)[None]
        low_res = p.low_res_size(embedding)
        if first.mask_logits is not None or first.mask is not None:
            m = p.mask_input(geo, first, low_res)
            kwargs["input_masks"] = torch.tensor(m, device=p.device)[None, None]
        feats = embedding.features
        fast = p.fast_mask_decoder() if "input_masks" not in kwargs else None
        with torch.inference_mode():
            if fast is not None:
                lg, sc = self._run_fast(p, fast, feats["image_embeddings"], kwargs, multimask)
            else:
                out = p.model(
                    image_embeddings=feats["image_embeddings"],
                    multimask_output=multimask,
                    **({"intermediate_embeddings": feats["intermediate_embeddings"]} if _hq(p.family) else {}),
                    **kwargs,
                )
                lg, sc = out.pred_masks[0], out.iou_scores[0]
        logits = lg.float().cpu()  # (n, M, h, w)
        scores = sc.float().cpu().numpy()  # (n, M)
        results = []
        for j in range(n):
            order = np.argsort(-scores[j], kind="stable") if multimask else np.arange(scores.shape[1])
            if not multimask:
                order = order[:1]
            lr = logits[j][order]
            masks = p.postprocess(lr, geo)
            results.append(Masks(masks=masks, scores=scores[j][order], logits=lr.numpy()))
        return results

    @staticmethod
    def _run_fast(p: "SamFamilyPredictor", fast: Any, image_embeddings: Any, prompt_kwargs: dict[str, Any],
                  multimask: bool) -> tuple[Any, Any]:
        """Prompt encoder + :class:`FastMaskDecoder` in chunks: ``(logits (B, M, h, w), scores (B, M))``."""
        import torch

        sparse, _ = p.model.prompt_encoder(input_points=prompt_kwargs.get("input_points"),
                                           input_labels=prompt_kwargs.get("input_labels"),
                                           input_boxes=prompt_kwargs.get("input_boxes"), input_masks=None)
        sparse = sparse[0]
        step = max(1, int(p.fast_decoder_chunk))
        logits, scores = [], []
        for i in range(0, sparse.shape[0], step):
            m, s = fast(image_embeddings, sparse[i:i + step], multimask, gemm_dtype=p.decoder_dtype)
            logits.append(m.float())
            scores.append(s.float())
        return torch.cat(logits), torch.cat(scores)

    def decode_points(self, p: "SamFamilyPredictor", embedding: Embedding, points_xy: np.ndarray,
                      multimask: bool = True, mask_inputs: Any | None = None) -> tuple[Any, Any]:
        """See :meth:`SamFamilyPredictor.decode_points`."""
        import torch

        geo = p.geometry(embedding.original_size)
        pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        b = len(pts)
        coords = torch.tensor(geo.to_model(pts), dtype=torch.float32, device=p.device)
        feats = embedding.features
        emb = feats["image_embeddings"]
        inter = feats.get("intermediate_embeddings")
        kwargs: dict[str, Any] = {}
        if mask_inputs is None:
            kwargs["input_points"] = coords[None, :, None, :]
            kwargs["input_labels"] = torch.ones((1, b, 1), dtype=torch.long, device=p.device)
        else:
            low = p.low_res_size(embedding)
            masks = torch.as_tensor(mask_inputs, dtype=torch.float32).to(p.device)
            if tuple(masks.shape) != (b, low, low):
                raise PromptError(f"mask_inputs must have shape ({b}, {low}, {low}); got {tuple(masks.shape)}")

            def widen(t: Any) -> Any:
                return t.expand(b, *t.shape[1:])

            emb = [widen(t) for t in emb] if isinstance(emb, (list, tuple)) else widen(emb)
            inter = [widen(t) for t in inter] if inter is not None else None
            kwargs["input_points"] = coords[:, None, None, :]
            kwargs["input_labels"] = torch.ones((b, 1, 1), dtype=torch.long, device=p.device)
            kwargs["input_masks"] = masks[:, None]
        fast = p.fast_mask_decoder() if mask_inputs is None else None
        if fast is not None:
            with torch.inference_mode():
                return self._run_fast(p, fast, emb, kwargs, multimask)
        with shared_rows(mask_inputs is None):  # one image, many clicks: identical image rows
            with torch.inference_mode():
                out = p.model(
                    image_embeddings=emb,
                    multimask_output=multimask,
                    **({"intermediate_embeddings": inter} if _hq(p.family) else {}),
                    **kwargs,
                )
        logits, scores = out.pred_masks.float(), out.iou_scores.float()
        if mask_inputs is None:
            return logits[0], scores[0]
        return logits[:, 0], scores[:, 0]


class SamFamilyPredictor(Predictor):
    """A promptable SAM-family model (no per-image state: embeddings are returned).

    Args:
        spec: the registry spec (its family record decides geometry, normalisation, quirks).
        model: the transformers model (shared, never copied, by every runtime built on it).
        folder: the weights folder (part of :attr:`model_id`, and where ONNX exports are cached).
        device: where the model runs.
        mean, std: normalisation (default: the family record's).
        encoder: the image encoder part (default :class:`TorchEncoder`).
        decoder: the prompt decoder part (default :class:`TorchDecoder`).
        runtime: the runtime's name (``torch``, ``torch-bf16``, ``onnx`` ...), for status lines.
        model_id: the identity of the embeddings this predictor makes (default ``name:folder``);
            runtimes that change the numbers give theirs (``...@bf16``) so that caches never mix them.
        decoder_dtype: dtype of the fast decoder's image-sized GEMMs (``None``: fp32).
    """

    #: decode point / box prompts without a mask input through :class:`~anyseg.models.sam_decoder.FastMaskDecoder`
    #: (same numbers as transformers' decoder up to float rounding; set False to call the model's forward)
    fast_decoder: bool = True
    #: dtype of the fast decoder's image-sized GEMMs (``None``: fp32); ``torch-bf16`` sets bf16, ``torch-fp16`` fp16
    decoder_dtype: Any = None
    #: prompts per fast-decoder pass: image-sized intermediates per prompt stay in cache
    fast_decoder_chunk: int = 1
    #: the runtime's name (see :mod:`anyseg.runtime`)
    runtime: str = "torch"

    def __init__(self, spec: ModelSpec, model: Any, folder: Path | None = None, device: str = "cpu",
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None, *,
                 encoder: ImageEncoder | None = None, decoder: PromptDecoder | None = None, runtime: str = "torch",
                 model_id: str | None = None, decoder_dtype: Any = None):
        bind_model(self, spec, model, folder, device, mean, std)
        self.frame = int(model.config.prompt_encoder_config.image_size)
        share_first_layer_projections(model)
        self._id = model_id or (f"{spec.name}:{folder}" if folder else spec.name)
        self._fast: Any = None
        self.image_encoder: ImageEncoder = encoder if encoder is not None else TorchEncoder(model)
        self.prompt_decoder: PromptDecoder = decoder if decoder is not None else TorchDecoder()
        self.runtime = runtime
        if decoder_dtype is not None:
            self.decoder_dtype = decoder_dtype

    def fast_mask_decoder(self) -> Any:
        """The predictor's :class:`FastMaskDecoder`, or ``None`` where the model's forward must run."""
        if not self.fast_decoder:
            return None
        if self._fast is None:
            from anyseg.models.sam_decoder import FastMaskDecoder, supports_fast_decoder

            self._fast = FastMaskDecoder(self.model) if supports_fast_decoder(self.model, self.family) else False
        return self._fast or None

    _fast_decoder = fast_mask_decoder  # the former name

    @property
    def model_id(self) -> str:
        return self._id

    @property
    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    @property
    def compile_failed(self) -> str | None:
        """Why a ``torch-compile`` encoder fell back to eager (``None`` while it has not, or for other encoders)."""
        return getattr(self.image_encoder, "compile_failed", None)

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, spec: ModelSpec, folder: Path, device: str | None = None) -> "SamFamilyPredictor":
        """Load ``spec``'s image model from a resolved weights folder (the family record's ``predictor`` loader)."""
        from anyseg.models.hf import load_pretrained, preprocessor_normalization
        from anyseg.models.weights import read_model_type

        device = check_device(device)
        family = spec.family_record
        family.check_requires(spec.name)
        model_type = read_model_type(folder)
        if not family.serves_type(PROMPTABLE, model_type):
            raise ModelError(f"{folder} holds {family.title}'s image (text) model without its tracker; points and boxes "
                             f"need the full {family.title} checkpoint ({spec.hub_id or 'the hub checkpoint'}, model_type "
                             f"one of {list(family.serves[PROMPTABLE])})")
        mapping = family.key_mappings.get(model_type)  # e.g. the hub's full SAM 3 checkpoint
        model = load_pretrained(spec, folder, family.classes["image"], device, key_mapping=mapping)
        mean, std = preprocessor_normalization(folder, family.normalize)
        return cls(spec, model, folder=folder, device=device, mean=mean, std=std)

    # -- preprocessing --------------------------------------------------------------------
    def geometry(self, original_size: tuple[int, int]) -> Geometry:
        return Geometry.for_family(self.family, original_size, self.frame)

    def preprocess(self, image: np.ndarray) -> tuple["Any", Geometry]:
        """``(1, 3, S, S)`` float pixel values for the image encoder, and the geometry."""
        import torch
        import torch.nn.functional as F

        image = check_image(image)
        geo = self.geometry(image.shape[:2])
        nh, nw = geo.input_size
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        if _longest_side(self.family):
            from PIL import Image

            resized = np.array(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
            x = torch.from_numpy(resized).permute(2, 0, 1).float() / 255.0
            x = (x - mean) / std
            x = F.pad(x, (0, self.frame - nw, 0, self.frame - nh))
        else:
            x = torch.tensor(image).permute(2, 0, 1).float().unsqueeze(0) / 255.0
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
            x = (x - mean) / std
        return x.unsqueeze(0), geo

    # -- Predictor API --------------------------------------------------------------------
    def embed(self, image: np.ndarray) -> Embedding:
        """Encode an image with the encoder part (``Embedding.features["image_embeddings"]``, plus
        SAM-HQ's ``"intermediate_embeddings"``)."""
        import torch

        image = check_image(image)
        pixel_values, geo = self.preprocess(image)
        with torch.inference_mode():
            out = self.image_encoder(pixel_values.to(self.device))
        if _hq(self.family):
            emb, inter = out
            features: Any = {"image_embeddings": emb, "intermediate_embeddings": list(inter)}
        else:
            features = {"image_embeddings": out}
        return Embedding(self.model_id, geo.original_size, geo.input_size, features, image_hash(image))

    def predict(self, embedding: Embedding, prompt: Prompt, multimask: bool = False) -> Masks:
        return self.predict_batch(embedding, [prompt], multimask=multimask)[0]

    def predict_batch(self, embedding: Embedding, prompts: list[Prompt], multimask: bool = False) -> list[Masks]:
        """Decode several prompts; prompts with the same structure share one decoder call."""
        check_embedding(self, embedding)
        geo = self.geometry(embedding.original_size)
        results: list[Masks | None] = [None] * len(prompts)
        for idx in group_prompts(prompts, embedding.original_size, self.name):
            for i, m in zip(idx, self.decode_prompts(embedding, geo, [prompts[i] for i in idx], multimask)):
                results[i] = m
        return results  # type: ignore[return-value]

    def decode_prompts(self, embedding: Embedding, geo: Geometry, prompts: list[Prompt], multimask: bool) -> list[Masks]:
        """Prompts of one structure (:func:`group_prompts`) through the decoder part, unchecked."""
        return self.prompt_decoder.decode(self, embedding, geo, prompts, multimask)

    # -- decoding helpers (shared by the decoder parts) -------------------------------------
    def mask_input(self, geo: Geometry, prompt: Prompt, low_res: int) -> np.ndarray:
        """A prompt's mask as the decoder's ``low_res x low_res`` dense input (its logits, or a binary mask)."""
        if prompt.mask_logits is not None:
            logits = prompt.mask_logits
            if logits.shape != (low_res, low_res):
                raise PromptError(
                    f"mask_logits must be this model's {low_res}x{low_res} low-resolution logits "
                    f"(Masks.logits of an earlier prediction); got {logits.shape[0]}x{logits.shape[1]}"
                )
            return logits
        import cv2

        nh, nw = geo.input_size
        frame = np.zeros((geo.frame, geo.frame), dtype=np.float32)
        frame[:nh, :nw] = cv2.resize(prompt.mask.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)
        small = cv2.resize(frame, (low_res, low_res), interpolation=cv2.INTER_AREA)
        return np.where(small >= 0.5, MASK_INPUT_LOGIT, -MASK_INPUT_LOGIT).astype(np.float32)

    def low_res_size(self, embedding: Embedding) -> int:
        """The side of the decoder's low-resolution logits for ``embedding``."""
        emb = embedding.features["image_embeddings"]
        last = emb[-1] if isinstance(emb, (list, tuple)) else emb
        return int(last.shape[-1]) * 4  # the decoder upscales the embedding grid by 4

    def postprocess(self, low_res_logits: "Any", geo: Geometry) -> np.ndarray:
        """``(M, h, w)`` low-res logits -> ``(M, H, W)`` bool masks at the original size."""
        import torch.nn.functional as F

        h, w = geo.original_size
        m = low_res_logits.shape[0]
        out = np.zeros((m, h, w), dtype=bool)
        step = max(1, min(m, POSTPROCESS_PIXELS // max(h * w, geo.frame * geo.frame)))  # bounded memory on large images
        for k in range(0, m, step):
            x = low_res_logits[k:k + step][:, None]
            if _longest_side(self.family):
                x = _upsample_to_input(x, geo)
            x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False)
            out[k:k + step] = (x[:, 0] > 0).numpy()
        return out

    # -- automatic mask generation (anyseg.tasks.everything) ------------------------------
    def decode_points(self, embedding: Embedding, points_xy: np.ndarray, multimask: bool = True,
                      mask_inputs: "Any | None" = None) -> tuple["Any", "Any"]:
        """Decode one positive click per row in one decoder call (the point-grid inner loop).

        Args:
            embedding: from :meth:`embed`.
            points_xy: ``(B, 2)`` XY pixels of the embedded image (mapped like ``Prompt.points``).
            multimask: 3 candidates per point in the decoder's order (SAM / SAM 2: the three
                multimask tokens, not sorted; transformers' SAM-HQ returns them sorted by
                score), else the single-mask output (SAM 2's dynamic multimask fallback
                included, as the model does it).
            mask_inputs: optional ``(B, h, w)`` low-resolution logits, one per point, fed as the
                dense mask prompt (SAM 2's mask-to-mask refinement). Each point then becomes
                its own batch item, with the image features broadcast to ``B``.

        Returns:
            ``(low_res_logits, iou_scores)``: float32 tensors ``(B, M, h, w)`` and ``(B, M)``
            on the predictor's device (``M`` = 3 with ``multimask``, else 1).
        """
        check_embedding(self, embedding)
        return self.prompt_decoder.decode_points(self, embedding, points_xy, multimask, mask_inputs)

    def upscale_logits(self, low_res_logits: "Any", geo: Geometry) -> "Any":
        """``(..., h, w)`` low-res logits -> ``(..., H, W)`` float logits at ``geo.original_size``.

        The same resampling as :meth:`postprocess` without the threshold (SAM / SAM-HQ: to the
        frame, crop the padding, to the image; SAM 2 family: straight to the image), on the
        tensor's device. Callers bound memory by passing a few masks at a time.
        """
        import torch.nn.functional as F

        h, w = geo.original_size
        lead = tuple(low_res_logits.shape[:-2])
        x = low_res_logits.reshape(-1, 1, *low_res_logits.shape[-2:]).float()
        if _longest_side(self.family):
            x = _upsample_to_input(x, geo)
        x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False)
        return x.reshape(*lead, h, w)

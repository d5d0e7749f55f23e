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
"""

from __future__ import annotations

import contextvars
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anyseg.errors import InputError, ModelError, PromptError
from anyseg.io.images import image_hash
from anyseg.models.base import Predictor, check_embedding, check_image
from anyseg.models.registry import ModelSpec
from anyseg.types import Embedding, Masks, Prompt

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

#: float pixels upsampled at once in ``postprocess`` (masks are done in groups below this)
POSTPROCESS_PIXELS = 8_000_000

#: transformers model class per family
MODEL_CLASSES = {
    "sam": "SamModel",
    "sam_hq": "SamHQModel",
    "sam2": "Sam2Model",
    "edgetam": "EdgeTamModel",
    "sam3_tracker": "Sam3TrackerModel",
}
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
        h, w = original_size
        if family in ("sam", "sam_hq"):
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


def _default_norm(family: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (HALF, HALF) if family == "sam3_tracker" else (IMAGENET_MEAN, IMAGENET_STD)


def _read_preprocessor(folder: Path, family: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from anyseg.models.hf import normalization, read_preprocessor

    return normalization(read_preprocessor(folder), *_default_norm(family))


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
    :data:`_SHARED_ROWS` is set (by :meth:`SamFamilyPredictor.decode_points` without mask
    inputs, where the rows are identical by construction) the projection runs on the first
    row and is broadcast: the same numbers, a fraction of the work.
    """

    def __init__(self, linear: Any) -> None:
        self.linear = linear

    def __call__(self, x: Any) -> Any:
        if _SHARED_ROWS.get() and x.dim() >= 3 and x.shape[0] > 1:
            out = self.linear(x[:1])
            return out.expand(x.shape[0], *out.shape[1:])
        return self.linear(x)


_SHARED_ROWS: "contextvars.ContextVar[bool]" = contextvars.ContextVar("anyseg_shared_rows", default=False)


def _share_first_layer_projections(model: Any) -> bool:
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
    """The attributes every SAM-family wrapper (image predictor, video tracker) carries."""
    obj.spec, obj.name, obj.family, obj.model, obj.folder, obj.device = spec, spec.name, spec.family, model, folder, device
    d_mean, d_std = _default_norm(spec.family)
    obj.mean = tuple(mean or d_mean)
    obj.std = tuple(std or d_std)


def _model_type(folder: Path) -> str | None:
    try:
        return json.loads((Path(folder) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def _require_timm(spec: ModelSpec) -> None:
    """EdgeTAM's RepViT backbone is built by timm, which needs torchvision."""
    import importlib.util

    missing = [m for m in ("timm", "torchvision") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelError(
            f"{spec.name} needs {' and '.join(missing)} for its RepViT backbone (transformers builds it with timm); "
            "install them to use it"
        )


def default_device() -> str:
    """``$ANYSEG_DEVICE`` (checked by :func:`check_device`), else ``cuda`` when available, else ``cpu``."""
    import torch

    wanted = os.environ.get("ANYSEG_DEVICE")
    if wanted:
        return check_device(wanted, what="ANYSEG_DEVICE")
    return "cuda" if torch.cuda.is_available() else "cpu"


_DEVICE_FORMS = "cpu, cuda, cuda:N or mps"


def check_device(device: str | None, what: str = "--device") -> str:
    """A torch device name this process can use, or :class:`InputError` (one line).

    ``None`` -> :func:`default_device`. Accepted: ``cpu``, ``cuda`` and ``cuda:N`` (when this
    torch build has CUDA and the device exists) and ``mps`` (when available). ``what`` names
    the setting in the message (``--device cuda: this torch build has no CUDA (torch
    2.13.0+cpu); use --device cpu``). torch is imported only for ``cuda`` and ``mps``.
    """
    if device is None:
        return default_device()
    name = device.strip() if isinstance(device, str) else device
    if not isinstance(name, str) or not re.fullmatch(r"cpu|mps|cuda(:\d{1,3})?", name):
        raise InputError(f"{what} {device!r}: unknown device; expected {_DEVICE_FORMS}")
    if name == "cpu":
        return name
    import torch

    hint = f"use {what} cpu" if what.startswith("--") else "use cpu"
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"{what} mps: MPS (Apple GPU) is not available to this torch ({torch.__version__}); {hint}")
        return name
    if torch.version.cuda is None:
        raise InputError(f"{what} {name}: this torch build has no CUDA (torch {torch.__version__}); {hint}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise InputError(f"{what} {name}: no CUDA device is visible (torch {torch.__version__}, CUDA "
                         f"{torch.version.cuda}); {hint}")
    index = int(name.partition(":")[2] or 0)
    if index >= count:
        raise InputError(f"{what} {name}: there {'is' if count == 1 else 'are'} {count} CUDA device(s), "
                         f"cuda:0..cuda:{count - 1}")
    return name


class SamFamilyPredictor(Predictor):
    """A promptable SAM-family model (no per-image state: embeddings are returned)."""

    def __init__(self, spec: ModelSpec, model: Any, folder: Path | None = None, device: str = "cpu",
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None):
        bind_model(self, spec, model, folder, device, mean, std)
        self.frame = int(model.config.prompt_encoder_config.image_size)
        _share_first_layer_projections(model)
        self._id = f"{spec.name}:{folder}" if folder else spec.name
        self._fast: Any = None

    #: decode point / box prompts without a mask input through :class:`~anyseg.models.sam_decoder.FastMaskDecoder`
    #: (same numbers as transformers' decoder up to float rounding; set False to call the model's forward)
    fast_decoder: bool = True
    #: dtype of the fast decoder's image-sized GEMMs (``None``: fp32); ``torch-bf16`` sets bf16, ``torch-fp16`` fp16
    decoder_dtype: Any = None
    #: prompts per fast-decoder pass: image-sized intermediates per prompt stay in cache
    fast_decoder_chunk: int = 1

    def _fast_decoder(self) -> Any:
        """The predictor's :class:`FastMaskDecoder`, or ``None`` where the model's forward must run."""
        if not self.fast_decoder:
            return None
        if self._fast is None:
            from anyseg.models.sam_decoder import FastMaskDecoder, supports_fast_decoder

            self._fast = FastMaskDecoder(self.model) if supports_fast_decoder(self.model, self.family) else False
        return self._fast or None

    def _run_fast(self, fast: Any, image_embeddings: Any, prompt_kwargs: dict[str, Any], multimask: bool) -> tuple[Any, Any]:
        """Prompt encoder + :class:`FastMaskDecoder` in chunks: ``(logits (B, M, h, w), scores (B, M))``."""
        import torch

        sparse, _ = self.model.prompt_encoder(input_points=prompt_kwargs.get("input_points"),
                                              input_labels=prompt_kwargs.get("input_labels"),
                                              input_boxes=prompt_kwargs.get("input_boxes"), input_masks=None)
        sparse = sparse[0]
        step = max(1, int(self.fast_decoder_chunk))
        logits, scores = [], []
        for i in range(0, sparse.shape[0], step):
            m, s = fast(image_embeddings, sparse[i:i + step], multimask, gemm_dtype=self.decoder_dtype)
            logits.append(m.float())
            scores.append(s.float())
        return torch.cat(logits), torch.cat(scores)

    @property
    def model_id(self) -> str:
        return self._id

    @property
    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, spec: ModelSpec, folder: Path, device: str | None = None) -> "SamFamilyPredictor":
        from anyseg.models.hf import load_pretrained

        device = check_device(device)
        if spec.family == "edgetam":
            _require_timm(spec)
        mapping = None
        if spec.family == "sam3_tracker" and _model_type(folder) == "sam3":
            raise ModelError(f"{folder} holds SAM 3's image (text) model without its tracker; points and boxes need "
                             "the full SAM 3 checkpoint (facebook/sam3, model_type sam3_video)")
        if spec.family == "sam3_tracker" and _model_type(folder) == "sam3_video":
            from anyseg.models.hf import SAM3_TRACKER_KEYS

            mapping = SAM3_TRACKER_KEYS  # the hub's full SAM 3 checkpoint
        model = load_pretrained(spec, folder, MODEL_CLASSES[spec.family], device, key_mapping=mapping)
        mean, std = _read_preprocessor(folder, spec.family)
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
        if self.family in ("sam", "sam_hq"):
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
        import torch

        image = check_image(image)
        pixel_values, geo = self.preprocess(image)
        with torch.inference_mode():
            pixel_values = pixel_values.to(self.device)
            if self.family == "sam_hq":
                emb, inter = self.model.get_image_embeddings(pixel_values)
                features: Any = {"image_embeddings": emb, "intermediate_embeddings": list(inter)}
            else:
                features = {"image_embeddings": self.model.get_image_embeddings(pixel_values)}
        return Embedding(self.model_id, geo.original_size, geo.input_size, features, image_hash(image))

    def predict(self, embedding: Embedding, prompt: Prompt, multimask: bool = False) -> Masks:
        return self.predict_batch(embedding, [prompt], multimask=multimask)[0]

    def predict_batch(self, embedding: Embedding, prompts: list[Prompt], multimask: bool = False) -> list[Masks]:
        """Decode several prompts; prompts with the same structure share one decoder call."""
        check_embedding(self, embedding)
        geo = self.geometry(embedding.original_size)
        results: list[Masks | None] = [None] * len(prompts)
        for idx in group_prompts(prompts, embedding.original_size, self.name):
            for i, m in zip(idx, self._decode(embedding, geo, [prompts[i] for i in idx], multimask)):
                results[i] = m
        return results  # type: ignore[return-value]

    # -- decoding -------------------------------------------------------------------------
    def _mask_input(self, geo: Geometry, prompt: Prompt, low_res: int) -> np.ndarray:
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

    def _decode(self, embedding: Embedding, geo: Geometry, prompts: list[Prompt], multimask: bool) -> list[Masks]:
        import torch

        n = len(prompts)
        first = prompts[0]
        kwargs: dict[str, Any] = {}
        if first.points is not None:
            pts = np.stack([geo.to_model(p.points) for p in prompts])  # (n, K, 2)
            kwargs["input_points"] = torch.tensor(pts, dtype=torch.float32, device=self.device)[None]
            labels = np.stack([p.labels for p in prompts])
            kwargs["input_labels"] = torch.tensor(labels, dtype=torch.long, device=self.device)[None]
        if first.box is not None:
            boxes = np.stack([geo.to_model(p.box.reshape(2, 2)).reshape(4) for p in prompts])
            kwargs["input_boxes"] = torch.tensor(boxes, dtype=torch.float32, device=self.device)[None]
        low_res = self._low_res_size(embedding)
        if first.mask_logits is not None or first.mask is not None:
            m = self._mask_input(geo, first, low_res)
            kwargs["input_masks"] = torch.tensor(m, device=self.device)[None, None]
        feats = embedding.features
        fast = self._fast_decoder() if "input_masks" not in kwargs else None
        with torch.inference_mode():
            if fast is not None:
                lg, sc = self._run_fast(fast, feats["image_embeddings"], kwargs, multimask)
            else:
                out = self.model(
                    image_embeddings=feats["image_embeddings"],
                    multimask_output=multimask,
                    **({"intermediate_embeddings": feats["intermediate_embeddings"]} if self.family == "sam_hq" else {}),
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
            masks = self.postprocess(lr, geo)
            results.append(Masks(masks=masks, scores=scores[j][order], logits=lr.numpy()))
        return results

    def _low_res_size(self, embedding: Embedding) -> int:
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
            if self.family in ("sam", "sam_hq"):
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
        import torch

        check_embedding(self, embedding)
        geo = self.geometry(embedding.original_size)
        pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        b = len(pts)
        coords = torch.tensor(geo.to_model(pts), dtype=torch.float32, device=self.device)
        feats = embedding.features
        emb = feats["image_embeddings"]
        inter = feats.get("intermediate_embeddings")
        kwargs: dict[str, Any] = {}
        if mask_inputs is None:
            kwargs["input_points"] = coords[None, :, None, :]
            kwargs["input_labels"] = torch.ones((1, b, 1), dtype=torch.long, device=self.device)
        else:
            low = self._low_res_size(embedding)
            masks = torch.as_tensor(mask_inputs, dtype=torch.float32).to(self.device)
            if tuple(masks.shape) != (b, low, low):
                raise PromptError(f"mask_inputs must have shape ({b}, {low}, {low}); got {tuple(masks.shape)}")

            def widen(t: Any) -> Any:
                return t.expand(b, *t.shape[1:])

            emb = [widen(t) for t in emb] if isinstance(emb, (list, tuple)) else widen(emb)
            inter = [widen(t) for t in inter] if inter is not None else None
            kwargs["input_points"] = coords[:, None, None, :]
            kwargs["input_labels"] = torch.ones((b, 1, 1), dtype=torch.long, device=self.device)
            kwargs["input_masks"] = masks[:, None]
        fast = self._fast_decoder() if mask_inputs is None else None
        if fast is not None:
            with torch.inference_mode():
                return self._run_fast(fast, emb, kwargs, multimask)
        token = _SHARED_ROWS.set(mask_inputs is None)  # one image, many clicks: identical image rows
        try:
            with torch.inference_mode():
                out = self.model(
                    image_embeddings=emb,
                    multimask_output=multimask,
                    **({"intermediate_embeddings": inter} if self.family == "sam_hq" else {}),
                    **kwargs,
                )
        finally:
            _SHARED_ROWS.reset(token)
        logits, scores = out.pred_masks.float(), out.iou_scores.float()
        if mask_inputs is None:
            return logits[0], scores[0]
        return logits[:, 0], scores[:, 0]

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
        if self.family in ("sam", "sam_hq"):
            x = _upsample_to_input(x, geo)
        x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False)
        return x.reshape(*lead, h, w)

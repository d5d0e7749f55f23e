"""PerSAM and PerSAM-F: a SAM-family model personalised by one annotated example, without training SAM.

Zhang et al. 2023, "Personalize Segment Anything Model with One Shot" (ICLR 2024), reference
code ZrrSkywalker/Personalize-SAM (``persam.py``, ``persam_f.py``). anyseg runs it on any
SAM-family predictor (SAM, SlimSAM, SAM-HQ, SAM 2/2.1, EdgeTAM, SAM 3's tracker) and on the
features that predictor's image encoder already computes (``Embedding.features["image_embeddings"]``,
the last map for the SAM 2 family).

**fit** (once per set of references): each reference is embedded, its mask is mapped into the
model frame like the image (:class:`~anyseg.models.sam.Geometry`) and area-averaged onto the
embedding grid; the cells it covers by at least half are the reference's *local features*.
PerSAM's location feature is the mean of the L2-normalised local features (the paper's average
of the per-feature confidence maps); its target-semantic prompt is their raw mean. PerSAM-F's
location feature is ``(max + mean) / 2`` of the raw local features, as ``persam_f.py``.
Several references: the per-reference features are averaged (each reference counts once).

**predict** (per image, one encoder pass): the location confidence map is the cosine similarity
of every embedding cell with the location feature, upsampled like SAM's logits to the image;
its argmax is the positive point prior and its argmin the negative one. PerSAM then decodes
both points with *target-guided attention* and *target-semantic prompting* through the
model's own forward, whose transformers classes carry PerSAM's two decoder changes as
documented arguments (:func:`guided_decode`: ``attention_similarity``, ``target_embedding``),
then *cascaded post-refinement*: the points with the first mask's logits as the mask input
(multimask, best), then the points with that mask's box and logits (multimask, best).
PerSAM-F decodes the positive point alone into SAM's three multimask outputs, sums them with
its two learnt scale weights (:func:`fit_scale_weights`; the third is ``1 - w1 - w2``) and runs
the same two refinements (box and logits).

**score**: SAM's predicted IoU (clipped to [0, 1]) times the *evidence*: the mean confidence
inside the mask, calibrated on the references (1 = as similar as the reference object is to
itself, 0 = as similar as the reference's background), so an image without the object scores
low even though PerSAM always finds a best match. **instances**: PerSAM is single-instance by
design; ``instances="all"`` is anyseg's multi-peak extension: after each instance its pixels
are removed from the confidence map (and its cells from the attention guidance), the next peak
is decoded while its calibrated confidence is at least ``min_evidence``, up to
``max_instances`` (the reference's ``persam_f_multi_obj.py`` blacks the found object out of
the image and encodes it again instead).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from anyseg.errors import InputError, ModelError
from anyseg.fewshot.base import Reference, empty_masks
from anyseg.models.sam import Geometry, SamFamilyPredictor
from anyseg.types import Embedding, Masks, Prompt

__all__ = ["PerSamMethod", "PerSamFMethod", "PerSamFit", "guided_decode", "load_sam_predictor", "grid_coverage",
           "fit_scale_weights", "MIN_EVIDENCE", "MAX_INSTANCES", "TRAIN_STEPS", "LEARNING_RATE"]

#: ``instances="all"``: a further peak is decoded while its calibrated confidence is at least this
MIN_EVIDENCE = 0.5
#: ``instances="all"``: at most this many instances per image
MAX_INSTANCES = 8
#: PerSAM-F: AdamW steps and learning rate (cosine schedule). The reference trains 1000 steps at
#: 1e-3; the two weights are a smooth 2-parameter problem, so 100 steps at 1e-2 (the same total
#: step length) reach the same place in a fraction of the time
TRAIN_STEPS = 100
LEARNING_RATE = 1e-2
#: PerSAM-F trains on the reference's logits and mask at no more than this many pixels (area-resampled)
TRAIN_PIXELS = 128 * 128
#: a grid cell belongs to the reference mask when the mask covers at least this fraction of it
CELL_COVERAGE = 0.5


def load_sam_predictor(model: Any, device: str | None, allow_download: bool, method: str) -> SamFamilyPredictor:
    """The SAM-family predictor ``method`` prompts: ``model`` itself when it is one, else
    ``load_model(model or "auto")``; anything else (the classical engine) is one line naming what to pull."""
    if isinstance(model, SamFamilyPredictor):
        return model
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise InputError(f"{method}: model must be a registry name, a model folder or a loaded SAM-family predictor; "
                         f"got {type(model).__name__}")
    from anyseg.models import load_model

    predictor = load_model(model or "auto", device=device, allow_download=allow_download, quiet=True)
    if not isinstance(predictor, SamFamilyPredictor):
        why = ("no SAM-family weights are present locally" if model in (None, "auto")
               else f"{predictor.name} is not a SAM-family model")
        raise ModelError(f"{method} prompts a SAM-family model and {why}: `anyseg models pull sam-vit-base` (or any "
                         "SAM, SAM-HQ, SAM 2 or SAM 3 model), or --model FOLDER")
    return predictor


def _check_options(method: str, features: Any, options: dict[str, Any], allowed: Sequence[str]) -> None:
    if features is not None:
        raise InputError(f"{method} uses the SAM model's own image features; --features is for --method matcher")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(f"unknown option(s) for {method}: {', '.join(unknown)}; expected {', '.join(allowed)}")


# -- features on the embedding grid --------------------------------------------------------------
def grid_features(embedding: Embedding) -> Any:
    """``(C, gh, gw)`` float32: the SAM image embedding (the SAM 2 family's last, lowest-resolution map)."""
    emb = embedding.features["image_embeddings"]
    last = emb[-1] if isinstance(emb, (list, tuple)) else emb
    return last[0].float()


def grid_coverage(geo: Geometry, mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``(gh, gw)`` fraction of each embedding cell covered by ``mask`` ``(H, W)``, mapped into the
    model frame like the image (resized, and padded bottom/right for the ``longest_side`` geometry)."""
    import cv2

    nh, nw = geo.input_size
    frame = np.zeros((geo.frame, geo.frame), np.float32)
    frame[:nh, :nw] = cv2.resize(mask.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)
    return cv2.resize(frame, (grid[1], grid[0]), interpolation=cv2.INTER_AREA)


def _mask_cells(geo: Geometry, mask: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(cells, coverage)``: the cells that are the mask's local features (never none) and the coverage."""
    cov = grid_coverage(geo, mask, grid)
    cells = cov >= CELL_COVERAGE
    if not cells.any():  # a mask smaller than a cell: its best-covered cells
        cells = cov >= cov.max() * 0.5 if cov.max() > 0 else np.zeros_like(cells)
    if not cells.any():  # vanished in the resampling: the cell under its centroid
        ys, xs = np.nonzero(mask)
        x, y = geo.to_model(np.array([xs.mean(), ys.mean()]))
        cells[min(int(y * grid[0] / geo.frame), grid[0] - 1), min(int(x * grid[1] / geo.frame), grid[1] - 1)] = True
    return cells, cov


def _cosine(feats: Any, target: Any) -> Any:
    """``(gh, gw)`` cosine similarity of every cell of ``feats`` ``(C, gh, gw)`` with ``target`` ``(C,)``."""
    import torch.nn.functional as F

    return (F.normalize(feats, dim=0) * F.normalize(target, dim=0)[:, None, None]).sum(0)


def _full_res(predictor: SamFamilyPredictor, sim: Any, geo: Geometry) -> Any:
    """The grid map at the image's size, resampled like SAM's logits (x4, then to the image), on the CPU."""
    import torch.nn.functional as F

    x = F.interpolate(sim[None, None], scale_factor=4, mode="bilinear", align_corners=False)
    return predictor.upscale_logits(x, geo)[0, 0].cpu()


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


# -- the decoder with PerSAM's guidance ---------------------------------------------------------
def guided_decode(predictor: SamFamilyPredictor, embedding: Embedding, prompt: Prompt, *,
                  attention_similarity: Any = None, target_embedding: Any = None, multimask: bool = False) -> Masks:
    """Decode a point (and box) prompt through the model's own forward with PerSAM's guidance.

    transformers' SAM-family models (``SamModel``, ``SamHQModel``, ``Sam2Model``,
    ``Sam3TrackerModel`` ...) take PerSAM's two decoder changes as documented arguments, both
    ``None`` by default, when the model's forward is used unchanged:

    * ``attention_similarity`` ``(1, 1, 1, gh * gw)``: target-guided attention, added to the
      token-to-image attention logits of every two-way block (transformers' form; the reference
      code adds it to the softmaxed attention and normalises again);
    * ``target_embedding`` ``(1, 1, 1, C)``: target-semantic prompting, added to the prompt
      tokens before every two-way block (and, as in the reference code, once to their positional
      part; transformers leaves the final attention's queries without it).

    With both ``None`` this is the predictor's decoder with its ``fast_decoder`` off (test-checked).
    Returns :class:`Masks` in the decoder's order (one mask unless ``multimask``) with logits.
    """
    import torch

    prompt.check_within(embedding.original_size)
    if prompt.mask is not None or prompt.mask_logits is not None:
        raise InputError("guided_decode takes point and box prompts (the refinements go through predictor.predict)")
    geo = predictor.geometry(embedding.original_size)
    dev = predictor.device
    kwargs: dict[str, Any] = {}
    if prompt.points is not None:
        kwargs["input_points"] = torch.tensor(geo.to_model(prompt.points), dtype=torch.float32, device=dev)[None, None]
        kwargs["input_labels"] = torch.tensor(prompt.labels, dtype=torch.long, device=dev)[None, None]
    if prompt.box is not None:
        box = geo.to_model(prompt.box.reshape(2, 2)).reshape(4)
        kwargs["input_boxes"] = torch.tensor(box, dtype=torch.float32, device=dev)[None, None]
    feats = embedding.features
    if "intermediate_embeddings" in feats:  # SAM-HQ
        kwargs["intermediate_embeddings"] = feats["intermediate_embeddings"]
    if attention_similarity is not None:
        kwargs["attention_similarity"] = attention_similarity.to(dev)
    if target_embedding is not None:
        kwargs["target_embedding"] = target_embedding.to(dev)
    with torch.inference_mode():
        out = predictor.model(image_embeddings=feats["image_embeddings"], multimask_output=multimask, **kwargs)
    logits = out.pred_masks[0, 0].float().cpu()  # (M, h, w)
    scores = out.iou_scores[0, 0].float().cpu().numpy()
    return Masks(masks=predictor.postprocess(logits, geo), scores=scores, logits=logits.numpy())


# -- PerSAM-F's two scale weights -------------------------------------------------------------
def _dice_focal(logits: Any, target: Any) -> Any:
    """The reference's ``calculate_dice_loss + calculate_sigmoid_focal_loss`` (alpha 0.25, gamma 2)."""
    import torch.nn.functional as F

    p = logits.sigmoid()
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    focal = (ce * (1 - p_t) ** 2 * (0.25 * target + 0.75 * (1 - target))).mean()
    return dice + focal


def fit_scale_weights(outputs: Sequence[tuple[Any, Any]], steps: int = TRAIN_STEPS, lr: float = LEARNING_RATE) -> np.ndarray:
    """PerSAM-F's fine-tuning: the weights ``(1 - w1 - w2, w1, w2)`` of SAM's three multimask outputs.

    ``outputs``: per reference, ``(logits (3, P), target (P,))`` float tensors (the decoder's
    three outputs for the reference's own positive prior, at the image's resolution, and its
    mask). Only ``w1, w2`` (initialised to 1/3) are trained: AdamW (``eps=1e-4``) with a
    cosine schedule on dice + focal loss, averaged over the references, as ``persam_f.py``.
    """
    import torch

    w = torch.full((2,), 1.0 / 3.0, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.AdamW([w], lr=lr, eps=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    with torch.enable_grad():
        for _ in range(steps):
            weights = torch.cat([1 - w.sum(0, keepdim=True), w])
            loss = sum(_dice_focal((weights[:, None] * lg).sum(0), gt) for lg, gt in outputs) / len(outputs)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        return torch.cat([1 - w.sum(0, keepdim=True), w]).numpy().astype(np.float32)


# -- the methods ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PerSamFit:
    """What the references contribute, computed once by ``fit``.

    Attributes:
        location: ``(C,)`` unit location feature (the confidence map is the cosine with it).
        semantic: ``(C,)`` mean local feature, PerSAM's target-semantic prompt.
        s_in, s_out: mean confidence inside / outside the reference masks (the score's calibration).
        weights: PerSAM-F's three output weights (``None`` for PerSAM).
        references, cells: how many references and local features were pooled.
    """

    location: Any
    semantic: Any
    s_in: float
    s_out: float
    weights: np.ndarray | None
    references: int
    cells: int


class PerSamMethod:
    """PerSAM (training-free). Options: ``min_evidence``, ``max_instances`` (``instances="all"``),
    ``guidance`` (False: skip target-guided attention and semantic prompting, an ablation)."""

    name = "persam"
    options = ("min_evidence", "max_instances", "guidance")

    def __init__(self, predictor: SamFamilyPredictor, min_evidence: float = MIN_EVIDENCE,
                 max_instances: int = MAX_INSTANCES, guidance: bool = True) -> None:
        self.predictor = predictor
        if not 0.0 <= float(min_evidence) <= 1.0:
            raise InputError(f"min_evidence must be in [0, 1]; got {min_evidence!r}")
        if int(max_instances) < 1:
            raise InputError(f"max_instances must be >= 1; got {max_instances!r}")
        self.min_evidence, self.max_instances, self.guidance = float(min_evidence), int(max_instances), bool(guidance)

    @classmethod
    def from_options(cls, model: Any = None, features: Any = None, device: str | None = None,
                     allow_download: bool = True, **options: Any) -> "PerSamMethod":
        _check_options(cls.name, features, options, cls.options)
        return cls(load_sam_predictor(model, device, allow_download, cls.name), **options)

    # -- fit --------------------------------------------------------------------------------
    def _location(self, local: Any) -> Any:
        import torch.nn.functional as F

        return F.normalize(F.normalize(local, dim=1).mean(0), dim=0)  # the paper's mean of local maps

    def fit(self, refs: Sequence[Reference]) -> PerSamFit:
        import torch
        import torch.nn.functional as F

        p = self.predictor
        per_ref, locations, semantics = [], [], []
        for ref in refs:
            emb = p.embed(ref.image)
            geo = p.geometry(ref.size)
            feats = grid_features(emb)
            cells, cov = _mask_cells(geo, ref.mask, tuple(feats.shape[1:]))
            local = feats[:, torch.from_numpy(cells).to(feats.device)].T  # (n, C)
            locations.append(self._location(local))
            semantics.append(local.mean(0))
            per_ref.append((ref, emb, geo, feats, cells, cov))
        location = F.normalize(torch.stack(locations).mean(0), dim=0)
        ins, outs = [], []
        for _ref, _emb, geo, feats, cells, cov in per_ref:
            sim = _cosine(feats, location).cpu().numpy()
            valid = grid_coverage(geo, np.ones(geo.original_size, bool), sim.shape) >= CELL_COVERAGE
            ins.append(float(sim[cells].mean()))
            outside = valid & (cov == 0)
            outs.append(float(sim[outside].mean()) if outside.any() else float(sim.min()))
        weights = self._train(per_ref, location)
        return PerSamFit(location, torch.stack(semantics).mean(0), float(np.mean(ins)), float(np.mean(outs)), weights,
                         len(refs), int(sum(int(c.sum()) for *_, c, _ in per_ref)))

    def _train(self, per_ref: list, location: Any) -> np.ndarray | None:
        return None  # PerSAM is training-free

    # -- predict ----------------------------------------------------------------------------
    def _evidence(self, fitted: PerSamFit, value: float) -> float:
        span = max(fitted.s_in - fitted.s_out, 1e-6)
        return float(np.clip((value - fitted.s_out) / span, 0.0, 1.0))

    def predict(self, fitted: PerSamFit, image: np.ndarray, instances: str = "one") -> Masks:
        import torch

        p = self.predictor
        emb = p.embed(image)
        geo = p.geometry(emb.original_size)
        feats = grid_features(emb)
        sim = _cosine(feats, fitted.location.to(feats.device))
        full = _full_res(p, sim, geo)  # (H, W) confidence at the image's size
        w = full.shape[1]
        neg = int(torch.argmin(full))
        neg_xy = np.array([neg % w, neg // w], dtype=np.float64)
        avail = full.clone()
        found: list[tuple[np.ndarray, float, np.ndarray]] = []
        suppressed = np.zeros(sim.shape, bool)
        for k in range(1 if instances == "one" else self.max_instances):
            pos = int(torch.argmax(avail))
            peak = float(avail.view(-1)[pos])
            if k > 0 and (not np.isfinite(peak) or self._evidence(fitted, peak) < self.min_evidence):
                break
            pos_xy = np.array([pos % w, pos // w], dtype=np.float64)
            res = self._segment(fitted, emb, geo, sim, suppressed, pos_xy, neg_xy)
            mask = res.masks[0] if len(res) else np.zeros(full.shape, bool)
            if not mask.any():
                avail.view(-1)[pos] = -float("inf")
                continue
            mask_t = torch.tensor(mask)
            if found and (mask & np.any([m for m, *_ in found], axis=0)).sum() > 0.5 * mask.sum():
                avail[mask_t] = -float("inf")  # the same instance again
                continue
            evidence = self._evidence(fitted, float(full[mask_t].mean()))
            score = float(np.clip(res.scores[0], 0.0, 1.0)) * evidence
            found.append((mask, score, pos_xy))
            avail[mask_t] = -float("inf")
            suppressed |= grid_coverage(geo, mask, sim.shape) >= CELL_COVERAGE
        if not found:
            return empty_masks(emb.original_size)
        masks = Masks(masks=np.stack([m for m, *_ in found]), scores=np.array([s for _, s, _ in found], np.float32),
                      data={"prior_xy": np.stack([xy for *_, xy in found]).astype(np.float32)})
        return masks.sort_by("scores")

    @staticmethod
    def _guidance(fitted: PerSamFit, geo: Geometry, sim: Any, suppressed: np.ndarray) -> tuple[Any, Any]:
        """``(attention_similarity, target_embedding)`` for :func:`guided_decode`.

        The reference's map: the confidence standardised over the image, through a sigmoid, on
        the embedding grid. anyseg keeps it aligned with the grid (the reference stretches the
        image-sized map over the whole grid, padding included, for non-square SAM inputs): cells
        of the padding and of instances already found get the image's lowest value.
        """
        import torch

        valid_np = grid_coverage(geo, np.ones(geo.original_size, bool), tuple(sim.shape)) >= CELL_COVERAGE
        valid = torch.from_numpy(valid_np if valid_np.sum() > 1 else np.ones_like(valid_np)).to(sim.device)
        inside = sim[valid]
        z = (sim - inside.mean()) / inside.std().clamp_min(1e-6)
        drop = torch.from_numpy(suppressed).to(sim.device) | ~valid
        z = torch.where(drop, z[valid].min(), z)
        return z.sigmoid().reshape(1, 1, 1, -1), fitted.semantic.reshape(1, 1, 1, -1)

    def _segment(self, fitted: PerSamFit, emb: Embedding, geo: Geometry, sim: Any, suppressed: np.ndarray,
                 pos_xy: np.ndarray, neg_xy: np.ndarray) -> Masks:
        """Positive and negative priors -> guided first mask -> two cascaded refinements (best of 3 each)."""
        p = self.predictor
        points, labels = np.stack([pos_xy, neg_xy]), np.array([1, 0])
        attn, target = self._guidance(fitted, geo, sim, suppressed) if self.guidance else (None, None)
        first = guided_decode(p, emb, Prompt(points=points, labels=labels), attention_similarity=attn,
                              target_embedding=target)
        return self._refine(emb, points, labels, first.logits[0])

    def _refine(self, emb: Embedding, points: np.ndarray, labels: np.ndarray, logits: np.ndarray,
                box: np.ndarray | None = None) -> Masks:
        """Cascaded post-refinement: (box +) logits as the mask input, then the best mask's box and logits."""
        p = self.predictor
        r1 = p.predict(emb, Prompt(points=points, labels=labels, box=box, mask_logits=logits), multimask=True)
        if not r1.masks[0].any():
            return r1[:1]
        r2 = p.predict(emb, Prompt(points=points, labels=labels, box=_box(r1.masks[0]), mask_logits=r1.logits[0]),
                       multimask=True)
        return r2[:1] if r2.masks[0].any() else r1[:1]


class PerSamFMethod(PerSamMethod):
    """PerSAM-F: PerSAM's priors with two learnt scale weights over SAM's three multimask outputs,
    fitted on the references (``train_steps``, ``lr``); SAM itself is not changed. As the
    reference ``persam_f.py``: the positive prior only, no target-guided attention or semantic
    prompting."""

    name = "persam-f"
    options = ("min_evidence", "max_instances", "train_steps", "lr")

    def __init__(self, predictor: SamFamilyPredictor, min_evidence: float = MIN_EVIDENCE,
                 max_instances: int = MAX_INSTANCES, train_steps: int = TRAIN_STEPS, lr: float = LEARNING_RATE) -> None:
        super().__init__(predictor, min_evidence, max_instances, guidance=False)
        if int(train_steps) < 0 or not float(lr) > 0:
            raise InputError(f"train_steps must be >= 0 and lr > 0; got {train_steps!r}, {lr!r}")
        self.train_steps, self.lr = int(train_steps), float(lr)

    def _location(self, local: Any) -> Any:
        import torch.nn.functional as F

        return F.normalize(local.max(0).values / 2 + local.mean(0) / 2, dim=0)  # persam_f.py

    def _train(self, per_ref: list, location: Any) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        p = self.predictor
        outputs = []
        for ref, emb, geo, feats, _cells, _cov in per_ref:
            full = _full_res(p, _cosine(feats, location), geo)
            pos = int(torch.argmax(full))
            logits, _ = p.decode_points(emb, np.array([[pos % full.shape[1], pos // full.shape[1]]], np.float64))
            high = p.upscale_logits(logits[0], geo).cpu().clone()  # (3, H, W), outside inference mode
            gt = torch.from_numpy(ref.mask.astype(np.float32))
            h, w = gt.shape
            if h * w > TRAIN_PIXELS:
                s = (TRAIN_PIXELS / (h * w)) ** 0.5
                size = (max(1, round(h * s)), max(1, round(w * s)))
                high = F.interpolate(high[None], size=size, mode="bilinear", align_corners=False)[0]
                gt = (F.interpolate(gt[None, None], size=size, mode="area")[0, 0] >= 0.5).float()
            outputs.append((high.reshape(3, -1), gt.reshape(-1)))
        return fit_scale_weights(outputs, self.train_steps, self.lr)

    def _segment(self, fitted: PerSamFit, emb: Embedding, geo: Geometry, sim: Any, suppressed: np.ndarray,
                 pos_xy: np.ndarray, neg_xy: np.ndarray) -> Masks:
        import torch

        p = self.predictor
        logits, _ = p.decode_points(emb, pos_xy[None])  # (1, 3, h, w), the decoder's order
        weights = torch.as_tensor(fitted.weights, dtype=logits.dtype, device=logits.device)
        low = (logits[0] * weights[:, None, None]).sum(0).cpu()
        mask = p.postprocess(low[None], geo)[0]
        points, labels = pos_xy[None], np.array([1])
        if not mask.any():
            return Masks(masks=mask[None], scores=np.zeros(1, np.float32))
        return self._refine(emb, points, labels, low.numpy(), box=_box(mask))

"""The ``classical`` engine: promptable segmentation with OpenCV GrabCut, no weights.

The offline default and a measured baseline (``docs/RESULTS.md``). :meth:`~ClassicalPredictor.embed`
downscales the image to the *working resolution* (longest side <= ``max_side``) and precomputes
BGR and CIE Lab copies, GrabCut's neighbour-contrast weights ``1 - exp(-beta |dI|^2)`` of a
smoothed copy, and a geodesic cost image (``contrast^2 + 1/L`` per pixel) for the clicks.
:meth:`~ClassicalPredictor.predict` turns the prompt into GrabCut runs, scores their candidates
and returns the best (up to three distinct ones, sorted, with ``multimask=True``).

Prompts and candidates (``Masks.data["variant"]``):

* clicks alone (a first click): a scale search. GrabCut starts from the geodesic
  neighbourhood of the positive clicks covering 0.5 %, 2 %, 10 % and 20 % of the image
  (probable foreground; the rest probable background, and, but at 10 %, a strip along the image
  border definite background): ``"scale-0.005"`` ... ``"scale-0.2"``; the neighbourhoods
  themselves (``"region-*"``) are candidates too, and the fallbacks that keep three candidates
  distinct. Which extent the user meant is what the score has to guess (SAM's reason for
  three masks): objects of 0.5 % of a street scene and of half a portrait are both clicks.
* a box: outside = definite background, inside = probable foreground; three GrabCut variants:
  ``"grabcut"``, standard GrabCut on RGB; ``"pruned"``, whose first two iterations drop the
  foreground colour components that overlap a background one (Bhattacharyya coefficient > 0.5:
  background colours enclosed by the box, GrabCut's typical box failure); ``"pruned-lab"``, the
  same in CIE Lab.
* ``mask_logits`` (> 0 = foreground, any size: the ``logits`` this engine returned) or ``mask``
  (``(H, W)`` bool): the prior starts as probable foreground/background; the three variants
  and ``"edit"``, one cut with the colour models of that start.
* every click is a disc of definite foreground/background; a click that corrects the mask
  prompt (positive outside it, negative inside) is taken to be in the middle of the error, and
  its disc grows to :data:`_ERROR_DISC` of its distance to the mask's boundary. Positive clicks
  next to a box or a mask also make their geodesic neighbourhood probable foreground.
* text alone raises :class:`PromptError`; text next to another prompt is ignored.

Hard constraints, on every candidate: the parts geodesically closer, travelling inside the
mask, to a negative click than to any positive one are removed (what lets a negative click cut a
same-coloured region away); without a box only the connected components that hold a positive
click (or lie mostly in the mask prompt) stay; the clicked pixels themselves are set at full
size. A pixel clicked both positive and negative raises :class:`PromptError`. Candidates
smaller than four click discs (5 % of a box) or overlapping a better one at IoU > 0.9 are
dropped, so ``multimask`` may give fewer than three.

Scores (:mod:`anyseg.models.classical_score`, evidence in ``Masks.data["evidence"]``): a box,
separation x boundary contrast x tightness; clicks and mask prompts, a logistic model of the IoU
over the evidence (boundary contrast, colour separation from the surrounding ring, area, image
border, agreement between runs, IoU with the mask prompt, solidity, contrast inside the mask),
gated so that a boundary on no edge scores low. :meth:`~ClassicalPredictor.candidates` lists every candidate with its evidence.

Masks come back at the original size: the upsampled boundary is refined by one frozen-model
GrabCut cut in a thin band at full size (at most 2 MP). ``logits`` are signed distances to the
boundary at the working resolution, so ``Prompt(mask_logits=...)`` reproduces the mask.

Bounded work. GrabCut's graph cut (OpenCV's Boykov-Kolmogorov max-flow) takes pathological,
super-linear time when a large region of undecided pixels has *one exact colour* that both
colour models describe alike: every such pixel gets the same tiny data term favouring the
foreground (the fg/bg GMMs differ only by rounding: 1e-9 nats), the smoothness edges there are
all at their maximum (no contrast), and the max-flow then augments one tiny path per pixel to
the far background (a box on a uniform 640x480 image took 51-65 s at full resolution, one
slow cut per candidate; 360x270, up to 5 s per cut; ``bench/classical_degenerate.py``). Natural images never get there (sensor noise
makes the data terms vary from pixel to pixel and the paths short). So the GrabCut inputs are
guarded (:func:`dither_degenerate`): the pixels of an exact colour that covers at least
:data:`DEGENERATE_PIXELS` pixels get a deterministic +-1 dither (the noise the colour models
assume), after which the cut takes about 0.1-0.3 s at the default working size. A one-colour
region smaller than that costs at most about its size squared (0.1 s for 4096 pixels), so a
cut costs at most ``O(DEGENERATE_PIXELS x pixels)`` however the colours are laid out.
Dithered areas still cut super-linearly when they are huge (the fg/bg models of the noise
differ less as they get more samples: 3.5 s for 1280x960), so an image with such colours
works at no more than :data:`DEGENERATE_WORK_PIXELS` (the default working size; only
``max_side`` above 360 or ``None`` is affected; the full-size boundary refinement keeps the
edges). Natural images keep their pixels (at the default working size 4 of the 50 GrabCut
images have such a colour, clipped black or white, and their IoU is unchanged). The working
resolution has at most :data:`MAX_WORK_PIXELS` pixels (``max_side=None`` included),
``iterations`` is at most :data:`MAX_ITERATIONS`, and :func:`anyseg.cancel.check` runs before
every cut, so a cancelled job stops within one cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from anyseg import cancel
from anyseg.errors import InputError, PromptError
from anyseg.models.base import Predictor, check_embedding, check_image
from anyseg.models.classical_cut import (
    DEGENERATE_PIXELS, degenerate_pixels, dither_degenerate, geodesic, grabcut, signed_distance,
)
from anyseg.models.classical_score import CLICK_WEIGHTS, EDIT_WEIGHTS, EVIDENCE, evidence, iou, logistic_score, loglik, separation
from anyseg.types import Embedding, Masks, Prompt

__all__ = ["ClassicalPredictor", "degenerate_pixels", "dither_degenerate", "loglik", "DEGENERATE_PIXELS",
           "DEGENERATE_WORK_PIXELS", "EVIDENCE", "MAX_ITERATIONS", "MAX_WORK_PIXELS"]

#: default longest side of the working resolution (pixels)
DEFAULT_MAX_SIDE = 360
#: default number of GrabCut iterations per candidate
DEFAULT_ITERATIONS = 5
#: most GrabCut iterations per candidate
MAX_ITERATIONS = 20
#: most pixels of the working resolution, whatever ``max_side`` says (GrabCut's work grows with them)
MAX_WORK_PIXELS = 2_000_000
#: an exact colour on at least this many pixels of a GrabCut input is dithered (see the module docstring)
#: most working pixels of an image with such colours (the default working size, 360 x 360)
DEGENERATE_WORK_PIXELS = 360 * 360
_PRUNE_ITERS = 2
_POS_REACH = 0.5  # geodesic reach of the probable-foreground region around positive clicks
_CLICK_RADIUS = 1 / 120  # click-disc radius, as a fraction of the longest side
_ERROR_DISC = 0.8  # a correcting click's disc: this fraction of its distance to the mask boundary
_REFINE_MAX_PIXELS = 2_000_000  # the boundary refinement runs at full size up to this many pixels
_REFINE_BAND = 3  # it may move the boundary by this many working-resolution pixels
#: clicks alone: (area of the geodesic neighbourhood that starts GrabCut, as a fraction of the
#: image; whether a strip along the image border starts as definite background)
_CLICK_SCALES = ((0.005, True), (0.02, True), (0.1, False), (0.2, True))
_BORDER_STRIP = 0.02  # its width, as a fraction of the shorter side
_DISTINCT_IOU = 0.9  # candidates overlapping more than this are one
_MIN_DISCS = 4  # a click candidate smaller than this many click discs is a fragment
_MIN_BOX_AREA = 0.05  # a box candidate smaller than this fraction of the box is a fragment


#: the box / mask candidates: (name, GrabCut input, pruned iterations)
_VARIANTS = (("grabcut", "bgr", 0), ("pruned", "bgr", _PRUNE_ITERS), ("pruned-lab", "lab", _PRUNE_ITERS))


class ClassicalPredictor(Predictor):
    """GrabCut-based promptable segmenter (no weights, CPU only).

    Args:
        max_side: longest side of the working resolution; larger images are downscaled for
            speed (``None``: full resolution up to :data:`MAX_WORK_PIXELS`). Default 360.
        iterations: GrabCut iterations per candidate, 1 to :data:`MAX_ITERATIONS`. Default 5.
    """

    name = "classical"
    family = "classical"

    def __init__(self, max_side: int | None = DEFAULT_MAX_SIDE, iterations: int = DEFAULT_ITERATIONS):
        if max_side is not None and (not _is_int(max_side) or max_side < 8):
            raise InputError(f"max_side must be an integer of at least 8 pixels (or None); got {max_side!r}")
        if not _is_int(iterations) or not 1 <= iterations <= MAX_ITERATIONS:
            raise InputError(f"iterations must be an integer in 1..{MAX_ITERATIONS}; got {iterations!r}")
        self.max_side = None if max_side is None else int(max_side)
        self.iterations = int(iterations)

    # -- embedding ----------------------------------------------------------------------
    def embed(self, image: np.ndarray) -> Embedding:
        """Working copies of an ``(H, W, 3)`` RGB image (see the module docstring)."""
        image = check_image(image)
        big_h, big_w = image.shape[:2]
        rgb = _working_copy(image, self.max_side, MAX_WORK_PIXELS)
        if rgb.shape[0] * rgb.shape[1] > DEGENERATE_WORK_PIXELS:  # one-colour areas: a smaller graph
            small = _working_copy(image, self.max_side, DEGENERATE_WORK_PIXELS)
            if degenerate_pixels(small).any() or degenerate_pixels(cv2.cvtColor(small, cv2.COLOR_RGB2LAB)).any():
                rgb = small
        h, w = rgb.shape[:2]
        smooth = cv2.GaussianBlur(rgb, (0, 0), 1.0).astype(np.float32)
        d2h = ((smooth[:, 1:] - smooth[:, :-1]) ** 2).sum(-1)
        d2v = ((smooth[1:] - smooth[:-1]) ** 2).sum(-1)
        mean = (d2h.sum() + d2v.sum()) / max(1, d2h.size + d2v.size)
        beta = 1.0 / (2.0 * mean) if mean > 0 else 0.0
        wh, wv = (1.0 - np.exp(-beta * d2h)).astype(np.float32), (1.0 - np.exp(-beta * d2v)).astype(np.float32)
        edge = np.zeros((h, w), np.float32)
        edge[:, 1:] = np.maximum(edge[:, 1:], wh)
        edge[:, :-1] = np.maximum(edge[:, :-1], wh)
        edge[1:] = np.maximum(edge[1:], wv)
        edge[:-1] = np.maximum(edge[:-1], wv)
        bgr, n_bgr = dither_degenerate(np.ascontiguousarray(rgb[..., ::-1]))
        lab, n_lab = dither_degenerate(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB))
        features: dict[str, Any] = {
            "bgr": bgr,  # the GrabCut inputs: guarded against degenerate colours
            "lab": lab,
            "dithered": (n_bgr, n_lab),  # pixels of each that got the dither
            "contrast_h": wh,
            "contrast_v": wv,
            "geo_cost": edge**2 + np.float32(1.0 / max(h, w)),
        }
        if (h, w) != (big_h, big_w):  # the boundary refinement works on this copy
            r = min(1.0, float(np.sqrt(_REFINE_MAX_PIXELS / (big_h * big_w))))
            rh, rw = max(h, round(big_h * r)), max(w, round(big_w * r))
            if (rh, rw) != (h, w):
                features["refine_rgb"] = image if (rh, rw) == (big_h, big_w) else cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
        return Embedding(model_id=self.model_id, original_size=(big_h, big_w), input_size=(h, w), features=features)

    # -- prediction ---------------------------------------------------------------------
    def predict(self, embedding: Embedding, prompt: Prompt, multimask: bool = False) -> Masks:
        """Masks for one prompt at the original size: the best candidate, or (``multimask``) up to
        3 distinct candidates sorted by score (see the module docstring)."""
        task, cands = self._generate(embedding, prompt)
        cands = _distinct(cands, task.min_area)
        return _output(embedding.features, prompt, task.radii, cands if multimask else cands[:1], embedding)

    def candidates(self, embedding: Embedding, prompt: Prompt) -> Masks:
        """Every candidate :meth:`predict` chooses from, at the working resolution (no boundary
        refinement), in the order generated, with their scores and ``data["evidence"]``
        (columns :data:`EVIDENCE`): what ``bench/classical_clicks.py --fit`` fits the score on."""
        task, cands = self._generate(embedding, prompt)
        return Masks(masks=np.stack([c.mask for c in cands]), scores=np.array([c.score for c in cands], np.float32),
                     logits=np.stack([signed_distance(c.mask) for c in cands]),
                     data={"variant": np.array([c.name for c in cands]), "evidence": np.stack([c.evidence for c in cands])})

    def _generate(self, embedding: Embedding, prompt: Prompt) -> tuple[_Task, list[_Candidate]]:
        check_embedding(self, embedding)
        feats = embedding.features
        if not isinstance(feats, dict) or "bgr" not in feats:
            raise InputError("this embedding has no classical-engine features; embed the image with ClassicalPredictor")
        if not isinstance(prompt, Prompt):
            raise PromptError(f"expected a Prompt; got {type(prompt).__name__}")
        if prompt.text is not None and all(v is None for v in (prompt.points, prompt.box, prompt.mask, prompt.mask_logits)):
            raise PromptError(f"the classical engine does not understand text prompts ({prompt.text!r}); give points, a box or a mask")
        prompt.check_within(embedding.original_size)
        _check_clicks(prompt, embedding.original_size)
        task = _task(feats, prompt, embedding.original_size, embedding.input_size)
        if task.prior is None and task.box is None and not len(task.pos):
            return task, [_Candidate("none", "bgr", np.zeros(embedding.input_size, bool))]  # nothing asked for
        if task.prior is None and task.box is None:
            return task, _click_candidates(feats, task, self.iterations)
        return task, _prompt_candidates(feats, task, self.iterations)

# -- candidates ---------------------------------------------------------------------------
@dataclass
class _Task:
    """One prompt at the working resolution."""

    labels: np.ndarray  # the GrabCut label map of the box / mask paths
    hard: np.ndarray  # the prompt's hard constraints: GC_BGD, GC_FGD or 255 = free
    box: tuple[int, int, int, int] | None
    pos: np.ndarray  # (K, 2) XY positive clicks
    neg: np.ndarray  # (K, 2) XY negative clicks
    prior: np.ndarray | None  # (h, w) bool: the mask or mask_logits prompt
    min_area: float  # the smallest candidate that is not a fragment (pixels)
    radii: np.ndarray | None  # the click discs' radii (:func:`_click_radii`)


@dataclass
class _Candidate:
    name: str
    space: str  # the GrabCut input it came from: "bgr" or "lab"
    mask: np.ndarray  # (h, w) bool
    bgd: np.ndarray | None = None  # its final GMMs (None: not a GrabCut result)
    fgd: np.ndarray | None = None
    score: float = 0.0
    evidence: np.ndarray = field(default_factory=lambda: np.zeros(len(EVIDENCE), np.float32))


def _check_clicks(prompt: Prompt, big: tuple[int, int]) -> None:
    """A pixel cannot be both a positive and a negative click."""
    if prompt.points is None or len(set(prompt.labels.tolist())) < 2:
        return
    xy = _pixels(prompt.points, big)
    pos = {tuple(p) for p in xy[prompt.labels == 1]}
    for (x, y), lab in zip(xy, prompt.labels):
        if lab == 0 and (x, y) in pos:
            raise PromptError(f"pixel ({x}, {y}) has both a positive and a negative click; expected one label per pixel")


def _pixels(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(K, 2)`` int XY: the pixel each point falls in, at ``size`` ``(H, W)``."""
    h, w = size
    return np.stack([np.clip(np.floor(points[:, 0]), 0, w - 1), np.clip(np.floor(points[:, 1]), 0, h - 1)], 1).astype(int)


def _task(feats: dict[str, Any], prompt: Prompt, big: tuple[int, int], small: tuple[int, int]) -> _Task:
    labels, hard, box, pts, prior, radii = _labels(feats, prompt, big, small)
    kinds = prompt.labels if len(pts) else np.zeros(0, int)
    if box is not None:  # a box candidate smaller than this is a fragment
        min_area = _MIN_BOX_AREA * (box[2] - box[0]) * (box[3] - box[1])
    else:
        min_area = _MIN_DISCS * np.pi * _click_radius(small) ** 2
    return _Task(labels, hard, box, pts[kinds == 1], pts[kinds == 0], prior, float(min_area), radii)


def _click_candidates(feats: dict[str, Any], task: _Task, iterations: int) -> list[_Candidate]:
    """Clicks alone: GrabCut from geodesic neighbourhoods of the positive clicks at several
    scales, and those neighbourhoods themselves (the fallbacks that keep the candidates distinct)."""
    h, w = task.hard.shape
    dist = geodesic(feats["geo_cost"], task.pos)
    fixed = task.hard != 255
    runs, regions, seps = [], [], {}
    for area, border in _CLICK_SCALES:
        ball = dist <= np.quantile(dist, area)
        labels = np.where(ball, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        if border:
            b = max(2, round(_BORDER_STRIP * min(h, w)))
            labels[:b], labels[-b:], labels[:, :b], labels[:, -b:] = cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD
        labels[fixed] = task.hard[fixed]
        mask, bgd, fgd = grabcut(feats["bgr"], labels, iterations, 0)
        run = _Candidate(f"scale-{area:g}", "bgr", _constrain(feats, (mask & 1).astype(bool), task), bgd, fgd)
        region = _Candidate(f"region-{area:g}", "bgr", _constrain(feats, ball | (labels == cv2.GC_FGD), task))
        for c in (run, region):  # both separated by this scale's colour models
            seps[c.name] = separation(feats["bgr"], labels, c.mask, bgd, fgd)
        runs.append(run)
        regions.append(region)
    for c in runs + regions:
        agreement = float(np.mean([iou(c.mask, r.mask) > _DISTINCT_IOU for r in runs]))
        c.evidence = evidence(feats, c.mask, agreement, seps[c.name], task.prior, task.box)
        c.score = logistic_score(CLICK_WEIGHTS, c.evidence, feats)
    return runs + regions


def _prompt_candidates(feats: dict[str, Any], task: _Task, iterations: int) -> list[_Candidate]:
    """A box and/or a mask prompt (with or without clicks): the three GrabCut variants, and with
    a mask prompt the edit cut (one cut with the colour models of the prompt's labels)."""
    runs = [(name, space, *grabcut(feats[space], task.labels, iterations, k)) for name, space, k in _VARIANTS]
    if task.prior is not None:
        runs.append(("edit", "bgr", *grabcut(feats["bgr"], task.labels, 1, 0)))
    cands, seps = [], []
    for name, space, mask, bgd, fgd in runs:
        fg = (mask & 1).astype(bool)
        if not fg.any():  # GrabCut removed everything: fall back to the prompt's own region
            fg = (task.labels & 1).astype(bool)
        fg = _constrain(feats, fg, task)
        cands.append(_Candidate(name, space, fg, bgd, fgd))
        seps.append(separation(feats[space], task.labels, fg, bgd, fgd))
    for c, sep in zip(cands, seps):
        agreement = float(np.mean([iou(c.mask, d.mask) > _DISTINCT_IOU for d in cands]))
        c.evidence = evidence(feats, c.mask, agreement, sep, task.prior, task.box)
        if task.prior is None:  # a box: separation x contrast x tightness
            c.score = float(c.evidence[0] * c.evidence[1] * c.evidence[7])
        else:
            c.score = logistic_score(EDIT_WEIGHTS, c.evidence, feats)
    return cands


def _constrain(feats: dict[str, Any], fg: np.ndarray, task: _Task) -> np.ndarray:
    """The prompt's hard constraints on a candidate: the parts geodesically closer to a negative
    click go (:func:`_split`); without a box, only the connected components that hold a positive
    click (or lie mostly inside the mask prompt) stay."""
    if len(task.neg):
        fg = _split(feats["geo_cost"], fg, task.pos, task.neg)
    if len(task.pos) and task.box is None and fg.any():
        n, comp = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
        keep = np.zeros(n, bool)
        keep[comp[task.pos[:, 1], task.pos[:, 0]]] = True
        if task.prior is not None:
            inside = np.bincount(comp[task.prior], minlength=n)
            keep |= inside >= 0.5 * np.bincount(comp.reshape(-1), minlength=n)
        keep[0] = False
        fg = keep[comp]
    return fg


def _distinct(cands: list[_Candidate], min_area: float) -> list[_Candidate]:
    """Up to 3 candidates by score, none a fragment (below ``min_area``) or a near-copy (IoU >
    :data:`_DISTINCT_IOU`) of a better one; the best candidate when every one is a fragment."""
    order = sorted(cands, key=lambda c: -c.score)  # stable: ties keep the order of generation
    kept: list[_Candidate] = []
    for c in order:
        if c.mask.sum() >= min_area and all(iou(c.mask, k.mask) <= _DISTINCT_IOU for k in kept):
            kept.append(c)
        if len(kept) == 3:
            break
    return kept or order[:1]


def _output(feats: dict[str, Any], prompt: Prompt, radii: np.ndarray | None, cands: list[_Candidate], embedding: Embedding) -> Masks:
    """The candidates at the original size (refined boundary, clicks enforced), with their logits."""
    big, small = embedding.original_size, embedding.input_size
    logits = np.stack([signed_distance(c.mask) for c in cands])
    masks = []
    for c, logit in zip(cands, logits):
        if small == big:
            mask = c.mask.copy()
        else:
            if "refine_rgb" in feats and c.bgd is not None:
                logit = _refine(feats["refine_rgb"], c.space, logit, c.bgd, c.fgd, prompt, radii, big, small)
            mask = _within_box(cv2.resize(logit, big[::-1], interpolation=cv2.INTER_LINEAR) > 0, prompt.box)
        if prompt.points is not None:  # the clicked pixels themselves, whatever the resampling did
            xy = _pixels(prompt.points, big)
            mask[xy[prompt.labels == 1, 1], xy[prompt.labels == 1, 0]] = True
            mask[xy[prompt.labels == 0, 1], xy[prompt.labels == 0, 0]] = False
        masks.append(mask)
    return Masks(masks=np.stack(masks), scores=np.array([c.score for c in cands], np.float32), logits=logits,
                 data={"variant": np.array([c.name for c in cands]), "evidence": np.stack([c.evidence for c in cands])})


def _click_radius(small: tuple[int, int]) -> int:
    return max(2, round(max(small) * _CLICK_RADIUS))


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


# -- prompts to GrabCut labels ------------------------------------------------------------
def _hard(prompt: Prompt, big: tuple[int, int], small: tuple[int, int], radii: np.ndarray | None = None
          ) -> tuple[np.ndarray, tuple[int, int, int, int] | None, np.ndarray]:
    """Hard constraints of a prompt at size ``small``: a label map (GC_BGD, GC_FGD or 255 = free),
    the box there and the click pixels ``(K, 2)`` XY. ``radii``: each click disc's radius as a
    fraction of the longest side (default :data:`_CLICK_RADIUS`)."""
    (big_h, big_w), (h, w) = big, small
    sx, sy = w / big_w, h / big_h
    hard = np.full((h, w), 255, np.uint8)
    box = None
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        bx0, by0 = min(w - 1, int(np.floor(x0 * sx))), min(h - 1, int(np.floor(y0 * sy)))
        bx1, by1 = max(bx0 + 1, min(w, int(np.ceil(x1 * sx)))), max(by0 + 1, min(h, int(np.ceil(y1 * sy))))
        box = (bx0, by0, bx1, by1)
        hard[:] = cv2.GC_BGD
        hard[by0:by1, bx0:bx1] = 255
    pts = np.zeros((0, 2), int)
    if prompt.points is not None:
        pts = _pixels(prompt.points * (sx, sy), small)
        fracs = np.full(len(pts), _CLICK_RADIUS) if radii is None else radii
        for i in np.argsort(-fracs, kind="stable"):  # the larger discs first: a small one stays whole
            radius = max(_click_radius(small), round(fracs[i] * max(h, w)))
            cv2.circle(hard, (int(pts[i, 0]), int(pts[i, 1])), radius, int(cv2.GC_FGD if prompt.labels[i] == 1 else cv2.GC_BGD), -1)
        for x, y in pts[prompt.labels == 1]:  # a positive click always wins over a nearby negative disc
            hard[y, x] = cv2.GC_FGD
    return hard, box, pts


def _click_radii(pts: np.ndarray, kinds: np.ndarray, prior: np.ndarray | None) -> np.ndarray | None:
    """Disc radii (fractions of the longest side) of clicks that correct a mask prompt: a
    positive click outside the mask, or a negative one inside it, is taken to be in the middle
    of the error it corrects, so its disc grows to :data:`_ERROR_DISC` of its distance to the
    mask's boundary, and to at most half the way to the nearest click of the other label."""
    if prior is None or not prior.any() or prior.all():
        return None
    inside = cv2.distanceTransform(prior.astype(np.uint8), cv2.DIST_L2, 3)
    outside = cv2.distanceTransform((~prior).astype(np.uint8), cv2.DIST_L2, 3)
    d = np.where(kinds == 1, outside[pts[:, 1], pts[:, 0]], inside[pts[:, 1], pts[:, 0]])
    gap = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).astype(float)
    gap[kinds[:, None] == kinds[None]] = np.inf
    return np.maximum(_CLICK_RADIUS, np.minimum(_ERROR_DISC * d, 0.5 * gap.min(1) - 1) / max(prior.shape))


def _labels(feats: dict[str, Any], prompt: Prompt, big: tuple[int, int], small: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int] | None, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(labels, hard, box, clicks, prior, radii)`` at working resolution: the GrabCut label map
    of the box / mask paths, the hard constraints, the box there (if any), the clicks, the mask
    prior and the click discs' radii (:func:`_click_radii`; None: the default)."""
    h, w = small
    prior = None
    if prompt.mask_logits is not None:
        prior = cv2.resize(prompt.mask_logits.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0
    elif prompt.mask is not None:
        prior = cv2.resize(prompt.mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0.5
    radii = None
    if prompt.points is not None:
        radii = _click_radii(_pixels(prompt.points * (w / big[1], h / big[0]), small), prompt.labels, prior)
    hard, box, pts = _hard(prompt, big, small, radii)
    labels = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    if prior is not None:
        labels[prior] = cv2.GC_PR_FGD
    elif box is not None:
        labels[box[1]:box[3], box[0]:box[2]] = cv2.GC_PR_FGD
    pos = pts[prompt.labels == 1] if len(pts) else pts
    if len(pos) and (prior is not None or box is not None):  # the clicked regions start as probable foreground
        labels[geodesic(feats["geo_cost"], pos) < _POS_REACH] = cv2.GC_PR_FGD
    free = hard == 255
    labels[~free] = hard[~free]
    return labels, hard, box, pts, prior, radii


def _working_copy(image: np.ndarray, max_side: int | None, max_pixels: int) -> np.ndarray:
    """``image`` downscaled (INTER_AREA) to longest side <= ``max_side`` and at most ``max_pixels``."""
    big_h, big_w = image.shape[:2]
    s = 1.0 if max_side is None else min(1.0, max_side / max(big_h, big_w))
    s = min(s, float(np.sqrt(max_pixels / (big_h * big_w))))
    h, w = max(1, round(big_h * s)), max(1, round(big_w * s))
    if h * w > max_pixels:  # rounding up went over the pixel cap
        h, w = max(1, int(big_h * s)), max(1, int(big_w * s))
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA) if (h, w) != (big_h, big_w) else image


def _within_box(mask: np.ndarray, box: Any) -> np.ndarray:
    """``mask`` without the pixels outside a box prompt (definite background; upsampling a
    working-resolution mask can spill over by a pixel), in place; as is without a box."""
    if box is None:
        return mask
    h, w = mask.shape
    x0, y0 = min(w - 1, int(np.floor(box[0]))), min(h - 1, int(np.floor(box[1])))
    x1, y1 = max(x0 + 1, min(w, int(np.ceil(box[2])))), max(y0 + 1, min(h, int(np.ceil(box[3]))))
    mask[:y0], mask[y1:], mask[:, :x0], mask[:, x1:] = False, False, False, False
    return mask


def _split(cost: np.ndarray, fg: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Remove the parts of a mask that are geodesically closer, travelling inside the mask,
    to a negative click than to any positive click (same-coloured regions GrabCut cannot cut).

    Without positive clicks, the interior mask pixel farthest from the negative clicks stands in
    for one.
    """
    inside = fg.copy()
    for x, y in np.concatenate([pos, neg]):  # the click discs are holes in the mask: bridge them
        cv2.circle(inside.view(np.uint8), (int(x), int(y)), _click_radius(fg.shape) + 1, 1, -1)
    c = np.where(inside, cost, np.inf).astype(np.float32)
    d_neg = geodesic(c, neg)
    if not len(pos):  # away from the mask's own boundary, whose edges cost a lot
        interior = cv2.distanceTransform(fg.astype(np.uint8), cv2.DIST_L2, 3) >= 4
        reach = np.where((interior if interior.any() else fg) & np.isfinite(d_neg), d_neg, -1.0)
        if reach.max() < 0:
            return fg
        y, x = np.unravel_index(int(np.argmax(reach)), reach.shape)
        pos = np.array([[x, y]])
    return fg & ~(d_neg < geodesic(c, pos))


def _refine(image: np.ndarray, space: str, logit: np.ndarray, bgd: np.ndarray, fgd: np.ndarray,
            prompt: Prompt, radii: np.ndarray | None, big: tuple[int, int], small: tuple[int, int]) -> np.ndarray:
    """Boundary refinement: one frozen-model GrabCut cut in a thin band around the upsampled
    boundary, at the refinement size (full size up to 2 MP); returns the logits at that size."""
    rh, rw = image.shape[:2]
    up = cv2.resize(logit, (rw, rh), interpolation=cv2.INTER_LINEAR)
    fg = up > 0
    if not fg.any() or fg.all() or not fgd[0, :5].any() or not bgd[0, :5].any():
        return up
    band = max(1, round(_REFINE_BAND * rw / small[1]))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    inner = cv2.erode(fg.astype(np.uint8), kernel).astype(bool)
    outer = cv2.dilate(fg.astype(np.uint8), kernel).astype(bool)
    labels = np.where(fg, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    labels[inner], labels[~outer] = cv2.GC_FGD, cv2.GC_BGD
    hard = _hard(prompt, big, (rh, rw), radii)[0]
    labels[hard != 255] = hard[hard != 255]
    ys, xs = np.nonzero(outer)
    y0, y1, x0, x1 = max(0, ys.min() - 1), min(rh, ys.max() + 2), max(0, xs.min() - 1), min(rw, xs.max() + 2)
    crop = image[y0:y1, x0:x1]
    crop = np.ascontiguousarray(crop[..., ::-1]) if space == "bgr" else cv2.cvtColor(crop, cv2.COLOR_RGB2LAB)
    sub = labels[y0:y1, x0:x1].copy()
    cancel.check()  # (no dither needed: every undecided pixel is within ``2 * band`` of a fixed one)
    try:
        cv2.grabCut(crop, sub, None, bgd.copy(), fgd.copy(), 1, cv2.GC_EVAL_FREEZE_MODEL)
    except cv2.error:
        return up
    refined = fg.copy()
    refined[y0:y1, x0:x1] = (sub & 1).astype(bool)
    return signed_distance(refined) if refined.any() else up


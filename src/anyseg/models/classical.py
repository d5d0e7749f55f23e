"""The ``classical`` engine: promptable segmentation with OpenCV GrabCut, no weights.

The offline default and a measured baseline (``docs/RESULTS.md``). :meth:`~ClassicalPredictor.embed`
downscales the image to the *working resolution* (longest side <= ``max_side``) and precomputes
BGR and CIE Lab copies, GrabCut's neighbour-contrast weights ``1 - exp(-beta |dI|^2)`` of a
smoothed copy, and a geodesic cost image (``contrast^2 + 1/L`` per pixel) for the clicks.
:meth:`~ClassicalPredictor.predict` turns the prompt into a GrabCut label map, runs three
candidates, scores them and returns the best (all three, sorted, with ``multimask=True``).

Prompts:

* box: outside = definite background, inside = probable foreground (what ``GC_INIT_WITH_RECT``
  does).
* clicks: a disc of definite foreground/background around each positive/negative click; the
  geodesic neighbourhood of positive clicks starts as probable foreground (the clicked region
  up to its edges), the rest as probable background. After GrabCut, the parts of the mask that
  are geodesically closer, travelling inside the mask, to a negative click than to any positive
  one are removed: this is what lets a negative click cut a same-coloured region away.
* ``mask_logits`` (> 0 = foreground, any size: the ``logits`` this engine returned) or ``mask``
  (``(H, W)`` bool) initialise the probable foreground/background (``GC_INIT_WITH_MASK``); a
  box's outside stays definite background and clicks stay definite.
* text alone raises :class:`PromptError`; text next to another prompt is ignored.

Candidates (``Masks.data["variant"]``): ``"grabcut"``, standard GrabCut on RGB; ``"pruned"``,
GrabCut on RGB whose first two iterations drop the foreground colour-model components that
overlap a background component (Bhattacharyya coefficient > 0.5), which counters GrabCut's
typical box failure (background colours enclosed by the box, learnt by the foreground model at
initialisation and never given back); ``"pruned-lab"``, the same in CIE Lab.

Score (in [0, 1]) = separation x contrast x tightness: *separation* is the mean posterior, under
the final GMMs, of the label each undecided pixel got; *contrast* is the mean GrabCut edge weight
across the mask boundary (1 = it follows strong edges); *tightness* is (fraction of the prompt
box's rows the mask crosses) x (fraction of its columns), 1 without a box.

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

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from anyseg import cancel
from anyseg.errors import InputError, PromptError
from anyseg.models.base import Predictor, check_embedding, check_image
from anyseg.types import Embedding, Masks, Prompt

__all__ = ["ClassicalPredictor", "degenerate_pixels", "dither_degenerate", "DEGENERATE_PIXELS",
           "DEGENERATE_WORK_PIXELS", "MAX_ITERATIONS", "MAX_WORK_PIXELS"]

#: default longest side of the working resolution (pixels)
DEFAULT_MAX_SIDE = 360
#: default number of GrabCut iterations per candidate
DEFAULT_ITERATIONS = 5
#: most GrabCut iterations per candidate
MAX_ITERATIONS = 20
#: most pixels of the working resolution, whatever ``max_side`` says (GrabCut's work grows with them)
MAX_WORK_PIXELS = 2_000_000
#: an exact colour on at least this many pixels of a GrabCut input is dithered (see the module docstring)
DEGENERATE_PIXELS = 4096
#: most working pixels of an image with such colours (the default working size, 360 x 360)
DEGENERATE_WORK_PIXELS = 360 * 360
_DITHER_SEED = 12345
_MIN_SAMPLES = 16  # GrabCut's k-means needs a few samples per colour model
_PRUNE_OVERLAP = 0.5  # Bhattacharyya coefficient above which a foreground component is dropped
_PRUNE_ITERS = 2
_POS_REACH = 0.5  # geodesic reach of the probable-foreground region around positive clicks
_POS_REACH_ALONE = 5.0  # the same for clicks without a box or a mask: the first guess
_LOGIT_CLIP = 20.0
_CONVERGED = 1e-3  # stop iterating when fewer than this fraction of the pixels changed
_CLICK_RADIUS = 1 / 120  # click-disc radius, as a fraction of the longest side
_REFINE_MAX_PIXELS = 2_000_000  # the boundary refinement runs at full size up to this many pixels
_REFINE_BAND = 3  # it may move the boundary by this many working-resolution pixels


@dataclass(frozen=True)
class _Variant:
    name: str
    space: str  # "bgr" or "lab"
    prune_iters: int


_VARIANTS = (_Variant("grabcut", "bgr", 0), _Variant("pruned", "bgr", _PRUNE_ITERS), _Variant("pruned-lab", "lab", _PRUNE_ITERS))


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
        """Masks for one prompt at the original size: 1, or 3 candidates sorted by score."""
        check_embedding(self, embedding)
        feats = embedding.features
        if not isinstance(feats, dict) or "bgr" not in feats:
            raise InputError("this embedding has no classical-engine features; embed the image with ClassicalPredictor")
        if not isinstance(prompt, Prompt):
            raise PromptError(f"expected a Prompt; got {type(prompt).__name__}")
        if prompt.text is not None and all(v is None for v in (prompt.points, prompt.box, prompt.mask, prompt.mask_logits)):
            raise PromptError(f"the classical engine does not understand text prompts ({prompt.text!r}); give points, a box or a mask")
        prompt.check_within(embedding.original_size)
        big_h, big_w = embedding.original_size
        h, w = embedding.input_size
        labels, box, pts = _labels(feats, prompt, (big_h, big_w), (h, w))
        pos, neg = (pts[prompt.labels == 1], pts[prompt.labels == 0]) if len(pts) else (pts, pts)

        cands = []
        for variant in _VARIANTS:
            cancel.check()
            work = feats[variant.space]
            mask, bgd, fgd = _grabcut(work, labels, self.iterations, variant.prune_iters)
            fg = (mask & 1).astype(bool)
            if not fg.any():  # GrabCut removed everything: fall back to the prompt's own region
                fg = (labels & 1).astype(bool)
            if len(neg):
                fg = _split(feats["geo_cost"], fg, pos, neg)
            score = _separation(work, labels, fg, bgd, fgd) * _contrast(feats, fg) * _tightness(fg, box)
            cands.append((float(score), variant, fg, bgd, fgd))
        cands.sort(key=lambda c: -c[0])  # stable: ties keep the variant order
        cands = cands if multimask else cands[:1]
        logits = np.stack([_signed_distance(c[2]) for c in cands])
        masks = []
        for (_, variant, fg, bgd, fgd), logit in zip(cands, logits):
            if (h, w) == (big_h, big_w):
                masks.append(fg)
                continue
            if "refine_rgb" in feats:
                logit = _refine(feats["refine_rgb"], variant.space, logit, bgd, fgd, prompt, (big_h, big_w), (h, w))
            up = cv2.resize(logit, (big_w, big_h), interpolation=cv2.INTER_LINEAR) > 0
            masks.append(_within_box(up, prompt.box))
        return Masks(
            masks=np.stack(masks),
            scores=np.array([c[0] for c in cands], np.float32),
            logits=logits,
            data={"variant": np.array([c[1].name for c in cands])},
        )


# -- prompts to GrabCut labels ------------------------------------------------------------
def _hard(prompt: Prompt, big: tuple[int, int], small: tuple[int, int]
          ) -> tuple[np.ndarray, tuple[int, int, int, int] | None, np.ndarray]:
    """Hard constraints of a prompt at size ``small``: a label map (GC_BGD, GC_FGD or 255 = free),
    the box there and the click pixels ``(K, 2)`` XY."""
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
    radius = max(2, round(max(h, w) * _CLICK_RADIUS))
    if prompt.points is not None:
        pts = np.stack([np.clip(np.floor(prompt.points[:, 0] * sx), 0, w - 1),
                        np.clip(np.floor(prompt.points[:, 1] * sy), 0, h - 1)], axis=1).astype(int)
        for (x, y), lab in zip(pts, prompt.labels):
            cv2.circle(hard, (int(x), int(y)), radius, int(cv2.GC_FGD if lab == 1 else cv2.GC_BGD), -1)
        for x, y in pts[prompt.labels == 1]:  # a positive click always wins over a nearby negative disc
            hard[y, x] = cv2.GC_FGD
    return hard, box, pts


def _labels(feats: dict[str, Any], prompt: Prompt, big: tuple[int, int], small: tuple[int, int]
            ) -> tuple[np.ndarray, tuple[int, int, int, int] | None, np.ndarray]:
    """The GrabCut label map at working resolution, the box there (if any) and the clicks."""
    h, w = small
    hard, box, pts = _hard(prompt, big, small)
    labels = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    prior = None
    if prompt.mask_logits is not None:
        prior = cv2.resize(prompt.mask_logits.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0
    elif prompt.mask is not None:
        prior = cv2.resize(prompt.mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0.5
    if prior is not None:
        labels[prior] = cv2.GC_PR_FGD
    elif box is not None:
        labels[box[1]:box[3], box[0]:box[2]] = cv2.GC_PR_FGD
    if len(pts):
        pos = pts[prompt.labels == 1]
        if len(pos):  # the clicked regions start as probable foreground
            reach = _POS_REACH if prior is not None or box is not None else _POS_REACH_ALONE
            labels[_geodesic(feats["geo_cost"], pos) < reach] = cv2.GC_PR_FGD
    free = hard == 255
    labels[~free] = hard[~free]
    return labels, box, pts


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
        cv2.circle(inside.view(np.uint8), (int(x), int(y)), max(2, round(max(fg.shape) * _CLICK_RADIUS)) + 1, 1, -1)
    c = np.where(inside, cost, np.inf).astype(np.float32)
    d_neg = _geodesic(c, neg)
    if not len(pos):  # away from the mask's own boundary, whose edges cost a lot
        interior = cv2.distanceTransform(fg.astype(np.uint8), cv2.DIST_L2, 3) >= 4
        reach = np.where((interior if interior.any() else fg) & np.isfinite(d_neg), d_neg, -1.0)
        if reach.max() < 0:
            return fg
        y, x = np.unravel_index(int(np.argmax(reach)), reach.shape)
        pos = np.array([[x, y]])
    return fg & ~(d_neg < _geodesic(c, pos))


# -- GrabCut and its helpers ---------------------------------------------------------------
def degenerate_pixels(image: np.ndarray, count: int = DEGENERATE_PIXELS) -> np.ndarray:
    """``(H, W)`` bool: the pixels of ``(H, W, 3)`` uint8 ``image`` whose exact colour is on at
    least ``count`` pixels: one-colour areas large enough to make GrabCut's cut slow (see the
    module docstring)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 image; got {image.dtype} {image.shape}")
    flat = image.reshape(-1, 3).astype(np.int32)
    key = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    popular = counts >= max(1, int(count))
    return popular[inverse.reshape(-1)].reshape(image.shape[:2])


def dither_degenerate(image: np.ndarray) -> tuple[np.ndarray, int]:
    """``(image, n)``: ``image`` with a deterministic +-1 dither per channel on its
    :func:`degenerate_pixels` (clipped to 0..255; the image itself when there are none), and
    how many pixels that is. The guard every GrabCut input of the classical engines goes through."""
    where = degenerate_pixels(image)
    n = int(where.sum())
    if n == 0:
        return image, 0
    noise = np.random.default_rng(_DITHER_SEED).integers(-1, 2, size=image.shape, dtype=np.int16)
    out = image.astype(np.int16)
    out[where] += noise[where]
    return np.clip(out, 0, 255).astype(np.uint8), n


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _grabcut(work: np.ndarray, labels: np.ndarray, iterations: int, prune_iters: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run GrabCut on a label map; returns the final labels and the (1, 65) GMMs.

    Deterministic (fixed OpenCV RNG seed). Stops early, keeping the labels so far, when one
    side has too few pixels to fit a colour model or OpenCV refuses the input.
    """
    cv2.setRNGSeed(12345)
    mask = labels.copy()
    if (mask & 1).sum() >= mask.size - _MIN_SAMPLES:  # no background to learn from: use the image border
        border = np.ones(mask.shape, bool)
        border[1:-1, 1:-1] = False
        mask[border & (mask == cv2.GC_PR_FGD)] = cv2.GC_PR_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    prev = None
    for it in range(iterations):
        fg = (mask & 1).astype(bool)
        n_fg = int(fg.sum())
        if n_fg < _MIN_SAMPLES or mask.size - n_fg < _MIN_SAMPLES:
            break
        if prev is not None and it > prune_iters and int((fg != prev).sum()) <= _CONVERGED * mask.size:
            break  # converged
        prev = fg
        cancel.check()  # one cut per step: a cancelled job stops here
        try:
            if it < prune_iters:
                cv2.grabCut(work, mask.copy(), None, bgd, fgd, 0, cv2.GC_INIT_WITH_MASK)
                _prune(bgd, fgd)
                cv2.grabCut(work, mask, None, bgd, fgd, 1, cv2.GC_EVAL_FREEZE_MODEL)
            else:
                cv2.grabCut(work, mask, None, bgd, fgd, 1, cv2.GC_INIT_WITH_MASK if it == 0 else cv2.GC_EVAL)
        except cv2.error:
            break
    return mask, bgd, fgd


def _refine(image: np.ndarray, space: str, logit: np.ndarray, bgd: np.ndarray, fgd: np.ndarray,
            prompt: Prompt, big: tuple[int, int], small: tuple[int, int]) -> np.ndarray:
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
    hard = _hard(prompt, big, (rh, rw))[0]
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
    return _signed_distance(refined) if refined.any() else up


def _unpack(model: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's GrabCut GMM layout: 5 weights, 5x3 means, 5x3x3 covariances."""
    m = model.reshape(-1)
    return m[:5], m[5:20].reshape(5, 3), m[20:65].reshape(5, 3, 3)


def _prune(bgd: np.ndarray, fgd: np.ndarray) -> None:
    """Zero the weights of foreground components that overlap a background component."""
    wb, mb, cb = _unpack(bgd)
    wf, mf, cf = _unpack(fgd)
    eye = np.eye(3) * 1e-3
    overlap = np.zeros(5)
    for k in np.flatnonzero(wf > 0):
        for j in np.flatnonzero(wb > 0):
            s1, s2 = cf[k] + eye, cb[j] + eye
            s = (s1 + s2) / 2
            d = mf[k] - mb[j]
            dist = d @ np.linalg.solve(s, d) / 8 + 0.5 * np.log(np.linalg.det(s) / np.sqrt(max(np.linalg.det(s1) * np.linalg.det(s2), 1e-300)))
            overlap[k] = max(overlap[k], float(np.exp(-dist)))
    keep = (wf > 0) & (overlap <= _PRUNE_OVERLAP)
    if not keep.any():
        return
    fgd[0, :5] = np.where(keep, wf, 0.0) / wf[keep].sum()


def _loglik(model: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """Log density of ``(n, 3)`` colours under a GrabCut GMM."""
    weights, means, covs = _unpack(model)
    terms = []
    for k in np.flatnonzero(weights > 0):
        cov = covs[k] + np.eye(3) * 1e-2
        d = pix - means[k]
        q = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
        terms.append(np.log(weights[k]) - 0.5 * (q + np.log(np.linalg.det(cov)) + 3 * np.log(2 * np.pi)))
    if not terms:
        return np.full(len(pix), -np.inf)
    t = np.stack(terms)
    top = t.max(0)
    return top + np.log(np.exp(t - top).sum(0))


def _separation(work: np.ndarray, labels: np.ndarray, fg: np.ndarray, bgd: np.ndarray, fgd: np.ndarray) -> float:
    """Mean posterior of the label each undecided pixel got, under the final GMMs."""
    free = (labels == cv2.GC_PR_FGD) | (labels == cv2.GC_PR_BGD)
    if not free.any() or not bgd[0, :5].any() or not fgd[0, :5].any():
        return 0.0
    pix = work[free].astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        llr = np.nan_to_num(_loglik(fgd, pix) - _loglik(bgd, pix), nan=0.0, posinf=50.0, neginf=-50.0)
        p_fg = 1.0 / (1.0 + np.exp(-np.clip(llr, -50, 50)))
    return float(np.where(fg[free], p_fg, 1.0 - p_fg).mean())


def _contrast(feats: dict[str, Any], fg: np.ndarray) -> float:
    """Mean GrabCut edge weight across the mask boundary (0 when there is no boundary)."""
    cut_h, cut_v = fg[:, 1:] != fg[:, :-1], fg[1:] != fg[:-1]
    n = int(cut_h.sum() + cut_v.sum())
    if n == 0:
        return 0.0
    return float((feats["contrast_h"][cut_h].sum() + feats["contrast_v"][cut_v].sum()) / n)


def _tightness(fg: np.ndarray, box: tuple[int, int, int, int] | None) -> float:
    """Box-tightness prior: (fraction of the box's rows) x (fraction of its columns) the mask crosses.

    A box prompt is expected to be roughly tight, so every row and column of it should
    cross the object; 1 without a box.
    """
    if box is None:
        return 1.0
    inner = fg[box[1]:box[3], box[0]:box[2]]
    return float(inner.any(1).mean() * inner.any(0).mean())


def _geodesic(cost: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Geodesic distance from seed pixels ``(K, 2)`` XY over a cost image (inf without seeds)."""
    if len(seeds) == 0:
        return np.full(cost.shape, np.inf, np.float32)
    from skimage.graph import MCP_Geometric

    dist, _ = MCP_Geometric(cost.astype(np.float64), fully_connected=True).find_costs([(int(y), int(x)) for x, y in seeds])
    return dist.astype(np.float32)


def _signed_distance(fg: np.ndarray) -> np.ndarray:
    """Logits: distance to the boundary, positive inside, negative outside, in +-[0.5, 20]."""
    m = fg.astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 3) if m.any() else np.zeros(m.shape, np.float32)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3) if not m.all() else np.zeros(m.shape, np.float32)
    out = np.where(fg, inside - 0.5, 0.5 - outside)
    if not m.any():
        out[:] = -_LOGIT_CLIP
    elif m.all():
        out[:] = _LOGIT_CLIP
    return np.clip(out, -_LOGIT_CLIP, _LOGIT_CLIP).astype(np.float32)

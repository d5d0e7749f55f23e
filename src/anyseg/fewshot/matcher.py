"""Matcher (Liu et al., ICLR 2024): DINO patch matching, a robust prompt sampler, SAM masks, instance-level matching.

Training-free one-/few-shot segmentation from two foundation models: a dense feature model
(DINOv2 / DINOv3, :mod:`anyseg.models.dino`) says *where* the reference's part is in the new
image, a promptable SAM-family model draws *its outline*. Per target image:

1. **Correspondence** (:func:`bidirectional_match`): cosine similarities between every
   reference patch and every target patch; forward bipartite matching (Hungarian) of the
   reference's masked patches onto target patches, backward matching of those target patches
   onto all reference patches; a pair is kept when its backward match lands inside the
   reference mask (all forward pairs are kept when none does, as the reference code does). With
   more than 40 pairs the better-matched half is kept.
2. **Robust prompt sampler** (:func:`sample_prompts`): the matched target points are clustered
   (k-means++), and point subsets of 1..6 points are drawn at three levels: *part* (within one
   cluster), *instance* (across all matched points) and *global* (the cluster centres).
3. **Masks**: each subset is one multi-point SAM prompt (multimask); candidates below SAM's
   predicted IoU (0.85) or stability (0.90) are dropped and the rest de-duplicated by mask NMS.
4. **Instance-level matching** (:func:`mask_metrics`): per proposal the earth mover's distance
   between the reference-mask features and the proposal's features (cost ``(1 - cos) / 2``,
   uniform weights: an exact assignment here), *purity* (matched points inside / grid cells of the
   proposal) and *coverage* (matched points inside / all matched points); proposals are
   filtered on them and ranked by ``alpha * (1 - emd) + beta * purity * coverage ** exp``.
5. **Controllable merging**: ``instances="one"`` merges the top proposals (the reference's
   score filter: ``1 - score < 0.33`` and within 0.1 of the best after normalisation, at most
   9) into one mask; ``instances="all"`` returns them as instances after mask NMS.

Scores are the mean cosine similarity that the optimal transport between the reference mask's
features and the returned mask's features achieves (``1 - 2 * emd``, clipped to ``[0, 1]``): a
mask that looks like nothing in the references scores low. Several references are fused by
concatenating their patches (matching and EMD see them all).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import numpy as np

from anyseg.errors import InputError, ModelError
from anyseg.fewshot.base import Reference, check_instances, check_references, empty_masks
from anyseg.masks.amg import stability_score
from anyseg.masks.boxes import mask_nms
from anyseg.models.base import check_image
from anyseg.models.features import FeatureExtractor, PatchFeatures
from anyseg.types import Masks, Prompt

__all__ = ["MatcherMethod", "MatcherOptions", "MatcherFit", "Matches", "bidirectional_match", "sample_prompts",
           "mask_metrics", "transport_emd", "merge_selection", "MATCHING"]

MATCHING = ("bipartite", "nearest")


@dataclass(frozen=True)
class MatcherOptions:
    """Matcher's settings (the defaults are the reference code's COCO-20i one-shot command where it has one).

    Attributes:
        matching: ``bipartite`` (the paper's Hungarian matching) or ``nearest`` (mutual
            nearest neighbours: cheaper on large grids).
        mask_threshold: fraction of a patch the reference mask must cover for the patch to count.
        num_centers: k-means clusters of the matched points (part-level prompts).
        sample_range: sizes of the point subsets, smallest and largest.
        samples: random subsets drawn per size at the instance level (part: per cluster, a
            quarter of it; global: half of it); small sets are enumerated instead.
        max_prompts: SAM prompts per image at most.
        multimask: SAM's three candidates per prompt (else one).
        iou_thresh, stability_thresh: SAM's predicted IoU and stability below which a
            candidate is dropped (the best candidate is kept when none passes).
        proposal_nms: mask IoU above which a lower-scored proposal is a duplicate.
        max_proposals: proposals kept for instance-level matching.
        emd_filter, purity_filter, coverage_filter: drop proposals below these (each
            threshold capped at the best proposal's value, so one always survives).
        alpha, beta, exp: the ranking ``alpha * (1 - emd) + beta * purity * coverage ** exp``.
        merge_score, merge_score_norm, num_merging: the merging filter (see the module docstring).
        instance_nms, max_instances: ``instances="all"``: mask NMS and the number returned.
        emd_samples: patches per side of the EMD at most (evenly spaced subsample).
        seed: the sampler's random seed (results are deterministic).
    """

    matching: str = "bipartite"
    mask_threshold: float = 0.5
    num_centers: int = 8
    sample_range: tuple[int, int] = (1, 6)
    samples: int = 16
    max_prompts: int = 128
    multimask: bool = True
    iou_thresh: float = 0.85
    stability_thresh: float = 0.90
    proposal_nms: float = 0.65
    max_proposals: int = 64
    emd_filter: float = 0.0
    purity_filter: float = 0.02
    coverage_filter: float = 0.0
    alpha: float = 1.0
    beta: float = 0.0
    exp: float = 0.0
    merge_score: float = 0.33
    merge_score_norm: float = 0.1
    num_merging: int = 9
    instance_nms: float = 0.5
    max_instances: int = 20
    emd_samples: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.matching not in MATCHING:
            raise InputError(f"matching must be one of {', '.join(MATCHING)}; got {self.matching!r}")
        try:
            lo, hi = (int(v) for v in self.sample_range)
        except (TypeError, ValueError):
            raise InputError(f"sample_range must be two whole numbers (smallest, largest); got {self.sample_range!r}") from None
        if not 1 <= lo <= hi <= 16:
            raise InputError(f"sample_range must satisfy 1 <= smallest <= largest <= 16; got {lo}, {hi}")
        object.__setattr__(self, "sample_range", (lo, hi))
        for name in ("num_centers", "samples", "max_prompts", "max_proposals", "num_merging", "max_instances",
                     "emd_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{name} must be a whole number >= 1; got {value!r}")
        for name in ("mask_threshold", "iou_thresh", "stability_thresh", "proposal_nms", "emd_filter", "purity_filter",
                     "coverage_filter", "merge_score", "merge_score_norm", "instance_nms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be a number in [0, 1]; got {value!r}")
        for name in ("alpha", "beta", "exp"):
            if not isinstance(getattr(self, name), (int, float)) or not math.isfinite(getattr(self, name)):
                raise InputError(f"{name} must be a finite number; got {getattr(self, name)!r}")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "MatcherOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown matcher option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return replace(cls(), **options)


# -- 1. correspondence -------------------------------------------------------------------------
@dataclass(frozen=True)
class Matches:
    """Forward pairs ``ref[i] -> tgt[i]`` with their cosine ``sim[i]``, ``back[i]`` the reference
    patch that ``tgt[i]`` matches backward (-1: none), and ``consistent[i]``: it lies in the mask."""

    ref: np.ndarray
    tgt: np.ndarray
    sim: np.ndarray
    back: np.ndarray
    consistent: np.ndarray


def _assign(sim: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows and their matched columns: Hungarian (maximum total similarity) or each row's best column."""
    if sim.shape[0] == 0 or sim.shape[1] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if mode == "nearest":
        return np.arange(sim.shape[0]), np.argmax(sim, axis=1)
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(sim, maximize=True)
    return rows.astype(np.int64), cols.astype(np.int64)


def bidirectional_match(sim: np.ndarray, inside: np.ndarray, mode: str = "bipartite") -> Matches:
    """Matcher's bidirectional matching on a ``(N_ref, N_tgt)`` similarity matrix; ``inside``:
    ``(N_ref,)`` which reference patches the reference mask covers."""
    sim = np.asarray(sim, dtype=np.float64)
    inside = np.asarray(inside, dtype=bool)
    rows = np.flatnonzero(inside)
    r, tgt = _assign(sim[rows], mode)
    ref = rows[r]
    back = np.full(len(tgt), -1, np.int64)
    br, bc = _assign(sim.T[tgt], mode)  # each matched target patch onto every reference patch
    back[br] = bc
    consistent = np.zeros(len(tgt), bool)
    consistent[back >= 0] = inside[back[back >= 0]]
    return Matches(ref, tgt, sim[ref, tgt].astype(np.float32), back, consistent)


def matched_cells(matches: Matches) -> np.ndarray:
    """The target cells the prompts come from: the consistent pairs (all pairs when none is),
    the better-matched half when there are more than 40, each cell once."""
    keep = matches.consistent if matches.consistent.any() else np.ones(len(matches.tgt), bool)
    tgt, sim = matches.tgt[keep], matches.sim[keep]
    if len(sim) > 40:
        order = np.argsort(-sim, kind="stable")[: len(sim) // 2]
        tgt = tgt[order]
    return np.unique(tgt)


# -- 2. robust prompt sampler --------------------------------------------------------------------
def _kmeans(points: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ of ``(P, 2)`` points: labels ``(P,)`` and each cluster's member nearest its mean."""
    import cv2

    if k <= 1 or len(points) <= 1:
        labels = np.zeros(len(points), np.int64)
    else:
        cv2.setRNGSeed(int(seed))
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 0.5)
        _, lab, _ = cv2.kmeans(points.astype(np.float32), k, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
        labels = lab.reshape(-1).astype(np.int64)
    centres = []
    for c in np.unique(labels):
        members = points[labels == c]
        centres.append(members[np.argmin(((members - members.mean(axis=0)) ** 2).sum(axis=1))])
    return labels, np.asarray(centres)


def _subsets(n: int, size: int, count: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Up to ``count`` distinct ``size``-subsets of ``range(n)``: all of them when there are few."""
    if size > n or count < 1:
        return []
    if math.comb(n, size) <= count:
        return list(itertools.combinations(range(n), size))
    found: dict[tuple[int, ...], None] = {}
    for _ in range(count * 3):
        found[tuple(sorted(rng.choice(n, size, replace=False).tolist()))] = None
        if len(found) >= count:
            break
    return list(found)


def sample_prompts(points: np.ndarray, opts: MatcherOptions, seed: int | None = None) -> list[np.ndarray]:
    """The robust prompt sampler: point subsets ``(k, 2)`` at the part, instance and global level,
    interleaved (so that ``max_prompts`` keeps some of each), without repeats."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(points) == 0:
        return []
    rng = np.random.default_rng(opts.seed if seed is None else seed)
    labels, centres = _kmeans(points, min(opts.num_centers, len(points)), opts.seed)
    lo, hi = opts.sample_range
    levels: list[list[np.ndarray]] = [[], [], []]
    for size in range(lo, hi + 1):
        for c in np.unique(labels):  # part level: within one cluster
            members = points[labels == c]
            levels[0] += [members[list(s)] for s in _subsets(len(members), size, max(1, opts.samples // 4), rng)]
        levels[1] += [points[list(s)] for s in _subsets(len(points), size, opts.samples, rng)]  # instance level
        levels[2] += [centres[list(s)] for s in _subsets(len(centres), size, max(1, opts.samples // 2), rng)]
    if len(centres) > hi:
        levels[2].append(centres)  # every centre at once: the whole extent
    out: list[np.ndarray] = []
    seen: set[bytes] = set()
    for group in itertools.zip_longest(*levels):
        for subset in group:
            if subset is None:
                continue
            key = np.ascontiguousarray(subset[np.lexsort(subset.T[::-1])]).tobytes()
            if key not in seen:
                seen.add(key)
                out.append(subset)
    return out[: opts.max_prompts]


# -- 4. instance-level matching ------------------------------------------------------------------
def transport_emd(cost: np.ndarray) -> float:
    """Earth mover's distance between uniform weights on the rows and the columns of ``cost``.

    The smaller side is repeated evenly to the larger side's length ``L`` (each item ``L / n``
    times, rounded), then the ``L x L`` assignment problem is solved exactly (Hungarian): the
    EMD itself when the sides are equal or one divides the other, else within the rounding of
    the weights (at most one copy in ``L / n``).
    """
    from scipy.optimize import linear_sum_assignment

    cost = np.asarray(cost, dtype=np.float64)
    n, m = cost.shape
    if n == 0 or m == 0:
        return 1.0
    size = max(n, m)
    rows, cols = (np.arange(size) * n) // size, (np.arange(size) * m) // size
    square = cost[rows][:, cols]
    r, c = linear_sum_assignment(square)
    return float(square[r, c].mean())


def _even(rows: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` rows, evenly spaced (deterministic)."""
    if len(rows) <= k:
        return rows
    return rows[np.linspace(0, len(rows) - 1, k).round().astype(np.int64)]


def mask_metrics(masks: np.ndarray, target: PatchFeatures, target_feats: np.ndarray, ref_feats: np.ndarray,
                 points: np.ndarray, emd_samples: int = 256) -> dict[str, np.ndarray]:
    """Per ``(N, H, W)`` mask: ``emd`` (reference-mask features vs the mask's patch features),
    ``purity`` (matched points inside / grid cells it touches) and ``coverage`` (matched
    points inside / all matched points), each ``(N,)`` float32."""
    masks = np.asarray(masks, dtype=bool)
    h, w = target.original_size
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    xs = np.clip(pts[:, 0].astype(np.int64), 0, w - 1)
    ys = np.clip(pts[:, 1].astype(np.int64), 0, h - 1)
    ref = _even(ref_feats, emd_samples)
    out = {k: np.zeros(len(masks), np.float32) for k in ("emd", "purity", "coverage")}
    for i, mask in enumerate(masks):
        frac = target.pool_mask(mask).reshape(-1)
        cells = np.flatnonzero(frac >= 0.5)
        if cells.size == 0 and frac.max() > 0:
            cells = np.flatnonzero(frac == frac.max())
        feats = _even(target_feats[cells], emd_samples)
        out["emd"][i] = transport_emd((1.0 - ref @ feats.T) / 2.0) if len(feats) else 1.0
        inside = int(mask[ys, xs].sum()) if len(pts) else 0
        out["purity"][i] = min(1.0, inside / max(int((frac > 0).sum()), 1))
        out["coverage"][i] = inside / max(len(pts), 1)
    return out


def similarity_score(emd: np.ndarray) -> np.ndarray:
    """The returned score: the mean cosine the optimal transport achieves, ``1 - 2 * emd``, in ``[0, 1]``."""
    return np.clip(1.0 - 2.0 * np.asarray(emd, dtype=np.float64), 0.0, 1.0).astype(np.float32)


def merge_selection(rank: np.ndarray, opts: MatcherOptions, limit: int) -> np.ndarray:
    """Indices of the proposals to merge (or return), best first: the reference's score filter
    (``1 - rank < merge_score``, the best always, and within ``merge_score_norm`` of the best
    after normalising the distances), at most ``limit``."""
    dist = 1.0 - np.asarray(rank, dtype=np.float64)
    order = np.argsort(dist, kind="stable")
    d = dist[order]
    norm = (d - d.min()) / (d.max() + 1e-6)
    keep = (d < opts.merge_score) & (norm < opts.merge_score_norm)
    keep[0] = True
    return order[keep][:limit]


def _filter_metrics(metrics: dict[str, np.ndarray], opts: MatcherOptions) -> np.ndarray:
    """Indices surviving the emd / purity / coverage filters (each capped at the best value)."""
    keep = np.arange(len(metrics["emd"]))
    score_of = {"emd": 1.0 - metrics["emd"], "purity": metrics["purity"], "coverage": metrics["coverage"]}
    for name, thresh in (("coverage", opts.coverage_filter), ("emd", opts.emd_filter), ("purity", opts.purity_filter)):
        if thresh > 0 and len(keep):
            values = score_of[name][keep]
            keep = keep[values >= min(thresh, float(values.max()))]
    return keep


# -- the fitted state and the method ---------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class MatcherFit:
    """What the references contribute, computed once by :meth:`MatcherMethod.fit`.

    ``feats``: ``(N, C)`` L2-normalised patch features of every reference (concatenated);
    ``inside``: ``(N,)`` the patches their masks cover; ``emd_ref``: the masked features the
    EMD compares proposals with; ``grids``: each reference's patch grid; ``model_id``: the
    feature model that computed them.
    """

    feats: np.ndarray
    inside: np.ndarray
    emd_ref: np.ndarray
    grids: tuple[tuple[int, int], ...]
    names: tuple[str, ...]
    model_id: str


class MatcherMethod:
    """Matcher with a DINO feature model and a SAM-family promptable model (see the module docstring)."""

    name = "matcher"

    def __init__(self, predictor: Any, features: FeatureExtractor, options: MatcherOptions | None = None) -> None:
        self.predictor = predictor
        self.features = features
        self.options = options or MatcherOptions()

    @classmethod
    def from_options(cls, model: Any = None, features: Any = None, device: str | None = None,
                     allow_download: bool = True, **options: Any) -> "MatcherMethod":
        """Build from a SAM-family ``model`` (registry name, folder, ``auto`` or a loaded predictor)
        and a ``features`` model (default: a DINO model present locally, else ``dinov2-small``).

        A promptable model that resolves to the classical engine (no SAM weights present) is a
        one-line :class:`~anyseg.errors.ModelError`: Matcher's masks are SAM's.
        """
        opts = MatcherOptions.from_options(options)  # bad options fail before anything loads
        if device is not None:
            from anyseg.models.device import check_device

            device = check_device(device)
        predictor = _load_sam(model, device, allow_download)
        return cls(predictor, _load_dino(features, device, allow_download), opts)

    # -- fit ----------------------------------------------------------------------------
    def fit(self, refs: Sequence[Reference]) -> MatcherFit:
        """Reference patch features (one feature pass per reference) and masks pooled on their grids."""
        refs = check_references(refs)
        feats, inside, grids = [], [], []
        for ref in refs:
            pf = self.features.patch_features(ref.image)
            frac = pf.pool_mask(ref.mask).reshape(-1)
            cells = frac >= self.options.mask_threshold
            if not cells.any():  # a mask smaller than a patch: the patches it covers most
                cells = frac >= frac.max() - 1e-6
            feats.append(pf.normalized())
            inside.append(cells)
            grids.append(pf.grid)
        all_feats = np.concatenate(feats).astype(np.float32)
        all_inside = np.concatenate(inside)
        return MatcherFit(all_feats, all_inside, _even(all_feats[all_inside], self.options.emd_samples),
                          tuple(grids), tuple(r.name for r in refs), self.features.model_id)

    # -- predict ------------------------------------------------------------------------
    def predict(self, fitted: MatcherFit, image: np.ndarray, instances: str = "one") -> Masks:
        """Masks of what the references show in ``image``; see the module docstring for the steps."""
        if not isinstance(fitted, MatcherFit):
            raise InputError(f"matcher.predict needs the state MatcherMethod.fit returned; got {type(fitted).__name__}")
        if fitted.model_id != self.features.model_id:
            raise InputError(f"the references were fitted with {fitted.model_id!r}, not {self.features.model_id!r}; "
                             "fit them again with this feature model")
        instances = check_instances(instances)
        image = check_image(image)
        size = image.shape[:2]
        target = self.features.patch_features(image)
        tfeats = target.normalized()
        matches = bidirectional_match(fitted.feats @ tfeats.T, fitted.inside, self.options.matching)
        points = target.cell_centers(matched_cells(matches))
        proposals = self.proposals(image, sample_prompts(points, self.options))
        if len(proposals) == 0:
            return empty_masks(size)
        metrics = mask_metrics(proposals.masks, target, tfeats, fitted.emd_ref, points, self.options.emd_samples)
        keep = _filter_metrics(metrics, self.options)
        proposals = proposals[keep]
        metrics = {k: v[keep] for k, v in metrics.items()}
        o = self.options
        rank = o.alpha * (1.0 - metrics["emd"]) + o.beta * metrics["purity"] * metrics["coverage"] ** o.exp
        if instances == "one":
            chosen = merge_selection(rank, o, o.num_merging)
            merged = proposals.masks[chosen].any(axis=0)[None]
            final = mask_metrics(merged, target, tfeats, fitted.emd_ref, points, o.emd_samples)
            return _result(merged, final, {"merged": np.array([len(chosen)], np.int64)})
        chosen = merge_selection(rank, o, max(o.max_instances * 4, o.max_instances))
        picked = {k: v[chosen] for k, v in metrics.items()}
        result = _result(proposals.masks[chosen], picked, {})
        return _drop_contained(mask_nms(result, o.instance_nms))[: o.max_instances]

    def proposals(self, image: np.ndarray, subsets: list[np.ndarray]) -> Masks:
        """SAM's masks for each point subset (multimask), filtered by predicted IoU and stability,
        de-duplicated by mask NMS; scores are SAM's predicted IoU."""
        if not subsets:
            return empty_masks(image.shape[:2])
        o = self.options
        embedding = self.predictor.embed(image)
        pool: Masks | None = None
        best: Masks | None = None
        for start in range(0, len(subsets), 32):
            prompts = [Prompt(points=s, labels=np.ones(len(s), np.int64)) for s in subsets[start:start + 32]]
            found = Masks.concatenate([_plain(m) for m in self.predictor.predict_batch(embedding, prompts,
                                                                                       multimask=o.multimask)])
            found = found[found.areas > 0]
            if len(found) == 0:
                continue
            quality = found.scores * found.data["stability"]
            top = int(np.argmax(quality))
            if best is None or quality[top] > float(best.scores[0] * best.data["stability"][0]):
                best = found[top]
            passing = found[(found.scores >= o.iou_thresh) & (found.data["stability"] >= o.stability_thresh)]
            merged = passing if pool is None else Masks.concatenate([pool, passing])
            pool = mask_nms(merged, o.proposal_nms)[: o.max_proposals] if len(merged) else pool
        if pool is None or len(pool) == 0:
            return best if best is not None else empty_masks(image.shape[:2])
        return pool

    def __repr__(self) -> str:
        return f"MatcherMethod(sam={getattr(self.predictor, 'name', '?')!r}, features={self.features.name!r})"


def _plain(masks: Masks) -> Masks:
    """SAM candidates with only masks, scores and a ``stability`` column (computed from the low-res logits)."""
    if masks.logits is not None and len(masks):
        stability = np.asarray(stability_score(masks.logits, 0.0, 1.0), np.float32)
    else:
        stability = np.ones(len(masks), np.float32)
    scores = np.clip(np.asarray(masks.scores, np.float32), 0.0, 1.0)
    return Masks(masks=masks.masks, scores=scores, data={"stability": stability})


def _result(masks: np.ndarray, metrics: dict[str, np.ndarray], extra: dict[str, np.ndarray]) -> Masks:
    data = {"emd": metrics["emd"].astype(np.float32), "purity": metrics["purity"].astype(np.float32),
            "coverage": metrics["coverage"].astype(np.float32), **extra}
    return Masks(masks=masks, scores=similarity_score(metrics["emd"]), data=data).sort_by("scores")


def _drop_contained(masks: Masks, within: float = 0.9) -> Masks:
    """Drop a mask lying (``within`` of its area) inside a higher-scored one: a part of a found instance."""
    keep: list[int] = []
    areas = masks.areas
    for i in range(len(masks)):
        inside = any((masks.masks[i] & masks.masks[j]).sum() >= within * max(int(areas[i]), 1) for j in keep)
        if not inside:
            keep.append(i)
    return masks[np.asarray(keep, np.int64)]


def _load_sam(model: Any, device: str | None, allow_download: bool) -> Any:
    """The promptable model: a loaded predictor as it is, else ``load_model``; never the classical engine."""
    from anyseg.models import load_model
    from anyseg.models.base import Promptable
    from anyseg.models.families import PROMPTABLE, find_family
    from anyseg.models.resolver import resolve

    hint = ("matcher draws its masks with a SAM-family model; pull one (`anyseg models pull sam-vit-base`) or "
            "give --model FOLDER, or use --method classical, which needs no weights")
    if isinstance(model, Promptable):
        family = find_family(model.family)
        if family is not None and family.baseline:
            raise ModelError(f"{model.name} is not a SAM-family model: {hint}")
        return model
    spec = resolve(model or "auto", PROMPTABLE, quiet=True)
    if spec.family_record.baseline:
        what = "no SAM-family model is present locally" if (model or "auto") == "auto" else f"{spec.name} is no SAM model"
        raise ModelError(f"{what}: {hint}")
    return load_model(model or spec.name, device=device, allow_download=allow_download, quiet=True)


def _load_dino(features: Any, device: str | None, allow_download: bool) -> FeatureExtractor:
    """The feature model: a loaded one as it is; ``None``: a DINO model present locally, else ``dinov2-small``."""
    from anyseg.models.dino import load_features
    from anyseg.models.families import FEATURES
    from anyseg.models.resolver import resolve

    if isinstance(features, FeatureExtractor):
        return features
    if features is None:
        try:
            features = resolve("auto", FEATURES, quiet=True).name
        except ModelError:
            features = "dinov2-small"
    return load_features(features, device=device, allow_download=allow_download)

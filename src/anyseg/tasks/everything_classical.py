"""Classical "segment everything": superpixels merged hierarchically into regions, no weights.

This is an honest, unsupervised stand-in for SAM's automatic mask generator. It knows only
colour and position, not objects: a region is a connected patch of similar colour, so a
textured or shaded object may be split and two touching objects of similar colour merged.

Method (``METHOD``), at a working resolution whose longer side is at most ``max_side``:

1. Gaussian blur (sigma 1) and conversion to CIELAB (L in 0..100, a/b about -128..127).
2. SLIC superpixels (scikit-image, about one per 400 working pixels, at most 400,
   compactness 10 in Lab units, connectivity enforced) on the Lab image.
3. A region adjacency graph over the regions (4-connectivity), merged greedily with
   :func:`skimage.graph.merge_hierarchical`, cheapest edge first, three times in a row, so
   the levels are nested (each coarser region is a union of finer ones). The edge weight is
   the Lab distance (Delta E 1976) of the two regions' mean colours, times
   ``sqrt(min(1, smaller_area / ref_area))``: a region much smaller than ``ref_area`` is
   absorbed by its most similar neighbour even if its colour differs. Levels
   (``LEVELS``: name -> Delta E threshold, ``ref_area`` as a fraction of the image):
   ``subpart`` (6, none), ``part`` (14, 0.2%), ``whole`` (26, 1%).
4. The label maps are upsampled to the full image size with nearest-neighbour sampling; the
   masks are dense ``(N, H, W)`` bool (about 100-250 regions for "all" on photographs).

:func:`classical_params` gives these settings for an image as a dict (the ``params`` of
``anyseg everything --model classical``'s run record).

Cost: about 0.2-0.5 s for a 480x640 image on one core (SLIC is the largest part), plus about
1 s for the first call's imports. :func:`anyseg.cancel.check` runs between the stages (blur,
SLIC, each merge level, the masks), so a cancelled job stops within one stage.

``scores`` are *edge contrast*, not a learned quality: with ``g`` the Lab colour gradient
magnitude (Sobel, after the blur), ``score = b / (b + i)`` where ``b`` is the mean of ``g``
on the region's boundary pixels (those with a 4-neighbour in another region; the image border
does not count) and ``i`` its mean on the region's other pixels. About 0.5 means the boundary
is no sharper than the region's inside (an arbitrary cut); near 1, a crisp boundary around a
flat region; a region with no boundary (the whole image) scores 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anyseg import cancel
from anyseg.errors import InputError
from anyseg.models.base import check_image
from anyseg.types import Masks

__all__ = ["generate_classical", "classical_params", "working_size", "METHOD", "LEVELS", "GRANULARITIES",
           "MAX_SIDE", "BLUR_SIGMA", "SLIC_COMPACTNESS", "PIXELS_PER_SUPERPIXEL", "MAX_SUPERPIXELS"]

#: the ``data["method"]`` value of every mask
METHOD = "classical:slic+rag-merge"
#: level name -> (Delta E merge threshold, reference area as a fraction of the image), fine to coarse
LEVELS: dict[str, tuple[float, float]] = {"subpart": (6.0, 0.0), "part": (14.0, 0.002), "whole": (26.0, 0.01)}
GRANULARITIES = ("whole", "part", "subpart", "all")
#: the default longer side of the working resolution
MAX_SIDE = 640
#: Gaussian blur before everything else (working pixels)
BLUR_SIGMA = 1.0
#: SLIC: compactness in Lab units, one superpixel per this many working pixels, at most this many
SLIC_COMPACTNESS = 10.0
PIXELS_PER_SUPERPIXEL = 400
MAX_SUPERPIXELS = 400
_SORT_KEYS = ("area", "score")


def working_size(height: int, width: int, max_side: int | None = MAX_SIDE) -> tuple[int, int]:
    """``(h, w)`` of the working resolution: the image scaled so its longer side is at most ``max_side``."""
    scale = 1.0 if max_side is None else min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _n_segments(h: int, w: int) -> int:
    return int(np.clip(h * w // PIXELS_PER_SUPERPIXEL, 1, MAX_SUPERPIXELS))


def classical_params(image_size: tuple[int, int], min_area: int = 0, granularity: str = "all",
                     max_side: int | None = MAX_SIDE) -> dict:
    """The settings :func:`generate_classical` uses for an ``(H, W)`` image, as a JSON-ready dict.

    What a run record should say about a classical run (none of SAM's parameters, which it
    does not use): ``engine``, ``method``, ``granularity``, ``min_area``, ``max_side``,
    ``working_size`` ``[h, w]``, ``blur_sigma``, ``color_space``, ``slic`` (``n_segments``
    requested, ``compactness`` in Lab units, ``enforce_connectivity``) and ``merge_levels``
    (per level, fine to coarse: ``delta_e`` threshold and ``ref_area_fraction``).
    """
    h, w = working_size(int(image_size[0]), int(image_size[1]), max_side)
    return {
        "engine": "classical", "method": METHOD, "granularity": granularity, "min_area": int(min_area),
        "max_side": max_side, "working_size": [h, w], "blur_sigma": BLUR_SIGMA, "color_space": "CIELAB",
        "slic": {"n_segments": _n_segments(h, w), "compactness": SLIC_COMPACTNESS, "enforce_connectivity": True},
        "merge_levels": {name: {"delta_e": t, "ref_area_fraction": r} for name, (t, r) in LEVELS.items()},
    }


def _region_stats(lab: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts ``(n,)``, Lab sums ``(n, 3)`` and adjacent label pairs ``(E, 2)`` (u < v)."""
    n = int(labels.max()) + 1
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    sums = np.stack([np.bincount(flat, lab[..., c].ravel(), minlength=n) for c in range(3)], axis=1)
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()]).astype(np.int64)
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()]).astype(np.int64)
    keep = a != b
    keys = np.unique(np.minimum(a[keep], b[keep]) * n + np.maximum(a[keep], b[keep]))
    return counts, sums, np.stack([keys // n, keys % n], axis=1)


def _merge(lab: np.ndarray, labels: np.ndarray, thresh: float, ref_area: float) -> np.ndarray:
    """One hierarchical merge of ``labels`` (contiguous from 0); returns contiguous labels."""
    from skimage import graph

    counts, sums, edges = _region_stats(lab, labels)
    if len(edges) == 0:
        return labels

    def weight(d: dict, e: dict) -> float:
        colour = float(np.linalg.norm(d["mean color"] - e["mean color"]))
        if ref_area <= 0:
            return colour
        return colour * min(1.0, min(d["pixel count"], e["pixel count"]) / ref_area) ** 0.5

    rag = graph.RAG()
    for i in range(len(counts)):
        rag.add_node(i, labels=[i], **{"pixel count": counts[i], "total color": sums[i], "mean color": sums[i] / counts[i]})
    nodes = rag.nodes
    for u, v in edges.tolist():
        rag.add_edge(u, v, weight=weight(nodes[u], nodes[v]))

    def merge_func(g: graph.RAG, src: int, dst: int) -> None:
        d, s = g.nodes[dst], g.nodes[src]
        d["total color"] = d["total color"] + s["total color"]
        d["pixel count"] = d["pixel count"] + s["pixel count"]
        d["mean color"] = d["total color"] / d["pixel count"]

    def weight_func(g: graph.RAG, src: int, dst: int, n: int) -> dict[str, float]:
        return {"weight": weight(g.nodes[dst], g.nodes[n])}

    return graph.merge_hierarchical(labels, rag, thresh=thresh, rag_copy=False, in_place_merge=True,
                                    merge_func=merge_func, weight_func=weight_func)


def _edge_contrast(grad: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-region ``b / (b + i)`` (see the module docstring), in [0, 1]."""
    n = int(labels.max()) + 1
    boundary = np.zeros(labels.shape, dtype=bool)
    dx, dy = labels[:, 1:] != labels[:, :-1], labels[1:, :] != labels[:-1, :]
    boundary[:, 1:] |= dx
    boundary[:, :-1] |= dx
    boundary[1:, :] |= dy
    boundary[:-1, :] |= dy
    flat, g, bd = labels.ravel(), grad.ravel(), boundary.ravel()
    b_sum = np.bincount(flat[bd], g[bd], minlength=n)
    b_cnt = np.bincount(flat[bd], minlength=n)
    i_sum = np.bincount(flat[~bd], g[~bd], minlength=n)
    i_cnt = np.bincount(flat[~bd], minlength=n)
    b = b_sum / np.maximum(b_cnt, 1)
    # a region that is all boundary (a thin sliver) is compared with the image's typical gradient
    i = np.where(i_cnt > 0, i_sum / np.maximum(i_cnt, 1), float(np.median(grad)))
    return np.clip(b / np.maximum(b + i, 1e-9), 0.0, 1.0).astype(np.float32)


def generate_classical(image: np.ndarray, min_area: int = 0, granularity: str = "all",
                       max_side: int | None = MAX_SIDE, progress: bool = False, sort_by: str = "area") -> Masks:
    """Segment everything in ``image`` without a model (see the module docstring for the method).

    Args:
        image: ``(H, W, 3)`` RGB (uint8, or float in [0, 1]); grey and RGBA are accepted.
        min_area: drop regions with fewer full-resolution pixels than this.
        granularity: ``"whole"`` (coarse), ``"part"`` (medium), ``"subpart"`` (fine, near
            superpixel size) or ``"all"``: the three levels together, a mask that is the
            same at several levels kept once, labelled with its coarsest level.
        max_side: longer side of the working resolution (``None``: the full image).
        progress: show a progress bar over the stages (tqdm, on stderr).
        sort_by: ``"area"`` (descending) or ``"score"`` (descending); ties keep coarse first.

    Returns:
        :class:`Masks` at the full image size, one mask per region; within one level the masks
        are disjoint and (with ``min_area=0``) cover the image. ``scores`` = edge contrast in
        [0, 1]; ``data["level"]`` = level name; ``data["method"]`` = :data:`METHOD`. The
        settings used are :func:`classical_params` of the same arguments.
    """
    image = check_image(image)
    _check_args(min_area, granularity, max_side, sort_by)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=6, desc="segment everything (classical)", leave=False, dynamic_ncols=True)

    def step() -> None:
        if bar is not None:
            bar.update(1)
        cancel.check()

    cancel.check()
    grad, maps = _level_maps(image, working_size(*image.shape[:2], max_side), step)
    masks = _to_masks(maps, grad, image.shape[:2], min_area, granularity, sort_by)
    if bar is not None:
        bar.update(1)
        bar.close()
    return masks


def _check_args(min_area: int, granularity: str, max_side: int | None, sort_by: str) -> None:
    if min_area < 0:
        raise InputError(f"min_area must be >= 0; got {min_area}")
    if granularity not in GRANULARITIES:
        raise InputError(f"granularity must be one of {', '.join(GRANULARITIES)}; got {granularity!r}")
    if sort_by not in _SORT_KEYS:
        raise InputError(f"sort_by must be one of {', '.join(_SORT_KEYS)}; got {sort_by!r}")
    if max_side is not None and max_side < 8:
        raise InputError(f"max_side must be >= 8 or None; got {max_side}")


def _level_maps(image: np.ndarray, size: tuple[int, int], step: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The Lab gradient and the label map of every level (fine to coarse), at the working ``size``."""
    import cv2
    from skimage.segmentation import slic

    h, w = size
    work = image if (h, w) == image.shape[:2] else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(work, (0, 0), BLUR_SIGMA).astype(np.float32) * (1.0 / 255.0)
    lab = cv2.cvtColor(blurred, cv2.COLOR_RGB2Lab)
    grad = np.sqrt(sum(cv2.Sobel(lab[..., c], cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(lab[..., c], cv2.CV_32F, 0, 1) ** 2
                       for c in range(3)))
    step()
    span = max(float(lab.max() - lab.min()), 1e-6)  # slic rescales the image to [0, 1]: keep Lab units
    labels = slic(lab, n_segments=_n_segments(h, w), compactness=SLIC_COMPACTNESS / span, convert2lab=False,
                  start_label=0, channel_axis=-1, enforce_connectivity=True)
    labels = np.unique(labels, return_inverse=True)[1].reshape(h, w)  # contiguous from 0
    step()
    maps: dict[str, np.ndarray] = {}
    for name, (thresh, ref) in LEVELS.items():  # fine to coarse: each level merges the previous one
        labels = _merge(lab, labels, thresh, ref * h * w)
        maps[name] = labels
        step()
    return grad, maps


def _to_masks(maps: dict[str, np.ndarray], grad: np.ndarray, size: tuple[int, int], min_area: int,
              granularity: str, sort_by: str) -> Masks:
    """The wanted levels' regions as full-size :class:`Masks` (nearest-neighbour upsampling), sorted."""
    from scipy import ndimage

    H, W = size
    names = list(LEVELS)
    h, w = maps[names[0]].shape
    wanted = names if granularity == "all" else [granularity]
    rows, cols = np.arange(H) * h // H, np.arange(W) * w // W  # nearest-neighbour upsampling
    fulls: list[np.ndarray] = []
    table: dict[str, list[np.ndarray]] = {"part": [], "id": [], "level": [], "score": [], "area": [], "box": []}
    for name in sorted(wanted, key=names.index, reverse=True):  # coarse first
        lm = maps[name]
        full = lm if (h, w) == (H, W) else lm[rows][:, cols]
        n = int(lm.max()) + 1
        areas = np.bincount(full.ravel(), minlength=n)
        keep = areas >= max(min_area, 1)
        k = names.index(name)
        if granularity == "all" and k + 1 < len(names):  # drop a region equal to its parent one level up
            coarse = maps[names[k + 1]]
            parent = np.zeros(n, dtype=np.int64)
            parent[lm.ravel()] = coarse.ravel()
            keep &= np.bincount(lm.ravel(), minlength=n) != np.bincount(coarse.ravel())[parent]
        ids = np.flatnonzero(keep)
        slices = ndimage.find_objects(full + 1)
        boxes = np.array([[slices[i][1].start, slices[i][0].start, slices[i][1].stop, slices[i][0].stop] for i in ids],
                         dtype=np.float32).reshape(-1, 4)
        for key, value in (("part", np.full(len(ids), len(fulls))), ("id", ids), ("level", np.full(len(ids), name)),
                           ("score", _edge_contrast(grad, lm)[ids]), ("area", areas[ids]), ("box", boxes)):
            table[key].append(value)
        fulls.append(full)
    col = {key: np.concatenate(value) for key, value in table.items()}
    order = np.argsort(-(col["area"] if sort_by == "area" else col["score"]), kind="stable")
    stack = np.empty((len(order), H, W), dtype=bool)
    for j, o in enumerate(order):
        if j % 64 == 0:
            cancel.check()
        np.equal(fulls[col["part"][o]], col["id"][o], out=stack[j])
    return Masks(masks=stack, scores=col["score"][order].astype(np.float32), boxes=col["box"][order],
                 data={"level": col["level"][order].astype(str), "method": np.full(len(order), METHOD)})

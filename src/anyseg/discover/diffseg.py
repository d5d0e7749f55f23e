"""DiffSeg: unsupervised zero-shot segmentation from Stable Diffusion's self-attention.

Tian et al., "Diffuse, Attend, and Segment: Unsupervised Zero-Shot Segmentation using Stable
Diffusion", CVPR 2024; reference code google/diffseg (``diffseg/segmentor.py``, the keras-cv
UNet in ``third_party/keras_cv``, ``diffseg.ipynb``, ``benchmarks.ipynb``). Steps and defaults:

1. **Attention** (:meth:`anyseg.models.diffusion.DiffusionModel.self_attention`): the image at
   512 x 512, its VAE latent (posterior mean, no noise, as the reference), one UNet pass at
   timestep 300 with the empty prompt; every self-attention layer's head-averaged probabilities,
   averaged per resolution (64, 32, 16, 8 for SD 1.x).
2. **Aggregation** (:func:`aggregate`): each resolution's ``(s, s, s, s)`` maps get their last
   two axes bilinearly upsampled to the largest grid ``R`` (64), renormalised to sum to 1, their
   first two axes tiled (nearest) to ``R``, and are summed with weights proportional to ``s``
   (the reference's ``get_weight_rato``): one ``(R, R, R, R)`` tensor, float32 (the reference
   uses float64).
3. **Iterative merging** (:func:`merge_attention`): ``M x M`` anchors (``anchors=16``) on the
   reference's sampling grid; in the first iteration each anchor averages every map whose
   symmetric KL divergence to it is below ``tau`` (``kl_threshold=1.1``: the reference's
   COCO-Stuff setting; 0.9 is its Cityscapes and notebook one); the following iterations
   (``iterations=3`` in all) greedily join proposals closer than ``tau``, in order, averaging
   them (an already joined proposal may be averaged again, as in the reference). KL is
   computed in float32 with probabilities floored at 1e-10 (the reference casts to float16).
4. **Refinement** (``refine=False``, the benchmark setting; the notebook turns it on): k-means
   over all ``R^2`` maps started at the proposals (Lloyd iterations, our own code, in place of
   scikit-learn's ``KMeans(n_init=1)``); empty clusters are dropped.
5. **Non-maximum suppression**: the proposals are bilinearly upsampled to the input size (512)
   and each pixel takes the proposal of highest value; the label map is then resized (nearest)
   to the image. The reference centre-crops the image to a square first; here the whole image
   is resized to the square input and the labels back, so every pixel is covered.

``objects`` (not in the reference): after step 3, while more than ``objects`` proposals remain,
the two with the smallest symmetric KL are joined (their mean weighted by how many proposals
each already joins), so at most ``objects`` segments remain.

Result (kind ``partition``): disjoint masks covering the image, largest first, ``labels`` =
segment index. Score: how concentrated the segment's own proposal is on the segment, beyond
chance: with ``m`` the share of the proposal's attention mass inside its pixels and ``a`` the
segment's share of the image, ``(m - a) / (1 - a)`` clipped to ``[0, 1]`` (diffuse attention
scores 0; a single segment covering the image, i.e. no structure found, scores 0).
``data["feature"]``: the mean UNet feature (the input of the last self-attention layer at the
largest resolution) under the segment, for clustering across images; ``data["attention_mass"]``: ``m``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from anyseg.discover.base import check_grid, check_objects
from anyseg.errors import InputError
from anyseg.types import Masks

__all__ = ["DiffSeg", "aggregate", "sampling_grid", "symmetric_kl", "merge_attention", "merge_to", "kmeans_refine",
           "DEFAULTS"]

#: the reference's settings (benchmarks.ipynb on COCO-Stuff; diffseg.ipynb: 0.9 and refine=True)
DEFAULTS: dict[str, Any] = {"kl_threshold": 1.1, "iterations": 3, "anchors": 16, "refine": False, "timestep": 300}
_EPS = 1e-10
_KMEANS_ITERS = 300


def sampling_grid(resolution: int, anchors: int) -> np.ndarray:
    """``(anchors^2, 2)`` int ``(row, col)`` cells: the reference's evenly spaced, centred grid.

    For ``R = 64, M = 16``: rows and columns 1, 5, ..., 61 (``generate_sampling_grid``).
    """
    if anchors == 1:
        points = np.array([(resolution - 1) // 2])
    else:
        step = (resolution - 1) // (anchors - 1)
        total = step * (anchors - 1)
        start = (resolution - 1 - total) // 2
        points = np.linspace(start, start + total, anchors).astype(int)
    rows, cols = np.meshgrid(points, points, indexing="ij")
    return np.stack([rows.reshape(-1), cols.reshape(-1)], axis=1)


def aggregate(maps: dict[int, Any]) -> Any:
    """``(R, R, R, R)`` float32 torch tensor from per-resolution ``(n, n)`` self-attention (module docstring, step 2)."""
    import torch
    import torch.nn.functional as F

    sides = {n: math.isqrt(n) for n in maps}
    res = max(sides.values())
    total = float(sum(sides.values()))
    first = next(iter(maps.values()))
    out = torch.zeros((res, res, res, res), dtype=torch.float32, device=first.device)
    for n, a in maps.items():
        s = sides[n]
        if res % s:
            raise InputError(f"attention grids {s} and {res} are not multiples of each other")
        r = res // s
        up = a.float().reshape(n, 1, s, s)
        if s != res:
            up = F.interpolate(up, size=(res, res), mode="bilinear", align_corners=False)
        up = up.reshape(n, res * res)
        up = up / up.sum(dim=1, keepdim=True).clamp_min(1e-30)
        # tiling rows and columns by r (the reference's tf.repeat), without materialising the copy
        out.view(s, r, s, r, res, res).add_(up.reshape(s, 1, s, 1, res, res), alpha=s / total)
    return out


def symmetric_kl(x: Any, y: Any, chunk: int = 1024) -> Any:
    """``(len(x), len(y))`` symmetric KL ``(KL(x||y) + KL(y||x)) / 2`` between rows of distributions.

    Computed as ``(sum x log x + sum y log y - x . log y - y . log x) / 2`` (two matrix products,
    ``chunk`` rows of ``x`` at a time), probabilities floored at 1e-10.
    """
    import torch

    lx, ly = x.clamp_min(_EPS).log(), y.clamp_min(_EPS).log()
    hx, hy = (x * lx).sum(1), (y * ly).sum(1)
    out = torch.empty((x.shape[0], y.shape[0]), dtype=torch.float32, device=x.device)
    for s in range(0, x.shape[0], chunk):
        e = s + chunk
        out[s:e] = 0.5 * (hx[s:e, None] + hy[None, :] - x[s:e] @ ly.T - lx[s:e] @ y.T)
    return out.clamp_min_(0.0)


def merge_attention(attn: Any, grid: np.ndarray, kl_threshold: float, iterations: int) -> Any:
    """``(P, R * R)`` proposals from ``(R, R, R, R)`` aggregated attention (module docstring, step 3)."""
    import torch

    res = attn.shape[0]
    flat = attn.reshape(res * res, res * res)
    idx = torch.as_tensor(grid[:, 0] * res + grid[:, 1], device=flat.device)
    close = (symmetric_kl(flat[idx], flat) < kl_threshold).float()  # anchors x cells
    props = (close @ flat) / close.sum(dim=1, keepdim=True).clamp_min(1.0)
    for _ in range(1, iterations):
        kl = (symmetric_kl(props, props) < kl_threshold).cpu().numpy()
        matched = np.zeros(len(props), bool)
        joined = []
        for i in range(len(props)):
            if matched[i]:
                continue
            row = kl[i].copy()
            row[i] = True
            matched |= row
            joined.append(props[torch.as_tensor(np.flatnonzero(row), device=props.device)].mean(0))
        props = torch.stack(joined)
    return props


def merge_to(props: Any, objects: int) -> Any:
    """Join the two closest proposals (symmetric KL; count-weighted mean) until at most ``objects`` remain."""
    import torch

    props = props.clone()
    weight = [1.0] * len(props)
    kl = symmetric_kl(props, props)
    kl.fill_diagonal_(float("inf"))
    while len(props) > objects:
        i, j = sorted(divmod(int(torch.argmin(kl)), len(props)))
        props[i] = (props[i] * weight[i] + props[j] * weight[j]) / (weight[i] + weight[j])
        weight[i] += weight.pop(j)
        keep = torch.as_tensor([k for k in range(len(props)) if k != j], device=props.device)
        props, kl = props[keep], kl[keep][:, keep]
        row = symmetric_kl(props[i:i + 1], props)[0]
        row[i] = float("inf")
        kl[i], kl[:, i] = row, row
    return props


def kmeans_refine(data: Any, centers: Any, iterations: int = _KMEANS_ITERS) -> Any:
    """Lloyd's k-means of the ``(n, d)`` rows of ``data`` started at ``centers``; the non-empty cluster means."""
    import torch

    sq = (data * data).sum(1, keepdim=True)
    labels = None
    for _ in range(iterations):
        dist = sq - 2 * data @ centers.T + (centers * centers).sum(1)[None]
        new = dist.argmin(dim=1)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        onehot = torch.zeros((len(centers), len(data)), dtype=data.dtype, device=data.device)
        onehot[labels, torch.arange(len(data), device=data.device)] = 1.0
        count = onehot.sum(1, keepdim=True)
        centers = torch.where(count > 0, onehot @ data / count.clamp_min(1.0), centers)
    assert labels is not None
    used = torch.unique(labels)
    onehot = torch.zeros((len(used), len(data)), dtype=data.dtype, device=data.device)
    remap = torch.full((len(centers),), -1, dtype=torch.long, device=data.device)
    remap[used] = torch.arange(len(used), device=data.device)
    onehot[remap[labels], torch.arange(len(data), device=data.device)] = 1.0
    return onehot @ data / onehot.sum(1, keepdim=True)


def _nms(props: Any, res: int, size: int, chunk_pixels: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``size x size`` pixels' winning proposal (bilinear upsampling, argmax) and each proposal's
    attention-mass share inside the pixels it wins; at most ``chunk_pixels`` upsampled values at once."""
    import torch
    import torch.nn.functional as F

    p = len(props)
    step = max(1, chunk_pixels // (size * size))
    maps = props.reshape(p, 1, res, res)

    def up(s: int) -> Any:
        return F.interpolate(maps[s:s + step], size=(size, size), mode="bilinear", align_corners=False)[:, 0]

    best = torch.full((size, size), -float("inf"), device=props.device)
    label = torch.zeros((size, size), dtype=torch.long, device=props.device)
    for s in range(0, p, step):
        value, arg = up(s).max(dim=0)
        better = value > best
        best = torch.where(better, value, best)
        label = torch.where(better, arg + s, label)
    mass = torch.zeros(p, dtype=torch.float64, device=props.device)
    for s in range(0, p, step):
        u = up(s).double()
        inside = (label[None] == torch.arange(s, s + len(u), device=props.device)[:, None, None])
        mass[s:s + len(u)] = (u * inside).sum((1, 2)) / u.sum((1, 2)).clamp_min(1e-30)
    return label.cpu().numpy(), mass.cpu().numpy()


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    """The method's options with the defaults filled in; unknown or bad values are one-line errors."""
    unknown = sorted(set(options) - set(DEFAULTS) - {"size", "noise", "seed"})
    if unknown:
        known = ", ".join([*DEFAULTS, "size", "noise", "seed", "dtype"])
        raise InputError(f"unknown diffseg options: {', '.join(unknown)} (known: {known})")
    out = {**DEFAULTS, "noise": False, "seed": 0, **options}
    tau = out["kl_threshold"]
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.floating, np.integer)) or not (
            math.isfinite(float(tau)) and float(tau) > 0):
        raise InputError(f"kl_threshold must be a positive number; got {tau!r}")
    out["kl_threshold"] = float(tau)
    for name, lo, hi in (("iterations", 1, 10), ("anchors", 1, 64)):
        v = out[name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
            raise InputError(f"{name} must be a whole number in {lo}..{hi}; got {v!r}")
        out[name] = int(v)
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], (int, np.integer)):
        raise InputError(f"seed must be a whole number; got {out['seed']!r}")
    for name in ("refine", "noise"):
        if not isinstance(out[name], (bool, np.bool_)):
            raise InputError(f"{name} must be true or false; got {out[name]!r}")
    return out


class DiffSeg:
    """DiffSeg over a :class:`~anyseg.models.diffusion.DiffusionModel` (module docstring).

    Args:
        model: the loaded diffusion model.
        kl_threshold, iterations, anchors, refine, timestep: the reference's ``KL_THRESHOLD``
            (one value for every iteration), its number of merging iterations, ``NUM_POINTS``,
            ``REFINEMENT`` and the diffusion timestep (:data:`DEFAULTS`).
        size: input pixels (``None``: the model's, 512 for SD 1.x); noise, seed: noise the
            latent at ``timestep`` (off, as the reference).
    """

    name = "diffseg"
    kind = "partition"

    def __init__(self, model: Any, **options: Any) -> None:
        opts = _check_options(options)
        self.model = model
        self.size = model.check_size(opts.pop("size", None))
        opts["timestep"] = model.check_timestep(opts["timestep"])
        self.resolution = self.size // model.vae_factor
        if opts["anchors"] > self.resolution:
            raise InputError(f"anchors must be at most the {self.resolution}-cell latent grid; got {opts['anchors']}")
        self.options = opts

    @classmethod
    def from_options(cls, model: Any = None, device: str | None = None, allow_download: bool = True,
                     **options: Any) -> "DiffSeg":
        """Build from a model name, folder or loaded :class:`DiffusionModel` (default ``sd-v1-4``)."""
        from anyseg.models.diffusion import DiffusionModel, load_diffusion

        dtype = options.pop("dtype", None)
        _check_options(options)
        if not isinstance(model, DiffusionModel):
            model = load_diffusion("sd-v1-4" if model is None else model, device=device,
                                   allow_download=allow_download, **({"dtype": dtype} if dtype else {}))
        return cls(model, **options)

    @property
    def model_id(self) -> str:
        o = self.options
        tail = ":refine" if o["refine"] else ""
        return f"{self.model.model_id}:kl{o['kl_threshold']:g}:m{o['anchors']}:t{o['timestep']}{tail}"

    def proposals(self, image: np.ndarray, objects: int | None = None) -> tuple[Any, Any]:
        """``(P, R * R)`` merged attention proposals of ``image`` and the ``(R * R, C)`` UNet features."""
        o = self.options
        sa = self.model.self_attention(image, size=self.size, timestep=o["timestep"], noise=o["noise"], seed=o["seed"])
        attn = aggregate(sa.maps)
        sa.maps = {}  # free the per-resolution maps before merging
        res = attn.shape[0]
        props = merge_attention(attn, sampling_grid(res, min(o["anchors"], res)), o["kl_threshold"], o["iterations"])
        if objects is not None and len(props) > objects:
            props = merge_to(props, objects)
        if o["refine"]:
            props = kmeans_refine(attn.reshape(res * res, res * res), props)
        return props, sa.features

    def discover(self, image: np.ndarray, objects: int | None = None) -> Masks:
        """A partition of ``image`` ``(H, W, 3)`` (``objects``: at most that many segments)."""
        from anyseg.models.base import check_image

        image = check_image(image)
        check_grid(image.shape[:2], self.model.vae_factor, what="the VAE latent grid")
        if objects is not None:
            objects = check_objects(objects, 1)
        props, features = self.proposals(image, objects)
        res = self.resolution
        label, mass = _nms(props, res, self.size)
        return _partition(label, mass, features, res, image.shape[:2])


def _partition(label: np.ndarray, mass: np.ndarray, features: Any, res: int, image_size: tuple[int, int]) -> Masks:
    """Masks, scores, labels and features from the ``(S, S)`` label map (module docstring)."""
    from PIL import Image

    h, w = image_size
    size = label.shape[0]
    full = np.asarray(Image.fromarray(label.astype(np.int32)).resize((w, h), Image.NEAREST))
    present, counts = np.unique(full, return_counts=True)
    present = present[np.argsort(-counts, kind="stable")]
    area = np.bincount(label.reshape(-1), minlength=len(mass)).astype(np.float64) / label.size
    a = area[present]
    m = mass[present]
    scores = np.where(a < 1.0, (m - a) / np.maximum(1.0 - a, 1e-12), 0.0).clip(0.0, 1.0)
    data: dict[str, np.ndarray] = {"attention_mass": m.astype(np.float32)}
    if features is not None:
        f = size // res
        cells = (np.arange(size) // f)[:, None] * res + (np.arange(size) // f)[None, :]
        cover = np.zeros((res * res, len(mass)))
        np.add.at(cover, (cells.reshape(-1), label.reshape(-1)), 1.0)
        cover = cover[:, present]
        feats = features.cpu().numpy().astype(np.float64)
        data["feature"] = (cover.T @ feats / np.maximum(cover.sum(0)[:, None], 1.0)).astype(np.float32)
    masks = full[None] == present[:, None, None]
    return Masks(masks=masks, scores=scores.astype(np.float32), labels=np.arange(len(present), dtype=np.int64),
                 data=data)

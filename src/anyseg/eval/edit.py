"""``anyseg eval edit``: what can be measured of object removal (issue 18's evaluation).

No ground truth exists for a generated fill, so two protocols (``--protocol``) measure what can be:

``removal`` (synthetic composites)
    Each object (GrabCut-style ``images/`` + ``masks/``: the object is the foreground plus the
    128 "unknown" band, so its soft edge goes with it; or DAVIS: frame 0 of each sequence, or
    every ``--stride``-th, all objects of its annotation) is pasted onto *another* image, the
    clean background: by default the other images of the same folder, item ``i`` on image
    ``(i + k) mod n`` with ``k`` drawn once from ``--seed`` (so never on itself), or a
    seeded draw from ``--backgrounds DIR``. The object's crop is scaled by a seeded factor in
    [0.5, 1] of the largest scale that fits (its box inside the background with ``--dilate``
    pixels to spare, at most 35% of the background's area) and placed at a seeded position
    (:func:`build_composite`; the seed of an item is ``(--seed, crc32(name))``, so a resumed or
    limited run draws the same composites). The engine removes it through
    :func:`anyseg.edit.base.run_inpaint` (mask grown by ``--dilate``), and the result is compared
    with the clean background inside the hole (the grown mask): PSNR over the hole's pixels
    (all channels, peak 255; identical pixels are capped at :data:`PSNR_CAP` dB so that means
    stay finite), and SSIM as Wang et al. (2004) and scikit-image compute it (Gaussian window
    sigma 1.5, K1 0.01, K2 0.03, population covariances) on the whole image, then averaged over
    the hole's pixels only (the masked-SSIM convention of inpainting papers; outside the hole
    both images are the background, so a full-image mean would dilute the hole). The map is
    computed on the hole's box plus the window's reach, which gives the same values. The same
    composite is filled by the flat mean-colour engine (``mean``) in the same run: the summary
    gives both and the difference. LPIPS needs the ``lpips`` package (and torchvision with its
    AlexNet weights): where those are absent the summary says ``LPIPS: not available (why)``.
    Bit-exactness outside the hole is checked on every result (``outside_bit_exact``).
``temporal`` (video removal's temporal consistency, DAVIS sequences)
    Each sequence's ground-truth masks (every object, void included) are the object: no
    tracking. The object is removed with :func:`anyseg.edit.video.remove_video` (``--flow``,
    ``--window``) and, independently, frame by frame with the same engine. Both are scored by
    the flow warping error of Lai et al. (2018, "Learning Blind Video Temporal Consistency"):
    for consecutive outputs ``O_t``, ``O_t+1``, ``E_warp = mean over x in M of |O_t(x) -
    O_t+1(x + F(x))|^2`` (RGB in [0, 1], averaged over channels), ``F`` the optical flow from
    ``O_t`` to ``O_t+1``, ``M`` its non-occluded pixels (forward-backward consistent, landing
    inside the frame) restricted to the union of the two frames' holes. Difference from Lai et
    al.: they compute the flow (FlowNet2) on the *input* video, whose flow here follows the
    removed object; the flow is computed on each method's own output instead (DIS, a different
    estimator from the removal's default Farneback, so the measure does not reuse the method's
    own flow). A method that flickers inside the hole shows content no smooth flow explains.
    Per sequence: the mean over its frame pairs; the summary: the mean over sequences (x 1000,
    as ProPainter reports ``E*_warp``) and the ratio video / per-frame.

Each finished item (an image or a sequence) is one row of the resumable run folder's store.
"""

from __future__ import annotations

import argparse
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from anyseg.errors import InputError

__all__ = ["PROTOCOLS", "PSNR_CAP", "psnr", "masked_ssim", "build_composite", "Composite", "warp_error",
           "lpips_status", "add_arguments", "run_edit_eval"]

PROTOCOLS = ("removal", "temporal")
#: PSNR of identical pixels (dB), so that means stay finite
PSNR_CAP = 100.0
MAX_SEED = 2**32 - 1
MAX_STRIDE = 10_000
MAX_FRAMES = 100_000
#: largest share of the background an object may cover once placed
MAX_AREA = 0.35
_SSIM_REACH = 8  # (pixels the Gaussian SSIM window reaches: sigma 1.5 truncated at 3.5 sigma, rounded up)


# -- metrics -----------------------------------------------------------------------------------------
def psnr(result: np.ndarray, clean: np.ndarray, region: np.ndarray) -> float:
    """PSNR (dB, peak 255) of ``result`` against ``clean`` over the ``region`` pixels, all channels;
    capped at :data:`PSNR_CAP`."""
    region = np.asarray(region, bool)
    if not region.any():
        raise InputError("psnr: the region is empty")
    diff = result[region].astype(np.float64) - clean[region].astype(np.float64)
    mse = float(np.mean(diff ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10.0 * np.log10(255.0 ** 2 / mse))


def masked_ssim(result: np.ndarray, clean: np.ndarray, region: np.ndarray) -> float:
    """The mean over ``region`` of the full-image SSIM map (Gaussian sigma 1.5, population
    covariances: Wang et al. 2004; the module docstring), computed on the region's box plus
    the window's reach."""
    from skimage.metrics import structural_similarity

    region = np.asarray(region, bool)
    if not region.any():
        raise InputError("ssim: the region is empty")
    h, w = region.shape
    if min(h, w) < 11:
        raise InputError(f"ssim needs images of at least 11x11 pixels; got {w}x{h}")
    ys, xs = np.nonzero(region)
    y0, y1 = max(0, ys.min() - _SSIM_REACH), min(h, ys.max() + 1 + _SSIM_REACH)
    x0, x1 = max(0, xs.min() - _SSIM_REACH), min(w, xs.max() + 1 + _SSIM_REACH)
    if y1 - y0 < 11 or x1 - x0 < 11:  # (too small a box for the window: the whole image)
        y0, y1, x0, x1 = 0, h, 0, w
    a, b = result[y0:y1, x0:x1], clean[y0:y1, x0:x1]
    _, smap = structural_similarity(a, b, data_range=255, channel_axis=2 if a.ndim == 3 else None,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
    smap = smap.mean(axis=2) if smap.ndim == 3 else smap
    return float(smap[region[y0:y1, x0:x1]].mean())


def lpips_status() -> tuple[Callable[[np.ndarray, np.ndarray], float] | None, str]:
    """``(distance function, "available")`` when the ``lpips`` package and its weights load, else
    ``(None, "not available (why)")``; never downloads."""
    import importlib.util

    if importlib.util.find_spec("lpips") is None:
        return None, "not available (the lpips package is not installed; it needs torchvision)"
    try:  # pragma: no cover - lpips is not installed in the test environment
        import os

        import lpips
        import torch

        os.environ.setdefault("TORCH_HOME", os.path.expanduser("~/.cache/torch"))
        net = lpips.LPIPS(net="alex", verbose=False).eval()

        def distance(a: np.ndarray, b: np.ndarray) -> float:
            ta, tb = (torch.from_numpy(x).permute(2, 0, 1)[None].float() / 127.5 - 1 for x in (a, b))
            with torch.no_grad():
                return float(net(ta, tb).item())

        return distance, "available"
    except Exception as e:  # pragma: no cover - (any failure to load is reported, never silent)
        return None, f"not available ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'no weights'})"


def warp_error(a: np.ndarray, b: np.ndarray, region: np.ndarray, flow: str = "dis") -> tuple[float, int]:
    """``(E_warp, pixels)`` of consecutive outputs ``a``, ``b`` over ``region`` (module docstring);
    ``(nan, 0)`` when no pixel of the region is non-occluded."""
    from anyseg.edit.video import fb_consistent, optical_flow, sample

    f, back = optical_flow(a, b, flow), optical_flow(b, a, flow)
    ok = fb_consistent(f, back) & np.asarray(region, bool)
    ys, xs = np.nonzero(ok)
    nx, ny = xs + f[ys, xs, 0], ys + f[ys, xs, 1]
    h, w = region.shape
    inside = (nx >= 0) & (nx <= w - 1) & (ny >= 0) & (ny <= h - 1)
    if not inside.any():
        return float("nan"), 0
    warped = sample(b, nx[inside], ny[inside]) / 255.0
    diff = a[ys[inside], xs[inside]].astype(np.float32) / 255.0 - warped
    return float(np.mean(diff ** 2)), int(inside.sum())


# -- composites --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Composite:
    """An object pasted on a clean background: ``image`` (the composite), ``clean`` (the
    background), ``mask`` (the pasted object's pixels), ``box`` ``(x0, y0, x1, y1)`` and ``scale``."""

    image: np.ndarray
    clean: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int, int]
    scale: float


def build_composite(obj: np.ndarray, obj_mask: np.ndarray, background: np.ndarray, rng: np.random.Generator,
                    margin: int = 0) -> Composite | None:
    """The object of ``obj`` (its ``obj_mask`` pixels) scaled and placed on ``background`` by
    ``rng`` (module docstring), ``margin`` pixels from the edges; ``None`` when it cannot fit
    (an empty mask, or a background too small)."""
    import cv2

    obj_mask = np.asarray(obj_mask, bool)
    if not obj_mask.any():
        return None
    ys, xs = np.nonzero(obj_mask)
    oy0, oy1, ox0, ox1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    oh, ow = oy1 - oy0, ox1 - ox0
    bh, bw = background.shape[:2]
    fit = min(1.0, (bw - 2 * margin) / ow, (bh - 2 * margin) / oh,
              float(np.sqrt(MAX_AREA * bh * bw / obj_mask.sum())))
    scale = fit * float(rng.uniform(0.5, 1.0))
    nw, nh = int(round(ow * scale)), int(round(oh * scale))
    if fit <= 0 or min(nw, nh) < 4:
        return None
    crop = np.ascontiguousarray(obj[oy0:oy1, ox0:ox1])
    crop_mask = obj_mask[oy0:oy1, ox0:ox1].astype(np.float32)
    small = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(crop_mask, (nw, nh), interpolation=cv2.INTER_AREA) >= 0.5
    if not small_mask.any():
        return None
    x0 = int(rng.integers(margin, bw - nw - margin + 1))
    y0 = int(rng.integers(margin, bh - nh - margin + 1))
    mask = np.zeros((bh, bw), bool)
    mask[y0:y0 + nh, x0:x0 + nw] = small_mask
    image = background.copy()
    image[y0:y0 + nh, x0:x0 + nw][small_mask] = small[small_mask]
    return Composite(image, background, mask, (x0, y0, x0 + nw, y0 + nh), round(scale, 6))


@dataclass(frozen=True)
class _Source:
    """One object to paste: its ``name``, and ``read() -> (image, object mask)``."""

    name: str
    path: Path
    read: Callable[[], tuple[np.ndarray, np.ndarray]]


def _mask_sources(root: Path) -> list[_Source]:
    from anyseg.eval.datasets import read_mask_folder

    def reader(sample: Any) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        def read() -> tuple[np.ndarray, np.ndarray]:
            fg, ignore = sample.load_gt()
            return sample.load_image(), fg | ignore if ignore is not None else fg
        return read

    return [_Source(s.name, s.image_path, reader(s)) for s in read_mask_folder(root)]


def _davis_sources(root: Path, resolution: str, stride: int | None) -> list[_Source]:
    from anyseg.eval.datasets import read_davis
    from anyseg.io.images import load_image

    def reader(seq: Any, i: int) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        return lambda: (load_image(seq.frames[i]), seq.load_annotation(i) > 0)

    out = []
    for seq in read_davis(root, resolution=resolution, require_all_annotations=False):
        picked = range(0, len(seq), stride) if stride else [0]
        out += [_Source(f"{seq.name}/{seq.frames[i].stem}", seq.frames[i], reader(seq, i))
                for i in picked if seq.annotations[i] is not None]
    return out


def _removal_sources(args: argparse.Namespace) -> tuple[str, list[_Source]]:
    root = Path(args.data)
    if not root.is_dir():
        raise InputError(f"data folder not found: {root}")
    if (root / "images").is_dir() and (root / "masks").is_dir():
        if args.stride is not None:
            raise InputError(f"--stride applies to DAVIS folders; {root} is an images/ + masks/ folder")
        return "masks", _mask_sources(root)
    if (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir():
        return "davis", _davis_sources(root, args.resolution, args.stride)
    raise InputError(f"not an edit data folder: {root} has neither images/ + masks/ nor DAVIS JPEGImages/ + "
                     "Annotations/")


def _background_picker(args: argparse.Namespace, sources: list[_Source]) -> Callable[[int, np.random.Generator], tuple[str, Path]]:
    """item index, its rng -> ``(background name, path)`` (module docstring)."""
    if args.backgrounds:
        from anyseg.eval.datasets import files_by_stem

        folder = Path(args.backgrounds)
        if not folder.is_dir():
            raise InputError(f"--backgrounds folder not found: {folder}")
        files = sorted(files_by_stem(folder, "background image").items())
        return lambda i, rng: files[int(rng.integers(len(files)))]
    if len(sources) < 2:
        raise InputError(f"{args.data} has {len(sources)} image: the composites paste each object on another image "
                         "of the folder; add images or give --backgrounds DIR")
    k = int(np.random.default_rng(args.seed).integers(1, len(sources)))
    return lambda i, rng: (sources[(i + k) % len(sources)].name, sources[(i + k) % len(sources)].path)


def _item_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _scores(result: np.ndarray, comp: Composite, hole: np.ndarray, lp: Callable | None) -> dict[str, Any]:
    out = {"psnr": round(psnr(result, comp.clean, hole), 4), "ssim": round(masked_ssim(result, comp.clean, hole), 6),
           "outside_exact": bool(np.array_equal(result[~hole], comp.image[~hole]))}
    if lp is not None:  # pragma: no cover - lpips is not installed in the test environment
        out["lpips"] = round(lp(result, comp.clean), 6)
    return out


def _score_composite(src: _Source, index: int, args: argparse.Namespace, engines: list[tuple[str, Any]],
                     pick: Callable, lp: Callable | None) -> dict[str, Any]:
    from anyseg.edit.base import run_inpaint
    from anyseg.io.images import load_image

    rng = _item_rng(args.seed, src.name)
    bg_name, bg_path = pick(index, rng)
    image, mask = src.read()
    if mask.shape != image.shape[:2]:
        raise InputError(f"the mask of {src.path} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                         f"{image.shape[1]}x{image.shape[0]}")
    comp = build_composite(image, mask, load_image(bg_path), rng, margin=args.dilate)
    if comp is None:
        return {"name": src.name, "background": bg_name, "skipped": "the object does not fit the background"}
    rec: dict[str, Any] = {"name": src.name, "background": bg_name, "box": list(comp.box), "scale": comp.scale}
    for label, engine in engines:
        t = time.perf_counter()
        res = run_inpaint(engine, comp.image, comp.mask, "remove", prompt=args.prompt, seed=args.seed,
                          dilate=args.dilate)
        rec[label] = {**_scores(res.image, comp, res.mask, lp), "seconds": round(time.perf_counter() - t, 4)}
        rec["hole_area"] = int(res.mask.sum())
    return rec


def _mean_of(records: list[dict], label: str, key: str) -> float | None:
    vals = [r[label][key] for r in records if label in r and key in r[label]]
    return round(float(np.mean(vals)), 6) if vals else None


def removal_summary(records: list[dict], lp_status: str) -> dict[str, Any]:
    """The engine's and the mean fill's mean PSNR / SSIM over the scored composites, and the gains."""
    scored = [r for r in records if not r.get("skipped")]
    out: dict[str, Any] = {"protocol": "removal", "num_images": len(scored),
                           "skipped_no_fit": len(records) - len(scored)}
    if scored:
        for label, suffix in (("engine", ""), ("mean", "_mean_fill")):
            out[f"PSNR{suffix}"] = _mean_of(scored, label, "psnr")
            out[f"SSIM{suffix}"] = _mean_of(scored, label, "ssim")
        out["PSNR_gain"] = round(out["PSNR"] - out["PSNR_mean_fill"], 6)
        out["SSIM_gain"] = round(out["SSIM"] - out["SSIM_mean_fill"], 6)
        if _mean_of(scored, "engine", "lpips") is not None:  # pragma: no cover
            out["LPIPS"], out["LPIPS_mean_fill"] = _mean_of(scored, "engine", "lpips"), _mean_of(scored, "mean", "lpips")
        out["seconds_per_image"] = _mean_of(scored, "engine", "seconds")
        exact = [r[label]["outside_exact"] for r in scored for label in ("engine", "mean")]
        out["outside_bit_exact"] = round(float(np.mean(exact)), 6)
    out["LPIPS_status"] = lp_status
    return out


# -- temporal ----------------------------------------------------------------------------------------
def _sequence_frames(seq: Any, indices: list[int]) -> tuple[Iterator[np.ndarray], Iterator[np.ndarray]]:
    from anyseg.eval.datasets import read_object_ids
    from anyseg.io.images import load_image

    frames = (load_image(seq.frames[i]) for i in indices)
    masks = (read_object_ids(seq.annotations[i]) > 0 for i in indices)
    return frames, masks


def _pair_errors(outputs: Iterator[tuple[np.ndarray, np.ndarray]]) -> tuple[list[float], int, float]:
    """Each consecutive pair's warp error (streamed: two frames held), the frames seen, and the
    seconds spent making the outputs (the measurement's own flow left out)."""
    errors, prev, n, measuring = [], None, 0, 0.0
    start = time.perf_counter()
    for image, hole in outputs:
        n += 1
        t = time.perf_counter()
        if prev is not None and (prev[1].any() or hole.any()):
            e, _ = warp_error(prev[0], image, prev[1] | hole)
            if np.isfinite(e):
                errors.append(e)
        measuring += time.perf_counter() - t
        prev = (image, hole)
    return errors, n, time.perf_counter() - start - measuring


def _per_frame(engine: Any, frames: Iterator, masks: Iterator, args: argparse.Namespace) -> Iterator:
    from anyseg.edit.base import dilate_mask, run_inpaint

    for image, mask in zip(frames, masks):
        if not mask.any():
            yield image, mask
            continue
        res = run_inpaint(engine, image, mask, "remove", prompt=args.prompt, seed=args.seed, dilate=args.dilate)
        yield res.image, dilate_mask(mask, args.dilate)


def _score_sequence(seq: Any, engine: Any, args: argparse.Namespace) -> dict[str, Any]:
    from anyseg.edit.video import remove_video

    indices = list(range(0, len(seq), args.stride or 1))[: args.max_frames or None]
    counts = {"propagated": 0, "carried": 0, "inpainted": 0}

    def video() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        frames, masks = _sequence_frames(seq, indices)
        for r in remove_video(frames, masks, engine, dilate=args.dilate, flow=args.flow, window=args.window,
                              progress=False, prompt=args.prompt, seed=args.seed):
            for k in counts:
                counts[k] += r.record[k]
            yield r.image, r.mask

    ev, n, tv = _pair_errors(video())
    ef, _, tf = _pair_errors(_per_frame(engine, *_sequence_frames(seq, indices), args))
    mean = (lambda e: round(float(np.mean(e)), 8) if e else None)
    return {"name": seq.name, "frames": n, "pairs": len(ev), "E_warp_video": mean(ev), "E_warp_per_frame": mean(ef),
            **counts, "seconds_video": round(tv, 3), "seconds_per_frame_method": round(tf, 3)}


def temporal_summary(records: list[dict]) -> dict[str, Any]:
    """Mean warp errors over sequences (x 1000) and the ratio video / per-frame."""
    scored = [r for r in records if r.get("E_warp_video") is not None and r.get("E_warp_per_frame") is not None]
    out: dict[str, Any] = {"protocol": "temporal", "num_sequences": len(scored),
                           "skipped_no_pairs": len(records) - len(scored)}
    if scored:
        v = float(np.mean([r["E_warp_video"] for r in scored]))
        f = float(np.mean([r["E_warp_per_frame"] for r in scored]))
        out.update(E_warp_video_x1000=round(1000 * v, 6), E_warp_per_frame_x1000=round(1000 * f, 6),
                   E_warp_ratio=round(v / f, 6) if f > 0 else None)
        hole = sum(r["propagated"] + r["carried"] + r["inpainted"] for r in scored)
        for k in ("propagated", "carried", "inpainted"):
            out[f"{k}_share"] = round(sum(r[k] for r in scored) / hole, 6) if hole else None
        frames = sum(r["frames"] for r in scored)
        out["seconds_per_frame_video"] = round(sum(r["seconds_video"] for r in scored) / frames, 4)
        out["seconds_per_frame_per_frame_method"] = round(sum(r["seconds_per_frame_method"] for r in scored) / frames, 4)
    return out


# -- the command -------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``anyseg eval edit`` (``--limit``, ``--out``, ``--fresh`` are the eval CLI's)."""
    from anyseg.edit.video import DEFAULT_WINDOW, FLOWS

    p.add_argument("--protocol", required=True, choices=PROTOCOLS,
                   help="removal (objects pasted on other images: PSNR/SSIM in the hole against the clean background, "
                        "beside the mean-colour fill) or temporal (DAVIS: flow warping error, video vs per-frame)")
    p.add_argument("--data", required=True, help="images/ + masks/ (GrabCut) or DAVIS (JPEGImages/ + Annotations/)")
    p.add_argument("--engine", default="telea", help="edit engine: telea, ns, fsr, biharmonic, mean, lama, sd (default telea)")
    p.add_argument("--weights", metavar="PATH", help="the engine's weights (lama: TorchScript / ONNX file)")
    p.add_argument("--model", default=None, metavar="NAME|PATH", help="the engine's model (sd): a registry name or a local model folder")
    p.add_argument("--device", default=None, help="torch device of the engine: cpu, cuda, cuda:N or mps")
    p.add_argument("--prompt", default=None, help="text for a generative engine (sd)")
    p.add_argument("--dilate", type=int, default=None, metavar="PX", help="grow masks by PX before removal "
                   "(default 15, Inpaint Anything's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the composites and the engine (default 0)")
    p.add_argument("--backgrounds", metavar="DIR", help="removal: clean backgrounds (default: the other images of --data)")
    p.add_argument("--stride", type=int, default=None, metavar="S",
                   help="DAVIS: every S-th frame (removal: default frame 0 only; temporal: default every frame)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="temporal: at most N frames a sequence")
    p.add_argument("--flow", default="farneback", choices=FLOWS, help="temporal: the removal's optical flow")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, metavar="K",
                   help=f"temporal: frames looked at on each side (default {DEFAULT_WINDOW})")
    p.add_argument("--resolution", default="480p", help="DAVIS resolution folder (default 480p)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout (the table to stderr)")


def _check_args(args: argparse.Namespace) -> None:
    from anyseg.edit.base import DEFAULT_DILATE, dilate_mask
    from anyseg.edit.video import DEFAULT_WINDOW, MAX_WINDOW

    args.dilate = DEFAULT_DILATE if args.dilate is None else args.dilate
    dilate_mask(np.zeros((1, 1), bool), args.dilate)  # (its one-line bound)
    for name, value, hi in (("--seed", args.seed, MAX_SEED), ("--stride", args.stride, MAX_STRIDE),
                            ("--max-frames", args.max_frames, MAX_FRAMES), ("--window", args.window, MAX_WINDOW)):
        lo = 0 if name == "--seed" else 1
        if value is not None and not lo <= value <= hi:
            raise InputError(f"{name} must be in {lo}..{hi}; got {value}")
    if args.protocol == "temporal" and args.backgrounds:
        raise InputError("--backgrounds applies to --protocol removal")
    if args.protocol == "removal" and (args.max_frames is not None or args.flow != "farneback"
                                       or args.window != DEFAULT_WINDOW):
        raise InputError("--max-frames, --flow and --window apply to --protocol temporal")


def _engine(name: str, args: argparse.Namespace) -> Any:
    from anyseg.edit.base import engine_factory

    if name != args.engine:  # (the mean-fill baseline: no weights, model or device of the engine's)
        return engine_factory(name)()
    return engine_factory(name)(weights=args.weights, model=args.model, device=args.device)


def _run(job: Any, args: argparse.Namespace) -> tuple[Any, list[dict], dict]:
    from tqdm import tqdm

    engine = _engine(args.engine, args)  # errors before anything is written
    job.header = {"kind": "edit", "protocol": args.protocol, "engine": engine.name, "model": engine.model_id,
                  "dilate": args.dilate, "seed": args.seed, "prompt": args.prompt, "data": str(Path(args.data).resolve())}
    job.model_name = f"{args.protocol}-{engine.name}"
    if args.protocol == "removal":
        layout, sources = _removal_sources(args)
        if not sources:
            raise InputError(f"no annotated images in {args.data}")
        pick = _background_picker(args, sources)
        lp, lp_status = lpips_status()
        engines = [("engine", engine), ("mean", engine if engine.name == "mean" else _engine("mean", args))]
        job.header.update(layout=layout, backgrounds=str(Path(args.backgrounds).resolve()) if args.backgrounds else None,
                          stride=args.stride)
        st = job.store()
        items = list(enumerate(sources))[: args.limit or None]
        for i, src in tqdm([(i, s) for i, s in items if s.name not in st], desc="eval edit removal", unit="image",
                           dynamic_ncols=True, leave=False, disable=None):
            st.add(_score_composite(src, i, args, engines, pick, lp))
        by_name = {r["name"]: r for r in st.records()}
        records = [by_name[s.name] for _, s in items if s.name in by_name]
        return st, records, removal_summary(records, f"LPIPS {lp_status}")
    from anyseg.eval.datasets import read_davis

    seqs = read_davis(args.data, resolution=args.resolution, limit=args.limit)
    job.header.update(stride=args.stride or 1, max_frames=args.max_frames, flow=args.flow, window=args.window,
                      resolution=args.resolution)
    st = job.store()
    for seq in tqdm([s for s in seqs if s.name not in st], desc="eval edit temporal", unit="sequence",
                    dynamic_ncols=True, leave=False, disable=None):
        st.add(_score_sequence(seq, engine, args))
    by_name = {r["name"]: r for r in st.records()}
    records = [by_name[s.name] for s in seqs if s.name in by_name]
    return st, records, temporal_summary(records)


def run_edit_eval(job: Any) -> int:
    """``anyseg eval edit``: check, build the engine, score what the run folder lacks, summarise, report."""
    args = job.args
    _check_args(args)
    st, records, summary = _run(job, args)
    return job.report_or_json(st, records, summary, "edit", args.json)

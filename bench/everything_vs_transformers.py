#!/usr/bin/env python
"""Segment everything: anyseg's ``generate`` vs transformers' ``mask-generation`` pipeline.

Side by side in one run, on the same model (same weights, loaded twice from one folder), the
same image and the same parameters, on the CPU: times both (warm-up excluded, same torch
threads), times each one's image encoder alone, and compares the two mask sets (counts, a
one-to-one matching by mask IoU, score differences).

transformers' pipeline needs torchvision, which anyseg does not depend on, so run this with a
separate reference virtualenv (outside the repository; never add torchvision to anyseg)::

    python3 -m venv /work/refvenv
    /work/refvenv/bin/pip install torch torchvision transformers==5.23.0 pillow numpy \\
        opencv-python-headless scikit-image pycocotools tqdm safetensors huggingface_hub scipy
    /work/refvenv/bin/pip install --no-deps -e .

    /work/refvenv/bin/python bench/everything_vs_transformers.py --tiny sam2 --nms 1.0
    /work/refvenv/bin/python bench/everything_vs_transformers.py --arch sam2.1-hiera-tiny \\
        --points-per-side 16 --json everything_sam2.json

Models: ``--arch sam-vit-base`` (``SamConfig()``, real size) or ``--arch sam2.1-hiera-tiny``
(``Sam2Config()``) with random weights (seed 0; speed does not depend on the weight values),
``--tiny sam|sam2|sam_hq`` (the test suite's tiny configs, ``tests/tiny_models.py``), or
``--weights FOLDER`` (a transformers checkpoint of the ``--arch`` family). With random
weights the quality thresholds default to 0 so that many masks survive.

Options that isolate one cause of difference (see docs/BENCHMARKS.md):

* ``--shared-pixels``: the pipeline embeds anyseg's pixel values instead of its own image
  processor's (removes the preprocessing difference; timings then include anyseg's resize).
* ``--fix-sam2-points``: correct transformers' SAM 2 point mapping in the pipeline (it scales
  grid points by ``S / max(H, W)`` on both axes, while the SAM 2 image is resized to ``S x S``).
* ``--shared-points``: the pipeline clicks anyseg's coordinates (a float64 grid mapped in
  float64, as segment-anything / SAM 2 do, then float32) instead of its float32 ones.

* ``--smooth-masks``: both models' low-res logits are replaced by a smooth version (means of
  16 x 16 blocks, upsampled back), so that random weights give blob-shaped masks like a
  trained model's instead of speckle (speckle makes run-length work, and so the pipeline's
  post-processing, unrealistically expensive).

With ``--shared-pixels --shared-points`` both sides decode the same embeddings at the same
clicks, so the comparison isolates the generators' own logic (filters, upscaling, NMS).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GRABCUT = ROOT.parent / "shared" / "data" / "grabcut" / "images"
ARCHS = {"sam-vit-base": "sam", "sam2.1-hiera-tiny": "sam2"}
#: --tiny family -> anyseg registry name
TINY_NAMES = {"sam": "sam-vit-base", "sam_hq": "sam-hq-vit-base", "sam2": "sam2.1-hiera-tiny"}
FAMILY_OF_MODEL_TYPE = {"sam": "sam", "sam_hq": "sam_hq", "sam2": "sam2"}


# -- model and image ---------------------------------------------------------------------------
def build_model(args: argparse.Namespace, folder: Path) -> tuple[Path, str, int]:
    """The weights folder, anyseg's model name and the model's input frame S."""
    import torch
    import transformers

    if args.weights:
        cfg = json.loads((Path(args.weights) / "config.json").read_text())
        family = FAMILY_OF_MODEL_TYPE.get(cfg.get("model_type", ""))
        if family is None:
            raise SystemExit(f"--weights: unsupported model_type {cfg.get('model_type')!r}")
        name = args.arch if ARCHS[args.arch] == family else TINY_NAMES[family]
        return Path(args.weights), name, int(cfg["prompt_encoder_config"]["image_size"])
    if args.tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import BUILDERS, FRAME

        return BUILDERS[args.tiny](folder, seed=args.seed), TINY_NAMES[args.tiny], FRAME
    torch.manual_seed(args.seed)
    if args.arch == "sam-vit-base":
        model = transformers.SamModel(transformers.SamConfig())
    else:
        model = transformers.Sam2Model(transformers.Sam2Config())
    model.eval().save_pretrained(str(folder))
    return folder, args.arch, int(model.config.prompt_encoder_config.image_size)


def image_processor(family: str, frame: int, folder: Path) -> Any:
    """transformers' image processor of the family, for an ``S x S`` model frame, with the folder's mean/std."""
    import transformers

    kw: dict[str, Any] = {}
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        cfg = json.loads(pre.read_text())
        kw = {k: cfg[k] for k in ("image_mean", "image_std") if k in cfg}
    if family in ("sam", "sam_hq"):
        return transformers.SamImageProcessor(size={"longest_edge": frame}, pad_size={"height": frame, "width": frame},
                                              **kw)
    return transformers.Sam2ImageProcessor(size={"height": frame, "width": frame}, **kw)


def load_image(spec: str | None, square: bool, max_side: int | None) -> tuple[np.ndarray, str]:
    from PIL import Image

    if spec in (None, "grabcut"):
        files = sorted(GRABCUT.glob("*.jpg")) if GRABCUT.is_dir() else []
        spec = str(files[0]) if files else "coffee"
    if spec == "coffee":
        from skimage import data

        img, label = data.coffee(), "skimage.data.coffee()"
    else:
        img, label = np.asarray(Image.open(spec).convert("RGB")), Path(spec).name
    if max_side and max(img.shape[:2]) > max_side:
        s = max_side / max(img.shape[:2])
        img = np.asarray(Image.fromarray(img).resize((round(img.shape[1] * s), round(img.shape[0] * s)), Image.BILINEAR))
        label += f" resized to {img.shape[1]}x{img.shape[0]}"
    if square:
        h, w = img.shape[:2]
        n = min(h, w)
        y0, x0 = (h - n) // 2, (w - n) // 2
        img = img[y0:y0 + n, x0:x0 + n]
        label += f" centre-cropped to {n}x{n}"
    return np.ascontiguousarray(img), label


# -- reference patches (opt-in) -----------------------------------------------------------------
def share_pixels(proc: Any, predictor: Any) -> None:
    """Make the pipeline's image processor return anyseg's pixel values for every crop."""
    import torch

    base = type(proc)

    class Shared(base):  # type: ignore[misc, valid-type]
        def __call__(self, images: Any = None, **kwargs: Any) -> Any:
            out = base.__call__(self, images=images, **kwargs)
            ims = images if isinstance(images, (list, tuple)) else [images]
            px = [predictor.preprocess(np.ascontiguousarray(im.permute(1, 2, 0).numpy()))[0] for im in ims]
            out["pixel_values"] = torch.cat(px).to(out["pixel_values"].dtype)
            return out

    proc.__class__ = Shared


def fix_sam2_points() -> None:
    """Map the pipeline's SAM 2 grid points per axis (``S / W``, ``S / H``), as SAM 2's predictor does."""
    from copy import deepcopy

    from transformers.models.sam2 import image_processing_sam2 as m

    def normalize(target_size: int, coords: Any, original_size: tuple[int, int], is_bounding_box: bool = False) -> Any:
        h, w = (int(v) for v in original_size)
        coords = deepcopy(coords).float()
        coords[..., 0] = coords[..., 0] * (target_size / w)
        coords[..., 1] = coords[..., 1] * (target_size / h)
        return coords

    m._normalize_coordinates = normalize


def share_points(family: str, predictor: Any) -> None:
    """Give the pipeline anyseg's click coordinates (float64 grid and mapping, then float32) for every crop.

    transformers builds the grid with ``torch.linspace`` in float32 and maps it in float32;
    segment-anything / SAM 2 and anyseg use float64 numpy, so the clicks differ by ~1e-5 px.
    """
    import torch

    from anyseg.masks.amg import build_point_grid

    if family in ("sam", "sam_hq"):
        from transformers.models.sam import image_processing_sam as m
    else:
        from transformers.models.sam2 import image_processing_sam2 as m

    def crop_images(crop_boxes: Any, image: Any, points_grid: Any, layer_idxs: Any, target_size: int,
                    input_data_format: Any = None) -> tuple[list, list]:
        crops, points = [], []
        for (x0, y0, x1, y1), layer in zip(crop_boxes, layer_idxs):
            crop = image[:, y0:y1, x0:x1]
            crops.append(crop)
            ch, cw = crop.shape[-2:]
            grid = build_point_grid(round(len(points_grid[layer]) ** 0.5))
            xy = predictor.geometry((ch, cw)).to_model(grid * np.array([[cw, ch]], dtype=np.float64))
            points.append(torch.from_numpy(xy.astype(np.float32)))
        return crops, points

    m._generate_crop_images = crop_images


def smooth_masks(model: Any, cell: int = 16) -> None:
    """Make ``model``'s low-res mask logits smooth blobs like a trained model's.

    Random weights give speckled logits (tens of thousands of runs per mask), which inflate
    any run-length work; trained SAMs give smooth regions. Each mask's logits are averaged in
    ``cell x cell`` blocks and upsampled back, then shifted so that a fraction between 3 % and
    40 % of the mask is positive (a function of the mask's own values: without the shift most smoothed random masks are empty, which would make the
    post-processing unrealistically cheap). The same per-mask transform runs on both sides.
    It is meant for timing: the shift moves many pixels close to the threshold, so float
    rounding differences between the two sides' batch layouts (64 clicks per call vs 4) can
    flip masks of near-tied random models (the tiny configs); check parity without it.
    """
    forward = model.forward

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        out = forward(*args, **kwargs)
        out["pred_masks"] = _smooth(out["pred_masks"], cell)
        return out

    model.forward = wrapped


def smooth_predictor_masks(predictor: Any, cell: int = 16) -> None:
    """:func:`smooth_masks` for anyseg's rescheduled decoder, which does not call ``model.forward``."""
    run_fast = predictor._run_fast

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        logits, scores = run_fast(*args, **kwargs)
        return _smooth(logits, cell), scores

    predictor._run_fast = wrapped


def _smooth(m: Any, cell: int) -> Any:
    import torch
    import torch.nn.functional as F

    flat = m.reshape(-1, 1, *m.shape[-2:])
    small = F.avg_pool2d(flat, cell)
    smooth = F.interpolate(small, size=m.shape[-2:], mode="bilinear", align_corners=False).flatten(1)
    frac = 0.03 + 0.37 * torch.frac(small.flatten(1).abs().mean(dim=1) * 1000.0)  # (n,) in [0.03, 0.40)
    level = torch.stack([torch.quantile(row, 1.0 - f) for row, f in zip(smooth, frac)])
    return (smooth - level[:, None]).reshape(m.shape)


# -- runs ------------------------------------------------------------------------------------------
def run_reference(pipe: Any, image: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    out = pipe(Image.fromarray(image), points_per_crop=p["points_per_side"], points_per_batch=p["points_per_batch"],
               crops_n_layers=p["crop_n_layers"], crop_overlap_ratio=p["crop_overlap_ratio"],
               crop_n_points_downscale_factor=p["crop_n_points_downscale_factor"],
               pred_iou_thresh=p["pred_iou_thresh"], stability_score_thresh=p["stability_score_thresh"],
               stability_score_offset=p["stability_score_offset"], mask_threshold=p["mask_threshold"],
               crops_nms_thresh=p["crop_nms_thresh"])
    h, w = image.shape[:2]
    masks = np.stack([np.asarray(m, dtype=bool) for m in out["masks"]]) if out["masks"] else np.zeros((0, h, w), bool)
    return masks, np.asarray(out["scores"], dtype=np.float32).reshape(-1)


def run_anyseg(predictor: Any, image: np.ndarray, params: Any) -> tuple[np.ndarray, np.ndarray]:
    from anyseg.tasks.everything import generate

    out = generate(predictor, image, params)
    return out.masks, out.scores


def timed(fn: Any, repeat: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return times, result


def interleaved(fns: list[Any], repeat: int) -> list[tuple[list[float], Any]]:
    """Time each function ``repeat`` times, alternating between them (load drifts hit both alike)."""
    runs: list[tuple[list[float], Any]] = [([], None) for _ in fns]
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            times, result = timed(fn, 1)
            runs[k] = (runs[k][0] + times, result)
    return runs


def encoder_times(predictor: Any, pipe: Any, image: np.ndarray, repeat: int) -> dict[str, float]:
    """Image encoder alone (preprocessing included), each side with its own preprocessing."""
    import torch

    def ref() -> None:
        inputs = pipe.image_processor(images=[torch.from_numpy(image).permute(2, 0, 1)], return_tensors="pt")
        with torch.inference_mode():
            pipe.model.get_image_embeddings(inputs["pixel_values"])

    (theirs, _), (ours, _) = interleaved([ref, lambda: predictor.embed(image)], repeat)
    return {"anyseg_s": round(min(ours), 4), "reference_s": round(min(theirs), 4)}


def decoder_times(predictor: Any, image: np.ndarray, p: dict, repeat: int) -> dict[str, float]:
    """The mask decoder alone over the whole grid (crop_n_layers 0): one call per batch, as the
    pipeline does, vs anyseg's ``_decode`` (calls of 4 to 7 points on the CPU)."""
    from anyseg.masks.amg import build_point_grid
    from anyseg.tasks.everything import _decode

    h, w = image.shape[:2]
    emb = predictor.embed(image)
    pts = build_point_grid(p["points_per_side"]) * np.array([[w, h]], dtype=np.float64)
    b = p["points_per_batch"]

    def per_batch() -> None:
        for s in range(0, len(pts), b):
            predictor.decode_points(emb, pts[s:s + b], multimask=True)

    def split() -> None:
        for s in range(0, len(pts), b):
            _decode(predictor, emb, pts[s:s + b])

    (one, _), (many, _) = interleaved([per_batch, split], repeat)
    return {"one_call_per_batch_s": round(min(one), 3), "anyseg_decode_s": round(min(many), 3)}


def pixel_difference(predictor: Any, pipe: Any, image: np.ndarray) -> float:
    """Max |difference| of the two sides' normalised pixel values for the whole image."""
    import torch

    ours, _ = predictor.preprocess(image)
    theirs = pipe.image_processor(images=[torch.from_numpy(image).permute(2, 0, 1)], return_tensors="pt")["pixel_values"]
    return float((ours - theirs.to(ours.dtype)).abs().max())


# -- comparison -----------------------------------------------------------------------------------
def compare(a_masks: np.ndarray, a_scores: np.ndarray, b_masks: np.ndarray, b_scores: np.ndarray) -> dict:
    """One-to-one matching (Hungarian on mask IoU) of anyseg's masks ``a`` and the reference's ``b``."""
    from anyseg.masks.boxes import mask_iou

    na, nb = len(a_masks), len(b_masks)
    res: dict[str, Any] = {"anyseg_masks": na, "reference_masks": nb,
                           "empty": [int((~a_masks.any(axis=(1, 2))).sum()), int((~b_masks.any(axis=(1, 2))).sum())]}
    if na == 0 or nb == 0:
        res.update(pairs=0, pairs_iou_ge_0_99=0, identical=0, mean_iou=None, unmatched_anyseg=na,
                   unmatched_reference=nb, max_abs_score_diff=None)
        return res
    iou = mask_iou(a_masks, b_masks).astype(np.float64)
    empty_a, empty_b = ~a_masks.any(axis=(1, 2)), ~b_masks.any(axis=(1, 2))
    iou[np.ix_(empty_a, empty_b)] = 1.0  # two empty masks are the same mask
    try:
        from scipy.optimize import linear_sum_assignment

        ra, rb = linear_sum_assignment(-iou)
        method = "hungarian"
    except ImportError:  # greedy by IoU
        ra, rb, used_a, used_b = [], [], set(), set()
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            i, j = divmod(int(flat), nb)
            if i not in used_a and j not in used_b:
                ra.append(i), rb.append(j), used_a.add(i), used_b.add(j)
        ra, rb, method = np.asarray(ra), np.asarray(rb), "greedy"
    pair_iou = iou[ra, rb]
    ok = pair_iou >= 0.5
    ra, rb, pair_iou = ra[ok], rb[ok], pair_iou[ok]
    identical = sum(bool(np.array_equal(a_masks[i], b_masks[j])) for i, j in zip(ra, rb))
    diffs = np.abs(a_scores[ra] - b_scores[rb]) if len(ra) else np.zeros(0)
    un_a = sorted(set(range(na)) - set(ra.tolist()))
    un_b = sorted(set(range(nb)) - set(rb.tolist()))
    res.update(
        matching=method, pairs=int(len(ra)), pairs_iou_ge_0_99=int((pair_iou >= 0.99).sum()), identical=int(identical),
        mean_iou=round(float(pair_iou.mean()), 5) if len(ra) else None,
        min_iou=round(float(pair_iou.min()), 5) if len(ra) else None,
        unmatched_anyseg=len(un_a), unmatched_reference=len(un_b),
        max_abs_score_diff=float(diffs.max()) if len(diffs) else None,
        mean_abs_score_diff=float(diffs.mean()) if len(diffs) else None,
        unmatched_anyseg_detail=[_describe(a_masks[i], a_scores[i], iou[i].max()) for i in un_a[:10]],
        unmatched_reference_detail=[_describe(b_masks[j], b_scores[j], iou[:, j].max()) for j in un_b[:10]],
    )
    return res


def _describe(mask: np.ndarray, score: float, best: float) -> dict:
    ys, xs = np.nonzero(mask)
    box = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())] if len(xs) else [0, 0, 0, 0]
    return {"score": round(float(score), 5), "area": int(mask.sum()), "box_inclusive": box,
            "best_iou_other_side": round(float(best), 4)}


# -- main ---------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--tiny", choices=sorted(TINY_NAMES), help="the test suite's tiny random config of this family")
    src.add_argument("--weights", help="a transformers checkpoint folder of the --arch family")
    ap.add_argument("--arch", default="sam2.1-hiera-tiny", choices=sorted(ARCHS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image", help="image file, 'coffee' (skimage) or 'grabcut' (default: first GrabCut image, "
                                    "else coffee)")
    ap.add_argument("--square", action="store_true", help="centre-crop the image to a square")
    ap.add_argument("--max-side", type=int, help="downscale the image so its longest side is at most this")
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--points-per-batch", type=int, default=64)
    ap.add_argument("--pred-iou-thresh", type=float, help="default: 0 with random weights, else the family's")
    ap.add_argument("--stability-score-thresh", type=float, help="default: 0 with random weights, else 0.95")
    ap.add_argument("--stability-score-offset", type=float, default=1.0)
    ap.add_argument("--mask-threshold", type=float, default=0.0)
    ap.add_argument("--nms", type=float, default=0.7, help="box NMS threshold (anyseg's box_nms_thresh and "
                                                            "crop_nms_thresh, the pipeline's crops_nms_thresh)")
    ap.add_argument("--crop-n-layers", type=int, default=0)
    ap.add_argument("--crop-overlap-ratio", type=float, default=512 / 1500)
    ap.add_argument("--crop-n-points-downscale-factor", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1,
                    help="timed runs of each side, alternating (the minimum is reported)")
    ap.add_argument("--threads", type=int, help="torch threads for both (default: torch's)")
    ap.add_argument("--shared-pixels", action="store_true", help="the pipeline embeds anyseg's pixel values")
    ap.add_argument("--fix-sam2-points", action="store_true", help="correct the pipeline's SAM 2 point mapping")
    ap.add_argument("--shared-points", action="store_true",
                    help="the pipeline clicks anyseg's coordinates (float64 grid; implies --fix-sam2-points)")
    ap.add_argument("--smooth-masks", action="store_true",
                    help="both models' low-res logits become smooth blobs (16x16-pixel block means, upsampled): "
                         "mask shapes like a trained model's instead of random speckle")
    ap.add_argument("--no-encoder-timing", action="store_true")
    ap.add_argument("--decoder-timing", action="store_true",
                    help="also time the decoder alone (one call per batch vs anyseg's split calls; crop_n_layers 0)")
    ap.add_argument("--profile", action="store_true", help="cProfile one run of each side (top functions)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import pipeline

    from anyseg.models import load_model
    from anyseg.tasks.everything import EverythingParams

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    image, image_label = load_image(args.image, args.square, args.max_side)
    random_weights = args.weights is None
    with tempfile.TemporaryDirectory() as tmp:
        folder, name, frame = build_model(args, Path(tmp) / "model")
        predictor = load_model(name, weights=folder, device="cpu")
        family = predictor.family
        default_iou = 0.8 if family == "sam2" else 0.88
        p = dict(
            points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
            pred_iou_thresh=args.pred_iou_thresh if args.pred_iou_thresh is not None else (0.0 if random_weights else default_iou),
            stability_score_thresh=(args.stability_score_thresh if args.stability_score_thresh is not None
                                    else (0.0 if random_weights else 0.95)),
            stability_score_offset=args.stability_score_offset, mask_threshold=args.mask_threshold,
            box_nms_thresh=args.nms, crop_nms_thresh=args.nms, crop_n_layers=args.crop_n_layers,
            crop_overlap_ratio=args.crop_overlap_ratio, crop_n_points_downscale_factor=args.crop_n_points_downscale_factor,
        )
        params = EverythingParams.for_family(family, **p)
        model_cls = getattr(transformers, {"sam": "SamModel", "sam_hq": "SamHQModel", "sam2": "Sam2Model"}[family])
        hf_model = model_cls.from_pretrained(str(folder)).eval()
        proc = image_processor(family, frame, folder)
        pipe = pipeline("mask-generation", model=hf_model, image_processor=proc, device=-1)
        if args.smooth_masks:
            smooth_masks(hf_model)
            smooth_masks(predictor.model)  # mask inputs (SAM 2's m2m) still go through the model's forward
            smooth_predictor_masks(predictor)
        if args.fix_sam2_points:
            fix_sam2_points()
        if args.shared_points:
            share_points(family, predictor)
        pixel_diff = pixel_difference(predictor, pipe, image)
        if args.shared_pixels:
            share_pixels(proc, predictor)

        # warm-up (not timed): a small corner of the image with a 2 x 2 grid
        warm = np.ascontiguousarray(image[:64, :64])
        small = {**p, "points_per_side": 2}
        run_reference(pipe, warm, small)
        run_anyseg(predictor, warm, EverythingParams.for_family(family, **small))

        enc = None if args.no_encoder_timing else encoder_times(predictor, pipe, image, max(1, args.repeat))
        dec = decoder_times(predictor, image, p, max(1, args.repeat)) if args.decoder_timing and args.crop_n_layers == 0 \
            else None
        (ref_times, (ref_masks, ref_scores)), (our_times, (our_masks, our_scores)) = interleaved(
            [lambda: run_reference(pipe, image, p), lambda: run_anyseg(predictor, image, params)], args.repeat)
        profiles = {}
        if args.profile:
            for label, fn in (("reference", lambda: run_reference(pipe, image, p)),
                              ("anyseg", lambda: run_anyseg(predictor, image, params))):
                pr = cProfile.Profile()
                pr.enable()
                fn()
                pr.disable()
                s = io.StringIO()
                pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(25)
                profiles[label] = s.getvalue()
        n_params = predictor.num_parameters

    cmp = compare(our_masks, our_scores, ref_masks, ref_scores)
    ref_t, our_t = min(ref_times), min(our_times)
    result = {
        "model": f"{name} ({'tiny --tiny ' + args.tiny if args.tiny else ('weights ' + str(args.weights) if args.weights else 'real-size config')}"
                 f", {'random weights seed ' + str(args.seed) if random_weights else 'given weights'})",
        "family": family, "parameters_m": round(n_params / 1e6, 2),
        "image": image_label, "image_hw": list(image.shape[:2]), "params": p,
        "shared_pixels": args.shared_pixels, "fix_sam2_points": args.fix_sam2_points, "shared_points": args.shared_points,
        "smooth_masks": args.smooth_masks,
        "pixel_values_max_abs_diff": round(pixel_diff, 6),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "python": sys.version.split()[0],
        "times_s": {"reference": [round(t, 3) for t in ref_times], "anyseg": [round(t, 3) for t in our_times]},
        "reference_s": round(ref_t, 3), "anyseg_s": round(our_t, 3), "speedup": round(ref_t / our_t, 2),
        "encoder_s": enc, "decoder_s": dec, "comparison": cmp,
    }
    if enc and args.crop_n_layers == 0:  # one crop = the image: total minus one encode is the rest
        result["after_encoder_s"] = {"reference": round(ref_t - enc["reference_s"], 3),
                                     "anyseg": round(our_t - enc["anyseg_s"], 3)}

    print(f"model {result['model']}; image {image_label} {image.shape[1]}x{image.shape[0]}; threads {result['torch_threads']}")
    print("params " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items()))
    print(f"pixel values max |diff| (own preprocessing): {pixel_diff:.3g}"
          f"{'; pipeline fed anyseg pixels' if args.shared_pixels else ''}{'; SAM 2 points fixed' if args.fix_sam2_points else ''}"
          f"{'; pipeline clicks anyseg points' if args.shared_points else ''}"
          f"{'; smooth-mask logits on both sides' if args.smooth_masks else ''}")
    print(f"{'':26} {'transformers':>13} {'anyseg':>10}")
    if enc:
        print(f"{'image encoder (s)':26} {enc['reference_s']:>13.3f} {enc['anyseg_s']:>10.3f}")
    print(f"{'segment everything (s)':26} {ref_t:>13.3f} {our_t:>10.3f}   x{result['speedup']}")
    if "after_encoder_s" in result:
        a = result["after_encoder_s"]
        print(f"{'  of which after encoder':26} {a['reference']:>13.3f} {a['anyseg']:>10.3f}")
    if dec:
        print(f"{'decoder alone (s)':26} {dec['one_call_per_batch_s']:>13.3f} {dec['anyseg_decode_s']:>10.3f}"
              "   (one call per batch vs anyseg's calls of 4-7 points)")
    print(f"{'masks':26} {cmp['reference_masks']:>13} {cmp['anyseg_masks']:>10}")
    print(f"matched pairs (IoU >= 0.5) {cmp['pairs']}, IoU >= 0.99: {cmp['pairs_iou_ge_0_99']}, identical: "
          f"{cmp['identical']}, mean IoU {cmp['mean_iou']}, unmatched anyseg {cmp['unmatched_anyseg']} / "
          f"reference {cmp['unmatched_reference']}, max |score diff| {cmp['max_abs_score_diff']}")
    for side in ("anyseg", "reference"):
        for d in cmp.get(f"unmatched_{side}_detail", [])[:5]:
            print(f"  unmatched {side}: {d}")
    for label, text in profiles.items():
        print(f"--- profile: {label}\n{text}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``anyseg everything``: automatic mask generation (SAM / SAM 2 semantics), optionally CLIP-labelled.

The options that scale the work are checked against the bounds the service also applies
(:data:`anyseg.tasks.everything.MAX_POINTS_PER_SIDE` and its neighbours) before any file is
read or written; a bound's error names the option that sets it (:data:`EVERYTHING_OPTIONS`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from anyseg.commands.options import (
    DEVICE_HELP, MAX_PIXELS_HELP, OUT_HELP, RUNTIME_HELP, check_max_pixels, check_out, device_option, is_baseline,
    load_predictor, model_label,
)
from anyseg.errors import InputError
from anyseg.runtime import RUNTIMES

__all__ = ["EVERYTHING_OPTIONS", "SAM_ONLY_OPTIONS", "everything_params", "add_parser", "run"]

#: ``anyseg everything`` options -> the EverythingParams fields they set
EVERYTHING_OPTIONS = {
    "points_per_side": "--points-per-side", "points_per_batch": "--points-per-batch",
    "pred_iou_thresh": "--pred-iou-thresh", "stability_score_thresh": "--stability-thresh",
    "crop_n_layers": "--crop-layers", "min_mask_region_area": "--min-area", "granularity": "--granularity",
}
#: SAM generator options that the classical (superpixel) generator has no use for
SAM_ONLY_OPTIONS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_thresh", "crop_layers",
                    "use_m2m")


def everything_params(args: argparse.Namespace, family: str = "sam") -> Any:
    """The :class:`~anyseg.tasks.everything.EverythingParams` of ``anyseg everything``'s options
    for ``family``; out-of-bound values are one-line errors that name the option and the bound."""
    from anyseg.tasks.everything import EverythingParams

    values = {field: getattr(args, option[2:].replace("-", "_")) for field, option in EVERYTHING_OPTIONS.items()}
    overrides = {field: v for field, v in values.items() if v is not None}
    if args.use_m2m:
        overrides["use_m2m"] = True
    try:
        return EverythingParams.for_family(family, **overrides)
    except InputError as e:
        raise _with_option_names(e) from None


def _with_option_names(error: InputError) -> InputError:
    """``error`` with ``EverythingParams.FIELD`` replaced by the option that sets it."""
    message = str(error)
    for field, option in EVERYTHING_OPTIONS.items():
        message = message.replace(f"EverythingParams.{field} ", f"{option} ")
    return InputError(message)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``everything`` and its options to the ``anyseg`` sub-commands."""
    ev = sub.add_parser("everything", help="segment everything: automatic mask generation (SAM / SAM 2 semantics)")
    ev.add_argument("image", help="image file")
    ev.add_argument("--model", default="auto", metavar="NAME|PATH",
                    help="registry name or local model folder (default auto); classical = superpixel regions")
    ev.add_argument("--weights", metavar="PATH", help="transformers weights folder for --model")
    ev.add_argument("--points-per-side", type=int, default=None, metavar="N", help="grid of N x N clicks (default 32)")
    ev.add_argument("--points-per-batch", type=int, default=None, metavar="N", help="clicks per decoder call (default 64)")
    ev.add_argument("--pred-iou-thresh", type=float, default=None, metavar="T",
                    help="keep predicted IoU > T (default: SAM 0.88, SAM 2 0.8)")
    ev.add_argument("--stability-thresh", type=float, default=None, metavar="T", help="keep stability >= T (default 0.95)")
    ev.add_argument("--crop-layers", type=int, default=None, metavar="N", help="layers of overlapping crops (default 0)")
    ev.add_argument("--min-area", type=int, default=None, metavar="PX",
                    help="remove holes and islands smaller than PX pixels (default 0: off)")
    ev.add_argument("--granularity", default=None, choices=["whole", "part", "subpart", "all"],
                    help="which of SAM's three outputs per click to keep (default all)")
    ev.add_argument("--use-m2m", action="store_true", help="SAM 2's mask-to-mask refinement")
    ev.add_argument("--sort", default="area", choices=["area", "score"],
                    help="order of the masks in the outputs: largest first (area, default) or best score first")
    ev.add_argument("--per-mask", action="store_true", help="also write one binary PNG per mask")
    ev.add_argument("--label-with", metavar="CLIP_MODEL",
                    help="label the masks with a CLIP model (e.g. clip-vit-b16, or 'clip' for the best present)")
    ev.add_argument("--classes", metavar="A,B|SYN,...", help="class names for --label-with (| separates synonyms)")
    ev.add_argument("--out", required=True, metavar="DIR", help=OUT_HELP)
    ev.add_argument("--json", action="store_true", help="also print the run's JSON record to stdout")
    ev.add_argument("--max-pixels", type=int, default=None, metavar="N", help=MAX_PIXELS_HELP)
    ev.add_argument("--device", default=None, help=DEVICE_HELP)
    ev.add_argument("--runtime", default="auto", choices=list(RUNTIMES), help=RUNTIME_HELP)
    return ev


def _note_ignored_sam_options(args: argparse.Namespace) -> None:
    """Say on stderr which of the given options the classical generator ignores (never silently)."""
    given = [f"--{n.replace('_', '-')}" for n in SAM_ONLY_OPTIONS if getattr(args, n, None) not in (None, False)]
    if given:
        print(f"notice: the classical engine's superpixel regions ignore {', '.join(given)} (SAM generator options); "
              "the record lists the settings it used", file=sys.stderr)


def _label_options(args: argparse.Namespace) -> list | None:
    """``--label-with`` and ``--classes`` (they go together): the parsed classes, or ``None``."""
    if (args.label_with is None) != (args.classes is None):
        raise InputError("--label-with and --classes go together: --label-with clip-vit-b16 --classes cat,dog")
    if args.classes is None:
        return None
    from anyseg.text.vocab import parse_classes

    return parse_classes(args.classes, "--classes")


def run(args: argparse.Namespace) -> int:
    """Check the options, generate (and label) the masks, write them and print one status line."""
    import time

    from anyseg.io.images import load_image
    from anyseg.tasks.everything import generate, write_everything

    device = device_option(args.device)
    check_max_pixels(args.max_pixels)
    everything_params(args)  # the bounds, before anything is read or written
    out_dir = check_out(args.out)
    clip = None
    classes = _label_options(args)
    image = load_image(args.image, max_pixels=args.max_pixels)
    predictor = load_predictor(args, device)
    if is_baseline(predictor):
        _note_ignored_sam_options(args)
    params = everything_params(args, predictor.family)
    if args.label_with is not None:
        from anyseg.text.clip import load_clip

        clip = load_clip("auto" if args.label_with == "clip" else args.label_with, device=device)
    t = time.perf_counter()
    try:
        masks = generate(predictor, image, params, progress=True, sort_by=args.sort)
    except InputError as e:  # e.g. --min-area larger than the image
        raise _with_option_names(e) from None
    model_name = predictor.name
    if clip is not None:
        from anyseg.tasks.text import label_masks

        masks = label_masks(clip, image, masks, classes, keep_all=True)
        model_name = f"{predictor.name}+{clip.name}"
    seconds = time.perf_counter() - t
    record, json_path = write_everything(masks, image, out_dir, Path(args.image).stem, model=model_name,
                                         params=params, image_path=str(args.image), seconds=seconds,
                                         per_mask=args.per_mask, classes=classes)
    if args.json:
        print(json.dumps(record))
    else:
        label = model_label(predictor) + (f"+{clip.name}" if clip is not None else "")
        print(f"{len(masks)} mask(s) from {label} in {seconds:.1f} s -> {json_path}", file=sys.stderr)
    return 0

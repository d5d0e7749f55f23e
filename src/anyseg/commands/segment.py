"""``anyseg segment``: promptable segmentation of one image (points, box, mask)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from anyseg.commands.options import (
    RUNTIME_HELP, check_max_pixels, check_out, device_option, load_predictor, model_label,
)
from anyseg.errors import PromptError
from anyseg.prompts import parse_box, parse_point
from anyseg.runtime import RUNTIMES

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``segment`` and its options to the ``anyseg`` sub-commands."""
    seg = sub.add_parser("segment", help="promptable segmentation of one image (points, box, mask)")
    seg.add_argument("image", help="image file")
    seg.add_argument("--point", action="append", default=[], metavar="X,Y[:LABEL]",
                     help="a click in original-image pixels; LABEL 1 = positive (default), 0 = negative; repeatable")
    seg.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box in original-image pixels")
    seg.add_argument("--mask-input", metavar="PNG", help="a binary mask (same size as the image) to refine")
    seg.add_argument("--model", default="auto", metavar="NAME|PATH",
                     help="registry name or local model folder (default auto: best SAM-family model present, else classical)")
    seg.add_argument("--weights", metavar="PATH", help="transformers weights folder (config.json + *.safetensors) for --model")
    seg.add_argument("--multimask", action="store_true", help="return up to 3 distinct candidate masks sorted by score")
    seg.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    seg.add_argument("--json", action="store_true", help="also print the run's JSON record to stdout")
    seg.add_argument("--max-pixels", type=int, default=None, metavar="N",
                     help="refuse larger images (default 40000000, or $ANYSEG_MAX_PIXELS)")
    seg.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda when available)")
    seg.add_argument("--runtime", default="auto", choices=list(RUNTIMES), help=RUNTIME_HELP)
    return seg


def run(args: argparse.Namespace) -> int:
    """Check the prompt and options, segment, write the results and print one status line."""
    import numpy as np

    from anyseg.io.images import load_image, load_mask
    from anyseg.tasks.promptable import segment, write_results
    from anyseg.types import Prompt

    points = [parse_point(p) for p in args.point]
    box = parse_box(args.box) if args.box else None
    if not points and box is None and not args.mask_input:
        raise PromptError("no prompt: give --point X,Y[:LABEL], --box X0,Y0,X1,Y1 or --mask-input PNG")
    device = device_option(args.device)
    check_max_pixels(args.max_pixels)
    out_dir = check_out(args.out)

    image = load_image(args.image, max_pixels=args.max_pixels)
    mask = load_mask(args.mask_input, size=image.shape[:2], max_pixels=args.max_pixels) if args.mask_input else None
    prompt = Prompt(
        points=np.array([p[:2] for p in points]) if points else None,
        labels=np.array([p[2] for p in points]) if points else None,
        box=box,
        mask=mask,
    )
    prompt.check_within(image.shape[:2])
    predictor = load_predictor(args, device)
    result = segment(predictor, image, prompt, multimask=args.multimask)
    record, json_path = write_results(result, image, out_dir, Path(args.image).stem, image_path=str(args.image))
    if args.json:
        print(json.dumps(record))
    else:
        scores = ", ".join(f"{m['score']:.3f}" for m in record["masks"])
        print(f"{len(record['masks'])} mask(s) from {model_label(predictor)} (scores {scores}) -> {json_path}",
              file=sys.stderr)
    return 0

"""The ``anyseg`` command line: thin, it parses, calls tasks and prints.

Every user error (bad file, bad prompt, unknown model, missing weights) is one line on stderr,
``anyseg: error: ...``, and exit code 2; never a traceback (``ANYSEG_DEBUG=1`` shows one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from anyseg.errors import AnysegError, InputError, PromptError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``anyseg: error: ... (see --help)``) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SystemExit(_fail(f"{message} (see `{self.prog} --help`)"))


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"anyseg: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def _numbers(text: str, count: int, what: str, example: str) -> list[float]:
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count:
        raise PromptError(f"malformed {what} {text!r}: expected {example}")
    return values


def parse_point(text: str) -> tuple[float, float, int]:
    """``X,Y`` or ``X,Y:LABEL`` (LABEL 1 = positive, default; 0 = negative)."""
    coords, _, label = text.partition(":")
    x, y = _numbers(coords, 2, "point", "X,Y or X,Y:LABEL with LABEL 1 or 0, e.g. 120,80:1")
    if label not in ("", "0", "1"):
        raise PromptError(f"malformed point {text!r}: LABEL must be 1 (positive) or 0 (negative)")
    return x, y, int(label or 1)


def parse_box(text: str) -> list[float]:
    return _numbers(text, 4, "box", "X0,Y0,X1,Y1 in pixels, e.g. 10,20,200,180")


def _build_parser() -> argparse.ArgumentParser:
    from anyseg import __version__

    parser = _Parser(prog="anyseg", description="Segmentation with foundation models (SAM family) and a classical engine.")
    parser.add_argument("--version", action="version", version=f"anyseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    seg = sub.add_parser("segment", help="promptable segmentation of one image (points, box, mask)")
    seg.add_argument("image", help="image file")
    seg.add_argument("--point", action="append", default=[], metavar="X,Y[:LABEL]",
                     help="a click in original-image pixels; LABEL 1 = positive (default), 0 = negative; repeatable")
    seg.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box in original-image pixels")
    seg.add_argument("--mask-input", metavar="PNG", help="a binary mask (same size as the image) to refine")
    seg.add_argument("--model", default="auto", help="registry name (default auto: best SAM-family model present, else classical)")
    seg.add_argument("--weights", metavar="PATH", help="transformers weights folder (config.json + *.safetensors) for --model")
    seg.add_argument("--multimask", action="store_true", help="return 3 candidate masks sorted by score")
    seg.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    seg.add_argument("--json", action="store_true", help="also print the run's JSON record to stdout")
    seg.add_argument("--max-pixels", type=int, default=None, metavar="N",
                     help="refuse larger images (default 40000000, or $ANYSEG_MAX_PIXELS)")
    seg.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda when available)")

    ev = sub.add_parser("everything", help="segment everything: automatic mask generation (SAM / SAM 2 semantics)")
    ev.add_argument("image", help="image file")
    ev.add_argument("--model", default="auto", help="registry name (default auto); classical = superpixel regions")
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
    ev.add_argument("--sort", default="area", choices=["area", "score"])
    ev.add_argument("--per-mask", action="store_true", help="also write one binary PNG per mask")
    ev.add_argument("--out", required=True, metavar="DIR")
    ev.add_argument("--json", action="store_true", help="also print the run's JSON record to stdout")
    ev.add_argument("--max-pixels", type=int, default=None, metavar="N")
    ev.add_argument("--device", default=None)

    models = sub.add_parser("models", help="list or download models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", parser_class=_Parser)
    msub.required = True
    mlist = msub.add_parser("list", help="registered models and whether their weights are present locally")
    mlist.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pull = msub.add_parser("pull", help="download a model's weights into the Hugging Face cache")
    pull.add_argument("name")

    from anyseg.eval.cli import add_parsers as add_eval_parsers

    add_eval_parsers(sub)
    return parser


def _cmd_segment(args: argparse.Namespace) -> int:
    import numpy as np

    from anyseg.io.images import load_image, load_mask
    from anyseg.models import load_model
    from anyseg.tasks.promptable import segment, write_results
    from anyseg.types import Prompt

    points = [parse_point(p) for p in args.point]
    box = parse_box(args.box) if args.box else None
    if not points and box is None and not args.mask_input:
        raise PromptError("no prompt: give --point X,Y[:LABEL], --box X0,Y0,X1,Y1 or --mask-input PNG")
    if args.max_pixels is not None and args.max_pixels <= 0:
        raise InputError(f"--max-pixels must be positive; got {args.max_pixels}")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a folder")

    image = load_image(args.image, max_pixels=args.max_pixels)
    mask = load_mask(args.mask_input, size=image.shape[:2], max_pixels=args.max_pixels) if args.mask_input else None
    prompt = Prompt(
        points=np.array([p[:2] for p in points]) if points else None,
        labels=np.array([p[2] for p in points]) if points else None,
        box=box,
        mask=mask,
    )
    prompt.check_within(image.shape[:2])
    predictor = load_model(args.model, weights=args.weights, device=args.device)
    result = segment(predictor, image, prompt, multimask=args.multimask)
    record, json_path = write_results(result, image, out_dir, Path(args.image).stem, image_path=str(args.image))
    if args.json:
        print(json.dumps(record))
    else:
        scores = ", ".join(f"{m['score']:.3f}" for m in record["masks"])
        print(f"{len(record['masks'])} mask(s) from {record['model']} (scores {scores}) -> {json_path}", file=sys.stderr)
    return 0


def _cmd_everything(args: argparse.Namespace) -> int:
    import time

    from anyseg.io.images import load_image
    from anyseg.models import load_model
    from anyseg.tasks.everything import EverythingParams, generate, write_everything

    overrides = {k: v for k, v in {
        "points_per_side": args.points_per_side, "points_per_batch": args.points_per_batch,
        "pred_iou_thresh": args.pred_iou_thresh, "stability_score_thresh": args.stability_thresh,
        "crop_n_layers": args.crop_layers, "min_mask_region_area": args.min_area, "granularity": args.granularity,
    }.items() if v is not None}
    if args.use_m2m:
        overrides["use_m2m"] = True
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a folder")
    image = load_image(args.image, max_pixels=args.max_pixels)
    predictor = load_model(args.model, weights=args.weights, device=args.device)
    family = predictor.family if predictor.family != "classical" else "sam"
    params = EverythingParams.for_family(family, **overrides)  # validates before any work
    t = time.perf_counter()
    masks = generate(predictor, image, params, progress=True, sort_by=args.sort)
    seconds = time.perf_counter() - t
    record, json_path = write_everything(masks, image, out_dir, Path(args.image).stem, model=predictor.name,
                                         params=params, image_path=str(args.image), seconds=seconds,
                                         per_mask=args.per_mask)
    if args.json:
        print(json.dumps(record))
    else:
        print(f"{len(masks)} mask(s) from {predictor.name} in {seconds:.1f} s -> {json_path}", file=sys.stderr)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from anyseg.models import model_status
    from anyseg.models.registry import REGISTRY

    if args.models_command == "list":
        rows = [model_status(name) for name in REGISTRY]
        if args.json:
            print(json.dumps([
                {"name": s.spec.name, "family": s.spec.family, "params_m": s.spec.params_m, "source": s.spec.hub_id,
                 "present": s.present, "location": s.location or None} for s in rows
            ], indent=2))
            return 0
        header = f"{'name':<24} {'family':<13} {'params':>8}  {'source':<34} present"
        print(header)
        for s in rows:
            params = f"{s.spec.params_m:.1f}M" if s.spec.params_m else "-"
            present = "yes (builtin)" if s.source == "builtin" else (f"yes ({s.source})" if s.present else "no")
            print(f"{s.spec.name:<24} {s.spec.family:<13} {params:>8}  {s.spec.hub_id or 'OpenCV (no weights)':<34} {present}")
        return 0
    # pull
    from anyseg.models import weights
    from anyseg.models.registry import get_spec

    spec = get_spec(args.name)
    if not spec.needs_weights:
        print(f"{spec.name} needs no weights", file=sys.stderr)
        return 0
    local = weights.resolve_local(spec)
    if local is not None:
        print(f"{spec.name} is already present ({local[1]}): {local[0]}")
        return 0
    folder = weights.download(spec)
    print(f"{spec.name} downloaded: {folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "segment":
            return _cmd_segment(args)
        if args.command == "everything":
            return _cmd_everything(args)
        if args.command == "eval":
            from anyseg.eval.cli import run as run_eval

            return run_eval(args)
        return _cmd_models(args)
    except SystemExit as e:  # argparse: --help/--version (0) or our one-line usage errors (2)
        return int(e.code or 0) if not isinstance(e.code, str) else _fail(e.code)
    except AnysegError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except OSError as e:  # disk full, permissions: not a bug, still one line
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        return _fail(f"{e.strerror or e}{where}", 1)
    except MemoryError:
        return _fail("out of memory (try a smaller image, --max-pixels, or a smaller model)", 1)
    except Exception as e:  # a bug: still one line, unless debugging
        if os.environ.get("ANYSEG_DEBUG"):
            raise
        return _fail(f"internal error: {type(e).__name__}: {e} (rerun with ANYSEG_DEBUG=1 for a traceback)", 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

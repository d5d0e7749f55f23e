"""``anyseg fewshot``: segment, in new images, folders or videos, what reference examples show.

Options are checked before any file is read or written: ``--ref`` / ``--ref-mask`` pairs,
``--instances``, ``--device``, ``--max-pixels``, ``--max-frames``, ``--out``, the method name and
its options (``--model`` / ``--features`` where the method takes none), the targets' paths.
Then the method's models load, the references are read and fitted once
(:func:`anyseg.tasks.fewshot.load_references`), and every target is segmented and written
(:func:`anyseg.tasks.fewshot.run_fewshot`). ``--json`` prints the run's summary (every target's
record) to stdout; otherwise one status line goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from anyseg.commands.options import DEVICE_HELP, MAX_PIXELS_HELP, OUT_HELP, check_max_pixels, check_out, device_option
from anyseg.errors import InputError

__all__ = ["add_parser", "run"]

_METHOD_HELP = ("auto (default: matcher with a SAM-family model and DINOv2 features present, else persam with a "
                "SAM-family model, else classical), matcher, persam, persam-f, seggpt, sam3 or classical (no weights: "
                "colour/texture back-projection and keypoint matching, then GrabCut; a baseline)")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``fewshot`` and its options to the ``anyseg`` sub-commands."""
    fs = sub.add_parser("fewshot", help="segment, in new images or video frames, what reference examples show")
    fs.add_argument("targets", nargs="+", metavar="TARGET",
                    help="image files, folders of images, or video files (every frame, no memory between frames)")
    fs.add_argument("--ref", action="append", default=[], metavar="IMAGE",
                    help="a reference image; repeatable, each followed by its --ref-mask")
    fs.add_argument("--ref-mask", action="append", default=[], metavar="PNG",
                    help="the mask of what to find in the --ref image of the same position (its size, 255 = object)")
    fs.add_argument("--method", default="auto", metavar="METHOD", help=_METHOD_HELP)
    fs.add_argument("--model", default=None, metavar="NAME|PATH",
                    help="the SAM-family model (matcher, persam, persam-f) or in-context model (seggpt, sam3): a "
                         "registry name or a local model folder (default auto)")
    fs.add_argument("--features", default=None, metavar="NAME|PATH",
                    help="matcher's patch-feature model: a registry name, e.g. dinov2-small (default), or a local model folder")
    fs.add_argument("--instances", default="one", choices=["one", "all"],
                    help="one: the best-matching instance (default); all: every matching instance, best first")
    fs.add_argument("--out", required=True, metavar="DIR", help=OUT_HELP)
    fs.add_argument("--json", action="store_true", help="also print the run's JSON records to stdout")
    fs.add_argument("--max-frames", type=int, default=None, metavar="N",
                    help="refuse videos longer than N frames (default 100000, or $ANYSEG_MAX_FRAMES)")
    fs.add_argument("--max-pixels", type=int, default=None, metavar="N", help=MAX_PIXELS_HELP)
    fs.add_argument("--device", default=None, help=DEVICE_HELP)
    return fs


def run(args: argparse.Namespace) -> int:
    """Check every option, fit the references once, segment the targets and write their results."""
    from anyseg.fewshot import Segmenter
    from anyseg.fewshot.base import method_factory
    from anyseg.tasks.fewshot import check_videos, expand_targets, load_references, run_fewshot
    from anyseg.tasks.track import check_max_frames

    if len(args.ref) != len(args.ref_mask):
        raise InputError(f"each --ref needs its --ref-mask: got {len(args.ref)} --ref and {len(args.ref_mask)} --ref-mask")
    if not args.ref:
        raise InputError("no reference: give --ref IMAGE --ref-mask PNG (repeatable)")
    device = device_option(args.device)
    check_max_pixels(args.max_pixels)
    if args.max_frames is not None:
        check_max_frames(args.max_frames)
    out_dir = check_out(args.out)
    if args.method != "auto":
        method_factory(args.method)  # an unknown method: one line, before anything loads
    for kind, paths in (("reference image", args.ref), ("reference mask", args.ref_mask)):
        for p in paths:
            if not Path(p).is_file():
                raise InputError(f"{kind} not found: {p}" if not Path(p).exists() else f"{kind} {p} is not a file")
    targets = expand_targets(args.targets)
    check_videos(targets, args.max_frames)
    segmenter = Segmenter(method=args.method, model=args.model, features=args.features, instances=args.instances,
                          device=device)
    refs, info = load_references(args.ref, args.ref_mask, max_pixels=args.max_pixels)
    summary = run_fewshot(targets, refs, out_dir, segmenter, references=info, max_pixels=args.max_pixels,
                          max_frames=args.max_frames)
    if args.json:
        print(json.dumps(summary))
    else:
        best = max((m["score"] for r in summary["results"] for m in _masks(r)), default=None)
        scores = f" (best score {best:.3f})" if best is not None else ""
        print(f"{summary['num_masks']} mask(s) in {summary['num_targets']} target(s) from {summary['method']}{scores} "
              f"-> {out_dir}", file=sys.stderr)
    return 0


def _masks(record: dict) -> list[dict]:
    if "frames" in record:
        return [m for f in record["frames"] for m in f["masks"]]
    return record["masks"]

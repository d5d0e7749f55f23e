"""``anyseg discover``: objects or segments in images, with no labels and no prompts.

Options are checked before any file is read or written: the method, ``--objects``,
``--refine``, ``--clusters``, ``--mode``, ``--device``, ``--max-pixels``, ``--out`` and the
targets (image files and folders; a video is refused). Then the method's models load once
(:class:`anyseg.discover.Discoverer`) and every image is discovered and written
(:func:`anyseg.tasks.discover.run_discover`). ``--json`` prints the run's summary to stdout;
otherwise one status line goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from anyseg.commands.options import DEVICE_HELP, MAX_PIXELS_HELP, OUT_HELP, check_max_pixels, check_out, device_option
from anyseg.errors import InputError

__all__ = ["add_parser", "run"]

_METHOD_HELP = ("auto (default: tokencut with a DINO feature model present, else classical), tokencut (the salient "
                "object), maskcut (N objects), spectral (deep spectral segments), diffseg (Stable Diffusion attention "
                "segments) or classical (no weights: a normalised cut on superpixels; a baseline)")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``discover`` and its options to the ``anyseg`` sub-commands."""
    d = sub.add_parser("discover", help="find objects or segments in images without labels or prompts")
    d.add_argument("targets", nargs="+", metavar="IMAGE", help="image files or folders of images")
    d.add_argument("--method", default="auto", metavar="METHOD", help=_METHOD_HELP)
    d.add_argument("--model", default=None, metavar="NAME|PATH",
                   help="the method's model, a registry name or a local model folder: a DINO feature model (tokencut, "
                        "maskcut, spectral: e.g. dino-vits16, dino-vits8, dinov2-small) or Stable Diffusion (diffseg: "
                        "sd-v1-4); default: the method's own")
    d.add_argument("--objects", type=int, default=None, metavar="N",
                   help="how many: objects (maskcut, classical) or segments (spectral, diffseg, classical --mode "
                        "partition); default the method's")
    d.add_argument("--refine", default="none", choices=["none", "crf", "bilateral"],
                   help="snap masks to image edges: a dense CRF, the fast bilateral solver, or none (default)")
    d.add_argument("--sam", default=None, metavar="MODEL",
                   help="snap each discovered object to a SAM mask prompted with its box and interior point")
    d.add_argument("--mode", default=None, choices=["objects", "partition"],
                   help="classical only: the salient objects (default) or a partition into segments")
    d.add_argument("--clusters", type=int, default=None, metavar="K",
                   help="partition methods: also cluster the segments of all images into K classes (k-means on "
                        "segment features)")
    d.add_argument("--out", required=True, metavar="DIR", help=OUT_HELP)
    d.add_argument("--json", action="store_true", help="also print the run's JSON records to stdout")
    d.add_argument("--max-pixels", type=int, default=None, metavar="N", help=MAX_PIXELS_HELP)
    d.add_argument("--device", default=None, help=DEVICE_HELP)
    return d


def run(args: argparse.Namespace) -> int:
    """Check every option, load the method once, discover in every image and write the results."""
    from anyseg.discover import Discoverer
    from anyseg.discover.base import check_objects, method_factory
    from anyseg.tasks.discover import check_targets, run_discover

    device = device_option(args.device)
    check_max_pixels(args.max_pixels)
    if args.objects is not None:
        check_objects(args.objects, 1)
    if args.clusters is not None and args.clusters < 1:
        raise InputError(f"--clusters must be a positive whole number; got {args.clusters}")
    if args.method != "auto":
        method_factory(args.method)  # an unknown method: one line, before anything loads
    options = {}
    if args.mode is not None:
        if args.method != "classical":
            raise InputError("--mode applies to --method classical (the other methods have one kind each)")
        options["mode"] = args.mode
    out_dir = check_out(args.out)
    targets = check_targets(args.targets)
    discoverer = Discoverer(args.method, model=args.model, refine=args.refine, sam=args.sam, device=device, **options)
    summary = run_discover(targets, out_dir, discoverer, objects=args.objects, clusters=args.clusters,
                           max_pixels=args.max_pixels)
    if args.json:
        print(json.dumps(summary))
    else:
        best = max((m["score"] for r in summary["results"] for m in r["masks"]), default=None)
        scores = f" (best score {best:.3f})" if best is not None else ""
        what = "segment(s)" if discoverer.kind == "partition" else "object(s)"
        print(f"{summary['num_masks']} {what} in {summary['num_targets']} image(s) from {summary['method']}{scores} "
              f"-> {out_dir}", file=sys.stderr)
    return 0

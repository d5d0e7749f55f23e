"""``anyseg text`` / ``semantic`` / ``panoptic``: open-vocabulary segmentation from class names.

``text`` finds every instance of phrases, ``semantic`` paints a class map over given class
names and ``panoptic`` puts things (instances) over stuff regions; the backends are chosen by
``--model`` (:func:`anyseg.tasks.text.load_instance_backend` /
:func:`~anyseg.tasks.text.load_semantic_backend`). ``--top`` is at most :data:`MAX_TOP`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from anyseg.commands.options import DEVICE_HELP, MAX_PIXELS_HELP, check_max_pixels, check_out, device_option
from anyseg.errors import InputError

__all__ = ["MAX_TOP", "text_params", "add_text_parser", "add_semantic_parser", "add_panoptic_parser", "run_text",
           "run_semantic", "run_panoptic"]

#: most instances ``anyseg text --top`` keeps
MAX_TOP = 10_000
_INSTANCE_MODELS = ("auto (first present of sam3, grounding-dino-base/-tiny, owlv2-large/-base, clip-vit-l14/-b16/-b32), "
                    "sam3, a Grounding DINO / OWLv2 name (boxes -> --sam masks) or a CLIP name (labels --sam's "
                    "segment-everything masks)")


def _text_common(p: argparse.ArgumentParser, model_help: str) -> None:
    """The options ``text``, ``semantic`` and ``panoptic`` share: models, thresholds, output."""
    p.add_argument("--model", default="auto", metavar="NAME|PATH", help=model_help + "; or a local model folder")
    p.add_argument("--weights", metavar="PATH", help="transformers weights folder for --model")
    p.add_argument("--sam", default="auto", metavar="NAME|PATH",
                   help="SAM-family model (name or local folder) that turns detector boxes into masks, or whose "
                        "segment-everything masks CLIP labels (default auto: best present, else classical)")
    p.add_argument("--sam-weights", metavar="PATH", help="transformers weights folder for --sam")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="least instance score (SAM 3 detection score, CLIP probability)")
    p.add_argument("--box-threshold", type=float, default=None, metavar="T", help="detector box threshold")
    p.add_argument("--text-threshold", type=float, default=None, metavar="T", help="Grounding DINO text threshold")
    p.add_argument("--nms", type=float, default=None, metavar="T",
                   help="class-agnostic box NMS IoU for detectors (default 0.8, as Grounded-SAM)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--json", action="store_true", help="also print the run's JSON record to stdout")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N", help=MAX_PIXELS_HELP)
    p.add_argument("--device", default=None, help=DEVICE_HELP)


def add_text_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``text`` (every instance of phrases) to the ``anyseg`` sub-commands."""
    t = sub.add_parser("text", help="segment every instance of phrases: 'a red car' 'person|pedestrian'")
    t.add_argument("image", help="image file")
    t.add_argument("phrases", nargs="+", metavar="PHRASE",
                   help="what to segment; one class per argument, | separates synonyms (commas are kept)")
    t.add_argument("--top", type=int, default=None, metavar="K",
                   help="keep the K best instances over all phrases (1 for referring expressions)")
    t.add_argument("--min-area", type=int, default=0, metavar="PX", help="drop instances smaller than PX pixels")
    _text_common(t, _INSTANCE_MODELS)
    return t


def add_semantic_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``semantic`` (a class map over class names) to the ``anyseg`` sub-commands."""
    s = sub.add_parser("semantic", help="class map over given class names (open vocabulary)")
    s.add_argument("image", help="image file")
    s.add_argument("--classes", required=True, metavar="A,B|SYN,...", help="class names; | separates synonyms")
    s.add_argument("--method", default="sclip", choices=["sclip", "maskclip", "masks"],
                   help="with a CLIP model: dense SCLIP or MaskCLIP, or CLIP-labelled segment-everything masks")
    s.add_argument("--refine", metavar="SAM_NAME",
                   help="dense CLIP only: vote inside this SAM-family model's segment-everything masks")
    s.add_argument("--unlabeled-below", type=float, default=None, metavar="P",
                   help="dense CLIP only: leave pixels whose class probability is below P unlabeled (255)")
    _text_common(s, "auto (dense CLIP first), a CLIP name, sam3 or a detector name (instances painted)")
    return s


def add_panoptic_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``panoptic`` (things over stuff, COCO panoptic output) to the ``anyseg`` sub-commands."""
    pn = sub.add_parser("panoptic", help="things as instances over stuff regions, COCO panoptic PNG + JSON")
    pn.add_argument("image", help="image file")
    pn.add_argument("--things", default="", metavar="A,B,...", help="countable classes (instances)")
    pn.add_argument("--stuff", default="", metavar="A,B,...", help="amorphous classes (one segment each)")
    pn.add_argument("--stuff-model", metavar="CLIP_NAME",
                    help="dense CLIP model for stuff (default: the --model's own masks of the stuff names)")
    pn.add_argument("--min-area", type=int, default=64, metavar="PX", help="drop segments smaller than PX (default 64)")
    _text_common(pn, _INSTANCE_MODELS)
    return pn


def text_params(args: argparse.Namespace, top: int | None = None, min_area: int = 0) -> Any:
    """The :class:`~anyseg.tasks.text.TextParams` of the shared thresholds (``--top`` at most :data:`MAX_TOP`)."""
    from anyseg.tasks.text import GROUNDED_NMS, TextParams

    if top is not None and top > MAX_TOP:  # (TextParams refuses top < 1)
        raise InputError(f"--top must be at most {MAX_TOP}; got {top}")
    return TextParams(threshold=args.threshold, box_threshold=args.box_threshold, text_threshold=args.text_threshold,
                      nms=GROUNDED_NMS if args.nms is None else args.nms, top=top, min_area=min_area)


def run_text(args: argparse.Namespace) -> int:
    """``anyseg text``: every instance of the phrases, written with its record."""
    import time
    from dataclasses import asdict

    from anyseg.io.images import load_image
    from anyseg.tasks import text as text_task
    from anyseg.tasks.text_output import write_instances
    from anyseg.text.vocab import parse_phrases

    device = device_option(args.device)
    check_max_pixels(args.max_pixels)
    classes = parse_phrases(args.phrases)
    params = text_params(args, top=args.top, min_area=args.min_area)
    out_dir = check_out(args.out)
    image = load_image(args.image, max_pixels=args.max_pixels)
    backend = text_task.load_instance_backend(args.model, sam=args.sam, weights=args.weights,
                                              sam_weights=args.sam_weights, device=device)
    t = time.perf_counter()
    masks = text_task.find_instances(image, classes, backend, params)
    seconds = time.perf_counter() - t
    record, json_path = write_instances(masks, image, classes, out_dir, Path(args.image).stem, backend.name,
                                        asdict(params), image_path=str(args.image), seconds=seconds)
    if args.json:
        print(json.dumps(record))
    else:
        found = ", ".join(f"{m['label']} {m['score']:.2f}" for m in record["instances"][:10]) or "nothing"
        print(f"{len(masks)} instance(s) from {backend.name} ({found}) -> {json_path}", file=sys.stderr)
    return 0


def run_semantic(args: argparse.Namespace) -> int:
    """``anyseg semantic``: a class map over ``--classes``, written with its record."""
    import time

    from anyseg.io.images import load_image
    from anyseg.tasks import text as text_task
    from anyseg.tasks.text_output import write_semantic
    from anyseg.text.vocab import parse_classes

    device = device_option(args.device)
    check_max_pixels(args.max_pixels)
    classes = parse_classes(args.classes, "--classes")
    params = text_params(args)
    if args.method == "masks" and (args.refine or args.unlabeled_below is not None):
        raise InputError("--refine and --unlabeled-below apply to dense CLIP (--method sclip or maskclip)")
    out_dir = check_out(args.out)
    image = load_image(args.image, max_pixels=args.max_pixels)
    backend = text_task.load_semantic_backend(args.model, method=args.method, refine=args.refine, sam=args.sam,
                                              weights=args.weights, sam_weights=args.sam_weights, device=device,
                                              unlabeled_below=args.unlabeled_below, params=params)
    t = time.perf_counter()
    class_map = text_task.semantic_map(image, classes, backend)
    seconds = time.perf_counter() - t
    record, json_path = write_semantic(class_map, image, classes, out_dir, Path(args.image).stem, backend.name,
                                       {"method": args.method, "refine": args.refine,
                                        "unlabeled_below": args.unlabeled_below},
                                       image_path=str(args.image), seconds=seconds)
    if args.json:
        print(json.dumps(record))
    else:
        top = sorted(record["classes"], key=lambda c: -c["fraction"])[:5]
        summary = ", ".join(f"{c['name']} {100 * c['fraction']:.0f}%" for c in top if c["fraction"] > 0)
        print(f"class map from {backend.name} ({summary or 'nothing labelled'}) -> {json_path}", file=sys.stderr)
    return 0


def _panoptic_classes(args: argparse.Namespace) -> tuple[list, list]:
    """``--things`` and ``--stuff``: at least one given, no name in both."""
    from anyseg.text.vocab import disjoint, parse_classes

    things = parse_classes(args.things, "--things") if args.things.strip() else []
    stuff = parse_classes(args.stuff, "--stuff") if args.stuff.strip() else []
    if not things and not stuff:
        raise InputError("give --things and/or --stuff class names")
    disjoint(things, stuff)
    return things, stuff


def run_panoptic(args: argparse.Namespace) -> int:
    """``anyseg panoptic``: things over stuff, written as COCO panoptic PNG + JSON."""
    import time
    from dataclasses import asdict

    from anyseg.io.images import load_image
    from anyseg.tasks import text as text_task
    from anyseg.tasks.text_output import write_panoptic

    device = device_option(args.device)
    check_max_pixels(args.max_pixels)
    things, stuff = _panoptic_classes(args)
    if args.min_area < 0:
        raise InputError(f"--min-area must be >= 0; got {args.min_area}")
    params = text_params(args)
    out_dir = check_out(args.out)
    image = load_image(args.image, max_pixels=args.max_pixels)
    backend = text_task.load_instance_backend(args.model, sam=args.sam, weights=args.weights,
                                              sam_weights=args.sam_weights, device=device)
    stuff_backend = None
    if args.stuff_model:
        stuff_backend = text_task.load_semantic_backend(args.stuff_model, device=device)
    t = time.perf_counter()
    result = text_task.panoptic(image, things, stuff, backend, stuff_backend=stuff_backend, params=params,
                                min_area=args.min_area)
    seconds = time.perf_counter() - t
    name = backend.name + (f"+stuff:{stuff_backend.name}" if stuff_backend else "")
    record, json_path = write_panoptic(result, image, out_dir, Path(args.image).stem, name,
                                       {**asdict(params), "min_area": args.min_area}, image_path=str(args.image),
                                       seconds=seconds)
    if args.json:
        print(json.dumps(record))
    else:
        n_things = sum(1 for s in result.segments if s["isthing"])
        print(f"{n_things} thing(s), {len(result.segments) - n_things} stuff segment(s) from {name} -> {json_path}",
              file=sys.stderr)
    return 0

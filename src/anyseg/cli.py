"""The ``anyseg`` command line: thin, it parses, calls tasks and prints.

Every user error (bad file, bad prompt, unknown model, missing weights) is one line on stderr,
``anyseg: error: ...``, and exit code 2; never a traceback (``ANYSEG_DEBUG=1`` shows one).
Options are checked before any file is read or written: ``--device`` (:func:`device_option`),
and the options that scale the work, against the bounds the service also applies
(:data:`anyseg.tasks.everything.MAX_POINTS_PER_SIDE` and its neighbours; ``--top`` at most
:data:`MAX_TOP`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from anyseg.errors import AnysegError, InputError, PromptError
from anyseg.prompts import parse_box, parse_point
from anyseg.runtime import RUNTIMES

RUNTIME_HELP = ("SAM-family inference runtime (default auto: torch-bf16 on CPUs with native bf16 and on CUDA, "
                "else torch; onnx exports are cached next to the weights)")
DEVICE_HELP = "torch device: cpu, cuda, cuda:N or mps (default: cuda when available, else cpu)"
MAX_PIXELS_HELP = "largest image accepted, in pixels (default 40M, or $ANYSEG_MAX_PIXELS)"
OUT_HELP = "output folder (created if missing; earlier results stay until the run succeeds)"

EXIT_USAGE = 2
#: most instances ``anyseg text --top`` keeps
MAX_TOP = 10_000
#: ``anyseg everything`` options -> the EverythingParams fields they set
EVERYTHING_OPTIONS = {
    "points_per_side": "--points-per-side", "points_per_batch": "--points-per-batch",
    "pred_iou_thresh": "--pred-iou-thresh", "stability_score_thresh": "--stability-thresh",
    "crop_n_layers": "--crop-layers", "min_mask_region_area": "--min-area", "granularity": "--granularity",
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``anyseg: error: ... (see --help)``) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SystemExit(_fail(f"{message} (see `{self.prog} --help`)"))


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"anyseg: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def device_option(device: str | None) -> str | None:
    """``--device`` checked (:func:`anyseg.models.sam.check_device`) before any work; ``None`` stays ``None``
    (the model's default, resolved by the loader: no torch import here)."""
    if device is None:
        return None
    from anyseg.models.sam import check_device

    return check_device(device)


def check_max_pixels(value: int | None) -> int | None:
    """``--max-pixels``: ``None`` (the default limit) or a positive integer."""
    if value is not None and value <= 0:
        raise InputError(f"--max-pixels must be positive; got {value}")
    return value


def everything_params(args: argparse.Namespace, family: str = "sam"):
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


def build_parser() -> argparse.ArgumentParser:
    """The ``anyseg`` argument parser, with every sub-command."""
    from anyseg.version import __version__

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

    _add_text_parsers(sub)
    _add_track_parser(sub)

    models = sub.add_parser("models", help="list or download models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", parser_class=_Parser)
    msub.required = True
    mlist = msub.add_parser("list", help="registered models and whether their weights are present locally")
    mlist.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pull = msub.add_parser("pull", help="download a model's weights into the Hugging Face cache")
    pull.add_argument("name", help="registry name (see `anyseg models list`)")

    from anyseg.eval.cli import add_parsers as add_eval_parsers

    add_eval_parsers(sub)
    from anyseg.serve.cli import add_parser as add_serve_parser

    add_serve_parser(sub)
    return parser


def _text_common(p: argparse.ArgumentParser, model_help: str) -> None:
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


def _add_text_parsers(sub: argparse._SubParsersAction) -> None:
    models = ("auto (first present of sam3, grounding-dino-base/-tiny, owlv2-large/-base, clip-vit-l14/-b16/-b32), "
              "sam3, a Grounding DINO / OWLv2 name (boxes -> --sam masks) or a CLIP name (labels --sam's "
              "segment-everything masks)")
    t = sub.add_parser("text", help="segment every instance of phrases: 'a red car' 'person|pedestrian'")
    t.add_argument("image", help="image file")
    t.add_argument("phrases", nargs="+", metavar="PHRASE",
                   help="what to segment; one class per argument, | separates synonyms (commas are kept)")
    t.add_argument("--top", type=int, default=None, metavar="K",
                   help="keep the K best instances over all phrases (1 for referring expressions)")
    t.add_argument("--min-area", type=int, default=0, metavar="PX", help="drop instances smaller than PX pixels")
    _text_common(t, models)

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

    pn = sub.add_parser("panoptic", help="things as instances over stuff regions, COCO panoptic PNG + JSON")
    pn.add_argument("image", help="image file")
    pn.add_argument("--things", default="", metavar="A,B,...", help="countable classes (instances)")
    pn.add_argument("--stuff", default="", metavar="A,B,...", help="amorphous classes (one segment each)")
    pn.add_argument("--stuff-model", metavar="CLIP_NAME",
                    help="dense CLIP model for stuff (default: the --model's own masks of the stuff names)")
    pn.add_argument("--min-area", type=int, default=64, metavar="PX", help="drop segments smaller than PX (default 64)")
    _text_common(pn, models)


class _ObjPrompt(argparse.Action):
    """``--prompt`` values paired with the ``--obj`` id in force where they appear."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        items = list(getattr(namespace, "prompts", None) or [])
        items.append((getattr(namespace, "current_obj", 1), values))
        namespace.prompts = items


class _ObjId(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        try:
            obj = int(values)
        except ValueError:
            obj = 0
        if not 1 <= obj <= 254:
            raise PromptError(f"--obj must be an integer object id in 1..254; got {values!r}")
        namespace.current_obj = obj


def _add_track_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("track", help="track objects through a video (file or frame folder) from prompts on any frame")
    t.add_argument("video", help="video file (mp4, avi, ...) or a folder of frames")
    t.add_argument("--obj", action=_ObjId, metavar="ID",
                   help="object id (1..254) for the --prompt options that follow (default 1)")
    t.add_argument("--prompt", action=_ObjPrompt, metavar="FRAME:KIND=VALUE", dest="prompt_args",
                   help="FRAME:point=X,Y[:LABEL], FRAME:box=X0,Y0,X1,Y1 or FRAME:mask=PNG; repeatable")
    t.add_argument("--text", metavar="CLASSES",
                   help="track every instance of these classes (a,b|synonym): found on the first prompted frame "
                        "(frame 0 without prompts) by --text-model")
    t.add_argument("--text-model", default="auto", metavar="NAME", help="SAM 3 or a detector name (default auto)")
    t.add_argument("--redetect", type=int, default=0, metavar="K",
                   help="with --text: look for new objects every K frames (0: only at the start)")
    t.add_argument("--threshold", type=float, default=None, metavar="T", help="with --text: least detection score")
    t.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help="classical (optical flow), a SAM 2 / EdgeTAM / SAM 3 name or video checkpoint folder, or auto "
                        "(best present, else classical)")
    t.add_argument("--weights", metavar="PATH", help="transformers weights folder for --model")
    t.add_argument("--out", required=True, metavar="DIR", help="run folder (masks/, tracks.json, overlay.mp4, run.json)")
    t.add_argument("--restart", action="store_true", help="replace a different run in --out instead of refusing")
    t.add_argument("--no-overlay", action="store_true", help="skip the overlay mp4")
    t.add_argument("--fps", type=float, default=None, help="frame rate of a frame folder's overlay (default 24)")
    t.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="refuse videos longer than N frames (default 100000, or $ANYSEG_MAX_FRAMES)")
    t.add_argument("--json", action="store_true", help="print the run summary as JSON")
    t.add_argument("--device", default=None, help=DEVICE_HELP)


def _cmd_track(args: argparse.Namespace) -> int:
    from anyseg.tasks.track import track_from_args

    return track_from_args(args)


def _text_params(args: argparse.Namespace, top: int | None = None, min_area: int = 0):
    from anyseg.tasks.text import GROUNDED_NMS, TextParams

    if top is not None and top > MAX_TOP:  # (TextParams refuses top < 1)
        raise InputError(f"--top must be at most {MAX_TOP}; got {top}")
    return TextParams(threshold=args.threshold, box_threshold=args.box_threshold, text_threshold=args.text_threshold,
                      nms=GROUNDED_NMS if args.nms is None else args.nms, top=top, min_area=min_area)


def _check_out(path: str) -> Path:
    out_dir = Path(path)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a folder")
    return out_dir


def _cmd_text(args: argparse.Namespace) -> int:
    import time
    from dataclasses import asdict

    from anyseg.io.images import load_image
    from anyseg.tasks import text as text_task
    from anyseg.tasks.text_output import write_instances
    from anyseg.text.vocab import parse_phrases

    device = device_option(args.device)
    check_max_pixels(args.max_pixels)
    classes = parse_phrases(args.phrases)
    params = _text_params(args, top=args.top, min_area=args.min_area)
    out_dir = _check_out(args.out)
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


def _cmd_semantic(args: argparse.Namespace) -> int:
    import time

    from anyseg.io.images import load_image
    from anyseg.tasks import text as text_task
    from anyseg.tasks.text_output import write_semantic
    from anyseg.text.vocab import parse_classes

    device = device_option(args.device)
    check_max_pixels(args.max_pixels)
    classes = parse_classes(args.classes, "--classes")
    params = _text_params(args)
    if args.method == "masks" and (args.refine or args.unlabeled_below is not None):
        raise InputError("--refine and --unlabeled-below apply to dense CLIP (--method sclip or maskclip)")
    out_dir = _check_out(args.out)
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


def _cmd_panoptic(args: argparse.Namespace) -> int:
    import time
    from dataclasses import asdict

    from anyseg.io.images import load_image
    from anyseg.tasks import text as text_task
    from anyseg.tasks.text_output import write_panoptic
    from anyseg.text.vocab import parse_classes

    device = device_option(args.device)
    check_max_pixels(args.max_pixels)
    things = parse_classes(args.things, "--things") if args.things.strip() else []
    stuff = parse_classes(args.stuff, "--stuff") if args.stuff.strip() else []
    if not things and not stuff:
        raise InputError("give --things and/or --stuff class names")
    from anyseg.text.vocab import disjoint

    disjoint(things, stuff)
    if args.min_area < 0:
        raise InputError(f"--min-area must be >= 0; got {args.min_area}")
    params = _text_params(args)
    out_dir = _check_out(args.out)
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


def _baseline(predictor) -> bool:
    """Whether ``predictor`` is a no-weights baseline engine (its family record says: ``classical``)."""
    from anyseg.models.families import find_family

    return bool(getattr(find_family(getattr(predictor, "family", "")), "baseline", False))


def model_label(predictor) -> str:
    """How a status line names ``predictor``: ``classical`` (it has no runtimes), else ``NAME [RUNTIME]``."""
    if _baseline(predictor):
        return predictor.name
    return f"{predictor.name} [{getattr(predictor, 'runtime', 'torch')}]"


def _load_predictor(args: argparse.Namespace, device: str | None):
    """``--model`` on ``--runtime`` (for the classical engine, a one-line error naming what to do)."""
    from anyseg.models import load_model
    from anyseg.runtime import with_runtime

    quiet = args.model == "auto" and args.runtime not in ("auto", "torch")  # (the runtime error says it all)
    model = load_model(args.model, weights=args.weights, device=device, quiet=quiet)
    return with_runtime(model, args.runtime, requested=args.model)


def _cmd_segment(args: argparse.Namespace) -> int:
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
    out_dir = _check_out(args.out)

    image = load_image(args.image, max_pixels=args.max_pixels)
    mask = load_mask(args.mask_input, size=image.shape[:2], max_pixels=args.max_pixels) if args.mask_input else None
    prompt = Prompt(
        points=np.array([p[:2] for p in points]) if points else None,
        labels=np.array([p[2] for p in points]) if points else None,
        box=box,
        mask=mask,
    )
    prompt.check_within(image.shape[:2])
    predictor = _load_predictor(args, device)
    result = segment(predictor, image, prompt, multimask=args.multimask)
    record, json_path = write_results(result, image, out_dir, Path(args.image).stem, image_path=str(args.image))
    if args.json:
        print(json.dumps(record))
    else:
        scores = ", ".join(f"{m['score']:.3f}" for m in record["masks"])
        print(f"{len(record['masks'])} mask(s) from {model_label(predictor)} (scores {scores}) -> {json_path}",
              file=sys.stderr)
    return 0


#: SAM generator options that the classical (superpixel) generator has no use for
_SAM_ONLY_OPTIONS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_thresh", "crop_layers",
                     "use_m2m")


def _note_ignored_sam_options(args: argparse.Namespace) -> None:
    """Say on stderr which of the given options the classical generator ignores (never silently)."""
    given = [f"--{n.replace('_', '-')}" for n in _SAM_ONLY_OPTIONS if getattr(args, n, None) not in (None, False)]
    if given:
        print(f"notice: the classical engine's superpixel regions ignore {', '.join(given)} (SAM generator options); "
              "the record lists the settings it used", file=sys.stderr)


def _cmd_everything(args: argparse.Namespace) -> int:
    import time

    from anyseg.io.images import load_image
    from anyseg.tasks.everything import generate, write_everything

    device = device_option(args.device)
    check_max_pixels(args.max_pixels)
    everything_params(args)  # the bounds, before anything is read or written
    out_dir = _check_out(args.out)
    classes = clip = None
    if (args.label_with is None) != (args.classes is None):
        raise InputError("--label-with and --classes go together: --label-with clip-vit-b16 --classes cat,dog")
    if args.classes is not None:
        from anyseg.text.vocab import parse_classes

        classes = parse_classes(args.classes, "--classes")
    image = load_image(args.image, max_pixels=args.max_pixels)
    predictor = _load_predictor(args, device)
    if _baseline(predictor):
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
        header = f"{'name':<24} {'family':<15} {'params':>8}  {'source':<34} present"
        print(header)
        for s in rows:
            params = f"{s.spec.params_m:.1f}M" if s.spec.params_m else "-"
            present = "yes (builtin)" if s.source == "builtin" else (f"yes ({s.source})" if s.present else "no")
            print(f"{s.spec.name:<24} {s.spec.family:<15} {params:>8}  {s.spec.hub_id or 'OpenCV (no weights)':<34} {present}")
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
    folder = weights.download(spec, pulling=True)
    print(f"{spec.name} downloaded: {folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "segment":
            return _cmd_segment(args)
        if args.command == "everything":
            return _cmd_everything(args)
        if args.command == "text":
            return _cmd_text(args)
        if args.command == "semantic":
            return _cmd_semantic(args)
        if args.command == "panoptic":
            return _cmd_panoptic(args)
        if args.command == "track":
            return _cmd_track(args)
        if args.command == "serve":
            from anyseg.serve.cli import run as run_serve

            return run_serve(args)
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

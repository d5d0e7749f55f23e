"""``anyseg eval ...``: interactive, box, video, semantic and stored-mask evaluation.

The options that scale the work are bounded before anything is read: ``--limit``
1..:data:`MAX_LIMIT`, ``--max-clicks`` 1..:data:`MAX_CLICKS` (the protocols use 20), ``--device``
(:func:`anyseg.models.sam.check_device`); ``--classes`` names are one-line labels
(:func:`anyseg.labels.check_label`), ``--void-id`` / ``--ignore-value`` are pixel values 0..255
and ``--object-id`` an id in 1..:data:`MAX_OBJECT_ID`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from anyseg.errors import InputError
from anyseg.runtime import RUNTIMES

KINDS = ("interactive", "box", "video", "semantic", "masks")
#: most items ``--limit`` may ask for, and most simulated clicks per item
MAX_LIMIT = 1_000_000
MAX_CLICKS = 100
#: largest ``--object-id`` (16-bit label maps)
MAX_OBJECT_ID = 65535
IGNORE_HELP = ("mask value to ignore: auto (GrabCut's 128 band in grey 0/128/255 masks, 255 in label maps, "
               "nothing in JPEG masks), none, or N")
OBJECT_ID_HELP = "the object to score in palette / label-map masks: pixels equal to K (see docs/EVALUATION.md)"


def add_parsers(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a model (or masks from any tool) with the field's protocols")
    esub = ev.add_subparsers(dest="eval_command", metavar="KIND", parser_class=type(ev))
    esub.required = True

    def common(p, model: bool = True) -> None:
        if model:
            p.add_argument("--model", required=True, help="registry name (or auto)")
            p.add_argument("--weights", metavar="PATH", help="transformers weights folder for --model")
            p.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:N or mps (default: cuda when available)")
        p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N items")
        p.add_argument("--out", metavar="DIR", help="output folder (default runs/eval/KIND-MODEL-DATA); reruns resume")
        p.add_argument("--fresh", action="store_true", help="discard earlier results in --out instead of resuming")

    p = esub.add_parser("interactive", help="NoC@85/90 and mIoU@k with the standard click simulator")
    p.add_argument("--data", required=True, help="folder with images/ and masks/ (paired by file stem)")
    p.add_argument("--max-clicks", type=int, default=20, help=f"clicks per item, 1..{MAX_CLICKS} (default 20)")
    p.add_argument("--ignore-value", default="auto", help=IGNORE_HELP)
    p.add_argument("--object-id", type=int, default=None, metavar="K", help=OBJECT_ID_HELP)
    common(p)
    p.add_argument("--runtime", default="torch", choices=list(RUNTIMES),
                   help="inference runtime (default torch: fp32, the reference's numbers; e.g. auto or torch-bf16 "
                        "to measure what a fast runtime costs in quality)")
    p = esub.add_parser("box", help="IoU/Dice with each ground-truth mask's tight box as the prompt")
    p.add_argument("--data", required=True, help="folder with images/ and masks/ (paired by file stem)")
    p.add_argument("--ignore-value", default="auto", help=IGNORE_HELP)
    p.add_argument("--object-id", type=int, default=None, metavar="K", help=OBJECT_ID_HELP)
    common(p)
    p.add_argument("--runtime", default="torch", choices=list(RUNTIMES), help="inference runtime (default torch)")
    p = esub.add_parser("video", help="semi-supervised VOS J&F (first frame's masks given), DAVIS protocol")
    p.add_argument("--data", required=True, help="DAVIS folder (JPEGImages/ and Annotations/)")
    p.add_argument("--resolution", default="480p", help="DAVIS resolution folder under JPEGImages/ and Annotations/ (default 480p)")
    p.add_argument("--all-frames", action="store_true", help="also score the first and last frames")
    common(p)
    p = esub.add_parser("semantic", help="confusion-matrix mIoU and pixel accuracy over class names")
    p.add_argument("--data", required=True, help="folder with images/ and labels/ (class-id PNGs)")
    p.add_argument("--classes", required=True, help="comma-separated class names, in label-id order")
    p.add_argument("--void-id", type=int, default=255, help="label id to ignore (default 255)")
    common(p)
    p = esub.add_parser("masks", help="score masks written by any tool against ground truth")
    p.add_argument("--pred", required=True,
                   help="predicted masks: NAME.png per image, SEQ/NNNNN.png with --video, or a COCO results JSON")
    p.add_argument("--gt", required=True,
                   help="ground truth: a masks folder (or a data folder with masks/), DAVIS, or COCO instances JSON")
    p.add_argument("--video", action="store_true", help="DAVIS-format video results: J&F")
    p.add_argument("--ignore-value", default="auto", help=IGNORE_HELP)
    p.add_argument("--object-id", type=int, default=None, metavar="K", help=OBJECT_ID_HELP + " (not with --video)")
    p.add_argument("--require-all", action="store_true",
                   help="with --video: refuse unless every ground-truth sequence has predictions "
                        "(default: score the sequences present and say how many are missing)")
    p.add_argument("--resolution", default="480p", help="with --video: DAVIS resolution folder (default 480p)")
    p.add_argument("--all-frames", action="store_true", help="with --video: also score the first and last frames")
    common(p, model=False)


def _ignore_value(text: str):
    if text == "auto":
        return "auto"
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 255:
        raise InputError(f"--ignore-value must be auto, none or a mask value in 0..255; got {text!r}")
    return value


def _data_dir(path: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"data folder not found: {p}")
    return p


def _limit(n: int | None) -> int | None:
    if n is not None and not 1 <= n <= MAX_LIMIT:
        raise InputError(f"--limit must be in 1..{MAX_LIMIT}; got {n}")
    return n


def check_options(args: argparse.Namespace) -> None:
    """The bounds of the module docstring, checked before any file is read."""
    _limit(args.limit)
    if getattr(args, "max_clicks", None) is not None and not 1 <= args.max_clicks <= MAX_CLICKS:
        raise InputError(f"--max-clicks must be in 1..{MAX_CLICKS}; got {args.max_clicks}")
    if getattr(args, "void_id", None) is not None and not 0 <= args.void_id <= 255:
        raise InputError(f"--void-id must be a label value in 0..255; got {args.void_id}")
    if getattr(args, "ignore_value", None) is not None:
        _ignore_value(args.ignore_value)
    _check_object_id(args)
    if getattr(args, "require_all", False) and not args.video:
        raise InputError("--require-all applies to `eval masks --video` (sequences without predictions)")
    if getattr(args, "device", None) is not None:
        from anyseg.models.sam import check_device

        args.device = check_device(args.device)


def _check_object_id(args: argparse.Namespace) -> None:
    k = getattr(args, "object_id", None)
    if k is None:
        return
    if not 1 <= k <= MAX_OBJECT_ID:
        raise InputError(f"--object-id must be an object id in 1..{MAX_OBJECT_ID} (0 is background); got {k}")
    if getattr(args, "video", False):
        raise InputError("--object-id does not apply to --video: DAVIS masks hold every object's id")
    if any(str(getattr(args, a, "")).lower().endswith(".json") for a in ("pred", "gt")):
        raise InputError("--object-id applies to mask files, not COCO JSON (whose instances are scored by category)")
    if _ignore_value(args.ignore_value) == k:
        raise InputError(f"--object-id and --ignore-value are both {k}: the object cannot be the void value")


def _semantic_classes(text: str) -> list[str]:
    """``--classes`` of ``eval semantic``: comma-separated one-line labels, no duplicates."""
    from anyseg.labels import check_label

    classes = [check_label(c, "--classes name") for c in text.split(",") if c.strip()]
    if not classes:
        raise InputError("--classes is empty: give comma-separated class names in label-id order")
    if len(set(classes)) != len(classes):
        raise InputError(f"--classes has duplicate names: {sorted({c for c in classes if classes.count(c) > 1})}")
    return classes


def run(args: argparse.Namespace) -> int:
    from anyseg.eval.perf import RSSMonitor

    with RSSMonitor(interval_s=0.05) as monitor:
        return _run(args, monitor)


class _Run:
    """One ``anyseg eval`` command's settings: the header naming its results and where they go."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        kind = args.eval_command
        self.model_name = getattr(args, "model", None) or "masks"
        self.data = Path(args.pred if kind == "masks" else args.data)
        self.header: dict = {"kind": kind + ("-video" if kind == "masks" and args.video else ""),
                             "model": self.model_name, "weights": getattr(args, "weights", None)}
        if getattr(args, "object_id", None) is not None:
            self.header["object_id"] = args.object_id  # (absent otherwise: earlier runs stay resumable)

    def store(self):
        from anyseg.eval.store import ResultStore

        name = f"{self.header['kind']}-{self.model_name}-{self.data.resolve().name}"
        out = Path(self.args.out) if self.args.out else Path("runs") / "eval" / name
        return ResultStore(out, self.header, fresh=self.args.fresh)


def _run(args: argparse.Namespace, monitor) -> int:
    from anyseg.eval.report import format_table, write_report

    kind = args.eval_command
    check_options(args)
    job = _Run(args)
    if kind in ("interactive", "box"):
        st, records, summary = _run_promptable(job)
    elif kind == "video":
        st, records, summary = _run_video(job)
    elif kind == "semantic":
        st, records, summary = _run_semantic(job)
    elif Path(args.pred).suffix.lower() == ".json" or Path(args.gt).suffix.lower() == ".json":
        return _run_coco(job)
    elif args.video:
        st, records, summary = _run_video_masks(job)
        kind = "video-masks"
    else:
        st, records, summary = _run_masks(job)
    summary.update(peak_rss(st, round(monitor.peak_mb, 1)))
    command = "anyseg " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["eval"] else f"anyseg eval {kind}"
    paths = write_report(st.out_dir, kind, job.header, records, summary, command)
    print(format_table(summary))
    print(f"report: {paths['report']}  (JSON: {paths['summary']}, per-item: {st.path})", file=sys.stderr)
    return 0


def peak_rss(store, peak_mb: float) -> dict:
    """``peak_rss_mb`` (the largest over every run into ``store``'s folder) and ``peak_rss_mb_runs``
    (each run's, oldest first, this one last); this run's figure is recorded in the store.

    Runs written before the store kept run lines contribute the ``peak_rss_mb`` of the folder's
    ``summary.json`` when it belongs to the same run.
    """
    earlier = [float(r["peak_rss_mb"]) for r in store.runs() if isinstance(r.get("peak_rss_mb"), (int, float))]
    if store.resumed and not store.runs():
        earlier = _summary_peak(store)
    store.add_run({"peak_rss_mb": peak_mb, "scored": store.added})
    runs = earlier + [peak_mb]
    return {"peak_rss_mb": max(runs), "peak_rss_mb_runs": runs}


def _summary_peak(store) -> list[float]:
    import json

    try:
        old = json.loads((store.out_dir / "summary.json").read_text())
        peak = old["summary"]["peak_rss_mb"] if old.get("header") == store.header else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    return [float(peak)] if isinstance(peak, (int, float)) and not isinstance(peak, bool) else []


def _run_promptable(job: _Run):
    from anyseg.eval import datasets, runners
    from anyseg.models import load_model
    from anyseg.runtime import with_runtime

    args = job.args
    samples = datasets.read_mask_folder(_data_dir(args.data), ignore_value=_ignore_value(args.ignore_value),
                                        limit=args.limit, object_id=args.object_id)
    job.header.update(data=str(Path(args.data).resolve()), ignore_value=args.ignore_value)
    if args.eval_command == "interactive":
        job.header["max_clicks"] = args.max_clicks
    quiet = args.model == "auto" and args.runtime not in ("auto", "torch")  # (the runtime error says it all)
    model = load_model(args.model, weights=args.weights, device=args.device, quiet=quiet)
    predictor = with_runtime(model, args.runtime, requested=args.model)
    job.header["model"] = predictor.name  # auto -> the model actually used
    job.header["runtime"] = getattr(predictor, "runtime", "torch")
    st = job.store()
    if args.eval_command == "interactive":
        return (st, *runners.run_interactive(predictor, samples, st, max_clicks=args.max_clicks))
    return (st, *runners.run_box(predictor, samples, st))


def _run_video(job: _Run):
    from anyseg.eval import datasets, runners
    from anyseg.eval.engines import register_video_engines

    args = job.args
    samples = datasets.read_davis(_data_dir(args.data), resolution=args.resolution, limit=args.limit)
    register_video_engines()
    factory = runners.VIDEO_ENGINES.get(args.model)
    if factory is None:
        known = ", ".join(sorted(runners.VIDEO_ENGINES)) or "none installed yet"
        raise InputError(f"no video engine named {args.model!r} (video engines: {known}); "
                         "`anyseg eval masks --video` scores DAVIS-format results from any tool")
    job.header.update(data=str(Path(args.data).resolve()), skip_first_last=not args.all_frames)
    st = job.store()
    return (st, *runners.run_video(factory(args.model), samples, st, skip_first_last=not args.all_frames))


def _run_semantic(job: _Run):
    from anyseg.eval import datasets, runners
    from anyseg.eval.engines import register_semantic_engines

    args = job.args
    classes = _semantic_classes(args.classes)
    samples = datasets.read_semantic(_data_dir(args.data), len(classes), void_id=args.void_id, limit=args.limit)
    register_semantic_engines()
    factory = runners.SEMANTIC_ENGINES.get(args.model)
    if factory is None:
        known = ", ".join(sorted(runners.SEMANTIC_ENGINES)) or "none installed yet"
        raise InputError(f"no semantic engine named {args.model!r} (semantic engines: {known})")
    job.header.update(data=str(Path(args.data).resolve()), classes=classes, void_id=args.void_id)
    st = job.store()
    return (st, *runners.run_semantic(factory(args.model, classes), samples, classes, st))


def _run_coco(job: _Run) -> int:
    from anyseg.eval.coco_eval import coco_mask_ap
    from anyseg.eval.report import format_table

    args = job.args
    stats = coco_mask_ap(args.gt, args.pred)  # the results file is read with size caps and checks
    print(format_table({k: round(float(v), 4) for k, v in stats.items()}))
    if args.out:
        from anyseg.io.atomic import write_json

        write_json(Path(args.out) / "summary.json", {"header": dict(job.header, kind="masks-coco", pred=args.pred,
                                                                     gt=args.gt), "summary": stats})
    return 0


def _run_video_masks(job: _Run):
    from anyseg.eval import datasets, runners

    args = job.args
    pred_dir, gt_dir = _data_dir(args.pred), _data_dir(args.gt)
    job.header.update(pred=str(pred_dir.resolve()), gt=str(gt_dir.resolve()), skip_first_last=not args.all_frames)
    samples = datasets.read_davis(gt_dir, resolution=args.resolution, limit=args.limit)
    runners.split_by_predictions(pred_dir, samples, args.require_all)  # (refused before --out is written)
    st = job.store()
    records, summary = runners.score_video_files(pred_dir, samples, st, skip_first_last=not args.all_frames,
                                                 require_all=args.require_all)
    missing = summary["missing_sequences"]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        print(f"scored {len(samples) - len(missing)} of {len(samples)} sequences; {len(missing)} missing "
              f"(e.g. {shown}); --require-all to refuse", file=sys.stderr)
    return st, records, summary


def _run_masks(job: _Run):
    from anyseg.eval import datasets, runners

    args = job.args
    pred_dir, gt_dir = _data_dir(args.pred), _data_dir(args.gt)
    job.header.update(pred=str(pred_dir.resolve()), gt=str(gt_dir.resolve()))
    mask_dir = gt_dir / "masks" if (gt_dir / "masks").is_dir() else gt_dir
    gts = datasets.files_by_stem(mask_dir, "ground-truth mask")
    preds = datasets.files_by_stem(pred_dir, "predicted mask")
    missing = sorted(set(gts) - set(preds))
    if missing:
        raise InputError(f"no prediction for {gts[missing[0]].name} in {pred_dir} (matched by file stem)")
    iv = _ignore_value(args.ignore_value)
    job.header["ignore_value"] = args.ignore_value
    pairs = [(stem, preds[stem], datasets.MaskSample(stem, gts[stem], gts[stem], iv, args.object_id))
             for stem in list(gts)[: args.limit or None]]
    st = job.store()
    return (st, *runners.score_mask_files(pairs, st))

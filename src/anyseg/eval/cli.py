"""``anyseg eval ...``: interactive, box, video, semantic and stored-mask evaluation.

The options that scale the work are bounded before anything is read: ``--limit``
1..:data:`MAX_LIMIT`, ``--max-clicks`` 1..:data:`MAX_CLICKS` (the protocols use 20), ``--device``
(:func:`anyseg.models.sam.check_device`); ``--classes`` names are one-line labels
(:func:`anyseg.labels.check_label`) and ``--void-id`` / ``--ignore-value`` are pixel values 0..255.
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


def add_parsers(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a model (or masks from any tool) with the field's protocols")
    esub = ev.add_subparsers(dest="eval_command", metavar="KIND", parser_class=type(ev))
    esub.required = True

    def common(p, model: bool = True) -> None:
        if model:
            p.add_argument("--model", required=True, help="registry name (or auto)")
            p.add_argument("--weights", metavar="PATH", help="transformers weights folder for --model")
            p.add_argument("--device", default=None)
        p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N items")
        p.add_argument("--out", metavar="DIR", help="output folder (default runs/eval/KIND-MODEL-DATA); reruns resume")
        p.add_argument("--fresh", action="store_true", help="discard earlier results in --out instead of resuming")

    p = esub.add_parser("interactive", help="NoC@85/90 and mIoU@k with the standard click simulator")
    p.add_argument("--data", required=True, help="folder with images/ and masks/ (paired by file stem)")
    p.add_argument("--max-clicks", type=int, default=20, help=f"clicks per item, 1..{MAX_CLICKS} (default 20)")
    p.add_argument("--ignore-value", default="auto", help="mask value to ignore: auto (128 in lossless masks), none, or N")
    common(p)
    p.add_argument("--runtime", default="torch", choices=list(RUNTIMES),
                   help="inference runtime (default torch: fp32, the reference's numbers; e.g. auto or torch-bf16 "
                        "to measure what a fast runtime costs in quality)")
    p = esub.add_parser("box", help="IoU/Dice with each ground-truth mask's tight box as the prompt")
    p.add_argument("--data", required=True, help="folder with images/ and masks/ (paired by file stem)")
    p.add_argument("--ignore-value", default="auto")
    common(p)
    p.add_argument("--runtime", default="torch", choices=list(RUNTIMES), help="inference runtime (default torch)")
    p = esub.add_parser("video", help="semi-supervised VOS J&F (first frame's masks given), DAVIS protocol")
    p.add_argument("--data", required=True, help="DAVIS folder (JPEGImages/ and Annotations/)")
    p.add_argument("--resolution", default="480p")
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
    p.add_argument("--ignore-value", default="auto")
    p.add_argument("--resolution", default="480p")
    p.add_argument("--all-frames", action="store_true")
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
    if getattr(args, "device", None) is not None:
        from anyseg.models.sam import check_device

        args.device = check_device(args.device)


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


def _run(args: argparse.Namespace, monitor) -> int:
    from anyseg.eval import datasets, runners
    from anyseg.eval.report import format_table, write_report
    from anyseg.eval.store import ResultStore

    kind = args.eval_command
    check_options(args)
    limit = args.limit
    model_name = getattr(args, "model", None) or "masks"
    data = Path(args.pred if kind == "masks" else args.data)
    header: dict = {"kind": kind + ("-video" if kind == "masks" and args.video else ""), "model": model_name,
                    "weights": getattr(args, "weights", None)}

    def store() -> ResultStore:
        out = Path(args.out) if args.out else Path("runs") / "eval" / f"{header['kind']}-{model_name}-{data.resolve().name}"
        return ResultStore(out, header, fresh=args.fresh)

    if kind in ("interactive", "box"):
        from anyseg.models import load_model

        samples = datasets.read_mask_folder(_data_dir(args.data), ignore_value=_ignore_value(args.ignore_value), limit=limit)
        header.update(data=str(Path(args.data).resolve()), ignore_value=args.ignore_value)
        if kind == "interactive":
            header["max_clicks"] = args.max_clicks
        from anyseg.runtime import with_runtime

        predictor = with_runtime(load_model(args.model, weights=args.weights, device=args.device), args.runtime)
        header["model"] = predictor.name  # auto -> the model actually used
        header["runtime"] = getattr(predictor, "runtime", "torch")
        st = store()
        if kind == "interactive":
            records, summary = runners.run_interactive(predictor, samples, st, max_clicks=args.max_clicks)
        else:
            records, summary = runners.run_box(predictor, samples, st)
    elif kind == "video":
        samples = datasets.read_davis(_data_dir(args.data), resolution=args.resolution, limit=limit)
        from anyseg.video.session import register_video_engines

        register_video_engines()
        factory = runners.VIDEO_ENGINES.get(args.model)
        if factory is None:
            known = ", ".join(sorted(runners.VIDEO_ENGINES)) or "none installed yet"
            raise InputError(f"no video engine named {args.model!r} (video engines: {known}); "
                             "`anyseg eval masks --video` scores DAVIS-format results from any tool")
        header.update(data=str(Path(args.data).resolve()), skip_first_last=not args.all_frames)
        st = store()
        records, summary = runners.run_video(factory(args.model), samples, st, skip_first_last=not args.all_frames)
    elif kind == "semantic":
        classes = _semantic_classes(args.classes)
        samples = datasets.read_semantic(_data_dir(args.data), len(classes), void_id=args.void_id, limit=limit)
        from anyseg.tasks.text import register_engines

        register_engines()
        factory = runners.SEMANTIC_ENGINES.get(args.model)
        if factory is None:
            known = ", ".join(sorted(runners.SEMANTIC_ENGINES)) or "none installed yet"
            raise InputError(f"no semantic engine named {args.model!r} (semantic engines: {known})")
        header.update(data=str(Path(args.data).resolve()), classes=classes, void_id=args.void_id)
        st = store()
        records, summary = runners.run_semantic(factory(args.model, classes), samples, classes, st)
    elif Path(args.pred).suffix.lower() == ".json" or Path(args.gt).suffix.lower() == ".json":
        from anyseg.eval.coco_eval import coco_mask_ap

        stats = coco_mask_ap(args.gt, args.pred)  # the results file is read with size caps and checks
        print(format_table({k: round(float(v), 4) for k, v in stats.items()}))
        if args.out:
            from anyseg.io.atomic import write_json

            write_json(Path(args.out) / "summary.json", {"header": dict(header, kind="masks-coco", pred=args.pred,
                                                                         gt=args.gt), "summary": stats})
        return 0
    else:  # masks
        pred_dir = _data_dir(args.pred)
        gt_dir = _data_dir(args.gt)
        header.update(pred=str(pred_dir.resolve()), gt=str(gt_dir.resolve()))
        if args.video:
            samples = datasets.read_davis(gt_dir, resolution=args.resolution, limit=limit)
            header["skip_first_last"] = not args.all_frames
            st = store()
            records, summary = runners.score_video_files(pred_dir, samples, st, skip_first_last=not args.all_frames)
            kind = "video-masks"
        else:
            mask_dir = gt_dir / "masks" if (gt_dir / "masks").is_dir() else gt_dir
            gts = datasets._files_by_stem(mask_dir, "ground-truth mask")
            preds = datasets._files_by_stem(pred_dir, "predicted mask")
            missing = sorted(set(gts) - set(preds))
            if missing:
                raise InputError(f"no prediction for {gts[missing[0]].name} in {pred_dir} (matched by file stem)")
            iv = _ignore_value(args.ignore_value)
            header["ignore_value"] = args.ignore_value
            pairs = []
            for stem in list(gts)[: limit or None]:
                ignore = (None if gts[stem].suffix.lower() in (".jpg", ".jpeg") else 128) if iv == "auto" else iv
                pairs.append((stem, preds[stem], datasets.MaskSample(stem, gts[stem], gts[stem], ignore)))
            st = store()
            records, summary = runners.score_mask_files(pairs, st)
    summary["peak_rss_mb"] = round(monitor.peak_mb, 1)
    command = "anyseg " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["eval"] else f"anyseg eval {kind}"
    paths = write_report(st.out_dir, kind, header, records, summary, command)
    print(format_table(summary))
    print(f"report: {paths['report']}  (JSON: {paths['summary']}, per-item: {st.path})", file=sys.stderr)
    return 0

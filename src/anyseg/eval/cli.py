"""``anyseg eval ...``: interactive, box, video, semantic, stored-mask, few-shot, discovery, edit and volume evaluation.

Each ``anyseg eval KIND`` is an :class:`EvalProtocol` of :data:`PROTOCOLS`: its
``add_parser(sub)`` adds the options, its ``run(job)`` reads the data, scores into the job's
result store and writes the report (:meth:`EvalJob.report`). ``eval masks`` scores files from
any tool; which reader it uses follows from its input (:meth:`MasksProtocol.source`).

The options that scale the work are bounded before anything is read: ``--limit``
1..:data:`MAX_LIMIT`, ``--max-clicks`` 1..:data:`MAX_CLICKS` (the protocols use 20), ``--device``
(:func:`anyseg.models.sam.check_device`); ``--classes`` names are one-line labels
(:func:`anyseg.labels.check_label`), ``--void-id`` / ``--ignore-value`` are pixel values 0..255
and ``--object-id`` an id in 1..:data:`MAX_OBJECT_ID`. ``--model`` takes a registry name or a
local model folder (:func:`anyseg.models.resolver.resolve`), as the other commands do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from anyseg.errors import InputError
from anyseg.runtime import RUNTIMES

__all__ = ["EvalJob", "EvalProtocol", "InteractiveProtocol", "BoxProtocol", "VideoProtocol", "SemanticProtocol",
           "MasksProtocol", "FewshotProtocol", "DiscoverProtocol", "EditProtocol", "VolumeProtocol", "PROTOCOLS", "KINDS", "MAX_LIMIT", "MAX_CLICKS", "MAX_OBJECT_ID", "add_parsers", "run",
           "check_options", "peak_rss"]

#: most items ``--limit`` may ask for, and most simulated clicks per item
MAX_LIMIT = 1_000_000
MAX_CLICKS = 100
#: largest ``--object-id`` (16-bit label maps)
MAX_OBJECT_ID = 65535
IGNORE_HELP = ("mask value to ignore: auto (GrabCut's 128 band in grey 0/128/255 masks, 255 in label maps, "
               "nothing in JPEG masks), none, or N")
OBJECT_ID_HELP = "the object to score in palette / label-map masks: pixels equal to K (see docs/EVALUATION.md)"
DATA_HELP = "folder with images/ and masks/ (paired by file stem)"


# -- options -----------------------------------------------------------------------------------------
def _common_options(p: argparse.ArgumentParser, model_help: str | None) -> None:
    """``--model`` (unless ``model_help`` is ``None``), ``--weights``, ``--device``, ``--limit``, ``--out``, ``--fresh``."""
    if model_help is not None:
        p.add_argument("--model", required=True, metavar="NAME|PATH", help=model_help)
        p.add_argument("--weights", metavar="PATH", help="transformers weights folder for --model")
        p.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:N or mps (default: cuda when available)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N items")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/eval/KIND-MODEL-DATA); reruns resume")
    p.add_argument("--fresh", action="store_true", help="discard earlier results in --out instead of resuming")


def _ignore_value(text: str) -> Any:
    if text == "auto" or text.lower() == "none":
        return "auto" if text == "auto" else None
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


def check_options(args: argparse.Namespace) -> None:
    """The bounds of the module docstring, checked before any file is read."""
    if args.limit is not None and not 1 <= args.limit <= MAX_LIMIT:
        raise InputError(f"--limit must be in 1..{MAX_LIMIT}; got {args.limit}")
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
    if (k := getattr(args, "object_id", None)) is None:
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


# -- a run -------------------------------------------------------------------------------------------
def _folder_label(model: str) -> str:
    """``model`` as one path component of the default ``--out``: a model folder by its own name."""
    from anyseg.models.resolver import is_path_like

    if model in ("auto", "masks") or not is_path_like(model):
        return model
    return Path(model).expanduser().resolve().name or model


class EvalJob:
    """One ``anyseg eval`` command: its options, the header naming its results, where they go, and its report."""

    def __init__(self, args: argparse.Namespace, monitor: Any = None):
        self.args = args
        self.monitor = monitor  # (an RSSMonitor: the run's peak resident set goes into the summary)
        kind = args.eval_command
        self.model_name = getattr(args, "model", None) or "masks"
        self.data = Path((args.pred if kind == "masks" or getattr(args, "data", None) is None else args.data) or ".")
        self.header: dict = {"kind": kind + ("-video" if kind == "masks" and args.video else ""),
                             "model": self.model_name, "weights": getattr(args, "weights", None)}
        if getattr(args, "object_id", None) is not None:
            self.header["object_id"] = args.object_id  # (absent otherwise: earlier runs stay resumable)

    def store(self) -> Any:
        """The result store of ``--out`` (default ``runs/eval/KIND-MODEL-DATA``); reruns resume."""
        from anyseg.eval.store import ResultStore

        name = f"{self.header['kind']}-{_folder_label(self.model_name)}-{self.data.resolve().name}"
        out = Path(self.args.out) if self.args.out else Path("runs") / "eval" / name
        return ResultStore(out, self.header, fresh=self.args.fresh)

    def report(self, st: Any, records: list, summary: dict, kind: str | None = None) -> int:
        """Add the peak memory to ``summary``, write the report files, print the table; exit code 0."""
        from anyseg.eval.report import format_table, write_report

        kind = kind or self.args.eval_command
        summary.update(peak_rss(st, round(self.monitor.peak_mb, 1) if self.monitor is not None else 0.0))
        argv = sys.argv[1:]
        command = "anyseg " + " ".join(shlex.quote(a) for a in argv) if argv[:1] == ["eval"] else f"anyseg eval {kind}"
        paths = write_report(st.out_dir, kind, self.header, records, summary, command)
        print(format_table(summary))
        print(f"report: {paths['report']}  (JSON: {paths['summary']}, per-item: {st.path})", file=sys.stderr)
        return 0

    def report_or_json(self, st: Any, records: list, summary: dict, kind: str, as_json: bool) -> int:
        """:meth:`report`; with ``as_json`` the table goes to stderr and ``{"header", "summary"}`` to stdout."""
        if not as_json:
            return self.report(st, records, summary, kind=kind)
        with contextlib.redirect_stdout(sys.stderr):
            code = self.report(st, records, summary, kind=kind)
        print(json.dumps({"header": self.header, "summary": summary}))
        return code


def peak_rss(store: Any, peak_mb: float) -> dict:
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


def _summary_peak(store: Any) -> list[float]:
    try:
        old = json.loads((store.out_dir / "summary.json").read_text())
        peak = old["summary"]["peak_rss_mb"] if old.get("header") == store.header else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    return [float(peak)] if isinstance(peak, (int, float)) and not isinstance(peak, bool) else []


# -- the protocols -----------------------------------------------------------------------------------
class EvalProtocol:
    """One ``anyseg eval KIND``: its ``name`` and ``help``, ``add_parser(sub)`` and ``run(job) -> int``."""

    name: str = ""
    help: str = ""

    def add_parser(self, sub: Any) -> argparse.ArgumentParser:
        """Add ``eval NAME`` and its options (:meth:`add_arguments`) to the ``eval`` sub-commands."""
        p = sub.add_parser(self.name, help=self.help)
        self.add_arguments(p)
        return p

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def run(self, job: EvalJob) -> int:
        """Read the data, score into ``job.store()``, write the report; the exit code."""
        raise NotImplementedError


_PROMPTABLE_MODEL = "registry name, auto (best present, else classical) or a local model folder path"


class _PromptableProtocol(EvalProtocol):
    """``interactive`` and ``box``: a promptable model (``--model`` on ``--runtime``) over an image/mask folder."""

    def run(self, job: EvalJob) -> int:
        from anyseg.eval import datasets
        from anyseg.models import load_model
        from anyseg.runtime import with_runtime

        args = job.args
        samples = datasets.read_mask_folder(_data_dir(args.data), ignore_value=_ignore_value(args.ignore_value),
                                            limit=args.limit, object_id=args.object_id)
        job.header.update(data=str(Path(args.data).resolve()), ignore_value=args.ignore_value)
        self.describe(job)
        quiet = args.model == "auto" and args.runtime not in ("auto", "torch")  # (the runtime error says it all)
        model = load_model(args.model, weights=args.weights, device=args.device, quiet=quiet)
        predictor = with_runtime(model, args.runtime, requested=args.model)
        job.header["model"] = predictor.name  # auto -> the model actually used
        job.header["runtime"] = getattr(predictor, "runtime", "torch")
        st = job.store()
        return job.report(st, *self.score(predictor, samples, st, args))

    def describe(self, job: EvalJob) -> None:
        """The protocol's own settings in the header (none by default)."""

    def score(self, predictor: Any, samples: list, st: Any, args: argparse.Namespace) -> tuple[list, dict]:
        raise NotImplementedError


class InteractiveProtocol(_PromptableProtocol):
    """NoC@85/90 and mIoU@k with the standard click simulator."""

    name = "interactive"
    help = "NoC@85/90 and mIoU@k with the standard click simulator"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", required=True, help=DATA_HELP)
        p.add_argument("--max-clicks", type=int, default=20, help=f"clicks per item, 1..{MAX_CLICKS} (default 20)")
        p.add_argument("--ignore-value", default="auto", help=IGNORE_HELP)
        p.add_argument("--object-id", type=int, default=None, metavar="K", help=OBJECT_ID_HELP)
        _common_options(p, _PROMPTABLE_MODEL)
        p.add_argument("--runtime", default="torch", choices=list(RUNTIMES),
                       help="inference runtime (default torch: fp32, the reference's numbers; e.g. auto or torch-bf16 "
                            "to measure what a fast runtime costs in quality)")

    def describe(self, job: EvalJob) -> None:
        job.header["max_clicks"] = job.args.max_clicks

    def score(self, predictor: Any, samples: list, st: Any, args: argparse.Namespace) -> tuple[list, dict]:
        from anyseg.eval import runners

        return runners.run_interactive(predictor, samples, st, max_clicks=args.max_clicks)


class BoxProtocol(_PromptableProtocol):
    """IoU/Dice with each ground-truth mask's tight box as the prompt."""

    name = "box"
    help = "IoU/Dice with each ground-truth mask's tight box as the prompt"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", required=True, help=DATA_HELP)
        p.add_argument("--ignore-value", default="auto", help=IGNORE_HELP)
        p.add_argument("--object-id", type=int, default=None, metavar="K", help=OBJECT_ID_HELP)
        _common_options(p, _PROMPTABLE_MODEL)
        p.add_argument("--runtime", default="torch", choices=list(RUNTIMES), help="inference runtime (default torch)")

    def score(self, predictor: Any, samples: list, st: Any, args: argparse.Namespace) -> tuple[list, dict]:
        from anyseg.eval import runners

        return runners.run_box(predictor, samples, st)


class VideoProtocol(EvalProtocol):
    """Semi-supervised VOS J&F (the first frame's masks given), as the DAVIS toolkit scores it."""

    name = "video"
    help = "semi-supervised VOS J&F (first frame's masks given), DAVIS protocol"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", required=True, help="DAVIS folder (JPEGImages/ and Annotations/)")
        p.add_argument("--resolution", default="480p", help="DAVIS resolution folder under JPEGImages/ and Annotations/ (default 480p)")
        p.add_argument("--all-frames", action="store_true", help="also score the first and last frames")
        _common_options(p, "video engine: classical, a tracking model's registry name (SAM 2 / 2.1, EdgeTAM, "
                           "SAM 3) or a local model folder path")

    def run(self, job: EvalJob) -> int:
        from anyseg.eval import datasets, runners
        from anyseg.eval.engines import register_video_engines

        args = job.args
        samples = datasets.read_davis(_data_dir(args.data), resolution=args.resolution, limit=args.limit)
        register_video_engines()
        factory = runners.VIDEO_ENGINES.get(args.model) or self.folder_engine(args.model)
        if factory is None:
            known = ", ".join(sorted(runners.VIDEO_ENGINES)) or "none installed yet"
            raise InputError(f"no video engine named {args.model!r} (video engines: {known}, or a local model "
                             "folder); `anyseg eval masks --video` scores DAVIS-format results from any tool")
        job.header.update(data=str(Path(args.data).resolve()), skip_first_last=not args.all_frames)
        engine = factory(args.model, weights=args.weights, device=args.device)  # errors before anything is written
        st = job.store()
        return job.report(st, *runners.run_video(engine, samples, st, skip_first_last=not args.all_frames))

    @staticmethod
    def folder_engine(model: str) -> Callable[..., Any] | None:
        """The engine factory of a local video checkpoint folder, checked now (before anything is
        written); ``None`` when ``model`` is not a path."""
        from anyseg.eval.engines import tracker_model_engine
        from anyseg.models.families import VIDEO
        from anyseg.models.resolver import is_path_like, resolve

        if not is_path_like(model):
            return None
        resolve(model, VIDEO)  # a missing folder, no config.json, an unknown or unfitting model type
        return tracker_model_engine


#: what may follow ``NAME:`` in ``eval semantic --model`` (CLIP models: how the class map is made)
SEMANTIC_METHODS = ("sclip", "maskclip", "masks")


class SemanticProtocol(EvalProtocol):
    """Confusion-matrix mIoU and pixel accuracy of class maps over the data set's class names."""

    name = "semantic"
    help = "confusion-matrix mIoU and pixel accuracy over class names"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", required=True, help="folder with images/ and labels/ (class-id PNGs)")
        p.add_argument("--classes", required=True, help="comma-separated class names, in label-id order")
        p.add_argument("--void-id", type=int, default=255, help="label id to ignore (default 255)")
        _common_options(p, "semantic engine: auto, a text model's registry name or a local model folder path; "
                           f"a CLIP model as NAME:METHOD ({', '.join(SEMANTIC_METHODS)}; default sclip)")

    def run(self, job: EvalJob) -> int:
        from anyseg.eval import datasets, runners
        from anyseg.eval.engines import register_semantic_engines

        args = job.args
        classes = _semantic_classes(args.classes)
        samples = datasets.read_semantic(_data_dir(args.data), len(classes), void_id=args.void_id, limit=args.limit)
        register_semantic_engines()
        factory = runners.SEMANTIC_ENGINES.get(args.model) or self.folder_engine(args.model)
        if factory is None:
            known = ", ".join(sorted(runners.SEMANTIC_ENGINES)) or "none installed yet"
            raise InputError(f"no semantic engine named {args.model!r} (semantic engines: {known}, or a local "
                             "model folder)")
        job.header.update(data=str(Path(args.data).resolve()), classes=classes, void_id=args.void_id)
        engine = factory(args.model, classes, weights=args.weights, device=args.device)  # errors before anything is written
        st = job.store()
        return job.report(st, *runners.run_semantic(engine, samples, classes, st))

    @staticmethod
    def folder_engine(model: str) -> Callable[..., Any] | None:
        """The engine factory of a local model folder (``PATH`` or ``PATH:METHOD``), checked now;
        ``None`` when ``model`` is not a path."""
        from anyseg.eval.engines import semantic_engine
        from anyseg.models.families import LABELS, SEMANTIC
        from anyseg.models.resolver import is_path_like, resolve

        folder, _, method = model.partition(":")
        if not is_path_like(folder):
            return None
        spec = resolve(folder, SEMANTIC)  # a missing folder, no config.json, an unknown or unfitting model type
        if method and (method not in SEMANTIC_METHODS or not spec.family_record.has(LABELS)):
            raise InputError(f"--model {model}: :METHOD ({', '.join(SEMANTIC_METHODS)}) goes with a CLIP model folder")
        return semantic_engine


class MasksProtocol(EvalProtocol):
    """Masks written by any tool against ground truth: per-image IoU, DAVIS J&F (``--video``) or COCO mask AP."""

    name = "masks"
    help = "score masks written by any tool against ground truth"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
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
        _common_options(p, None)

    @staticmethod
    def source(args: argparse.Namespace) -> str:
        """What the inputs are: ``coco`` (a ``.json`` on either side), ``video`` (``--video``: DAVIS
        folders) or ``files`` (a mask file per image)."""
        if Path(args.pred).suffix.lower() == ".json" or Path(args.gt).suffix.lower() == ".json":
            return "coco"
        return "video" if args.video else "files"

    def run(self, job: EvalJob) -> int:
        return {"coco": self.run_coco, "video": self.run_video, "files": self.run_files}[self.source(job.args)](job)

    @staticmethod
    def run_coco(job: EvalJob) -> int:
        """COCO mask AP/AR of a results JSON against instances JSON (summary only; no per-item store)."""
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

    @staticmethod
    def run_video(job: EvalJob) -> int:
        """J&F of DAVIS-format result folders; sequences without predictions are said (or refused)."""
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
        return job.report(st, records, summary, kind="video-masks")

    @staticmethod
    def run_files(job: EvalJob) -> int:
        """IoU/Dice of one predicted mask file per ground-truth mask, paired by file stem."""
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
        return job.report(st, *runners.score_mask_files(pairs, st))


class FewshotProtocol(EvalProtocol):
    """Few-shot segmentation: K annotated supports and one query per episode; class-accumulated mIoU,
    FB-IoU (:mod:`anyseg.eval.fewshot`) over FSS-1000, COCO-20i / PASCAL-5i-style episodes, PerSeg
    or DAVIS frames (:mod:`anyseg.eval.fewshot_data`)."""

    name = "fewshot"
    help = "few-shot segmentation (FSS-1000, COCO-20i / PASCAL-5i episodes, PerSeg, DAVIS frames): mIoU, FB-IoU"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", required=True, help="data folder: DAVIS, PerSeg (Images/ + Annotations/), images/ + "
                       "masks/ label maps (COCO-20i / PASCAL-5i style) or FSS-1000 CLASS/N.jpg + N.png")
        p.add_argument("--layout", default="auto", choices=("auto", "davis", "perseg", "episodes", "fss"),
                       help="data layout (default auto: told by the folder; see docs/EVALUATION.md)")
        p.add_argument("--method", default="auto", help="few-shot method: auto (matcher, else persam, else "
                       "classical, by the models present), matcher, persam, persam-f, seggpt, sam3 or classical")
        p.add_argument("--model", default=None, metavar="NAME|PATH",
                       help="the method's SAM-family or in-context model: registry name or local model folder")
        p.add_argument("--features", default=None, metavar="NAME|PATH",
                       help="matcher's patch-feature model (default dinov2-small)")
        p.add_argument("--shots", type=int, default=1, metavar="K", help="supports per episode (default 1)")
        p.add_argument("--fold", type=int, default=None, metavar="F",
                       help="episodes layout: only the classes of fold F (COCO-20i: 4k+F+1; PASCAL-5i: 5F+1..5F+5)")
        p.add_argument("--episodes", type=int, default=None, metavar="N",
                       help="episodes to draw (episodes layout: default 1000; fss: default each image once)")
        p.add_argument("--seed", type=int, default=None, help="seed of the drawn episodes (default 0)")
        p.add_argument("--stride", type=int, default=1, metavar="S", help="davis: every S-th later frame a query")
        p.add_argument("--instances", default=None, choices=("one", "all"),
                       help="masks per query: one, or all (their union; default for the episodes layout)")
        p.add_argument("--resolution", default="480p", help="davis: resolution folder (default 480p)")
        p.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:N or mps")
        _common_options(p, None)

    def run(self, job: EvalJob) -> int:
        from anyseg.eval import fewshot

        args = job.args
        plan = fewshot.plan_from_args(args)  # data read, episodes drawn: errors before anything is written
        segmenter = fewshot.segmenter_from_args(args, plan.instances)
        job.header = {"kind": "fewshot", "method": segmenter.method_name, "model": args.model,
                      "features": args.features, **plan.header}
        label = segmenter.method_name + (f"-{_folder_label(args.model)}" if args.model else "")
        job.model_name = f"{label}-{args.shots}shot" + (f"-fold{args.fold}" if args.fold is not None else "")
        st = job.store()
        return job.report(st, *fewshot.run_fewshot(segmenter, plan.episodes[: args.limit or None], st))


class _ModuleProtocol(EvalProtocol):
    """A protocol whose options and run live in the module its subclass's ``module()`` returns: that
    module's ``add_arguments(p)`` (then ``--limit``, ``--out``, ``--fresh``) and ``run_KIND_eval(job)``."""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        self.module().add_arguments(p)
        _common_options(p, None)

    def run(self, job: EvalJob) -> int:
        return getattr(self.module(), f"run_{self.name}_eval")(job)


class DiscoverProtocol(_ModuleProtocol):
    """Object discovery and unsupervised segmentation (:mod:`anyseg.eval.discover`): single-object
    saliency (IoU, accuracy, max F-beta), CorLoc, and unsupervised semantic mIoU with a global
    (STEGO) or per-image (DiffSeg) Hungarian matching."""

    name = "discover"
    help = "object discovery: saliency (IoU, max F-beta), CorLoc, unsupervised semantic mIoU (Hungarian matching)"

    def module(self) -> Any:
        from anyseg.eval import discover

        return discover


class EditProtocol(_ModuleProtocol):
    """Mask-driven editing (:mod:`anyseg.eval.edit`): removal on synthetic composites (PSNR, SSIM in
    the hole against the clean background, beside the mean-colour fill) and the temporal
    consistency of video removal (flow warping error, against per-frame inpainting)."""

    name = "edit"
    help = "object removal: composites' PSNR/SSIM in the hole vs a mean fill; video removal's flow warping error"

    def module(self) -> Any:
        from anyseg.eval import edit

        return edit


class VolumeProtocol(_ModuleProtocol):
    """Label volumes, 2D medical masks (:mod:`anyseg.eval.volume`): Dice, IoU, NSD, HD95, ASSD with the spacing."""

    name = "volume"
    help = "label volumes (or 2D medical masks): Dice, IoU, NSD, HD95, ASSD in mm, from files or a prompted model"

    def module(self) -> Any:
        from anyseg.eval import volume

        return volume


#: every ``anyseg eval KIND``, in ``--help`` order
PROTOCOLS: tuple[EvalProtocol, ...] = (InteractiveProtocol(), BoxProtocol(), VideoProtocol(), SemanticProtocol(),
                                       MasksProtocol(), FewshotProtocol(), DiscoverProtocol(), EditProtocol(), VolumeProtocol())
KINDS = tuple(protocol.name for protocol in PROTOCOLS)


def add_parsers(sub: Any) -> None:
    """Add ``eval`` and one sub-command per protocol of :data:`PROTOCOLS` to the ``anyseg`` sub-commands."""
    ev = sub.add_parser("eval", help="evaluate a model (or masks from any tool) with the field's protocols")
    esub = ev.add_subparsers(dest="eval_command", metavar="KIND", parser_class=type(ev))
    esub.required = True
    for protocol in PROTOCOLS:
        protocol.add_parser(esub)


def run(args: argparse.Namespace) -> int:
    """Check the options, then run the protocol ``args.eval_command`` names, measuring its peak memory."""
    from anyseg.eval.perf import RSSMonitor

    check_options(args)
    protocol = next(p for p in PROTOCOLS if p.name == args.eval_command)
    with RSSMonitor(interval_s=0.05) as monitor:
        return protocol.run(EvalJob(args, monitor))

"""``anyseg finetune`` and ``anyseg pseudolabel``: adapt a SAM-family model to the user's masks.

``finetune``: every option is checked before any file is read or written
(:func:`anyseg.tasks.finetune.finetune_config`, ``--device``, ``--out``), then the training and
validation pairs (errors name the files), then the model loads (the classical engine is refused:
fine-tuning needs learnable weights) and :func:`anyseg.tasks.finetune.run_finetune` trains,
resuming from ``--out``'s checkpoints of the same configuration unless ``--fresh``. With ``--val``
the base and the fine-tuned model are scored by ``anyseg eval box`` (into ``OUT/eval/base`` and
``OUT/eval/finetuned``; ``--no-eval`` skips it, and the report lists the two commands instead).
The exported model folder's path goes to stdout; ``--json`` prints the run's summary instead.

``pseudolabel``: WS-SAM pseudo-masks from sparse labels (points, boxes or scribbles per object),
kept where augmentations agree, unreliable pixels marked ignored; ``--gt`` scores them against full
masks. The result folder is ready for ``anyseg finetune --data``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from anyseg.commands.options import DEVICE_HELP, check_out, device_option

__all__ = ["add_finetune_parser", "run_finetune", "add_pseudolabel_parser", "run_pseudolabel", "eval_box"]

_MODEL_HELP = "the SAM-family model to adapt (SAM, SAM-HQ, SAM 2): a registry name or a local model folder"
_DATA_HELP = "training folder with images/ and masks/ (paired by file stem)"


def add_finetune_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``finetune`` and its options to the ``anyseg`` sub-commands."""
    p = sub.add_parser("finetune", help="fine-tune a SAM-family model on your own masks (LoRA, decoder-only or full)")
    p.add_argument("--model", required=True, metavar="NAME|PATH", help=_MODEL_HELP)
    p.add_argument("--data", required=True, metavar="DIR", help=_DATA_HELP)
    p.add_argument("--val", default=None, metavar="DIR",
                   help="validation folder (images/ + masks/): validation IoU each epoch, eval box before/after")
    p.add_argument("--method", default="lora", metavar="lora|decoder|full",
                   help="lora: LoRA on the image encoder's attention (default); decoder: the mask decoder only "
                        "(MedSAM's cheap variant); full: every weight")
    p.add_argument("--lora-rank", type=int, default=None, metavar="R", help="LoRA rank (default 8; --method lora)")
    p.add_argument("--lora-decoder", action="store_true", help="LoRA on the mask decoder too (SAMed; --method lora)")
    span = p.add_mutually_exclusive_group()
    span.add_argument("--epochs", type=int, default=None, metavar="N", help="passes over --data")
    span.add_argument("--steps", type=int, default=None, metavar="N", help="optimiser steps (instead of --epochs)")
    p.add_argument("--batch", type=int, default=2, metavar="B", help="images per step (default 2)")
    p.add_argument("--accumulate", type=int, default=1, metavar="K",
                   help="gradient accumulation: K batches per optimiser step (default 1)")
    p.add_argument("--lr", type=float, default=None, metavar="LR", help="peak learning rate (default: the method's)")
    p.add_argument("--prompts", default="box,point", metavar="box,point,mask",
                   help="prompt kinds sampled from the ground truth (default box,point; mask: iterative rounds)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="training precision (default fp32)")
    p.add_argument("--loss", default="sam", choices=["sam", "medsam"],
                   help="sam: SAM's 20:1 focal + dice (default); medsam: MedSAM's 1:1 dice + cross-entropy (both with "
                        "the IoU head's MSE)")
    p.add_argument("--checkpoint-every", type=int, default=100, metavar="N",
                   help="write a checkpoint every N steps (default 100); reruns resume from the last")
    p.add_argument("--keep-adapter", action="store_true",
                   help="keep the LoRA adapter separate (loadable) instead of merging it into the weights")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--fresh", action="store_true", help="discard --out's checkpoints and start over")
    p.add_argument("--no-eval", action="store_true",
                   help="skip `anyseg eval box` of the base and fine-tuned model on --val")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: checkpoints, the model folder, curves.png, report.md, finetune.json")
    p.add_argument("--json", action="store_true", help="print the run's summary as JSON to stdout")
    return p


def eval_box(model: Any, val: Path, out: Path, device: str | None = None, fresh: bool = False) -> dict:
    """``anyseg eval box --model MODEL --data VAL --out OUT`` (its table on stderr) -> its summary.

    ``model``: a model folder or name, or a loaded predictor (whose folder or name is used).
    """
    from anyseg.eval import cli as eval_cli

    name = model if isinstance(model, (str, Path)) else (getattr(model, "folder", None) or model.name)
    argv = ["eval", "box", "--model", str(name), "--data", str(val), "--out", str(out)]
    argv += ["--device", device] if device else []
    argv += ["--fresh"] if fresh else []
    parser = argparse.ArgumentParser(prog="anyseg")
    eval_cli.add_parsers(parser.add_subparsers(dest="command"))
    with contextlib.redirect_stdout(sys.stderr):
        eval_cli.run(parser.parse_args(argv))
    return json.loads((out / "summary.json").read_text())["summary"]


def run_finetune(args: argparse.Namespace) -> int:
    """Check every option and the data, load the model, train, evaluate, report."""
    from anyseg.finetune.report import quote_command
    from anyseg.models import load_model
    from anyseg.tasks.finetune import (
        check_data, check_learnable, check_resume, finetune_config, run_finetune as run_task, run_record,
    )

    cfg = finetune_config(method=args.method, lora_rank=args.lora_rank, lora_decoder=args.lora_decoder,
                          steps=args.steps, epochs=args.epochs, batch=args.batch, accumulate=args.accumulate,
                          lr=args.lr, prompts=args.prompts, precision=args.precision, seed=args.seed,
                          checkpoint_every=args.checkpoint_every, keep_adapter=args.keep_adapter, loss=args.loss)
    device = device_option(args.device)
    out = check_out(args.out)
    check_data(args.data, args.val)
    base = _model_label(args.model)
    check_resume(out, run_record(base, args.data, args.val, cfg), args.fresh)  # (before the model loads)
    predictor = check_learnable(load_model(args.model, device=device))

    def evaluate(model: Any, val: Path, where: Path) -> dict:
        return eval_box(args.model if model is predictor else model, val, where, device, fresh=model is not predictor)

    summary = run_task(predictor, args.data, out, cfg, val=args.val, device=device, fresh=args.fresh,
                       evaluate=None if args.no_eval else evaluate,
                       base_label=base, command=quote_command(["anyseg", *sys.argv[1:]])
                       if sys.argv[1:2] == ["finetune"] else None)
    if args.json:
        print(json.dumps(summary))
        return 0
    val = f", validation IoU {summary['val_iou']:.3f}" if isinstance(summary.get("val_iou"), float) else ""
    ba = ""
    if summary.get("before") and summary.get("after"):
        ba = f", eval box mIoU {summary['before']['mean_iou']:.3f} -> {summary['after']['mean_iou']:.3f}"
    print(f"fine-tuned {args.model} ({cfg.method}) for {summary['steps']} step(s) in {summary['seconds']:.1f} s"
          f"{val}{ba}; report: {summary['report']}", file=sys.stderr)
    print(summary["model_dir"])
    return 0


def add_pseudolabel_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``pseudolabel`` and its options to the ``anyseg`` sub-commands."""
    p = sub.add_parser("pseudolabel", help="pseudo-masks from sparse labels (WS-SAM), ready for anyseg finetune")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of images (or with an images/ sub-folder)")
    p.add_argument("--sparse", required=True, metavar="points.json|scribbles/",
                   help="sparse labels: a JSON file of points / boxes per object and image, or a folder of scribble PNGs")
    p.add_argument("--model", required=True, metavar="NAME|PATH",
                   help="the SAM-family model that makes the pseudo-masks: a registry name or a local model folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder: images/, masks/ (ignored pixels 128), "
                                                               "a summary; feed it to anyseg finetune --data")
    p.add_argument("--gt", default=None, metavar="DIR", help="full masks (folder, or one with masks/): score the "
                                                             "pseudo-labels against them")
    p.add_argument("--augment", default=None, metavar="hflip,vflip,scale0.75,scale1.25",
                   help="test-time augmentations whose agreement keeps a pixel (default: the method's)")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--json", action="store_true", help="print the summary as JSON to stdout")
    return p


def run_pseudolabel(args: argparse.Namespace) -> int:
    """Check the options, load the model, make the pseudo-labels, print the summary."""
    from anyseg.models import load_model
    from anyseg.tasks.finetune import parse_augment, run_pseudolabel as run_task

    augment = parse_augment(args.augment)
    device = device_option(args.device)
    out = check_out(args.out)
    for what, path in (("--data folder", args.data), ("--sparse", args.sparse), ("--gt folder", args.gt)):
        if path is not None and not Path(path).exists():
            from anyseg.errors import InputError

            raise InputError(f"{what} not found: {path}")
    model = load_model(args.model, device=device)
    summary = run_task(model, args.data, args.sparse, out, gt=args.gt, augment=augment or None)
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    quality = _quality(summary)
    print(f"pseudo-labels for {summary.get('images', '?')} image(s){quality} -> {out}", file=sys.stderr)
    return 0


def _quality(summary: dict) -> str:
    q = summary.get("quality") or {}
    iou = q.get("miou_kept") if isinstance(q, dict) else None
    return f", mean IoU against --gt {iou:.3f} (kept pixels)" if isinstance(iou, (int, float)) else ""


def _model_label(model: str) -> str:
    """``--model`` as the run records it: a local folder by its absolute path, a name as given."""
    p = Path(model).expanduser()
    return str(p.resolve()) if p.is_dir() else model

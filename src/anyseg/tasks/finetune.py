"""``anyseg finetune`` and ``anyseg pseudolabel`` as tasks: options checked before any work, run, report.

:func:`finetune_config` checks every option of a fine-tuning run and builds the
:class:`anyseg.finetune.FinetuneConfig` (one-line :class:`~anyseg.errors.InputError` for a bad
method, rank, step / epoch count, batch, accumulation, learning rate, prompt kinds, precision or
checkpoint interval; ``epochs`` and ``steps`` are exclusive). :func:`check_learnable` refuses a
model without learnable weights (the classical engine: fine-tuning needs a SAM-family model).
:func:`check_data` reads the training / validation pairs (:func:`anyseg.finetune.load_pairs`,
whose errors name the files) before the model loads. :func:`run_finetune` measures the base model
on the validation split (an optional ``evaluate`` callable; the CLI passes ``anyseg eval box``),
trains (:func:`anyseg.finetune.train`: checkpoints, automatic resume of the same configuration,
validation IoU), measures the exported model, and writes the report
(:func:`anyseg.finetune.report.write_report`: ``curves.png``, ``report.md``) and
``finetune.json`` (the run's summary, last).

:func:`run_pseudolabel` checks the ``pseudolabel`` options (augmentations, folders) and calls
:func:`anyseg.finetune.pseudolabel.pseudolabel` (WS-SAM pseudo-masks from sparse labels).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from anyseg.errors import InputError
from anyseg.finetune.train import METHODS, PRECISIONS, PROMPT_KINDS  # the trainer's own names, not copies

__all__ = ["METHODS", "PROMPT_KINDS", "PRECISIONS", "MAX_LORA_RANK", "MAX_STEPS", "MAX_EPOCHS",
           "MAX_BATCH", "MAX_ACCUMULATE", "SUMMARY_JSON", "finetune_config", "parse_prompts", "check_learnable",
           "check_data", "run_record", "check_resume", "run_finetune", "parse_augment", "run_pseudolabel", "config_record"]

MAX_LORA_RANK = 256
MAX_STEPS = 10_000_000
MAX_EPOCHS = 100_000
MAX_BATCH = 256
MAX_ACCUMULATE = 4096
MAX_CHECKPOINT_EVERY = MAX_STEPS
#: the run's summary, written into ``--out`` last
SUMMARY_JSON = "finetune.json"


def _bounded(name: str, value: int | None, lo: int, hi: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi):
        raise InputError(f"{name} must be an integer in {lo}..{hi}; got {value!r}")


def parse_prompts(prompts: str | Sequence[str]) -> tuple[str, ...]:
    """``--prompts box,point,mask``: a non-empty set of the kinds in :data:`PROMPT_KINDS` (order kept)."""
    items = [p.strip() for p in (prompts.split(",") if isinstance(prompts, str) else prompts) if str(p).strip()]
    bad = [p for p in items if p not in PROMPT_KINDS]
    if bad or not items:
        raise InputError(f"--prompts takes a comma-separated list of {', '.join(PROMPT_KINDS)}; got {prompts!r}")
    if "mask" in items and len(items) == 1:
        raise InputError("--prompts mask needs box or point too: a mask prompt refines an earlier round's prediction")
    return tuple(dict.fromkeys(items))


def _check_method(method: str, lora_rank: int | None, lora_decoder: bool) -> int:
    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    if method != "lora" and lora_rank is not None:
        raise InputError(f"--lora-rank applies to --method lora only (got --method {method})")
    if method != "lora" and lora_decoder:
        raise InputError(f"--lora-decoder applies to --method lora only (got --method {method})")
    rank = 8 if lora_rank is None else lora_rank
    _bounded("--lora-rank", rank, 1, MAX_LORA_RANK)
    return rank


def finetune_config(method: str = "lora", lora_rank: int | None = None, lora_decoder: bool = False,
                    steps: int | None = None, epochs: int | None = None, batch: int = 2, accumulate: int = 1,
                    lr: float | None = None, prompts: str | Sequence[str] = ("box", "point"),
                    precision: str = "fp32", seed: int = 0, checkpoint_every: int = 100, **extra: Any) -> Any:
    """Every fine-tuning option checked (one line each, before any work) -> a ``FinetuneConfig``.

    ``lora_rank`` ``None`` is the default rank 8 (giving one with another method is an error, as
    is ``lora_decoder``); ``steps`` and ``epochs`` are exclusive (neither: the trainer's default).
    ``extra`` goes to the config as is (e.g. ``weight_decay``, ``max_points``, ``val_every``).
    """
    rank = _check_method(method, lora_rank, lora_decoder)
    if steps is not None and epochs is not None:
        raise InputError("give --epochs or --steps, not both")
    _bounded("--steps", steps, 1, MAX_STEPS)
    _bounded("--epochs", epochs, 1, MAX_EPOCHS)
    _bounded("--batch", batch, 1, MAX_BATCH)
    _bounded("--accumulate", accumulate, 1, MAX_ACCUMULATE)
    _bounded("--checkpoint-every", checkpoint_every, 1, MAX_CHECKPOINT_EVERY)
    _bounded("--seed", seed, 0, 2**32 - 1)
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and 0 < lr <= 1):
        raise InputError(f"--lr must be a learning rate in (0, 1]; got {lr!r}")
    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    from anyseg.finetune import FinetuneConfig

    if extra.get("keep_adapter") and method != "lora":
        raise InputError(f"--keep-adapter applies to --method lora only (got --method {method})")
    kwargs = dict(method=method, lora_rank=rank, lora_decoder=bool(lora_decoder), steps=steps, epochs=epochs,
                  batch=batch, accumulate=accumulate, lr=None if lr is None else float(lr),
                  prompts=parse_prompts(prompts), precision=precision, seed=seed, checkpoint_every=checkpoint_every)
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    unknown = sorted(set(extra) - fields)
    if unknown:
        raise InputError(f"unknown fine-tuning option(s): {', '.join(unknown)}")
    return FinetuneConfig(**kwargs, **extra)


def config_record(cfg: Any) -> dict[str, Any]:
    """``cfg`` as a JSON-ready dict (tuples as lists)."""
    rec = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in rec.items()}


def check_learnable(predictor: Any) -> Any:
    """``predictor`` if it has learnable torch weights (``.model``); the classical engine: one line."""
    from anyseg.finetune.train import FINETUNABLE_FAMILIES
    from anyseg.models.families import find_family

    family_name = getattr(predictor, "family", "")
    family = find_family(family_name)
    name = getattr(predictor, "name", type(predictor).__name__)
    if family is not None and family.baseline:
        raise InputError(f"the {name} engine has no weights to fine-tune: fine-tuning needs a learnable "
                         "SAM-family model (--model NAME|PATH of SAM, SAM-HQ or SAM 2)")
    model = getattr(predictor, "model", None)
    if model is None or not callable(getattr(model, "parameters", None)) or family_name not in FINETUNABLE_FAMILIES:
        raise InputError(f"model {name} ({family_name or 'no family'}) cannot be fine-tuned: fine-tuning supports "
                         f"the {', '.join(FINETUNABLE_FAMILIES)} families (--model NAME|PATH)")
    return predictor


def _folder(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if not p.is_dir():
        raise InputError(f"{what} {p} is not a folder")
    return p


def check_data(data: str | Path, val: str | Path | None = None) -> tuple[list, list]:
    """The training and validation ``(image, mask)`` pairs (one-line errors naming the files)."""
    from anyseg.finetune import load_pairs

    train_pairs = load_pairs(_folder(data, "--data folder"))
    val_pairs = load_pairs(_folder(val, "--val folder")) if val is not None else []
    return list(train_pairs), list(val_pairs)


def _evaluate(evaluate: Callable[..., Any] | None, model: Any, val: Path | None, out: Path) -> dict | None:
    return None if evaluate is None or val is None else evaluate(model, val, out)


def run_finetune(predictor: Any, data: str | Path, out_dir: str | Path, cfg: Any, *, val: str | Path | None = None,
                 device: str | None = None, fresh: bool = False,
                 evaluate: Callable[[Any, Path, Path], dict] | None = None, base_label: str | None = None,
                 command: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Fine-tune ``predictor`` on ``data`` into ``out_dir``; write the report; return the run's summary.

    ``evaluate(model, val_dir, out_dir) -> summary`` (a predictor before, the exported folder
    after) measures the validation split before and after (``None``: not measured; the report
    then lists the two ``anyseg eval box`` commands). The summary: ``task``, ``base_model``,
    ``model_dir``, ``out_dir``, ``config``, ``num_train``, ``num_val``, ``steps``, ``seconds``,
    ``final_loss``, ``val`` (the validation IoU records), ``val_iou`` (the last), ``before``,
    ``after``, ``eval_commands``, ``report``, ``curves``.
    """
    from anyseg.finetune import train
    from anyseg.finetune.report import write_report
    from anyseg.io.atomic import write_json
    from anyseg.version import __version__

    check_learnable(predictor)
    train_pairs, val_pairs = check_data(data, val)
    out = Path(out_dir)
    val_dir = Path(val) if val is not None else None
    base = base_label or str(getattr(predictor, "name", "model"))
    t0 = time.perf_counter()
    record = run_record(base, data, val_dir, cfg)
    resumed = check_resume(out, record, fresh)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SUMMARY_JSON, record)  # (a killed run leaves what it was; a rerun compares)
    before = _evaluate(evaluate, predictor, val_dir, out / "eval" / "base")
    result = train(predictor, Path(data), out, cfg, val_dir=val_dir, device=device, resume=not fresh,
                   progress=progress)
    after = _evaluate(evaluate, result.model_dir, val_dir, out / "eval" / "finetuned")
    history, val_records = list(result.history or []), list(result.val or [])
    losses = [h["loss"] for h in history if isinstance(h.get("loss"), (int, float))]
    summary: dict[str, Any] = {
        "anyseg_version": __version__, **record, "status": "done", "model_dir": str(result.model_dir),
        "out_dir": str(out), "num_train": len(train_pairs), "num_val": len(val_pairs),
        "steps": int(result.steps), "seconds": round(float(result.seconds), 3),
        "resumed": resumed, "final_loss": round(float(losses[-1]), 6) if losses else None,
        "val": val_records, "val_iou": val_records[-1].get("iou") if val_records else None,
        "before": before, "after": after, "eval_commands": _eval_commands(base, result.model_dir, val_dir, out),
        "command": command, "wall_seconds": round(time.perf_counter() - t0, 3),
    }
    paths = write_report(out, summary, history, val_records)
    summary.update(report=str(paths["report"]), curves=str(paths["curves"]))
    write_json(out / SUMMARY_JSON, summary)
    return summary


def run_record(base: str, data: str | Path, val: str | Path | None, cfg: Any) -> dict[str, Any]:
    """What identifies a run in ``--out`` (``finetune.json`` while it runs): base model, data, options."""
    return {"task": "finetune", "status": "running", "base_model": base, "data": str(Path(data).resolve()),
            "val_data": str(Path(val).resolve()) if val is not None else None, "config": config_record(cfg)}


#: options that may change between a run and its resumption (a longer run, other intervals)
RESUMABLE_CHANGES = ("steps", "epochs", "checkpoint_every", "val_every")


def check_resume(out: Path, record: dict[str, Any], fresh: bool) -> bool:
    """Whether ``out`` holds checkpoints to resume; a different run there is a one-line error.

    The run is the same when the base model, the data folders and every option but
    :data:`RESUMABLE_CHANGES` are (``out/finetune.json`` says what ran there).
    """
    if fresh or not any((out / "checkpoints").glob("step-*.pt")):
        return False
    try:
        old = json.loads((out / SUMMARY_JSON).read_text())
    except (OSError, ValueError):
        return True  # (no record: the trainer's own checkpoint fingerprint decides)

    def key(r: Any) -> dict[str, Any]:
        r = r if isinstance(r, dict) else {}
        cfg = {k: v for k, v in (r.get("config") or {}).items() if k not in RESUMABLE_CHANGES}
        return {"base_model": r.get("base_model"), "data": r.get("data"), "val_data": r.get("val_data"), **cfg}

    new, was = key(record), key(old)
    diff = sorted(k for k in set(new) | set(was) if new.get(k) != was.get(k))
    if diff:
        raise InputError(f"{out} holds checkpoints of a different run (differs in {', '.join(diff)}); "
                         "use another --out, or --fresh to start over")
    return True


def _eval_commands(base: str, model_dir: Any, val: Path | None, out: Path) -> list[str]:
    from anyseg.finetune.report import quote_command

    if val is None:
        return []
    return [quote_command(["anyseg", "eval", "box", "--model", m, "--data", str(val), "--out", str(out / "eval" / d)])
            for m, d in ((base, "base"), (str(model_dir), "finetuned"))]


# -- pseudolabel ---------------------------------------------------------------------------------
def parse_augment(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``--augment hflip,vflip,scale0.75,scale1.25`` checked by the method's own rule
    (:func:`anyseg.finetune.pseudolabel.parse_augment`); ``None``: ``()`` (the method's default)."""
    if text is None:
        return ()
    from anyseg.finetune.pseudolabel import parse_augment as views_of

    items = tuple(a.strip() for a in (text.split(",") if isinstance(text, str) else text) if str(a).strip())
    if not items:
        raise InputError("--augment is empty: give comma-separated hflip, vflip, hvflip or scaleS (e.g. scale0.75)")
    try:
        views_of(items)
    except InputError as e:
        raise InputError(f"--augment: {e}") from None
    return items


def _images_dir(data: str | Path) -> Path:
    """``--data``: a folder of images, or one with an ``images/`` sub-folder."""
    d = _folder(data, "--data folder")
    return d / "images" if (d / "images").is_dir() else d


def run_pseudolabel(predictor: Any, data: str | Path, sparse: str | Path, out_dir: str | Path, *,
                    gt: str | Path | None = None, augment: str | Sequence[str] | None = None,
                    **extra: Any) -> dict[str, Any]:
    """WS-SAM pseudo-labels for the images of ``data`` from the ``sparse`` labels, into ``out_dir``.

    ``gt``: full masks (a folder of masks, or one with ``masks/``) to score the pseudo-labels
    against. ``augment`` (default: the method's flips and rescalings) and ``extra`` go to
    :func:`anyseg.finetune.pseudolabel.pseudolabel`, whose summary is returned.
    """
    from anyseg.finetune.pseudolabel import pseudolabel

    augmentations = parse_augment(augment)
    sparse_path = Path(sparse)
    if not sparse_path.exists():
        raise InputError(f"--sparse not found: {sparse_path}")
    gt_dir = None
    if gt is not None:
        gt_dir = _folder(gt, "--gt folder")
        gt_dir = gt_dir / "masks" if (gt_dir / "masks").is_dir() else gt_dir
    if augmentations:
        extra["augment"] = augmentations
    return pseudolabel(predictor, _images_dir(data), sparse_path, Path(out_dir), gt_dir=gt_dir, **extra)

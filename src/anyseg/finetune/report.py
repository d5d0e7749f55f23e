"""The training report of ``anyseg finetune``: the loss and validation-IoU curves (PNG) and ``report.md``.

:func:`plot_curves` draws the per-step training loss (raw, and its moving average over about
2 % of the run, as the SAM-family training logs smooth it) and the validation IoU at each
evaluation (per epoch, or every ``val_every`` steps) with matplotlib's ``Agg`` back end (no
display needed). :func:`write_report` writes the curves as ``curves.png`` and ``report.md``
(model, method, options, data sizes, steps, time, the first / last / best validation IoU, the
before/after numbers of ``anyseg eval box`` on the validation split when they were measured,
and the commands that measure them again) and returns the paths.

The inputs are plain records, as :class:`anyseg.finetune.TrainResult` holds them:
``history`` is ``[{"step", "loss", ...}]`` and ``val`` is ``[{"step" or "epoch", "iou"}]``.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["CURVES_PNG", "REPORT_MD", "smooth", "plot_curves", "write_report", "report_markdown", "quote_command"]

CURVES_PNG = "curves.png"
REPORT_MD = "report.md"


def smooth(values: Sequence[float], window: int | None = None) -> list[float]:
    """The trailing moving average of ``values`` (``window`` default: about 2 % of them, at least 1)."""
    vals = [float(v) for v in values]
    if not vals:
        return []
    w = max(1, int(window if window is not None else round(len(vals) / 50)))
    out, total = [], 0.0
    for i, v in enumerate(vals):
        total += v
        if i >= w:
            total -= vals[i - w]
        out.append(total / min(i + 1, w))
    return out


def _finite(records: Sequence[Mapping[str, Any]], key: str) -> list[tuple[float, float]]:
    """``(step, value)`` of the records whose ``key`` is a finite number, in step order."""
    out = []
    for i, r in enumerate(records):
        v, x = r.get(key), r.get("step", i + 1)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append((float(x if isinstance(x, (int, float)) else i + 1), float(v)))
    return sorted(out)


def _val_points(val: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[float, float]], str]:
    """The validation IoU points and their x axis: ``step`` when every record has one, else ``epoch``."""
    axis = "step" if val and all("step" in r for r in val) else "epoch"
    pts = []
    for i, r in enumerate(val):
        v = r.get("iou")
        if isinstance(v, (int, float)) and math.isfinite(v):
            pts.append((float(r.get(axis, i + 1)), float(v)))
    return sorted(pts), axis


def plot_curves(history: Sequence[Mapping[str, Any]], val: Sequence[Mapping[str, Any]], path: str | Path,
                title: str | None = None) -> Path:
    """Draw the loss curve (left) and the validation-IoU curve (right) into the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    loss = _finite(history, "loss")
    pts, axis = _val_points(val)
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        if loss:
            xs, ys = zip(*loss)
            ax_loss.plot(xs, ys, color="#9ecae1", linewidth=0.8, label="loss")
            ax_loss.plot(xs, smooth(ys), color="#08519c", linewidth=1.6, label="moving average")
            ax_loss.legend(loc="best")
        else:
            ax_loss.text(0.5, 0.5, "no steps recorded", ha="center", va="center", transform=ax_loss.transAxes)
        ax_loss.set(xlabel="step", ylabel="focal + dice + IoU-head MSE", title="training loss")
        ax_loss.grid(alpha=0.3)
        if pts:
            xs, ys = zip(*pts)
            ax_iou.plot(xs, ys, marker="o", color="#d94801", linewidth=1.6)
            ax_iou.set_ylim(0.0, 1.0)
        else:
            ax_iou.text(0.5, 0.5, "no validation split (--val)", ha="center", va="center", transform=ax_iou.transAxes)
        ax_iou.set(xlabel=axis, ylabel="mean IoU", title="validation IoU")
        ax_iou.grid(alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "-" if v is None else str(v)


def _val_lines(val: Sequence[Mapping[str, Any]]) -> list[str]:
    pts, axis = _val_points(val)
    if not pts:
        return ["No validation split (`--val DIR`): no validation IoU."]
    best = max(pts, key=lambda p: p[1])
    return [f"Validation IoU (per {axis}): first {pts[0][1]:.4f} ({axis} {pts[0][0]:g}), "
            f"last {pts[-1][1]:.4f} ({axis} {pts[-1][0]:g}), best {best[1]:.4f} ({axis} {best[0]:g})."]


def _eval_lines(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
                commands: Sequence[str]) -> list[str]:
    lines = ["## Before / after: `anyseg eval box` on the validation split", ""]
    if before or after:
        lines += ["| model | images | mean IoU | median IoU | mean Dice |", "|---|---|---|---|---|"]
        for name, s in (("base", before), ("fine-tuned", after)):
            if s:
                lines.append(f"| {name} | {_fmt(s.get('num_images'))} | {_fmt(s.get('mean_iou'))} | "
                             f"{_fmt(s.get('median_iou'))} | {_fmt(s.get('mean_dice'))} |")
        lines.append("")
    else:
        lines += ["Not measured in this run. The two commands:", ""]
    if commands:
        lines += ["```bash", *commands, "```", ""]
    return lines


def report_markdown(summary: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                    val: Sequence[Mapping[str, Any]]) -> str:
    """``report.md``'s text from the run's ``summary`` (see :func:`write_report`) and its curves' records."""
    cfg = summary.get("config") or {}
    loss = [v for _, v in _finite(history, "loss")]
    tail = loss[-max(1, len(loss) // 10):] if loss else []
    lines = [f"# Fine-tuning report: {summary.get('base_model', '?')}", "",
             f"Model folder: `{summary.get('model_dir', '?')}` (load it with `--model {summary.get('model_dir', 'DIR')}`).",
             "", "| | |", "|---|---|"]
    rows = [("base model", summary.get("base_model")), ("method", cfg.get("method")),
            ("training pairs", summary.get("num_train")), ("validation pairs", summary.get("num_val")),
            ("steps", summary.get("steps")), ("seconds", summary.get("seconds")),
            ("resumed", summary.get("resumed"))]
    rows += [(f"config: {k}", v) for k, v in cfg.items() if k != "method"]
    lines += [f"| {k} | {_fmt(v) if not isinstance(v, (list, tuple)) else ','.join(map(str, v))} |" for k, v in rows]
    lines += ["", f"![curves]({CURVES_PNG})", ""]
    if loss:
        lines.append(f"Loss: first {loss[0]:.4f}, mean of the last {len(tail)} steps {sum(tail) / len(tail):.4f}.")
    lines += _val_lines(val) + [""]
    lines += _eval_lines(summary.get("before"), summary.get("after"), summary.get("eval_commands") or [])
    if summary.get("command"):
        lines += ["## Command", "", "```bash", str(summary["command"]), "```", ""]
    return "\n".join(lines)


def write_report(out_dir: str | Path, summary: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                 val: Sequence[Mapping[str, Any]]) -> dict[str, Path]:
    """Write ``curves.png`` and ``report.md`` into ``out_dir``; ``{"curves", "report"}`` -> their paths.

    ``summary`` holds ``base_model``, ``model_dir``, ``config`` (the options), ``num_train``,
    ``num_val``, ``steps``, ``seconds``, ``resumed``, optionally ``before`` / ``after`` (the
    ``anyseg eval box`` summaries), ``eval_commands`` and ``command``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{summary.get('base_model', '')} ({(summary.get('config') or {}).get('method', '')})".strip()
    curves = plot_curves(history, val, out / CURVES_PNG, title=title)
    report = out / REPORT_MD
    tmp = report.with_name(report.name + ".tmp")
    tmp.write_text(report_markdown(summary, history, val), encoding="utf-8")
    tmp.replace(report)
    return {"curves": curves, "report": report}


def quote_command(argv: Sequence[str]) -> str:
    """``argv`` as one shell-quoted command line."""
    return " ".join(shlex.quote(str(a)) for a in argv)

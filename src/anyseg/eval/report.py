"""Evaluation reports: a printed table, ``summary.json``, ``report.md`` and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anyseg.io.atomic import atomic_open, write_json, write_text


def format_value(v: Any) -> str:
    """A summary value as printed: integers as they are; floats in [-1, 1] (IoU, J&F, AP, ...) to
    4 decimals; larger floats to 4 significant digits without trailing zeros (``226.5``,
    ``19.95``, ``3``; ``1234.6`` -> ``1235``); anything else by ``str``."""
    if isinstance(v, (float, np.floating)) and not isinstance(v, bool):
        v = float(v)
        if not np.isfinite(v):
            return str(v)
        if abs(v) <= 1:
            return f"{v:.4f}"
        digits = len(str(int(abs(v))))
        text = f"{v:.{max(0, 4 - digits)}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(v)


def scalar_rows(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in summary.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]


def format_table(summary: dict[str, Any]) -> str:
    rows = scalar_rows(summary)
    width = max((len(k) for k, _ in rows), default=8)
    return "\n".join(f"{k:<{width}}  {format_value(v)}" for k, v in rows)


def _per_item(kind: str, records: list[dict]) -> tuple[str, list[str], list[float]]:
    """The per-image (or per-sequence) value plotted and listed for ``kind``."""
    if kind == "interactive":
        return "IoU after 5 clicks", [r["name"] for r in records], [r["ious"][min(4, len(r["ious"]) - 1)] for r in records]
    if kind in ("box", "masks"):
        return "IoU", [r["name"] for r in records], [r["iou"] for r in records]
    if kind in ("video", "video-masks"):
        vals = [float(np.mean([(o["J_mean"] + o["F_mean"]) / 2 for o in r["objects"].values()])) for r in records]
        return "J&F", [r["name"] for r in records], vals
    return "", [], []


def _savefig(fig, path: Path) -> Path:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    return path


def plots(kind: str, records: list[dict], summary: dict[str, Any], out_dir: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    written = []
    if kind == "interactive" and summary.get("iou_curve"):
        fig, ax = plt.subplots(figsize=(6, 4))
        curve = summary["iou_curve"]
        ax.plot(range(1, len(curve) + 1), curve, marker="o", ms=3)
        for t in (0.85, 0.90):
            ax.axhline(t, ls="--", lw=0.8, color="grey")
        ax.set(xlabel="clicks", ylabel="mean IoU", title=f"{title}: IoU vs clicks", ylim=(0, 1), xlim=(1, len(curve)))
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        written.append(_savefig(fig, out_dir / "iou_vs_clicks.png"))
        plt.close(fig)
    if kind == "semantic" and summary.get("per_class"):
        names = list(summary["per_class"])
        vals = [summary["per_class"][n]["IoU"] or 0.0 for n in names]
        fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(names)), 4))
        ax.bar(names, vals)
        ax.set(ylabel="IoU", title=f"{title}: per-class IoU", ylim=(0, 1))
        ax.tick_params(axis="x", rotation=60)
        written.append(_savefig(fig, out_dir / "per_class_iou.png"))
        plt.close(fig)
    label, names, vals = _per_item(kind, records)
    if names:
        order = np.argsort(vals)
        fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(names)), 4))
        ax.bar([names[i] for i in order], [vals[i] for i in order])
        ax.set(ylabel=label, title=f"{title}: per {'sequence' if 'video' in kind else 'image'}", ylim=(0, 1))
        ax.tick_params(axis="x", rotation=90, labelsize=7)
        written.append(_savefig(fig, out_dir / "per_item.png"))
        plt.close(fig)
    return written


def write_report(out_dir: str | Path, kind: str, header: dict[str, Any], records: list[dict],
                 summary: dict[str, Any], command: str) -> dict[str, Path]:
    """Write ``summary.json``, ``report.md`` and the plots; returns their paths."""
    out_dir = Path(out_dir)
    title = f"{kind} / {header.get('model', '')}"
    pngs = plots(kind, records, summary, out_dir, title)
    summary_path = write_json(out_dir / "summary.json", {"header": header, "summary": summary, "command": command})
    label, names, vals = _per_item(kind, records)
    lines = [f"# anyseg eval {kind}", "", f"Command: `{command}`", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in header.items()]
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {format_value(v)} |" for k, v in scalar_rows(summary)]
    if summary.get("per_class"):
        lines += ["", "| class | IoU | accuracy |", "|---|---|---|"]
        lines += [f"| {k} | {'-' if v['IoU'] is None else format_value(v['IoU'])} | {'-' if v['Acc'] is None else format_value(v['Acc'])} |"
                  for k, v in summary["per_class"].items()]
    if names:
        lines += ["", f"| item | {label} |", "|---|---|"]
        lines += [f"| {n} | {format_value(float(v))} |" for n, v in zip(names, vals)]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in pngs]
    report_path = write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return {"summary": summary_path, "report": report_path, **{p.stem: p for p in pngs}}

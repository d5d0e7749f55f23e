"""What the per-image tasks (``fewshot``, ``discover``) share: their targets and their output files.

:func:`expand_targets` turns files and folders into :class:`Target` (natural name order, checked
before any work); :func:`write_frame` writes one image's (or frame's) ``STEM_maskI.png`` and
``STEM_overlay.png`` into a staging folder and returns its record part, whose ``masks`` items
(:func:`mask_items`) are ``{"index", "score", "box", "area", "rle", "mask_png", "details"}``,
``details`` holding the method's own scalar per-mask columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anyseg.errors import InputError
from anyseg.types import Masks
from anyseg.video.frames import IMAGE_SUFFIXES, VIDEO_SUFFIXES

__all__ = ["Target", "expand_targets", "mask_items", "write_frame", "progress_bar"]


@dataclass(frozen=True)
class Target:
    """One target: an image file or a video file (``kind``), and the stem of its output files."""

    path: Path
    kind: str
    stem: str


def _natural(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def expand_targets(targets: Sequence[str | Path]) -> list[Target]:
    """Image files, folders (their images, natural name order: ``2.png`` before ``10.png``) and
    video files, as :class:`Target`; one-line :class:`InputError` for a missing path, a folder
    without images, no targets at all, or two targets whose files would have the same names."""
    if isinstance(targets, (str, Path)):
        targets = [targets]
    found: list[Target] = []
    for t in targets:
        p = Path(t)
        if not p.exists():
            raise InputError(f"target not found: {p}")
        if p.is_dir():
            images = sorted((c for c in p.iterdir() if c.is_file() and c.suffix.lower() in IMAGE_SUFFIXES), key=_natural)
            if not images:
                raise InputError(f"folder {p} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found += [Target(c, "image", c.stem) for c in images]
        else:
            found.append(Target(p, "video" if p.suffix.lower() in VIDEO_SUFFIXES else "image", p.stem))
    if not found:
        raise InputError("no targets: give image files, folders of images or video files")
    seen: dict[str, Path] = {}
    for t in found:
        if t.stem in seen:
            raise InputError(f"targets {seen[t.stem]} and {t.path} would write the same files ({t.stem}.json): "
                             "rename one, or run them into different --out folders")
        seen[t.stem] = t.path
    return found


def mask_items(masks: Masks, stem: str, mask_files: Sequence[str]) -> list[dict[str, Any]]:
    from anyseg.masks.rle import encode_many

    rles = encode_many(masks.masks)
    items = []
    for i in range(len(masks)):
        details = {}
        for key, column in masks.data.items():
            value = column[i]
            if isinstance(value, (np.integer, int)) and not isinstance(value, (bool, np.bool_)):
                details[key] = int(value)
            elif isinstance(value, (np.floating, float)):
                details[key] = round(float(value), 6)
            elif isinstance(value, (str, np.str_)):
                details[key] = str(value)
        items.append({"index": i, "score": round(float(masks.scores[i]), 6),
                      "box": [round(float(v), 2) for v in masks.boxes[i]], "area": int(masks.masks[i].sum()),
                      "rle": rles[i], "mask_png": mask_files[i], "details": details})
    return items


def write_frame(stage: Path, image: np.ndarray, masks: Masks, stem: str) -> dict[str, Any]:
    """A frame's (or an image's) mask PNGs and overlay into the staging folder; its record part."""
    from anyseg.io.export import save_mask_pngs, save_overlay_png

    mask_files = [p.name for p in save_mask_pngs(masks, stage, stem)]
    save_overlay_png(image, masks, stage / f"{stem}_overlay.png")
    return {"overlay_png": f"{stem}_overlay.png", "num_masks": len(masks), "masks": mask_items(masks, stem, mask_files)}


def progress_bar(items: Any, total: int, desc: str, show: bool, unit: str) -> Any:
    from tqdm import tqdm

    # disable=None: shown on a terminal only, so logs and captured stderr stay one line per message
    return tqdm(items, total=total, desc=desc, unit=unit, disable=None if show and total > 1 else True,
                dynamic_ncols=True, leave=False)

"""Promptable segmentation of one image: predict, then write masks, overlays and one JSON record.

The CLI and (later) the HTTP service call :func:`segment` and :func:`write_results`; the JSON
record is the documented output format:

``{"anyseg_version", "image", "image_size": [H, W], "model", "prompt", "multimask",
"timings_s", "masks": [{"index", "score", "box": [x0, y0, x1, y1], "area",
"rle": {"size": [H, W], "counts"}, "mask_png", "overlay_png"}]}``
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anyseg.cache import EmbeddingCache
from anyseg.models.base import Predictor
from anyseg.types import Masks, Prompt


@dataclass(frozen=True)
class SegmentResult:
    masks: Masks
    prompt: Prompt
    model: str
    image_size: tuple[int, int]
    timings: dict[str, float]


def segment(predictor: Predictor, image: np.ndarray, prompt: Prompt, multimask: bool = False,
            cache: EmbeddingCache | None = None) -> SegmentResult:
    """Embed ``image`` (or take its embedding from ``cache``) and predict ``prompt``."""
    prompt.check_within(image.shape[:2])
    t0 = time.perf_counter()
    if cache is not None:
        emb = cache.get_or_embed(image, predictor.model_id, predictor.embed)
    else:
        emb = predictor.embed(image)
    t1 = time.perf_counter()
    masks = predictor.predict(emb, prompt, multimask=multimask)
    t2 = time.perf_counter()
    return SegmentResult(masks, prompt, predictor.name, image.shape[:2], {"embed": t1 - t0, "predict": t2 - t1})


def result_record(result: SegmentResult, image_path: str | None = None, files: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The JSON record of a run (see the module docstring)."""
    from anyseg.version import __version__
    from anyseg.masks.rle import encode_many

    m = result.masks
    rles = encode_many(m.masks)
    items = []
    for i in range(len(m)):
        item: dict[str, Any] = {
            "index": i,
            "score": round(float(m.scores[i]), 6),
            "box": [round(float(v), 2) for v in m.boxes[i]],
            "area": int(m.masks[i].sum()),
            "rle": rles[i],
        }
        if files is not None:
            item.update(files[i])
        items.append(item)
    h, w = result.image_size
    return {
        "anyseg_version": __version__,
        "image": image_path,
        "image_size": [int(h), int(w)],
        "model": result.model,
        "prompt": result.prompt.to_json(),
        "multimask": len(m) > 1,
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
        "masks": items,
    }


def write_results(result: SegmentResult, image: np.ndarray, out_dir: str | Path, stem: str,
                  image_path: str | None = None) -> tuple[dict[str, Any], Path]:
    """Write per-mask PNGs and overlays, then the JSON record.

    All files are first written into a staging folder inside ``out_dir`` and only then moved
    into place (JSON last), so a failure while writing leaves the earlier results in
    ``out_dir`` exactly as they were.
    """
    from anyseg.io.atomic import staged_dir, write_json
    from anyseg.io.export import save_mask_pngs, save_overlay_png

    out_dir = Path(out_dir)
    with staged_dir(out_dir) as stage:
        mask_paths = save_mask_pngs(result.masks, stage, stem)
        files = []
        for i, mp in enumerate(mask_paths):
            overlay = save_overlay_png(image, result.masks[i], stage / f"{stem}_overlay{i}.png", prompt=result.prompt)
            files.append({"mask_png": Path(mp).name, "overlay_png": Path(overlay).name})
        record = result_record(result, image_path=image_path, files=files)
        write_json(stage / f"{stem}.json", record)
    return record, out_dir / f"{stem}.json"

"""The files of a segment-everything run: indexed PNG, overlay, COCO JSON with RLE, and the run record.

Split from :mod:`anyseg.tasks.everything` (which re-exports :func:`write_everything` and
:func:`record_params`): generating masks and writing them are separate steps, and the writer
needs only the :class:`~anyseg.types.Masks` (labelled or not) and the settings that made them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anyseg.tasks.everything_params import EverythingParams
from anyseg.types import Masks

__all__ = ["write_everything", "record_params"]


def write_everything(masks: Masks, image: np.ndarray, out_dir: str | Path, stem: str, model: str,
                     params: EverythingParams, image_path: str | None = None, seconds: float | None = None,
                     per_mask: bool = False, classes: Sequence[Any] | None = None) -> tuple[dict[str, Any], Path]:
    """Write a segment-everything result: indexed PNG, overlay, COCO JSON with RLE, run record.

    Files (all staged, then moved into place with the JSON record last): ``STEM_ids.png``
    (palette PNG, mask ``i`` has value ``i + 1``; only with at most 255 masks, where smaller
    masks are drawn over larger ones), ``STEM_overlay.png``
    (:func:`anyseg.masks.overlay.overlay_regions`: each pixel in the colour of its smallest
    mask, one blend, thin outlines; masks covering more than 95 % of the image left out),
    ``STEM_coco.json`` (COCO instances with RLE, ``score`` = predicted IoU),
    ``STEM_maskI.png`` per mask with ``per_mask`` (or when there are more than 255 masks),
    and ``STEM.json``: model, parameters, timing, ``overlay`` (``{"drawn": D,
    "skipped_whole_image": K}``) and per-mask score, stability, area and box. The record's
    ``params`` are the settings the generator used (:func:`record_params`).
    With ``classes`` (masks labelled by :func:`anyseg.tasks.text.label_masks` with ``keep_all``)
    the COCO categories are the classes plus ``unlabeled`` (id ``C + 1``) for masks CLIP gave no
    class, and each mask's record has ``label``, ``class_id`` and ``class_prob``.
    """
    from anyseg.version import __version__
    from anyseg.io.atomic import staged_dir, write_json
    from anyseg.io.export import save_coco, save_indexed_png, save_mask_pngs, save_region_overlay_png, to_coco

    out_dir = Path(out_dir)
    files: dict[str, Any] = {}
    areas = masks.areas  # once: the property sums every mask
    with staged_dir(out_dir) as stage:
        if 0 < len(masks) <= 255:
            # indexed PNG: smaller masks on top, so parts stay visible inside wholes
            by_area = np.argsort(areas, kind="stable")[::-1]
            ranks = np.empty(len(masks), dtype=np.float32)
            ranks[by_area] = np.arange(len(masks), dtype=np.float32)
            save_indexed_png(masks.with_columns(scores=ranks), stage / f"{stem}_ids.png")
            files["ids_png"] = f"{stem}_ids.png"
        if per_mask or len(masks) > 255:
            files["mask_pngs"] = [p.name for p in save_mask_pngs(masks, stage, stem)]
        _, overlay_info = save_region_overlay_png(image, masks, stage / f"{stem}_overlay.png")
        files["overlay_png"] = f"{stem}_overlay.png"
        categories, cat_ids = _categories(masks, classes)
        save_coco(to_coco(masks, image_id=1, file_name=Path(image_path or stem).name, categories=categories,
                          category_ids=cat_ids), stage / f"{stem}_coco.json")
        files["coco_json"] = f"{stem}_coco.json"
        record = {
            "anyseg_version": __version__, "image": image_path, "image_size": list(masks.image_size),
            "model": model, "task": "everything", "params": record_params(params, model, masks.image_size),
            "seconds": round(seconds, 3) if seconds is not None else None, "num_masks": len(masks),
            "overlay": overlay_info, "files": files, "masks": _mask_records(masks, areas),
        }
        if classes is not None:
            record["classes"] = [list(c.names) for c in classes]
        write_json(stage / f"{stem}.json", record)
    return record, out_dir / f"{stem}.json"


def record_params(params: EverythingParams, model: str, image_size: tuple[int, int]) -> dict[str, Any]:
    """The ``params`` of a run record: what the generator of ``model`` used on an ``image_size`` image.

    SAM-family models: the fields of ``params`` (``point_grids`` left out). ``classical`` (or
    ``classical+CLIP``): :func:`anyseg.tasks.everything_classical.classical_params`, with
    ``min_area`` and ``granularity`` from ``params`` (the only two fields it reads).
    """
    from dataclasses import asdict

    if str(model).split("+")[0] == "classical":
        from anyseg.tasks.everything_classical import classical_params

        return classical_params(image_size, min_area=params.min_mask_region_area, granularity=params.granularity)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(params).items() if k != "point_grids"}


def _mask_records(masks: Masks, areas: np.ndarray) -> list[dict[str, Any]]:
    stability = masks.data.get("stability_score")
    return [{"index": i, "score": round(float(masks.scores[i]), 6),
             "stability_score": None if stability is None else round(float(stability[i]), 6),
             "area": int(areas[i]), "box": [round(float(v), 2) for v in masks.boxes[i]], **_label_fields(masks, i)}
            for i in range(len(masks))]


def _categories(masks: Masks, classes: Sequence[Any] | None) -> tuple[list[dict] | None, list[int] | None]:
    if classes is None or "class_id" not in masks.data:
        return None, None
    cats = [{"id": k + 1, "name": c.label} for k, c in enumerate(classes)] + [{"id": len(classes) + 1, "name": "unlabeled"}]
    ids = [int(c) + 1 if c >= 0 else len(classes) + 1 for c in masks.data["class_id"]]
    return cats, ids


def _label_fields(masks: Masks, i: int) -> dict[str, Any]:
    if "class_id" not in masks.data:
        return {}
    prob = masks.data.get("class_prob")
    return {"label": str(masks.labels[i]) if masks.labels is not None else "", "class_id": int(masks.data["class_id"][i]),
            "class_prob": None if prob is None else round(float(prob[i]), 6)}

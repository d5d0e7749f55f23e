"""Files written by ``anyseg text``, ``semantic`` and ``panoptic`` (staged; the JSON record last).

* ``text``: ``STEM_overlay.png`` (labelled instances), ``STEM_ids.png`` (palette PNG, instance
  ``i`` = ``i + 1``, at most 255), ``STEM_maskI.png`` per instance, ``STEM_coco.json``
  (COCO instances, RLE, one category per class in the given order) and ``STEM.json``
  (``instances``: label, class_id, phrase, score, box, area, rle).
* ``semantic``: ``STEM_classes.png`` (palette PNG, class ``i`` = ``i``, 255 unlabeled),
  ``STEM_overlay.png`` with a legend strip, ``STEM.json`` (classes, legend colours, pixel
  fraction per class).
* ``panoptic``: ``STEM_panoptic.png`` (COCO panoptic RGB ids), ``STEM_panoptic.json``
  (COCO panoptic: ``images``, ``annotations`` with ``segments_info``, ``categories``) and an
  overlay with a legend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from anyseg.text.vocab import UNLABELED, ClassName
from anyseg.types import Masks


def _run_header(model: str, image: np.ndarray, image_path: str | None, seconds: float | None) -> dict[str, Any]:
    from anyseg.version import __version__

    return {"anyseg_version": __version__, "image": image_path, "image_size": list(image.shape[:2]), "model": model,
            "seconds": None if seconds is None else round(seconds, 3)}


def class_colours(n: int) -> np.ndarray:
    """``(n, 3)`` uint8 distinct colours for class ids (stable for a given ``n``)."""
    from anyseg.masks.overlay import palette

    return palette(max(n, 1))[:n]


def legend_strip(width: int, names: Sequence[str], colours: np.ndarray, row: int = 22) -> np.ndarray:
    """An RGB strip listing ``names`` with colour swatches, wrapped to ``width`` pixels."""
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
    items = []
    for name, colour in zip(names, colours):
        (tw, _), _ = cv2.getTextSize(name, font, scale, thick)
        items.append((name, colour, tw + row + 12))
    lines, cur, used = [], [], 0
    for it in items:
        if cur and used + it[2] > width:
            lines.append(cur)
            cur, used = [], 0
        cur.append(it)
        used += it[2]
    if cur:
        lines.append(cur)
    strip = np.full((row * max(len(lines), 1) + 4, width, 3), 255, dtype=np.uint8)
    for r, line in enumerate(lines):
        x, y = 4, r * row + 4
        for name, colour, step in line:
            cv2.rectangle(strip, (x, y + 2), (x + row - 6, y + row - 4), tuple(int(c) for c in colour), -1)
            cv2.putText(strip, name, (x + row - 2, y + row - 7), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
            x += step
    return strip


def class_map_overlay(image: np.ndarray, class_map: np.ndarray, names: Sequence[str], alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over ``image`` (unlabeled pixels untouched) and append a legend."""
    colours = class_colours(len(names))
    out = image.astype(np.float32)
    present = [int(c) for c in np.unique(class_map) if c != UNLABELED and c < len(names)]
    for c in present:
        m = class_map == c
        out[m] = out[m] * (1 - alpha) + colours[c].astype(np.float32) * alpha
    vis = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    shown = present or list(range(len(names)))
    return np.concatenate([vis, legend_strip(vis.shape[1], [names[c] for c in shown], colours[shown])], axis=0)


def write_instances(masks: Masks, image: np.ndarray, classes: Sequence[ClassName], out_dir: str | Path, stem: str,
                    model: str, params: dict[str, Any], image_path: str | None = None,
                    seconds: float | None = None) -> tuple[dict[str, Any], Path]:
    from anyseg.io.atomic import staged_dir, write_json
    from anyseg.io.export import save_coco, save_indexed_png, save_mask_pngs, save_overlay_png, to_coco
    from anyseg.masks.rle import encode_many

    categories = [{"id": k + 1, "name": c.label, "synonyms": list(c.synonyms)} for k, c in enumerate(classes)]
    class_ids = [int(c) + 1 for c in masks.data.get("class_id", np.zeros(0, np.int64))]
    record = {**_run_header(model, image, image_path, seconds), "classes": [list(c.names) for c in classes],
              "params": params, "files": {}}
    with staged_dir(out_dir) as stage:
        save_overlay_png(image, masks, stage / f"{stem}_overlay.png")
        record["files"]["overlay_png"] = f"{stem}_overlay.png"
        if 0 < len(masks) <= 255:
            save_indexed_png(masks, stage / f"{stem}_ids.png")
            record["files"]["ids_png"] = f"{stem}_ids.png"
        pngs = save_mask_pngs(masks, stage, stem) if len(masks) else []
        coco = to_coco(masks, 1, Path(image_path).name if image_path else f"{stem}.png", categories=categories,
                       category_ids=class_ids)
        save_coco(coco, stage / f"{stem}_coco.json")
        record["files"]["coco_json"] = f"{stem}_coco.json"
        rles = encode_many(masks.masks) if len(masks) else []
        record["instances"] = [{
            "index": i, "label": str(masks.labels[i]) if masks.labels is not None else "",
            "class_id": int(masks.data["class_id"][i]) if "class_id" in masks.data else None,
            "phrase": str(masks.data["phrase"][i]) if "phrase" in masks.data else "",
            "score": round(float(masks.scores[i]), 6),
            "box": [round(float(v), 2) for v in masks.boxes[i]], "area": int(masks.areas[i]),
            "rle": rles[i], "mask_png": pngs[i].name,
        } for i in range(len(masks))]
        json_path = write_json(stage / f"{stem}.json", record)
    return record, Path(out_dir) / json_path.name


def write_semantic(class_map: np.ndarray, image: np.ndarray, classes: Sequence[ClassName], out_dir: str | Path,
                   stem: str, model: str, params: dict[str, Any], image_path: str | None = None,
                   seconds: float | None = None) -> tuple[dict[str, Any], Path]:
    from anyseg.io.atomic import staged_dir, write_bytes, write_json
    from anyseg.io.export import png_bytes

    names = [c.label for c in classes]
    colours = class_colours(len(names))
    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[: len(names)] = colours
    total = class_map.size
    counts = np.bincount(class_map.ravel(), minlength=256)
    record = {**_run_header(model, image, image_path, seconds), "params": params, "unlabeled_id": UNLABELED,
              "classes": [{"id": k, "name": c.label, "synonyms": list(c.synonyms), "color": [int(v) for v in colours[k]],
                           "fraction": round(float(counts[k]) / total, 6)} for k, c in enumerate(classes)],
              "unlabeled_fraction": round(float(counts[UNLABELED]) / total, 6),
              "files": {"class_png": f"{stem}_classes.png", "overlay_png": f"{stem}_overlay.png"}}
    with staged_dir(out_dir) as stage:
        write_bytes(stage / f"{stem}_classes.png", png_bytes(class_map.astype(np.uint8), palette=pal))
        write_bytes(stage / f"{stem}_overlay.png", png_bytes(class_map_overlay(image, class_map, names)))
        json_path = write_json(stage / f"{stem}.json", record)
    return record, Path(out_dir) / json_path.name


def write_panoptic(result: Any, image: np.ndarray, out_dir: str | Path, stem: str, model: str,
                   params: dict[str, Any], image_path: str | None = None,
                   seconds: float | None = None) -> tuple[dict[str, Any], Path]:
    from anyseg.io.atomic import staged_dir, write_bytes, write_json
    from anyseg.io.export import png_bytes
    from anyseg.tasks.text import id_to_rgb

    h, w = image.shape[:2]
    png_name = f"{stem}_panoptic.png"
    coco = {
        "info": {"description": "exported by anyseg (COCO panoptic format)"},
        "images": [{"id": 1, "file_name": Path(image_path).name if image_path else f"{stem}.png", "height": h, "width": w}],
        "annotations": [{"image_id": 1, "file_name": png_name, "segments_info": [
            {k: s[k] for k in ("id", "category_id", "area", "bbox")} | {"iscrowd": 0} for s in result.segments]}],
        "categories": [{"id": c["id"], "name": c["name"], "isthing": c["isthing"], "color": c["color"],
                        "supercategory": "thing" if c["isthing"] else "stuff"} for c in result.categories],
    }
    record = {**_run_header(model, image, image_path, seconds), "params": params, "segments": result.segments,
              "files": {"panoptic_png": png_name, "panoptic_json": f"{stem}_panoptic.json",
                        "overlay_png": f"{stem}_overlay.png"}}
    cmap = np.full((h, w), UNLABELED, dtype=np.uint8)
    cat_of = {s["id"]: s["category_id"] - 1 for s in result.segments}
    for sid, cat in cat_of.items():
        cmap[result.ids == sid] = cat
    names = [c["name"] for c in result.categories]
    with staged_dir(out_dir) as stage:
        write_bytes(stage / png_name, png_bytes(id_to_rgb(result.ids)))
        write_json(stage / f"{stem}_panoptic.json", coco, indent=None)
        vis = class_map_overlay(image, cmap, names)
        _outline_segments(vis, result.ids)
        write_bytes(stage / f"{stem}_overlay.png", png_bytes(vis))
        json_path = write_json(stage / f"{stem}.json", record)
    return record, Path(out_dir) / json_path.name


def _outline_segments(vis: np.ndarray, ids: np.ndarray) -> None:
    """Draw white boundaries between segments (so touching instances of one class stay apart)."""
    h, w = ids.shape
    edge = np.zeros((h, w), dtype=bool)
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge[1:, :] |= ids[1:, :] != ids[:-1, :]
    vis[:h][edge] = 255

"""Exporting :class:`~anyseg.types.Masks`: PNGs, COCO JSON and YOLO segmentation text.

Every file is written atomically (:mod:`anyseg.io.atomic`): a failed export never leaves a
half-written file and never destroys an earlier one.

Names that end up in the files are checked: COCO category names and YOLO class names are
one-line labels (:func:`anyseg.labels.check_label`: a newline would shift YOLO's class
indices), and a COCO image ``file_name`` is the base name of the path it is given
(:func:`coco_file_name`: ``../../etc/passwd`` -> ``passwd``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Sequence

import numpy as np

from anyseg.errors import InputError
from anyseg.io.atomic import write_bytes, write_json, write_text
from anyseg.labels import check_label
from anyseg.masks.overlay import WHOLE_IMAGE_FRACTION, draw_prompt, overlay, overlay_regions
from anyseg.masks.polygons import mask_to_polygons, polygons_to_mask
from anyseg.masks.rle import area as rle_area, encode, to_bbox
from anyseg.types import Masks, Prompt

__all__ = [
    "save_mask_pngs", "save_indexed_png", "save_overlay_png", "save_region_overlay_png", "save_image_png",
    "davis_palette", "png_bytes",
    "to_coco", "save_coco", "to_yolo_seg", "save_yolo_seg", "yolo_classes", "save_yolo_classes", "coco_file_name",
]


def _check_masks(masks: Any) -> Masks:
    if not isinstance(masks, Masks):
        raise InputError(f"expected a Masks; got {type(masks).__name__}")
    return masks


def png_bytes(array: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """PNG file bytes of a uint8 ``(H, W)`` or ``(H, W, 3)`` array (with ``palette``: an indexed PNG)."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(array))
    if palette is not None:
        im.putpalette(palette.astype(np.uint8).ravel().tolist())  # 'L' -> 'P'
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def davis_palette(n: int = 256) -> np.ndarray:
    """``(n, 3)`` uint8 PASCAL VOC / DAVIS colormap: 0 black, 1 (128, 0, 0), 2 (0, 128, 0), ..."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for bit in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - bit)
            c >>= 3
        cmap[i] = rgb
    return cmap


def save_mask_pngs(masks: Masks, out_dir: str | os.PathLike, stem: str) -> list[Path]:
    """One single-channel ('L', 0/255) PNG per mask: ``out_dir/{stem}_mask{i}.png``."""
    masks = _check_masks(masks)
    if not stem or any(sep in stem for sep in ("/", "\\")) or stem in (".", ".."):
        raise InputError(f"stem must be a plain file name stem; got {stem!r}")
    out = Path(out_dir)
    paths = []
    for i, m in enumerate(masks.masks):
        path = out / f"{stem}_mask{i}.png"
        write_bytes(path, png_bytes(m.astype(np.uint8) * 255))
        paths.append(path)
    return paths


def save_indexed_png(masks: Masks, path: str | os.PathLike, ids: Sequence[int] | None = None) -> Path:
    """One palette ('P') PNG whose pixel value is ``ids[i]`` inside mask ``i``, 0 elsewhere.

    ``ids`` defaults to ``1..N`` and must lie in ``1..255``. Where masks overlap the higher
    score wins (equal scores: the lower index wins). The palette is DAVIS' (VOC colormap).
    """
    masks = _check_masks(masks)
    n = len(masks)
    values = np.arange(1, n + 1) if ids is None else np.asarray(ids).reshape(-1)
    if values.shape != (n,):
        raise InputError(f"ids must have {n} values, one per mask; got {values.size}")
    if n and (values.dtype.kind not in "iu" or values.min() < 1 or values.max() > 255):
        raise InputError(f"ids must be integers in 1..255 for an indexed PNG; got {values.min()}..{values.max()}")
    canvas = np.zeros(masks.image_size, dtype=np.uint8)
    for i in np.argsort(-masks.scores, kind="stable")[::-1]:  # best mask painted last
        canvas[masks.masks[i]] = values[i]
    return write_bytes(path, png_bytes(canvas, davis_palette()))


def save_overlay_png(image: np.ndarray, masks: Masks, path: str | os.PathLike, prompt: Prompt | None = None) -> Path:
    """An RGB PNG of :func:`~anyseg.masks.overlay.overlay`, with the prompt drawn when given."""
    vis = overlay(image, _check_masks(masks))
    if prompt is not None:
        vis = draw_prompt(vis, prompt)
    return write_bytes(path, png_bytes(vis))


def save_image_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """An ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` grey) image, e.g. an overlay, as a PNG."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        shape = "x".join(map(str, arr.shape)) or "scalar"
        raise InputError(f"expected an (H, W, 3) uint8 image to save; got {arr.dtype} of shape {shape}")
    return write_bytes(path, png_bytes(arr))


def save_region_overlay_png(image: np.ndarray, masks: Masks, path: str | os.PathLike,
                            max_area_fraction: float = WHOLE_IMAGE_FRACTION) -> tuple[Path, dict[str, int]]:
    """An RGB PNG of :func:`~anyseg.masks.overlay.overlay_regions` (segment everything: smallest
    mask on top, one blend, thin outlines, whole-image masks left out); returns the path and
    ``{"drawn": D, "skipped_whole_image": K}``."""
    vis, info = overlay_regions(image, _check_masks(masks), max_area_fraction=max_area_fraction)
    return write_bytes(path, png_bytes(vis)), info


def _category_ids(masks: Masks, categories: list[dict] | None, category_ids: Any) -> tuple[list[dict], list[int]]:
    n = len(masks)
    if categories is None and category_ids is None and masks.labels is not None:
        names = list(dict.fromkeys(check_label(str(v), "mask label") for v in masks.labels.tolist()))
        categories = [{"id": k + 1, "name": name} for k, name in enumerate(names)]
    if categories is None:
        categories = [{"id": 1, "name": "object"}]
    if not categories or any(not isinstance(c, dict) or "id" not in c or "name" not in c for c in categories):
        raise InputError("categories must be a non-empty list of dicts with 'id' and 'name'")
    categories = [{**c, "name": check_label(c["name"], "COCO category name")} for c in categories]
    known = {int(c["id"]) for c in categories}
    by_name = {str(c["name"]): int(c["id"]) for c in categories}
    if category_ids is not None:
        ids = [int(v) for v in np.asarray(category_ids).reshape(-1)]
        if len(ids) != n:
            raise InputError(f"category_ids must have {n} values, one per mask; got {len(ids)}")
    elif masks.labels is not None:
        ids = []
        for label in masks.labels.tolist():
            if str(label).strip() in by_name:  # names are compared as check_label gives them
                ids.append(by_name[str(label).strip()])
            elif isinstance(label, (int, np.integer)) and int(label) in known:
                ids.append(int(label))
            else:
                raise InputError(f"label {label!r} matches no category name or id in {sorted(by_name)}")
    else:
        ids = [int(categories[0]["id"])] * n
    unknown = sorted(set(ids) - known)
    if unknown:
        raise InputError(f"category ids {unknown} are not among the categories {sorted(known)}")
    return categories, ids


def coco_file_name(name: str | os.PathLike) -> str:
    """The base name of an image path, for COCO's ``file_name``: its last component (``/`` and
    ``\\`` both separate, a drive prefix is dropped), one line of printable text. A path with
    no file name in it (empty, ``.``, ``..``) is an :class:`InputError`."""
    if not isinstance(name, (str, os.PathLike)):
        raise InputError(f"COCO file_name must be a file name or path; got {type(name).__name__}")
    text = os.fspath(name)
    if not isinstance(text, str):
        raise InputError(f"COCO file_name must be text; got {type(text).__name__}")
    last = PureWindowsPath(PurePosixPath(text.replace("\\", "/")).name).name.strip()
    if last in ("", ".", ".."):
        raise InputError(f"COCO file_name {text[:80]!r} names no file; expected an image file name such as photo.jpg")
    return check_label(last, "COCO file_name")


def to_coco(
    masks: Masks,
    image_id: int,
    file_name: str,
    categories: list[dict] | None = None,
    polygons: bool = False,
    category_ids: Sequence[int] | None = None,
    start_ann_id: int = 1,
) -> dict:
    """A COCO dict (``images``, ``annotations``, ``categories``) for the masks of one image.

    Segmentations are compressed RLE with ``str`` counts (``annToMask`` gives the masks back
    exactly), or polygons when ``polygons`` (holes are lost, see
    :func:`~anyseg.masks.polygons.mask_to_polygons`; a mask too small for a polygon keeps
    its RLE). ``area`` and ``bbox`` (XYWH) are those of the stored segmentation. Category
    ids come from ``category_ids``, else from ``masks.labels`` (matched to category names or
    ids; without ``categories`` one category per distinct label is made), else the first
    category (default ``[{"id": 1, "name": "object"}]``). Category names must be one-line
    labels; ``file_name`` is written as its base name (:func:`coco_file_name`).
    """
    masks = _check_masks(masks)
    file_name = coco_file_name(file_name)
    categories, cat_ids = _category_ids(masks, categories, category_ids)
    h, w = masks.image_size
    annotations = []
    for i, m in enumerate(masks.masks):
        rle = encode(m)
        segmentation: Any = rle
        if polygons:
            polys = mask_to_polygons(m)
            if polys:
                segmentation = polys
                rle = encode(polygons_to_mask(polys, h, w, max_pixels=max(1, h * w)))
        annotations.append({
            "id": int(start_ann_id) + i,
            "image_id": int(image_id),
            "category_id": cat_ids[i],
            "segmentation": segmentation,
            "area": rle_area(rle, max_pixels=max(1, h * w)),
            "bbox": to_bbox(rle, max_pixels=max(1, h * w)),
            "iscrowd": 0,
            "score": float(masks.scores[i]),
        })
    return {
        "info": {"description": "exported by anyseg"},
        "images": [{"id": int(image_id), "file_name": file_name, "height": h, "width": w}],
        "annotations": annotations,
        "categories": [dict(c) for c in categories],
    }


def save_coco(coco_dict: dict, path: str | os.PathLike) -> Path:
    """Write a COCO dict as compact JSON."""
    if not isinstance(coco_dict, dict) or not {"images", "annotations", "categories"} <= set(coco_dict):
        raise InputError("expected a COCO dict with 'images', 'annotations' and 'categories'")
    return write_json(path, coco_dict, indent=None)


def to_yolo_seg(masks: Masks, class_ids: Sequence[int] | None = None) -> str:
    """YOLO segmentation text: ``"cls x1 y1 x2 y2 ..."`` per mask, coordinates in ``[0, 1]``.

    One line per instance, as Ultralytics expects: a mask with several parts contributes
    its **largest** part only (other parts and holes are dropped); a mask too small for a
    polygon (empty) gives no line. Class ids default to 0. Coordinates are the pixel-edge
    outline divided by the image width/height, with 6 decimals.
    """
    masks = _check_masks(masks)
    n = len(masks)
    ids = np.zeros(n, dtype=np.int64) if class_ids is None else np.asarray(class_ids).reshape(-1)
    if ids.shape != (n,):
        raise InputError(f"class_ids must have {n} values, one per mask; got {ids.size}")
    if n and (ids.dtype.kind not in "iu" or ids.min() < 0):
        raise InputError("class_ids must be non-negative integers")
    h, w = masks.image_size
    lines = []
    for i, m in enumerate(masks.masks):
        polys = mask_to_polygons(m)
        if not polys:
            continue
        pts = np.asarray(polys[0], dtype=np.float64).reshape(-1, 2) / (w, h)
        coords = " ".join(f"{v:.6f}" for v in np.clip(pts, 0.0, 1.0).ravel())
        lines.append(f"{int(ids[i])} {coords}")
    return "".join(line + "\n" for line in lines)


def save_yolo_seg(masks: Masks, path: str | os.PathLike, class_ids: Sequence[int] | None = None) -> Path:
    """Write :func:`to_yolo_seg` to ``path`` (an empty file when there is no polygon)."""
    return write_text(path, to_yolo_seg(masks, class_ids))


def yolo_classes(names: Sequence[str]) -> str:
    """YOLO's ``classes.txt``: class ``i``'s name on line ``i``. Each name must be a one-line
    label (:func:`anyseg.labels.check_label`) and names must differ, so the line numbers are
    the class indices."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise InputError(f"YOLO class names must be a list of strings; got {type(names).__name__}")
    checked = [check_label(n, f"YOLO class name {i}") for i, n in enumerate(names)]
    seen: dict[str, int] = {}
    for i, n in enumerate(checked):
        if n in seen:
            raise InputError(f"YOLO class names {seen[n]} and {i} are both {n!r}; expected distinct names")
        seen[n] = i
    return "".join(n + "\n" for n in checked)


def save_yolo_classes(names: Sequence[str], path: str | os.PathLike) -> Path:
    """Write :func:`yolo_classes` to ``path``."""
    return write_text(path, yolo_classes(names))

"""Project exports of the service: COCO JSON, a YOLO-seg zip, a zip of PNG masks.

What clients gave is never written as a path: image ``file_name`` values are exported as
their base name only (``../../etc/passwd`` -> ``passwd``), names inside the zips are reduced
to ``[A-Za-z0-9._-]``, and every label is one line of printable text in ``classes.txt`` (so
class indices cannot shift). Rows stored before the service validated its input are exported
as well: a non-finite score is left out and non-finite metadata values become ``null``.
Masks are decoded one at a time, so memory does not grow with the number of annotations.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from anyseg.io.export import png_bytes
from anyseg.serve.decode import base_name, one_line_label, safe_name

__all__ = ["ExportAnnotation", "ExportImage", "finite", "to_coco_dict", "to_zip"]


@dataclass(frozen=True)
class ExportImage:
    id: str
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class ExportAnnotation:
    id: int
    image_id: str
    label: str
    rle: dict
    score: float | None
    meta: dict | None


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _categories(anns: list[ExportAnnotation]) -> dict[str, int]:
    return {lab: k for k, lab in enumerate(sorted({a.label for a in anns}))}


def _image_order(anns: list[ExportAnnotation]) -> list[str]:
    return list(dict.fromkeys(a.image_id for a in anns))


def to_coco_dict(project: str, anns: list[ExportAnnotation], images: dict[str, ExportImage]) -> dict:
    """The COCO dict of a project (pycocotools loads it; ``annToMask`` gives the masks back)."""
    from anyseg.masks import rle as rle_mod

    ids = _image_order(anns)
    num = {iid: k + 1 for k, iid in enumerate(ids)}
    cat = _categories(anns)
    out_anns = []
    for a in anns:
        im = images[a.image_id]
        size = (im.height, im.width)
        limit = max(1, im.height * im.width)
        score = finite(a.score)
        item = {"id": a.id, "image_id": num[a.image_id], "category_id": cat[a.label] + 1, "segmentation": a.rle,
                "area": rle_mod.area(a.rle, size=size, max_pixels=limit),
                "bbox": rle_mod.to_bbox(a.rle, size=size, max_pixels=limit), "iscrowd": 0}
        if score is not None:
            item["score"] = score
        if a.meta:
            item["metadata"] = finite(a.meta)
        out_anns.append(item)
    return {
        "info": {"description": f"anyseg project {safe_name(project)}"},
        "images": [{"id": num[i], "file_name": base_name(images[i].file_name), "height": images[i].height,
                    "width": images[i].width, "anyseg_id": i} for i in ids],
        "annotations": out_anns,
        "categories": [{"id": k + 1, "name": lab} for lab, k in cat.items()],
    }


def _stems(ids: list[str], images: dict[str, ExportImage]) -> dict[str, str]:
    """A distinct safe file stem per image id."""
    stems: dict[str, str] = {}
    for iid in ids:
        stem = safe_name(PurePosixPath(base_name(images[iid].file_name)).stem)
        stems[iid] = stem if stem not in stems.values() else f"{stem}_{iid}"
    return stems


def _decode(a: ExportAnnotation, images: dict[str, ExportImage]) -> np.ndarray:
    from anyseg.masks import rle as rle_mod

    im = images[a.image_id]
    return rle_mod.decode(a.rle, size=(im.height, im.width), max_pixels=max(1, im.height * im.width))


def _write_yolo(zf: zipfile.ZipFile, anns: list[ExportAnnotation], images: dict[str, ExportImage]) -> None:
    from anyseg.io.export import to_yolo_seg
    from anyseg.types import Masks

    cat = _categories(anns)
    zf.writestr("classes.txt", "".join(f"{one_line_label(lab)}\n" for lab in cat))
    ids = _image_order(anns)
    stems = _stems(ids, images)
    for iid in ids:
        lines = [to_yolo_seg(Masks(_decode(a, images)[None]), [cat[a.label]]) for a in anns if a.image_id == iid]
        zf.writestr(f"labels/{stems[iid]}.txt", "".join(lines))


def _write_png(zf: zipfile.ZipFile, anns: list[ExportAnnotation], images: dict[str, ExportImage]) -> None:
    stems = _stems(_image_order(anns), images)
    index = []
    for a in anns:
        fname = f"masks/{stems[a.image_id]}_{a.id}_{safe_name(a.label)}.png"
        zf.writestr(fname, png_bytes(_decode(a, images).astype(np.uint8) * 255))
        index.append({"file": fname, "annotation_id": a.id, "image_id": a.image_id,
                      "file_name": base_name(images[a.image_id].file_name), "label": a.label,
                      "score": finite(a.score)})
    zf.writestr("annotations.json", json.dumps(index, indent=1, allow_nan=False))


def to_zip(fmt: str, anns: list[ExportAnnotation], images: dict[str, ExportImage]) -> bytes:
    """The bytes of a ``yolo`` (``classes.txt`` + ``labels/*.txt``) or ``png`` (``masks/*.png`` + index) zip."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        (_write_yolo if fmt == "yolo" else _write_png)(zf, anns, images)
    return buf.getvalue()

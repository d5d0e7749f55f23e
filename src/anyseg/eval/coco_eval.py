"""COCO mask AP/AR with pycocotools' own ``COCOeval`` (``iouType="segm"``).

The numbers are those of ``COCOeval.evaluate(); accumulate(); summarize()`` on the same
ground truth and results, with pycocotools' printing silenced. This module only validates
the inputs first (so that mistakes give an :class:`InputError` instead of an
``AssertionError`` or a ``KeyError`` deep inside pycocotools) and never mutates them
(``loadRes`` writes ``area``, ``bbox``, ``id`` and ``iscrowd`` into the result dicts, so
copies are passed).
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from anyseg.errors import InputError
from anyseg.eval.datasets import coco_id, read_json
from anyseg.masks import rle as rle_utils
from anyseg.masks.polygons import segmentation_to_rle
from anyseg.masks.rle import brief, check_size
from anyseg.types import Masks

__all__ = ["STAT_NAMES", "coco_mask_ap", "masks_to_results", "read_results"]

#: the 12 numbers of ``COCOeval.stats``, in order
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _load_gt(gt_coco: Mapping[str, Any] | str | Path) -> tuple[dict, str]:
    if isinstance(gt_coco, (str, Path)):
        path = Path(gt_coco)
        data = read_json(path, "COCO ground-truth file")
        where = f" in {path.name}"
    else:
        data, where = gt_coco, ""
    if not isinstance(data, Mapping):
        raise InputError(f"COCO ground truth{where} must be a dict; got {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise InputError(f"COCO ground truth{where} must have 'images', 'annotations' and 'categories'; missing {missing}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise InputError(f"COCO ground truth{where}: {key!r} must be a list; got {type(data[key]).__name__}")
    return copy.deepcopy(dict(data)), where


def read_results(path: str | Path) -> list:
    """A COCO results file (a JSON list, at most :data:`~anyseg.eval.datasets.MAX_JSON_BYTES`).

    The entries are checked by :func:`coco_mask_ap`, whose messages then name the file.
    """
    data = read_json(path, "COCO results file")
    if not isinstance(data, list):
        raise InputError(f"{path} must be a COCO results list (image_id, category_id, segmentation, score); "
                         f"got a JSON {type(data).__name__}")
    return data


def _finite(value: Any, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{what} must be a number; got {brief(value)}")
    if not np.isfinite(float(value)):
        raise InputError(f"{what} must be finite; got {value}")
    return float(value)


def _check_images(gt: dict, where: str) -> dict:
    sizes = {}
    for i, img in enumerate(gt["images"]):
        if not isinstance(img, Mapping) or any(k not in img for k in ("id", "height", "width")):
            raise InputError(f"every COCO image{where} needs 'id', 'height' and 'width'; got {img!r:.80}")
        image_id = coco_id(img["id"], f"COCO image #{i}{where}: 'id'", strings=True)
        if image_id in sizes:
            raise InputError(f"COCO image #{i}{where} repeats the image id {image_id!r}")
        sizes[image_id] = check_size((img["height"], img["width"]), f"COCO image #{i}{where}: [height, width]")
    for i, cat in enumerate(gt["categories"]):
        if not isinstance(cat, Mapping) or "id" not in cat:
            raise InputError(f"every COCO category{where} needs an 'id'; got {cat!r:.80}")
        coco_id(cat["id"], f"COCO category #{i}{where}: 'id'", strings=True)
    return sizes


def _check_annotation(i: int, ann: Any, sizes: dict, where: str, ids: set) -> None:
    """Checks ``ann`` in place: ids, ``iscrowd``, ``area``, and the segmentation made a canonical RLE."""
    name = f"COCO annotation #{i}{where}"
    if not isinstance(ann, dict):
        raise InputError(f"{name} must be a dict; got {type(ann).__name__}")
    need = [k for k in ("image_id", "category_id", "segmentation") if k not in ann]
    if need:
        raise InputError(f"{name} lacks {need}")
    image_id = coco_id(ann["image_id"], f"{name}: 'image_id'", strings=True)
    if image_id not in sizes:
        raise InputError(f"{name} refers to image_id {ann['image_id']!r}, which is not among the images")
    coco_id(ann["category_id"], f"{name}: 'category_id'", strings=True)
    ann_id = coco_id(ann.setdefault("id", i + 1), f"{name}: 'id'", strings=True)
    if ann_id in ids:
        raise InputError(f"{name} repeats the annotation id {ann_id!r} (ids must be unique)")
    ids.add(ann_id)
    if ann.setdefault("iscrowd", 0) not in (0, 1) or isinstance(ann["iscrowd"], float):
        raise InputError(f"{name}: 'iscrowd' must be 0 or 1; got {ann['iscrowd']!r:.40}")
    try:
        ann["segmentation"] = segmentation_to_rle(ann["segmentation"], *sizes[image_id])
    except InputError as e:
        raise InputError(f"{name} (id {ann_id!r}): {e}") from None
    if "area" in ann:  # COCO defines the area of a mask annotation as its pixel count
        ann["area"] = _finite(ann["area"], f"{name}: 'area'")
    else:
        ann["area"] = float(rle_utils.area(ann["segmentation"]))


def _check_gt(gt: dict, where: str) -> COCO:
    sizes = _check_images(gt, where)
    ids: set = set()
    for i, ann in enumerate(gt["annotations"]):
        _check_annotation(i, ann, sizes, where, ids)
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _check_prediction(i: int, pred: Any, coco: COCO, cat_ids: set, where: str, gt_where: str) -> dict:
    name = f"prediction #{i}{where}"
    if not isinstance(pred, Mapping):
        raise InputError(f"{name} must be a dict; got {type(pred).__name__}")
    need = [k for k in ("image_id", "category_id", "segmentation", "score") if k not in pred]
    if need:
        raise InputError(f"{name} lacks {need} (expected image_id, category_id, segmentation, score)")
    img = coco.imgs.get(coco_id(pred["image_id"], f"{name}: 'image_id'", strings=True))
    if img is None:
        raise InputError(f"{name} has image_id {pred['image_id']!r}, absent from the ground truth{gt_where}")
    if coco_id(pred["category_id"], f"{name}: 'category_id'", strings=True) not in cat_ids:
        known = sorted(cat_ids, key=str)[:20]
        raise InputError(f"{name} has category_id {pred['category_id']!r}; expected one of {known}")
    try:
        seg = segmentation_to_rle(pred["segmentation"], int(img["height"]), int(img["width"]))
    except InputError as e:
        raise InputError(f"{name}: {e}") from None
    entry = dict(pred, segmentation=seg, score=_finite(pred["score"], f"{name}: score"))
    if "bbox" in entry:  # pycocotools' loadRes then takes the detections' area from the box
        box = entry["bbox"]
        if not isinstance(box, (list, tuple)) or len(box) not in (0, 4):
            raise InputError(f"{name}: 'bbox' must be [x, y, width, height]; got {brief(box)}")
        entry["bbox"] = [_finite(v, f"{name}: 'bbox'") for v in box]
    return entry


def _check_results(coco: COCO, predictions: Sequence[Mapping[str, Any]], where: str, gt_where: str) -> list[dict]:
    if not isinstance(predictions, Sequence) or isinstance(predictions, (str, bytes)):
        raise InputError(f"predictions must be a list of result dicts; got {type(predictions).__name__}")
    cat_ids = set(coco.getCatIds())
    results = [_check_prediction(i, pred, coco, cat_ids, where, gt_where) for i, pred in enumerate(predictions)]
    if results and results[0].get("bbox"):  # then loadRes reads every entry's box (for the area)
        lacking = next((i for i, r in enumerate(results) if len(r.get("bbox", ())) != 4), None)
        if lacking is not None:
            raise InputError(f"prediction #{lacking}{where} has no 'bbox' [x, y, width, height] but prediction #0 "
                             "has one: give every prediction a box, or none")
    return results


def coco_mask_ap(gt_coco: Mapping[str, Any] | str | Path,
                 predictions: Sequence[Mapping[str, Any]] | str | Path) -> dict[str, float]:
    """COCO instance-segmentation AP/AR of ``predictions`` against ``gt_coco``.

    Args:
        gt_coco: a COCO ground-truth dict (``images`` with ``id``/``height``/``width``,
            ``annotations`` with polygon or RLE ``segmentation``, ``categories``) or the
            path of its JSON file. Missing ``iscrowd`` defaults to 0 and missing ``area`` to
            the mask's pixel count.
        predictions: COCO results: ``{"image_id", "category_id", "segmentation", "score"}``
            (the segmentation an RLE of the image's size, compressed or not, or polygons),
            or the path of their JSON file (see :func:`read_results`); may be empty. Every
            image of the ground truth is evaluated, including images without predictions.
            A malformed entry of either input is a one-line :class:`InputError` naming the
            file and the entry; no segmentation reaches pycocotools unchecked.

    Returns:
        ``{name: float}`` for :data:`STAT_NAMES` (``AP`` = mean over IoU 0.50:0.95, ``AP50``,
        ``AP75``, ``APs/m/l`` by area, ``AR1/10/100`` by max detections, ``ARs/m/l``), the
        values of ``COCOeval.stats``; ``-1.0`` where pycocotools finds nothing to average
        (no ground truth in that area range). With no predictions, AP and AR are 0 where
        there is ground truth, as pycocotools gives for results without detections.
    """
    gt, where = _load_gt(gt_coco)
    coco_gt = _check_gt(gt, where)
    pred_where = ""
    if isinstance(predictions, (str, Path)):
        pred_where = f" in {Path(predictions).name}"
        predictions = read_results(predictions)
    results = _check_results(coco_gt, predictions, pred_where, where)
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes cannot take an empty list (it reads anns[0])
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(gt["images"]), "categories": copy.deepcopy(gt["categories"]),
                               "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}


def masks_to_results(masks: Masks, image_id: int, category_ids: int | Sequence[int] | None = None) -> list[dict]:
    """COCO result entries (one per mask) of a :class:`Masks` for image ``image_id``.

    ``category_ids``: one id for all masks, one per mask, or ``None`` to use the masks'
    integer ``labels`` (and category 1 when the masks have no labels). Scores are
    ``masks.scores``; segmentations are compressed RLEs with ``str`` counts.
    """
    if not isinstance(masks, Masks):
        raise InputError(f"masks_to_results expects a Masks; got {type(masks).__name__}")
    n = len(masks)
    if category_ids is None:
        if masks.labels is None:
            cats = np.ones(n, dtype=np.int64)
        elif masks.labels.dtype.kind in "iu":
            cats = masks.labels.astype(np.int64)
        else:
            raise InputError(f"masks.labels are {masks.labels.dtype} values, not integer category ids; pass category_ids")
    else:
        arr = np.asarray(category_ids)
        if arr.dtype.kind not in "iu":
            raise InputError(f"category_ids must be integers; got {arr.dtype} values")
        cats = np.full(n, int(arr), dtype=np.int64) if arr.ndim == 0 else arr.astype(np.int64)
        if cats.shape != (n,):
            raise InputError(f"category_ids must be one id or {n} ids (one per mask); got shape {arr.shape}")
    rles = rle_utils.encode_many(masks)
    return [
        {"image_id": int(image_id), "category_id": int(c), "segmentation": r, "score": float(s)}
        for r, c, s in zip(rles, cats, masks.scores)
    ]

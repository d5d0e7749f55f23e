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
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from anyseg.errors import InputError
from anyseg.masks import rle as rle_utils
from anyseg.types import Masks

__all__ = ["STAT_NAMES", "coco_mask_ap", "masks_to_results"]

#: the 12 numbers of ``COCOeval.stats``, in order
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _load_gt(gt_coco: Mapping[str, Any] | str | Path) -> tuple[dict, str]:
    if isinstance(gt_coco, (str, Path)):
        path = Path(gt_coco)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"COCO ground-truth file {path} not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read COCO ground truth {path}: {exc}") from None
        where = f" in {path.name}"
    else:
        data, where = gt_coco, ""
    if not isinstance(data, Mapping):
        raise InputError(f"COCO ground truth{where} must be a dict; got {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise InputError(f"COCO ground truth{where} must have 'images', 'annotations' and 'categories'; missing {missing}")
    return copy.deepcopy(dict(data)), where


def _check_gt(gt: dict, where: str) -> COCO:
    for img in gt["images"]:
        if not isinstance(img, Mapping) or any(k not in img for k in ("id", "height", "width")):
            raise InputError(f"every COCO image{where} needs 'id', 'height' and 'width'; got {img!r:.80}")
    for cat in gt["categories"]:
        if not isinstance(cat, Mapping) or "id" not in cat:
            raise InputError(f"every COCO category{where} needs an 'id'; got {cat!r:.80}")
    image_ids = {img["id"] for img in gt["images"]}
    for i, ann in enumerate(gt["annotations"]):
        need = [k for k in ("image_id", "category_id", "segmentation") if k not in ann]
        if need:
            raise InputError(f"COCO annotation #{i}{where} lacks {need}")
        if ann["image_id"] not in image_ids:
            raise InputError(f"COCO annotation #{i}{where} refers to image_id {ann['image_id']!r}, which is not among the images")
        ann.setdefault("id", i + 1)
        ann.setdefault("iscrowd", 0)
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    for ann in gt["annotations"]:
        if "area" not in ann:  # COCO defines the area of a mask annotation as its pixel count
            ann["area"] = float(mask_utils.area(coco.annToRLE(ann)))
    return coco


def _check_results(coco: COCO, predictions: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
    if not isinstance(predictions, Sequence) or isinstance(predictions, (str, bytes)):
        raise InputError(f"predictions must be a list of result dicts; got {type(predictions).__name__}")
    cat_ids = set(coco.getCatIds())
    out: list[dict] = []
    for i, pred in enumerate(predictions):
        if not isinstance(pred, Mapping):
            raise InputError(f"prediction #{i} must be a dict; got {type(pred).__name__}")
        need = [k for k in ("image_id", "category_id", "segmentation", "score") if k not in pred]
        if need:
            raise InputError(f"prediction #{i} lacks {need} (expected image_id, category_id, segmentation, score)")
        img = coco.imgs.get(pred["image_id"])
        if img is None:
            raise InputError(f"prediction #{i} has image_id {pred['image_id']!r}, absent from the ground truth{where}")
        if pred["category_id"] not in cat_ids:
            raise InputError(f"prediction #{i} has category_id {pred['category_id']!r}; expected one of {sorted(cat_ids)}")
        seg = pred["segmentation"]
        if not isinstance(seg, Mapping) or not isinstance(seg.get("counts"), (str, bytes)):
            raise InputError(f"prediction #{i}: segmentation must be a compressed RLE dict with str counts; got {type(seg).__name__}")
        rle_utils.area(seg)  # validates counts and size
        size = [int(v) for v in seg["size"]]
        if size != [int(img["height"]), int(img["width"])]:
            raise InputError(f"prediction #{i}: RLE size {size} does not match image {pred['image_id']!r} "
                             f"of size {[img['height'], img['width']]}")
        try:
            score = float(pred["score"])
        except (TypeError, ValueError):
            raise InputError(f"prediction #{i}: score must be a number; got {pred['score']!r}") from None
        if not np.isfinite(score):
            raise InputError(f"prediction #{i}: score must be finite; got {score}")
        entry = dict(pred)
        entry["segmentation"] = dict(seg)
        entry["score"] = score
        out.append(entry)
    return out


def coco_mask_ap(gt_coco: Mapping[str, Any] | str | Path, predictions: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """COCO instance-segmentation AP/AR of ``predictions`` against ``gt_coco``.

    Args:
        gt_coco: a COCO ground-truth dict (``images`` with ``id``/``height``/``width``,
            ``annotations`` with polygon or RLE ``segmentation``, ``categories``) or the
            path of its JSON file. Missing ``iscrowd`` defaults to 0 and missing ``area`` to
            the mask's pixel count.
        predictions: COCO results: ``{"image_id", "category_id", "segmentation": RLE with
            str counts, "score"}``; may be empty. Every image of the ground truth is
            evaluated, including images without predictions.

    Returns:
        ``{name: float}`` for :data:`STAT_NAMES` (``AP`` = mean over IoU 0.50:0.95, ``AP50``,
        ``AP75``, ``APs/m/l`` by area, ``AR1/10/100`` by max detections, ``ARs/m/l``), the
        values of ``COCOeval.stats``; ``-1.0`` where pycocotools finds nothing to average
        (no ground truth in that area range). With no predictions, AP and AR are 0 where
        there is ground truth, as pycocotools gives for results without detections.
    """
    gt, where = _load_gt(gt_coco)
    coco_gt = _check_gt(gt, where)
    results = _check_results(coco_gt, predictions, where)
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

"""COCO mask AP: hand-computed cases and agreement with a direct pycocotools run."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from anyseg.errors import InputError
from anyseg.eval.coco_eval import STAT_NAMES, coco_mask_ap, masks_to_results
from anyseg.masks.rle import encode, to_uncompressed
from anyseg.types import Masks


def _box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _ann(i: int, image_id: int, cat: int, mask: np.ndarray, crowd: int = 0) -> dict:
    seg = to_uncompressed(mask) if crowd else encode(mask)
    return {"id": i, "image_id": image_id, "category_id": cat, "segmentation": seg,
            "area": float(mask.sum()), "iscrowd": crowd}


def _pred(image_id: int, cat: int, mask: np.ndarray, score: float) -> dict:
    return {"image_id": image_id, "category_id": cat, "segmentation": encode(mask), "score": score}


# image 1 is 160x160, image 2 is 128x128
GT_MASKS = {
    1: _box(160, 160, 0, 100, 0, 100),      # cat 1, large (10000 px)
    2: _box(160, 160, 150, 155, 0, 5),      # cat 1, small (25 px)
    3: _box(160, 160, 100, 140, 110, 150),  # cat 2, medium (1600 px)
    4: _box(128, 128, 10, 60, 10, 60),      # cat 1, medium (2500 px)
    5: _box(128, 128, 70, 100, 70, 100),    # cat 2, small (900 px)
}


def _gt() -> dict:
    anns = [_ann(1, 1, 1, GT_MASKS[1]), _ann(2, 1, 1, GT_MASKS[2]), _ann(3, 1, 2, GT_MASKS[3]),
            _ann(4, 2, 1, GT_MASKS[4]), _ann(5, 2, 2, GT_MASKS[5]),
            _ann(6, 2, 1, _box(128, 128, 110, 128, 0, 40), crowd=1)]
    # one polygon annotation too (cat 2, image 2, a 10x10 square at x 100..110, y 5..15)
    anns.append({"id": 7, "image_id": 2, "category_id": 2, "iscrowd": 0, "area": 100.0,
                 "segmentation": [[100, 5, 110, 5, 110, 15, 100, 15]], "bbox": [100, 5, 10, 10]})
    return {
        "images": [{"id": 1, "height": 160, "width": 160}, {"id": 2, "height": 128, "width": 128}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": anns,
    }


def _predictions() -> list[dict]:
    return [
        _pred(1, 1, GT_MASKS[1], 0.9),                            # perfect
        _pred(1, 1, _box(160, 160, 150, 155, 1, 6), 0.8),        # small, shifted 1 px: IoU 20/30
        _pred(1, 1, _box(160, 160, 120, 150, 0, 30), 0.95),      # false positive, top score
        _pred(1, 2, _box(160, 160, 104, 140, 110, 150), 0.7),    # IoU 0.9
        _pred(2, 1, _box(128, 128, 15, 55, 15, 55), 0.6),        # IoU 1600/2500 = 0.64
        _pred(2, 1, _box(128, 128, 10, 60, 10, 58), 0.5),        # duplicate of gt 4, IoU 0.96
        _pred(2, 1, _box(128, 128, 112, 128, 0, 40), 0.85),      # on the crowd region: ignored
        _pred(2, 2, _box(128, 128, 6, 14, 101, 109), 0.4),       # inside the polygon, IoU 64/100
    ]


def _direct_pycocotools(gt: dict, preds: list[dict]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        dt = coco.loadRes(copy.deepcopy(preds))
        ev = COCOeval(coco, dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_matches_direct_pycocotools_run(capsys):
    gt, preds = _gt(), _predictions()
    gt_before, preds_before = copy.deepcopy(gt), copy.deepcopy(preds)
    stats = coco_mask_ap(gt, preds)
    assert capsys.readouterr().out == ""  # pycocotools' printing is silenced
    assert list(stats) == list(STAT_NAMES)
    np.testing.assert_allclose([stats[k] for k in STAT_NAMES], _direct_pycocotools(gt, preds), rtol=0, atol=1e-12)
    assert 0 < stats["AP"] < 1 and all(isinstance(v, float) for v in stats.values())
    assert gt == gt_before and preds == preds_before  # inputs not mutated


def test_perfect_predictions_give_ap_one():
    gt = _gt()
    preds = [_pred(a["image_id"], a["category_id"], GT_MASKS[a["id"]], 0.9) for a in gt["annotations"] if a["id"] in GT_MASKS]
    preds.append(_pred(2, 2, _box(128, 128, 5, 15, 100, 110), 0.9))  # the polygon, rasterized
    stats = coco_mask_ap(gt, preds)
    for k in STAT_NAMES:
        if k != "AR1":
            assert stats[k] == pytest.approx(1.0), k
    # AR1 keeps one detection per image and category: each category has 3 gt objects (crowd
    # excluded), 2 of them in one image, so only 2 of 3 can be recalled
    assert stats["AR1"] == pytest.approx(2 / 3)


def _single_gt() -> dict:
    return {"images": [{"id": 7, "height": 32, "width": 32}], "categories": [{"id": 3}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "segmentation": encode(_box(32, 32, 0, 10, 0, 10))}]}


def test_single_match_by_hand():
    # prediction = 62 of the 100 gt pixels: IoU 0.62, a true positive at the IoU thresholds
    # 0.50, 0.55, 0.60 and a miss at 0.65 .. 0.95 -> AP = AR = 3/10; the 100-px object is
    # "small" (< 32^2), so APm/APl and ARm/ARl are -1 (nothing to average). Missing
    # 'area'/'iscrowd' in the gt are filled in (100 px, 0).
    pred = _box(32, 32, 0, 6, 0, 10)
    pred[6, 0:2] = True
    stats = coco_mask_ap(_single_gt(), [_pred(7, 3, pred, 0.5)])
    assert stats["AP"] == pytest.approx(0.3) and stats["AP50"] == pytest.approx(1.0) and stats["AP75"] == 0.0
    assert stats["APs"] == pytest.approx(0.3) and stats["APm"] == -1.0 and stats["APl"] == -1.0
    assert stats["AR1"] == pytest.approx(0.3) and stats["AR100"] == pytest.approx(0.3)
    assert stats["ARm"] == -1.0 and stats["ARl"] == -1.0


def test_empty_predictions():
    stats = coco_mask_ap(_single_gt(), [])
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0 and stats["APs"] == 0.0
    assert stats["APm"] == -1.0 and stats["ARl"] == -1.0


def test_gt_from_file(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(_single_gt()))
    assert coco_mask_ap(path, [_pred(7, 3, _box(32, 32, 0, 10, 0, 10), 1.0)])["AP"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="missing.json"):
        coco_mask_ap(tmp_path / "missing.json", [])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="bad.json"):
        coco_mask_ap(tmp_path / "bad.json", [])


def test_bad_inputs():
    gt = _single_gt()
    ok = _pred(7, 3, _box(32, 32, 0, 10, 0, 10), 1.0)
    with pytest.raises(InputError, match="image_id 8"):
        coco_mask_ap(gt, [dict(ok, image_id=8)])
    with pytest.raises(InputError, match="category_id 1"):
        coco_mask_ap(gt, [dict(ok, category_id=1)])
    with pytest.raises(InputError, match="score"):
        coco_mask_ap(gt, [{k: v for k, v in ok.items() if k != "score"}])
    with pytest.raises(InputError, match="RLE size"):
        coco_mask_ap(gt, [dict(ok, segmentation=encode(np.zeros((16, 16), bool)))])
    with pytest.raises(InputError, match="polygons .* or an RLE dict"):
        coco_mask_ap(gt, [dict(ok, segmentation="0000")])
    with pytest.raises(InputError, match="malformed"):
        coco_mask_ap(gt, [dict(ok, segmentation={"size": [32, 32], "counts": "\x7f"})])
    with pytest.raises(InputError, match="categories"):
        coco_mask_ap({"images": [], "annotations": []}, [])
    with pytest.raises(InputError, match="height"):
        coco_mask_ap({"images": [{"id": 1}], "annotations": [], "categories": []}, [])


def test_polygon_and_uncompressed_predictions_equal_their_compressed_rle():
    # results may carry polygons or uncompressed RLE: scored as the compressed RLE of the same mask
    gt = _single_gt()
    square = [[0, 0, 10, 0, 10, 10, 0, 10]]  # the 10x10 gt square, as a polygon
    by_rle = coco_mask_ap(gt, [_pred(7, 3, _box(32, 32, 0, 10, 0, 10), 0.9)])
    assert coco_mask_ap(gt, [{"image_id": 7, "category_id": 3, "segmentation": square, "score": 0.9}]) == by_rle
    unc = {"image_id": 7, "category_id": 3, "segmentation": to_uncompressed(_box(32, 32, 0, 10, 0, 10)), "score": 0.9}
    assert coco_mask_ap(gt, [unc]) == by_rle
    assert by_rle["AP"] == pytest.approx(1.0)


def test_masks_to_results_round_trip():
    stack = np.stack([GT_MASKS[4], GT_MASKS[5]])
    masks = Masks(stack, scores=np.array([0.9, 0.7]), labels=np.array([1, 2]))
    res = masks_to_results(masks, image_id=2)
    assert [r["category_id"] for r in res] == [1, 2]
    assert [r["score"] for r in res] == pytest.approx([0.9, 0.7])
    assert res[0]["image_id"] == 2 and isinstance(res[0]["segmentation"]["counts"], str)
    assert res[0]["segmentation"] == encode(GT_MASKS[4])
    json.dumps(res)
    assert [r["category_id"] for r in masks_to_results(masks, 2, category_ids=5)] == [5, 5]
    assert [r["category_id"] for r in masks_to_results(masks, 2, category_ids=[2, 1])] == [2, 1]
    assert [r["category_id"] for r in masks_to_results(Masks(stack), 2)] == [1, 1]
    assert masks_to_results(Masks.empty(4, 4), 1) == []
    with pytest.raises(InputError, match="category_ids"):
        masks_to_results(masks.with_columns(labels=np.array(["a", "b"])), 2)
    with pytest.raises(InputError, match="2 ids"):
        masks_to_results(masks, 2, category_ids=[1, 2, 3])
    # predictions of image 2 only: image 1's gt is all missed, image 2's is found exactly
    gt = _gt()
    stats = coco_mask_ap(gt, res)
    assert stats["AR100"] == pytest.approx(_direct_pycocotools(gt, res)[8])
    assert 0 < stats["AP"] < 1

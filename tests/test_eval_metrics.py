"""Hand-computed cases for anyseg.eval.metrics (binary, confusion matrix, DAVIS J/F)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anyseg.errors import InputError
from anyseg.eval.metrics import (
    ConfusionMatrix, db_eval_boundary, db_eval_iou, db_statistics, dice, evaluate_video_object,
    iou, jf_summary, pixel_accuracy, seg2bmap,
)

PRED = np.array([[1, 1, 0], [0, 1, 0]], dtype=bool)
GT = np.array([[1, 0, 0], [0, 1, 1]], dtype=bool)
IGNORE = np.array([[0, 1, 0], [0, 0, 0]], dtype=bool)


# -- binary ----------------------------------------------------------------------------------
def test_binary_metrics_by_hand():
    # intersection {(0,0), (1,1)} = 2; union {(0,0), (0,1), (1,1), (1,2)} = 4
    assert iou(PRED, GT) == pytest.approx(2 / 4)
    assert dice(PRED, GT) == pytest.approx(2 * 2 / (3 + 3))
    assert pixel_accuracy(PRED, GT) == pytest.approx(4 / 6)  # disagree at (0,1) and (1,2)


def test_binary_metrics_with_ignore():
    # (0,1) is ignored: |P| = 2, |G| = 3, intersection 2, union 3; 5 pixels counted, 4 agree
    assert iou(PRED, GT, IGNORE) == pytest.approx(2 / 3)
    assert dice(PRED, GT, IGNORE) == pytest.approx(2 * 2 / (2 + 3))
    assert pixel_accuracy(PRED, GT, IGNORE) == pytest.approx(4 / 5)


def test_binary_empty_cases():
    z = np.zeros((2, 3), dtype=bool)
    assert iou(z, z) == 1.0 and dice(z, z) == 1.0 and pixel_accuracy(z, z) == 1.0
    assert iou(z, GT) == 0.0 and dice(GT, z) == 0.0
    # everything set is ignored: empty union again
    assert iou(GT, GT & ~GT, ignore=GT) == 1.0
    assert math.isnan(pixel_accuracy(z, z, ignore=np.ones((2, 3), bool)))


def test_binary_bad_input():
    with pytest.raises(InputError, match="same shape"):
        iou(PRED, GT[:, :2])
    with pytest.raises(InputError, match=r"\(H, W\)"):
        dice(PRED[None], GT[None])
    with pytest.raises(InputError, match="ignore"):
        iou(PRED, GT, ignore=np.zeros((3, 3), bool))


# -- confusion matrix ------------------------------------------------------------------------
G3 = np.array([[0, 0, 1], [2, 255, 1]])
P3 = np.array([[0, 1, 1], [2, 2, 0]])


def test_confusion_matrix_by_hand():
    # counted pixels (gt != 255): (g0,p0) (g0,p1) (g1,p1) (g2,p2) (g1,p0)
    cm = ConfusionMatrix(3).update(P3, G3)
    assert cm.matrix.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1 likewise; class 2: TP 1 (the ignored pixel's 2 does not count)
    np.testing.assert_allclose(cm.iou_per_class(), [1 / 3, 1 / 3, 1.0])
    assert cm.miou() == pytest.approx(5 / 9)
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)
    np.testing.assert_allclose(cm.accuracy_per_class(), [1 / 2, 1 / 2, 1.0])
    assert cm.mean_class_accuracy() == pytest.approx(2 / 3)
    d = cm.to_dict(["road", "car", "sky"])
    assert d["mIoU"] == pytest.approx(5 / 9) and d["aAcc"] == pytest.approx(0.6)
    assert d["per_class"]["sky"] == {"IoU": 1.0, "Acc": 1.0}


def test_confusion_matrix_accumulates_over_images():
    cm = ConfusionMatrix(3)
    cm.update(P3, G3).update(G3.clip(0, 2) * 0, np.zeros((2, 3), int))  # second image: all class 0, right
    # class 0: TP 1 + 6 = 7, FP 1, FN 1 -> 7/9 (global counts, not a mean of per-image IoUs)
    assert cm.iou_per_class()[0] == pytest.approx(7 / 9)
    assert cm.pixel_accuracy() == pytest.approx((3 + 6) / (5 + 6))


def test_confusion_matrix_absent_classes_are_nan():
    cm = ConfusionMatrix(4).update(P3, G3)
    ious = cm.iou_per_class()
    assert math.isnan(ious[3])  # in neither gt nor prediction
    assert cm.miou() == pytest.approx(5 / 9)  # excluded from the mean
    assert cm.to_dict()["per_class"]["3"] == {"IoU": None, "Acc": None}
    # predicted but absent from gt: IoU 0 (union > 0), counts in the mean; accuracy NaN
    cm2 = ConfusionMatrix(2).update(np.array([[0, 1]]), np.array([[0, 0]]))
    np.testing.assert_allclose(cm2.iou_per_class(), [0.5, 0.0])
    assert cm2.miou() == pytest.approx(0.25)
    assert math.isnan(cm2.accuracy_per_class()[1]) and cm2.mean_class_accuracy() == pytest.approx(0.5)
    assert math.isnan(ConfusionMatrix(2).miou())


def test_confusion_matrix_bad_labels():
    cm = ConfusionMatrix(3)
    with pytest.raises(InputError, match=r"gt_labels .*\[3, 7\]"):
        cm.update(np.zeros((2, 3), int), np.array([[0, 3, 7], [255, 1, 2]]))
    with pytest.raises(InputError, match=r"gt_labels .*\[-1\]"):
        cm.update(np.zeros((1, 2), int), np.array([[0, -1]]))
    with pytest.raises(InputError, match=r"pred_labels .*\[5\]"):
        cm.update(np.array([[0, 5]]), np.array([[0, 1]]))
    with pytest.raises(InputError, match="same shape"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(InputError, match="integer"):
        cm.update(np.zeros((2, 2), float), np.zeros((2, 2), int))
    with pytest.raises(InputError, match="3 names"):
        cm.to_dict(["a"])
    assert cm.matrix.sum() == 0  # nothing was added by the failed updates


# -- DAVIS J ---------------------------------------------------------------------------------
def test_db_eval_iou_with_void_and_empty():
    gt = np.zeros((4, 4), bool)
    gt[0:2, 0:2] = True  # 4 px
    seg = np.zeros((4, 4), bool)
    seg[0:2, 1:3] = True  # 4 px, overlap 2
    assert db_eval_iou(gt, seg) == pytest.approx(2 / 6)
    void = np.zeros((4, 4), bool)
    void[:, 2] = True  # removes seg's 2 px in column 2
    assert db_eval_iou(gt, seg, void) == pytest.approx(2 / 4)
    z = np.zeros((4, 4), bool)
    assert db_eval_iou(z, z) == 1.0
    assert db_eval_iou(gt, z) == 0.0
    j = db_eval_iou(np.stack([gt, z, gt]), np.stack([seg, z, z]))
    assert j.shape == (3,)
    np.testing.assert_allclose(j, [1 / 3, 1.0, 0.0])


# -- DAVIS F ---------------------------------------------------------------------------------
H, W = 480, 854  # ceil(0.008 * sqrt(480^2 + 854^2)) = ceil(7.84) = 8 px tolerance


def _rect(dx: int = 0) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[100:300, 200 + dx:500 + dx] = True  # rows 100..299, cols 200+dx..499+dx
    return m


def test_seg2bmap_outline_is_offset_towards_origin():
    b = seg2bmap(_rect())
    # the boundary is the outline of rows 99..299 x cols 199..499: 2*301 + 2*201 - 4 pixels
    assert b.sum() == 1000
    assert b[99, 199] and b[299, 499] and b[99, 499] and b[299, 199]
    assert not b[100, 200] and not b[300, 500]
    assert b[150, 199] and b[150, 499] and not b[150, 500]


def test_boundary_f_shift_inside_tolerance_is_perfect():
    assert db_eval_boundary(_rect(), _rect(5)) == pytest.approx(1.0)
    assert db_eval_boundary(_rect(), _rect(8)) == pytest.approx(1.0)  # exactly at the 8-px tolerance


def test_boundary_f_shift_outside_tolerance():
    # Shift by 20 px. Predicted outline (1000 px): top and bottom edges (cols 219..519)
    # match where col <= 499 + 8 -> 289 px each; left side (col 219, rows 100..298) matches
    # within 8 rows of the gt top/bottom edges -> 8 + 8; right side (col 519) never.
    # Precision = 594/1000 and, by symmetry, recall = 594/1000, so F = 0.594.
    assert db_eval_boundary(_rect(), _rect(20)) == pytest.approx(0.594)
    # with a tolerance given in pixels (bound_th >= 1) of 20, the same shift is perfect
    assert db_eval_boundary(_rect(), _rect(20), bound_th=20) == pytest.approx(1.0)


def test_boundary_f_empty_conventions_and_stack():
    z = np.zeros((H, W), bool)
    assert db_eval_boundary(z, z) == 1.0  # both empty
    assert db_eval_boundary(_rect(), z) == 0.0  # nothing predicted: P 1, R 0
    assert db_eval_boundary(z, _rect()) == 0.0  # nothing to find: P 0, R 1
    f = db_eval_boundary(np.stack([_rect(), z]), np.stack([_rect(20), z]))
    assert f.shape == (2,)
    np.testing.assert_allclose(f, [0.594, 1.0])


def test_boundary_f_void_pixels_clear_the_masks():
    void = np.zeros((H, W), bool)
    void[:, 400:] = True  # cuts both rectangles to cols ..399: prediction (shifted 20) now ends there too
    # outlines: gt rows 99..299 x cols 199..399 (800 px), prediction rows 99..299 x cols 219..399
    # (760 px). Predicted matched: top/bottom 181 each, the shared right side 199, left side
    # 8 + 8 = 577. Gt matched: top/bottom cols 211..399 -> 189 each, right side 199 = 577.
    # F = 2PR/(P+R) with P = 577/760, R = 577/800 -> 2 * 577 / (760 + 800)
    f = db_eval_boundary(_rect(), _rect(20), void)
    assert f == pytest.approx(2 * 577 / 1560)
    assert db_eval_boundary(_rect(), _rect(), void) == pytest.approx(1.0)


# -- statistics and sequences ------------------------------------------------------------------
def test_db_statistics_by_hand():
    x = np.array([1.0, 0.9, 0.8, 0.4, 0.3, 0.2, 0.6, 0.1])
    # ids = round(linspace(1, 8, 5) + 1e-10) - 1 = round([1, 2.75, 4.5, 6.25, 8]) - 1 = [0, 2, 4, 5, 7]
    # bin 0 = x[0:3] -> 0.9, bin 3 = x[5:8] -> 0.3
    mean, recall, decay = db_statistics(x)
    assert mean == pytest.approx(4.3 / 8)
    assert recall == pytest.approx(4 / 8)  # 1.0, 0.9, 0.8, 0.6
    assert decay == pytest.approx(0.6)
    # NaN: ignored by the mean and decay, a miss for recall
    m, r, d = db_statistics([np.nan, 1.0, 0.0])
    assert m == pytest.approx(0.5) and r == pytest.approx(1 / 3)
    # 3 values: ids = round([1, 1.5, 2, 2.5, 3] + 1e-10) - 1 = [0, 1, 1, 2, 2]; bins x[0:2], x[2:3]
    assert d == pytest.approx(1.0 - 0.0)
    assert all(math.isnan(v) for v in db_statistics([]))


def _sequence(T: int = 4):
    gt = np.zeros((T, 20, 20), bool)
    gt[:, 5:15, 5:15] = True
    pred = gt.copy()
    pred[0] = False  # the first and the last frames are wrong
    pred[-1] = False
    return gt, pred


def test_semi_supervised_skips_first_and_last_frames():
    gt, pred = _sequence()
    semi = evaluate_video_object(gt, pred)
    assert semi["frames"].tolist() == [1, 2]
    assert semi["J_mean"] == 1.0 and semi["F_mean"] == 1.0 and semi["JF_mean"] == 1.0
    full = evaluate_video_object(gt, pred, skip_first_last=False)
    np.testing.assert_allclose(full["J"], [0, 1, 1, 0])
    assert full["J_mean"] == 0.5 and full["J_recall"] == 0.5 and full["F_mean"] == 0.5
    # ids = round([1, 1.75, 2.5, 3.25, 4] + 1e-10) - 1 = [0, 1, 2, 2, 3]: bin 0 = J[0:2] = [0, 1],
    # bin 3 = J[2:4] = [1, 0] -> decay 0.5 - 0.5 = 0
    assert full["J_decay"] == pytest.approx(0.0)
    pred[1] = False  # now bin 0 = [0, 0] -> decay 0 - 0.5
    assert evaluate_video_object(gt, pred, skip_first_last=False)["J_decay"] == pytest.approx(-0.5)
    with pytest.raises(InputError, match="at least 3 frames"):
        evaluate_video_object(gt[:2], pred[:2])


def test_evaluate_video_object_void():
    gt, pred = _sequence(3)
    pred[1, 5:15, 5:10] = False  # half the object missing in the scored frame ...
    void = np.zeros_like(gt)
    void[1, :, 5:10] = True  # ... but that half is void
    assert evaluate_video_object(gt, pred)["J"].tolist() == [0.5]
    assert evaluate_video_object(gt, pred, void)["J"].tolist() == [1.0]


def test_jf_summary_means_over_objects():
    a = dict(J_mean=0.8, J_recall=1.0, J_decay=0.1, F_mean=0.6, F_recall=0.5, F_decay=0.2)
    b = dict(J_mean=0.4, J_recall=0.0, J_decay=0.3, F_mean=0.2, F_recall=0.5, F_decay=0.0)
    s = jf_summary([a, b])
    assert s["J-Mean"] == pytest.approx(0.6) and s["F-Mean"] == pytest.approx(0.4)
    assert s["J&F-Mean"] == pytest.approx(0.5)
    assert s["J-Recall"] == pytest.approx(0.5) and s["F-Recall"] == pytest.approx(0.5)
    assert s["J-Decay"] == pytest.approx(0.2) and s["F-Decay"] == pytest.approx(0.1)
    assert list(s) == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    gt, pred = _sequence()
    assert jf_summary([evaluate_video_object(gt, pred)])["J&F-Mean"] == 1.0
    with pytest.raises(InputError):
        jf_summary([])
    with pytest.raises(InputError, match="missing"):
        jf_summary([{"J_mean": 1.0}])


def test_confusion_matrix_without_ignore_index():
    cm = ConfusionMatrix(3, ignore_index=None)
    with pytest.raises(InputError, match=r"\[255\]"):
        cm.update(P3, G3)  # 255 is now an unknown class
    cm.update(P3, np.where(G3 == 255, 2, G3))  # (1,1) is now a counted class-2 pixel, predicted 2
    np.testing.assert_allclose(cm.iou_per_class(), [1 / 3, 1 / 3, 1.0])
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)


def test_confusion_matrix_counts_unlabeled_predictions_as_misses():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[0, 255, 1, 1], [0, 0, 255, 0]])
    cm = ConfusionMatrix(2, ignore_index=None, unlabeled=255).update(pred, gt)
    assert cm.missed.tolist() == [1, 1]
    # class 0: TP 3, FP 1 (a class-1 pixel called 0), FN 1 (missed) -> 3/5; class 1: TP 2, FP 0, FN 2 -> 2/4
    np.testing.assert_allclose(cm.iou_per_class(), [3 / 5, 2 / 4])
    assert cm.pixel_accuracy() == pytest.approx(5 / 8)
    np.testing.assert_allclose(cm.accuracy_per_class(), [3 / 4, 2 / 4])
    with pytest.raises(InputError, match="pred_labels must be in"):
        ConfusionMatrix(2, ignore_index=None).update(pred, gt)
    with pytest.raises(InputError, match="must not be a class id"):
        ConfusionMatrix(3, unlabeled=1)

"""Polygons, box/mask geometry, NMS and small-region cleanup."""

from __future__ import annotations

import numpy as np
import pytest

from anyseg.errors import InputError
from anyseg.masks import (
    batched_nms, box_area, box_iou, clean_masks, clip_boxes, mask_iou, mask_nms, mask_to_polygons,
    nms, polygons_to_mask, remove_small_regions, xywh_to_xyxy, xyxy_to_xywh,
)
from anyseg.types import Masks


def disc(h=100, w=120, cx=60, cy=50, r=30):
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 < r**2


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


# -- polygons ---------------------------------------------------------------------------
def test_polygon_round_trip_disc():
    m = disc()
    polys = mask_to_polygons(m)
    assert len(polys) == 1 and len(polys[0]) % 2 == 0
    back = polygons_to_mask(polys, *m.shape)
    assert iou(back, m) > 0.95
    np.testing.assert_array_equal(back, m)  # the pixel-edge outline is exact
    simplified = mask_to_polygons(m, tolerance=1.0)
    assert len(simplified[0]) < len(polys[0])
    assert iou(polygons_to_mask(simplified, *m.shape), m) > 0.95


def test_polygons_pixel_edges_parts_and_holes():
    m = np.zeros((10, 12), bool)
    m[2:6, 3:7] = True
    m[8, 10] = True  # single pixel
    polys = mask_to_polygons(m)
    assert len(polys) == 2  # largest first
    xs, ys = polys[0][0::2], polys[0][1::2]
    assert (min(xs), min(ys), max(xs), max(ys)) == (3, 2, 7, 6)
    assert sorted(zip(polys[1][0::2], polys[1][1::2])) == [(10, 8), (10, 9), (11, 8), (11, 9)]
    assert mask_to_polygons(m, min_area=2.0) == polys[:1]
    np.testing.assert_array_equal(polygons_to_mask(polys, 10, 12), m)
    holed = disc()
    holed[45:55, 55:65] = False
    assert polygons_to_mask(mask_to_polygons(holed), *holed.shape)[50, 60]  # holes are filled
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []


def test_random_blobs_round_trip_exactly():
    import cv2

    rng = np.random.default_rng(3)
    for _ in range(30):
        h, w = rng.integers(4, 50, 2)
        m = cv2.GaussianBlur(rng.random((h, w)), (0, 0), rng.uniform(0.5, 2.5)) > 0.5
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        filled = np.zeros((h, w), np.uint8)
        cv2.drawContours(filled, contours, -1, 1, -1)  # no holes
        np.testing.assert_array_equal(polygons_to_mask(mask_to_polygons(filled), h, w), filled > 0)


def test_polygons_to_mask_inputs():
    assert not polygons_to_mask([], 4, 4).any()
    assert not polygons_to_mask([[0, 0, 3, 3]], 4, 4).any()  # 2 points: ignored (not a box)
    tri = polygons_to_mask([np.array([[0, 0], [4, 0], [0, 4]])], 4, 4)
    assert tri[0, 0] and not tri[3, 3]
    with pytest.raises(InputError, match="even"):
        polygons_to_mask([[0, 0, 1, 1, 2]], 4, 4)
    with pytest.raises(InputError, match="2-D"):
        mask_to_polygons(np.zeros((2, 2, 2)))


# -- boxes ------------------------------------------------------------------------------
def test_box_iou_hand_computed():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 5, 5]], np.float32)
    got = box_iou(a, b)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, [[1 / 7, 1, 0], [0, 0.25, 0]], rtol=1e-6)
    np.testing.assert_allclose(box_area(a), [4, 1])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_box_conversions_and_clip():
    xyxy = np.array([[1, 2, 4, 8]], np.float32)
    np.testing.assert_array_equal(xyxy_to_xywh(xyxy), [[1, 2, 3, 6]])
    np.testing.assert_array_equal(xywh_to_xyxy(xyxy_to_xywh(xyxy)), xyxy)
    np.testing.assert_array_equal(clip_boxes([[-3, -1, 50, 7]], (5, 10)), [[0, 0, 10, 5]])
    with pytest.raises(InputError, match="N, 4"):
        box_area(np.zeros((3, 3)))


def test_mask_iou_hand_computed():
    a = np.zeros((2, 4, 4), bool)
    a[0, :2, :2] = True  # 4 px
    b = np.zeros((3, 4, 4), bool)
    b[0, :2, :] = True  # 8 px, overlaps a0 in 4
    b[1, 2:, 2:] = True  # disjoint
    got = mask_iou(a, b)
    np.testing.assert_allclose(got, [[0.5, 0, 0], [0, 0, 0]])  # empty vs empty -> 0
    np.testing.assert_allclose(mask_iou(Masks(a), Masks(a)), [[1, 0], [0, 0]])
    with pytest.raises(InputError, match="one size"):
        mask_iou(a, np.zeros((1, 3, 4), bool))


def test_mask_iou_chunked(monkeypatch):
    from anyseg.masks import boxes as boxes_mod

    rng = np.random.default_rng(0)
    a, b = rng.random((5, 9, 7)) > 0.5, rng.random((3, 9, 7)) > 0.5
    full = mask_iou(a, b)
    monkeypatch.setattr(boxes_mod, "_IOU_CHUNK_PIXELS", 10)  # 7 chunks of 10 pixels
    np.testing.assert_allclose(mask_iou(a, b), full, rtol=1e-6)
    fa, fb = a.reshape(5, -1), b.reshape(3, -1)
    ref = (fa[:, None] & fb[None]).sum(-1) / (fa[:, None] | fb[None]).sum(-1)
    np.testing.assert_allclose(full, ref, rtol=1e-6)


# -- NMS --------------------------------------------------------------------------------
def _ref_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(box_iou(boxes[i : i + 1], boxes[k : k + 1])[0, 0] <= thr for k in keep):
            keep.append(i)
    return keep


def test_nms_order_and_suppression():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.8, 0.9, 0.5, 0.7], np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [1, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.99), [1, 0, 3, 2])
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).dtype == np.int64


def test_nms_ties_and_strict_threshold():
    boxes = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 1], [10, 10, 12, 12]], np.float32)
    scores = np.array([0.5, 0.5, 0.5, 0.5], np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.9), [0, 2, 3])  # ties: lower index first
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [0, 2, 3])  # IoU == 0.5 is kept
    np.testing.assert_array_equal(nms(boxes, scores, 0.49), [0, 3])


def test_nms_matches_reference_on_random_boxes():
    rng = np.random.default_rng(5)
    for _ in range(10):
        xy = rng.uniform(0, 50, (40, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 30, (40, 2))], 1).astype(np.float32)
        scores = rng.integers(0, 5, 40).astype(np.float32)  # many ties
        assert nms(boxes, scores, 0.3).tolist() == _ref_nms(boxes, scores, 0.3)


def test_batched_nms():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    idxs = np.array([0, 0, 1, 1])
    np.testing.assert_array_equal(batched_nms(boxes, scores, idxs, 0.5), [3, 0, 2])
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.zeros(4, int), 0.5), [3, 0])
    rng = np.random.default_rng(2)
    xy = rng.uniform(-20, 50, (60, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 30, (60, 2))], 1).astype(np.float32)
    scores = rng.random(60).astype(np.float32)
    idxs = rng.integers(0, 3, 60)
    offset = idxs[:, None] * (boxes.max() + 1)  # torchvision's coordinate trick, as reference
    np.testing.assert_array_equal(batched_nms(boxes, scores, idxs, 0.4), nms(boxes + offset, scores, 0.4))
    with pytest.raises(InputError, match="idxs"):
        batched_nms(boxes, scores, idxs[:3], 0.4)


def test_mask_nms_keeps_higher_scores():
    m = np.zeros((3, 10, 10), bool)
    m[0, :5, :5] = True
    m[1, :5, :6] = True  # IoU with 0: 25/30
    m[2, 6:, 6:] = True
    masks = Masks(m, scores=[0.6, 0.9, 0.1], labels=np.array(["a", "b", "c"]))
    kept = mask_nms(masks, 0.7)
    assert kept.labels.tolist() == ["b", "c"]
    assert mask_nms(masks, 0.9).labels.tolist() == ["b", "a", "c"]
    assert len(mask_nms(Masks.empty(4, 4), 0.5)) == 0


# -- cleanup ----------------------------------------------------------------------------
def _holed_mask():
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5, 5] = False  # 1-pixel hole
    m[7:10, 7:10] = False  # 9-pixel hole
    m[16, 16] = True  # 1-pixel island
    m[15:18, 1:4] = True  # 9-pixel island
    return m


def test_remove_small_regions_holes():
    m = _holed_mask()
    out, changed = remove_small_regions(m, 5, "holes")
    assert changed and out[5, 5] and not out[8, 8]
    assert (out ^ m).sum() == 1
    out, changed = remove_small_regions(m, 20, "holes")
    assert changed and out[8, 8] and out[5, 5] and not out[0, 0]
    same, changed = remove_small_regions(m, 1, "holes")
    assert not changed and np.array_equal(same, m)


def test_remove_small_regions_islands():
    m = _holed_mask()
    out, changed = remove_small_regions(m, 5, "islands")
    assert changed and not out[16, 16] and out[16, 2] and out[3, 3]
    out, changed = remove_small_regions(m, 10, "islands")
    assert changed and not out[16, 2] and out[3, 3]
    out, changed = remove_small_regions(m, 1000, "islands")  # all small: keep the largest
    assert changed and out[3, 3] and not out[16, 2] and not out[16, 16]
    out, changed = remove_small_regions(np.zeros((5, 5), bool), 10, "islands")
    assert not changed and not out.any()
    diag = np.eye(4, dtype=bool)  # 8-connected: one region of 4 pixels
    assert not remove_small_regions(diag, 4, "islands")[1]
    with pytest.raises(InputError, match="holes"):
        remove_small_regions(m, 5, "both")


def test_clean_masks_recomputes_boxes_and_keeps_columns():
    m = _holed_mask()
    masks = Masks(np.stack([m, m]), scores=[0.3, 0.7], labels=np.array(["x", "y"]), data={"k": np.array([1, 2])})
    out = clean_masks(masks, 10)
    assert out.masks[0][8, 8] and not out.masks[0][16, 2] and not out.masks[0][16, 16]
    np.testing.assert_array_equal(out.boxes[0], [2, 2, 12, 12])
    assert out.scores.tolist() == pytest.approx([0.3, 0.7])
    assert out.labels.tolist() == ["x", "y"] and out.data["k"].tolist() == [1, 2]
    assert clean_masks(masks, 0) is masks

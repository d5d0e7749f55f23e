"""PNG, COCO and YOLO exports, and atomic writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from anyseg.errors import InputError
from anyseg.io import atomic, export
from anyseg.masks import mask_iou
from anyseg.types import Masks, Prompt


def _masks():
    yy, xx = np.mgrid[:48, :64]
    m = np.zeros((3, 48, 64), bool)
    m[0] = (xx - 20) ** 2 + (yy - 20) ** 2 < 12**2
    m[0, 18:22, 18:22] = False  # a hole
    m[1, 10:40, 25:60] = True  # overlaps mask 0
    m[2, 44:46, 2:4] = True
    m[2, 40, 60] = True  # second, smaller part
    return Masks(m, scores=[0.9, 0.5, 0.7])


def test_save_mask_pngs(tmp_path):
    masks = _masks()
    paths = export.save_mask_pngs(masks, tmp_path / "out", "img")
    assert [p.name for p in paths] == ["img_mask0.png", "img_mask1.png", "img_mask2.png"]
    for p, m in zip(paths, masks.masks):
        im = Image.open(p)
        assert im.mode == "L"
        arr = np.asarray(im)
        assert set(np.unique(arr)) <= {0, 255}
        np.testing.assert_array_equal(arr == 255, m)
    with pytest.raises(InputError, match="stem"):
        export.save_mask_pngs(masks, tmp_path, "a/b")


def test_save_indexed_png_values_and_overlap(tmp_path):
    masks = _masks()
    path = export.save_indexed_png(masks, tmp_path / "idx.png")
    im = Image.open(path)
    assert im.mode == "P"
    pal = np.asarray(im.getpalette()[:9]).reshape(3, 3)
    np.testing.assert_array_equal(pal, [[0, 0, 0], [128, 0, 0], [0, 128, 0]])
    arr = np.asarray(im)
    assert arr[0, 0] == 0 and arr[45, 3] == 3 and arr[35, 50] == 2
    assert arr[20, 28] == 1  # overlap of 0 (score 0.9) and 1 (score 0.5): mask 0 wins
    swapped = masks.with_columns(scores=[0.1, 0.5, 0.7])
    arr = np.asarray(Image.open(export.save_indexed_png(swapped, tmp_path / "b.png", ids=[7, 9, 11])))
    assert arr[20, 28] == 9 and arr[45, 3] == 11
    assert set(np.unique(arr)) == {0, 7, 9, 11}
    with pytest.raises(InputError, match="255"):
        export.save_indexed_png(masks, tmp_path / "c.png", ids=[1, 2, 256])
    with pytest.raises(InputError, match="3 values"):
        export.save_indexed_png(masks, tmp_path / "c.png", ids=[1, 2])
    assert not (tmp_path / "c.png").exists()


def test_save_overlay_png(tmp_path):
    image = np.full((48, 64, 3), 50, np.uint8)
    path = export.save_overlay_png(image, _masks(), tmp_path / "ov.png", prompt=Prompt(points=[[5, 5]]))
    arr = np.asarray(Image.open(path))
    assert arr.shape == (48, 64, 3) and arr.dtype == np.uint8
    assert not np.array_equal(arr[30, 40], image[30, 40])


def _load_coco(d, tmp_path):
    from pycocotools.coco import COCO

    path = export.save_coco(d, tmp_path / "coco.json")
    return COCO(str(path))


def test_to_coco_rle_loads_and_reproduces_masks(tmp_path):
    masks = _masks()
    d = export.to_coco(masks, image_id=7, file_name="img.png", start_ann_id=10)
    json.dumps(d)
    assert d["images"] == [{"id": 7, "file_name": "img.png", "height": 48, "width": 64}]
    assert d["categories"] == [{"id": 1, "name": "object"}]
    coco = _load_coco(d, tmp_path)
    ann_ids = coco.getAnnIds(imgIds=[7])
    assert ann_ids == [10, 11, 12]
    for ann_id, m in zip(ann_ids, masks.masks):
        ann = coco.loadAnns(ann_id)[0]
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), m)
        assert ann["area"] == int(m.sum()) and ann["iscrowd"] == 0
        ys, xs = np.nonzero(m)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert coco.loadAnns(10)[0]["score"] == pytest.approx(0.9)


def test_to_coco_polygons_and_categories(tmp_path):
    masks = _masks().with_columns(labels=np.array(["cat", "dog", "cat"]))
    d = export.to_coco(masks, 1, "a.jpg", polygons=True)
    assert d["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert [a["category_id"] for a in d["annotations"]] == [1, 2, 1]
    assert all(isinstance(a["segmentation"], list) for a in d["annotations"])
    coco = _load_coco(d, tmp_path)
    back = np.stack([coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds())]).astype(bool)
    ious = np.diag(mask_iou(back, masks.masks))
    assert ious[1] == 1.0 and ious.min() > 0.95  # lossy only where there is a hole
    assert back[0, 20, 20] and not masks.masks[0, 20, 20]  # polygons cannot keep the hole
    cats = [{"id": 3, "name": "thing"}, {"id": 5, "name": "stuff"}]
    d = export.to_coco(_masks(), 1, "a.jpg", categories=cats, category_ids=[5, 3, 5])
    assert [a["category_id"] for a in d["annotations"]] == [5, 3, 5]
    with pytest.raises(InputError, match="not among"):
        export.to_coco(_masks(), 1, "a.jpg", categories=cats, category_ids=[1, 3, 5])
    with pytest.raises(InputError, match="3 values"):
        export.to_coco(_masks(), 1, "a.jpg", category_ids=[1])


def test_to_yolo_seg(tmp_path):
    masks = _masks()
    text = export.to_yolo_seg(masks, class_ids=[0, 2, 1])
    lines = text.strip().splitlines()
    assert len(lines) == 3  # one line per instance (largest part)
    for line, cls in zip(lines, [0, 2, 1]):
        parts = line.split()
        assert int(parts[0]) == cls
        coords = np.array([float(v) for v in parts[1:]])
        assert len(coords) % 2 == 0 and len(coords) >= 6
        assert coords.min() >= 0 and coords.max() <= 1
        assert all(len(v.split(".")[1]) == 6 for v in parts[1:])
    xs, ys = np.array(lines[2].split()[1::2], float) * 64, np.array(lines[2].split()[2::2], float) * 48
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == pytest.approx((2, 4, 44, 46))  # largest part
    path = export.save_yolo_seg(masks, tmp_path / "labels" / "img.txt")
    assert path.read_text() == export.to_yolo_seg(masks)
    assert export.to_yolo_seg(Masks.empty(5, 5)) == ""
    with pytest.raises(InputError, match="class_ids"):
        export.to_yolo_seg(masks, class_ids=[0])


def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "coco.json"
    target.write_text("old content")

    class Boom(RuntimeError):
        pass

    real_fsync = os.fsync

    def failing_fsync(fd):  # fails after the data were partly written
        raise Boom("disk full")

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(Boom):
        export.save_coco(export.to_coco(_masks(), 1, "a.png"), target)
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    assert target.read_text() == "old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco.json"]

    def failing_png(*args, **kwargs):
        raise Boom("encoder crashed")

    monkeypatch.setattr(export, "png_bytes", failing_png)
    with pytest.raises(Boom):
        export.save_mask_pngs(_masks(), tmp_path, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco.json"]


def test_atomic_write_success_leaves_only_target(tmp_path):
    export.save_yolo_seg(_masks(), tmp_path / "a.txt")
    export.save_indexed_png(_masks(), tmp_path / "a.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.txt"]

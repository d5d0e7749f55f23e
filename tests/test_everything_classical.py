"""Classical "segment everything" (superpixels + hierarchical region merging)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_dataset

from anyseg.errors import InputError
from anyseg.tasks.everything_classical import LEVELS, METHOD, generate_classical
from anyseg.types import masks_to_boxes

H, W = 240, 320


def _shapes() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:H, :W]
    circle = (yy - 80) ** 2 + (xx - 80) ** 2 <= 50**2
    rect = (yy >= 130) & (yy < 210) & (xx >= 150) & (xx < 290)
    triangle = (yy >= 20) & (yy < 110) & (np.abs(xx - 230) <= (yy - 20) * 0.7)
    return {"circle": circle, "rect": rect, "triangle": triangle}


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    shapes = _shapes()
    image = np.empty((H, W, 3), dtype=np.float64)
    image[:] = (70, 90, 130)
    for mask, colour in zip(shapes.values(), [(210, 40, 40), (40, 170, 60), (235, 215, 60)]):
        image[mask] = colour
    noise = np.random.default_rng(0).normal(0, 10, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), shapes


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_whole_level_recovers_each_shape(synthetic):
    image, shapes = synthetic
    result = generate_classical(image, granularity="whole")
    assert result.image_size == (H, W)
    for name, shape in shapes.items():
        best = max(_iou(m, shape) for m in result.masks)
        assert best > 0.9, f"{name}: best IoU {best:.3f}"
    background = ~np.any(list(shapes.values()), axis=0)
    assert max(_iou(m, background) for m in result.masks) > 0.9


@pytest.mark.parametrize("granularity", ["whole", "part", "subpart"])
def test_level_is_a_partition(synthetic, granularity):
    image, _ = synthetic
    result = generate_classical(image, granularity=granularity)
    assert len(result) >= 4
    np.testing.assert_array_equal(result.masks.sum(axis=0), 1)  # disjoint and covering
    assert set(result.data["level"]) == {granularity}
    assert set(result.data["method"]) == {METHOD}
    assert result.scores.dtype == np.float32
    assert ((result.scores >= 0) & (result.scores <= 1)).all()
    np.testing.assert_array_equal(result.boxes, masks_to_boxes(result.masks))


def test_levels_are_nested_and_finer(synthetic):
    image, _ = synthetic
    whole, part, sub = (generate_classical(image, granularity=g) for g in ("whole", "part", "subpart"))
    assert len(whole) <= len(part) <= len(sub)
    inter = (part.masks[:, None] & whole.masks[None]).sum(axis=(2, 3))  # (parts, wholes)
    np.testing.assert_array_equal((inter > 0).sum(axis=1), 1)  # each part lies in one whole region


def test_all_is_the_deduplicated_union(synthetic):
    image, _ = synthetic
    whole = generate_classical(image, granularity="whole")
    everything = generate_classical(image)  # granularity="all"
    assert len(everything) > len(whole)
    assert set(everything.data["level"]) <= set(LEVELS)
    assert set(everything.data["level"]) >= {"whole"}
    flat = everything.masks.reshape(len(everything), -1)
    assert len(np.unique(flat, axis=0)) == len(everything)  # no identical masks
    for m in whole.masks:  # every whole region is there
        assert (flat == m.ravel()).all(axis=1).any()


def test_min_area_and_sort_order(synthetic):
    image, _ = synthetic
    full = generate_classical(image, granularity="subpart")
    areas = full.areas
    assert (np.diff(areas) <= 0).all()  # sort_by="area": descending
    threshold = int(np.median(areas)) + 1
    kept = generate_classical(image, granularity="subpart", min_area=threshold)
    assert 0 < len(kept) < len(full)
    assert (kept.areas >= threshold).all()
    assert len(generate_classical(image, min_area=H * W + 1)) == 0
    by_score = generate_classical(image, granularity="subpart", sort_by="score")
    assert (np.diff(by_score.scores) <= 0).all()
    assert len(by_score) == len(full)


def test_working_resolution_upsampled_to_full_size(synthetic):
    image, shapes = synthetic
    result = generate_classical(image, granularity="all", max_side=160)
    assert result.image_size == (H, W)
    np.testing.assert_array_equal(result.boxes, masks_to_boxes(result.masks))
    result = result[result.data["level"] == "whole"]
    np.testing.assert_array_equal(result.masks.sum(axis=0), 1)
    assert max(_iou(m, shapes["rect"]) for m in result.masks) > 0.85


def test_grey_and_float_images_are_accepted(synthetic):
    image, _ = synthetic
    assert len(generate_classical(image.mean(axis=2).astype(np.uint8), granularity="whole")) >= 1
    assert len(generate_classical(image.astype(np.float32) / 255, granularity="whole", progress=True)) >= 1
    flat = generate_classical(np.full((50, 60, 3), 128, np.uint8), granularity="all")
    assert len(flat) == 1 and flat.masks.all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image": np.zeros((10, 10, 5), np.uint8)},
        {"image": np.zeros((10,), np.uint8)},
        {"min_area": -1},
        {"granularity": "objects"},
        {"sort_by": "size"},
        {"max_side": 0},
    ],
)
def test_errors(kwargs):
    args = {"image": np.zeros((32, 32, 3), np.uint8), **kwargs}
    with pytest.raises(InputError) as err:
        generate_classical(**args)
    assert "\n" not in str(err.value)


def test_real_image_smoke():
    import cv2

    root = shared_dataset("grabcut")
    path = sorted((root / "images").glob("*.jpg"))[0]
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    result = generate_classical(image)  # (its time is in the module docstring, measured, not asserted)
    assert 2 <= len(result) <= 500
    assert result.image_size == image.shape[:2]


def test_classical_params_are_the_settings_used(synthetic, monkeypatch):
    """The run record's ``params`` (classical_params) are what SLIC and the merges receive."""
    import skimage.segmentation

    from anyseg.tasks import everything_classical as ec

    image, _ = synthetic
    seen: dict = {"merges": []}
    real_slic, real_merge = skimage.segmentation.slic, ec._merge

    def slic(img, **kw):
        seen["slic"], seen["span"], seen["shape"] = kw, float(img.max() - img.min()), img.shape[:2]
        return real_slic(img, **kw)

    def merge(lab, labels, thresh, ref_area):
        seen["merges"].append((thresh, ref_area))
        return real_merge(lab, labels, thresh, ref_area)

    monkeypatch.setattr(skimage.segmentation, "slic", slic)
    monkeypatch.setattr(ec, "_merge", merge)
    ec.generate_classical(image, max_side=160)
    p = ec.classical_params(image.shape[:2], max_side=160)
    h, w = p["working_size"]
    assert seen["shape"] == (h, w) == (120, 160)
    assert seen["slic"]["n_segments"] == p["slic"]["n_segments"]
    assert seen["slic"]["compactness"] * seen["span"] == pytest.approx(p["slic"]["compactness"])  # in Lab units
    assert seen["slic"]["enforce_connectivity"] is p["slic"]["enforce_connectivity"]
    levels = p["merge_levels"]
    assert seen["merges"] == [(v["delta_e"], v["ref_area_fraction"] * h * w) for v in levels.values()]

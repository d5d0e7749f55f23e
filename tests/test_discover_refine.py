"""Refinement of discovered masks (anyseg.discover.refine): bilateral solver and dense CRF snap to edges."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from anyseg.discover.refine import REFINERS, crf_backend, refine
from anyseg.errors import InputError
from anyseg.types import Masks

H, W = 96, 128


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """A red-tinted brick disc on green-tinted grass, and its mask."""
    grass = skimage.data.grass()[:H, :W].astype(np.float32)[..., None] / 255.0
    brick = skimage.data.brick()[100:100 + H, 100:100 + W].astype(np.float32)[..., None] / 255.0
    img = np.clip(grass * np.array([0.6, 1.2, 0.6]) * 255, 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:H, :W]
    gt = (yy - 48) ** 2 + (xx - 62) ** 2 <= 28 ** 2
    img[gt] = np.clip(brick * np.array([1.3, 0.6, 0.5]) * 255, 0, 255).astype(np.uint8)[gt]
    return img, gt


def _blocky(gt: np.ndarray, cell: int = 16) -> np.ndarray:
    """The mask as a patch grid would give it: cells of ``cell`` pixels, upsampled nearest."""
    small = cv2.resize(gt.astype(np.float32), (W // cell, H // cell), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_NEAREST) > 0.5


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_backend_is_the_fallback_here():
    assert crf_backend() in ("pydensecrf", "fallback")
    assert crf_backend() == "fallback"  # neither pydensecrf nor pydensecrf2 is a dependency


@pytest.mark.parametrize("method", ["bilateral", "crf"])
def test_blocky_object_mask_snaps_to_the_true_edge(method):
    img, gt = _scene()
    blocky = _blocky(gt)
    before = _iou(blocky, gt)
    masks = Masks(blocky[None], scores=[0.6], data={"feature": np.ones((1, 3), np.float32)})
    out = refine(img, masks, method)
    after = _iou(out.masks[0], gt)
    assert before < 0.8 and after > 0.9 and after > before
    assert out.scores.tolist() == pytest.approx([0.6]) and "feature" in out.data
    assert out.logits is None and out.boxes[0].tolist() == Masks(out.masks).boxes[0].tolist()  # boxes recomputed


@pytest.mark.parametrize("method", ["bilateral", "crf"])
def test_partition_stays_disjoint_and_covering(method):
    img, gt = _scene()
    blocky = _blocky(gt)
    third = np.zeros((H, W), bool)
    third[:, :20] = True
    segs = np.stack([~blocky & ~third, blocky & ~third, third])
    out = refine(img, Masks(segs, scores=[0.2, 0.9, 0.1], labels=[4, 7, 9]), method)
    cover = out.masks.sum(0)
    assert cover.min() == 1 and cover.max() == 1
    assert set(out.labels.tolist()) <= {4, 7, 9} and 7 in out.labels.tolist()
    obj = out.masks[out.labels.tolist().index(7)]
    assert _iou(obj, gt & ~third) > _iou(blocky & ~third, gt & ~third)


def test_none_is_the_identity_and_empty_passes_through():
    img, gt = _scene()
    masks = Masks(gt[None], scores=[0.4])
    assert refine(img, masks) is masks
    assert refine(img, masks, "none") is masks
    empty = Masks.empty(H, W)
    for method in REFINERS:
        assert len(refine(img, empty, method)) == 0


def test_large_image_works_at_a_capped_resolution():
    img, gt = _scene()
    big = cv2.resize(img, (W * 4, H * 4), interpolation=cv2.INTER_NEAREST)
    big_gt = cv2.resize(gt.astype(np.uint8), (W * 4, H * 4), interpolation=cv2.INTER_NEAREST) > 0
    out = refine(big, Masks(cv2.resize(_blocky(gt).astype(np.uint8), (W * 4, H * 4),
                                       interpolation=cv2.INTER_NEAREST)[None] > 0), "bilateral", max_side=128)
    assert out.image_size == (H * 4, W * 4) and _iou(out.masks[0], big_gt) > 0.85


def test_errors_are_one_line():
    img, gt = _scene()
    masks = Masks(gt[None])
    for call, match in [(lambda: refine(img, masks, "magic"), "unknown refinement 'magic'"),
                        (lambda: refine(img, masks, "crf", w1=-1), "positive number"),
                        (lambda: refine(img, masks, "bilateral", sigma=3), "unknown bilateral refinement option"),
                        (lambda: refine(img[:50], masks, "crf"), "masks are 128x96 but the image is 128x50"),
                        (lambda: refine(img, gt, "crf"), "refine takes Masks"),
                        (lambda: refine(img, masks, "crf", max_side=3), "max_side")]:
        with pytest.raises(InputError, match=match) as e:
            call()
        assert "\n" not in str(e.value)

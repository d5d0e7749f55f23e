"""The few-shot Python API with the classical method: references, fit once / predict many,
instances one vs all, honest scores without the object, several references, bad options.

The scenes are synthetic: textured discs ("coins", cut from scikit-image's ``chelsea``,
``astronaut`` and ``coffee`` samples) pasted on a gravel background, several copies, some rotated.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from anyseg.errors import InputError
from anyseg.fewshot import METHODS, Reference, Segmenter
from anyseg.fewshot.base import check_references
from anyseg.fewshot.classical import ClassicalMethod

H, W, R = 240, 320, 28
#: coin kinds: (scikit-image sample, top, left of the crop); "coffee" is a nearly textureless one
COINS = {"cat": ("chelsea", 60, 140), "astro": ("astronaut", 200, 100), "coffee": ("coffee", 120, 220)}


def background(h: int = H, w: int = W) -> np.ndarray:
    g = skimage.data.gravel()[:h, :w].astype(np.float32)
    return np.clip(np.stack([g * 0.55 + 40, g * 0.6 + 50, g * 0.45 + 30], -1), 0, 255).astype(np.uint8)


def coin(kind: str = "cat", r: int = R, angle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A textured disc ``(2r, 2r, 3)`` and its mask, rotated by ``angle`` degrees."""
    name, y, x = COINS[kind]
    src = getattr(skimage.data, name)()[y:y + 2 * r + 20, x:x + 2 * r + 20]
    m = cv2.getRotationMatrix2D((src.shape[1] / 2, src.shape[0] / 2), angle, 1.0)
    src = cv2.warpAffine(src, m, (src.shape[1], src.shape[0]), borderMode=cv2.BORDER_REFLECT)
    c = src.shape[0] // 2
    yy, xx = np.mgrid[:2 * r, :2 * r]
    return src[c - r:c + r, c - r:c + r], (yy - r + 0.5) ** 2 + (xx - r + 0.5) ** 2 <= r * r


def scene(coins: list[tuple[int, int, str, float]], h: int = H, w: int = W) -> tuple[np.ndarray, list[np.ndarray]]:
    """A background with coins ``(cx, cy, kind, angle)``; the image and each coin's mask."""
    img = background(h, w)
    gts = []
    for cx, cy, kind, angle in coins:
        patch, disc = coin(kind, R, angle)
        img[cy - R:cy + R, cx - R:cx + R][disc] = patch[disc]
        gt = np.zeros((h, w), bool)
        gt[cy - R:cy + R, cx - R:cx + R] = disc
        gts.append(gt)
    return img, gts


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def matched(masks: np.ndarray, gts: list[np.ndarray], least: float = 0.5) -> set[int]:
    """The ground-truth coins some mask covers at IoU > ``least``."""
    return {j for m in masks for j, g in enumerate(gts) if iou(m, g) > least}


@pytest.fixture(scope="module")
def cat_ref() -> Reference:
    img, gts = scene([(80, 90, "cat", 0.0)])
    return Reference(img, gts[0], "cat.png")


@pytest.fixture(scope="module")
def three_cats() -> tuple[np.ndarray, list[np.ndarray]]:
    return scene([(60, 60, "cat", 0.0), (180, 120, "cat", 40.0), (262, 190, "cat", -70.0)])


@pytest.fixture(scope="module")
def segmenter(cat_ref) -> Segmenter:
    return Segmenter(method="classical").fit([cat_ref])


# -- references -----------------------------------------------------------------------------

def test_reference_validation_messages():
    img = background(40, 50)
    mask = np.zeros((40, 50), bool)
    with pytest.raises(InputError, match="reference mask m.png is empty"):
        Reference(img, mask, "m.png")
    with pytest.raises(InputError, match="covers the whole image"):
        Reference(img, ~mask, "m.png")
    with pytest.raises(InputError, match="is 30x40 but its image is 50x40"):
        Reference(img, np.ones((40, 30), bool), "m.png")
    with pytest.raises(InputError, match=r"must have shape \(H, W\)"):
        Reference(img, np.ones((2, 40, 50), bool), "m.png")
    mask[10:20, 10:20] = True
    ref = Reference(img, mask.astype(np.uint8) * 255, "m.png")  # 0/255 masks are read as bool
    assert ref.mask.dtype == bool and ref.mask.sum() == 100 and ref.size == (40, 50)
    with pytest.raises(InputError, match="no reference examples"):
        check_references([])
    with pytest.raises(InputError, match="is a ndarray, not a Reference"):
        check_references([img])


def test_predict_before_fit_and_unknown_method_are_one_line_errors(three_cats):
    with pytest.raises(InputError, match="call fit"):
        Segmenter(method="classical").predict(three_cats[0])
    with pytest.raises(InputError, match="unknown few-shot method 'nope'; expected one of matcher"):
        Segmenter(method="nope")
    with pytest.raises(InputError, match="instances must be one of one, all"):
        Segmenter(method="classical", instances="some")
    assert "classical" in METHODS


# -- fit once, predict many -------------------------------------------------------------------

def test_fit_once_predict_many_masks_at_the_image_size(cat_ref, three_cats, monkeypatch):
    seg = Segmenter(method="classical")
    calls = []
    fit = seg.method.fit
    monkeypatch.setattr(seg.method, "fit", lambda refs: calls.append(len(refs)) or fit(refs))
    seg.fit([cat_ref])
    img, gts = three_cats
    small = cv2.resize(img, (200, 150), interpolation=cv2.INTER_AREA)
    for image in (img, small, img):
        masks = seg.predict(image)
        assert masks.masks.shape[1:] == image.shape[:2] and len(masks) == 1
        assert 0.0 <= float(masks.scores[0]) <= 1.0
    assert calls == [1] and seg.fits == 1  # the reference features were computed once
    assert repr(seg) == "Segmenter(method='classical', references=1, instances='one')"


def test_instances_one_vs_all_on_several_copies(segmenter, three_cats):
    img, gts = three_cats
    one = segmenter.predict(img, instances="one")
    assert len(one) == 1 and matched(one.masks, gts)
    every = segmenter.predict(img, instances="all")
    found = matched(every.masks, gts)
    assert len(found) >= 2, (every.scores, [[round(iou(m, g), 2) for g in gts] for m in every.masks])
    assert list(every.scores) == sorted(every.scores, reverse=True)  # best first
    assert (every.scores >= segmenter.method.threshold).all()
    assert float(every.scores.min()) > 0.5  # keypoints and appearance agree: confident
    for i in range(len(every)):  # NMS: no two instances are one
        assert all(iou(every.masks[i], every.masks[j]) <= 0.5 for j in range(i))
    assert set(every.data["source"]) <= {"keypoints", "colour"}
    assert int(every.data["inliers"].max()) >= 3


def test_deterministic(segmenter, three_cats):
    a = segmenter.predict(three_cats[0], instances="all")
    b = segmenter.predict(three_cats[0], instances="all")
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.scores, b.scores)


def test_no_object_scores_low(segmenter):
    """Without the object: nothing with ``all``, and at most a weak guess with ``one``."""
    flat = background()
    cv2.circle(flat, (100, 100), 30, (200, 130, 60), -1)  # the coin's colour, none of its texture
    other, _ = scene([(220, 150, "coffee", 0.0)])
    for image in (background(), flat, other, cv2.resize(skimage.data.astronaut(), (W, H))):
        one = segmenter.predict(image, instances="one")
        assert len(one) <= 1
        assert len(one) == 0 or float(one.scores[0]) < 0.3, one.scores
        assert len(segmenter.predict(image, instances="all")) == 0


def test_several_references_fuse(cat_ref):
    img, gts = scene([(90, 170, "astro", 0.0)])
    astro_ref = Reference(img, gts[0], "astro.png")
    target, tgts = scene([(70, 70, "cat", 20.0), (230, 80, "astro", 0.0), (160, 180, "astro", 90.0)])
    both = Segmenter(method="classical", instances="all").fit([cat_ref, astro_ref])
    masks = both.predict(target)
    assert matched(masks.masks, tgts) == {0, 1, 2}, masks.scores
    assert set(masks.data["reference"].tolist()) == {0, 1}  # each instance credited to its reference
    only_cat = Segmenter(method="classical", instances="all").fit([cat_ref]).predict(target)
    assert matched(only_cat.masks, tgts) == {0}


def test_colour_alone_is_capped(cat_ref):
    """A nearly textureless object (no keypoints to verify it) is found by colour, but its score
    stays at most 0.5: many things share a colour."""
    img, gts = scene([(90, 170, "coffee", 0.0)])
    seg = Segmenter(method="classical", instances="all").fit([Reference(img, gts[0], "coffee.png")])
    target, tgts = scene([(230, 80, "coffee", 0.0), (160, 180, "coffee", 90.0)])
    masks = seg.predict(target)
    assert matched(masks.masks, tgts) == {0, 1}
    colour = masks.data["source"] == "colour"
    assert colour.any() and (masks.scores[colour] <= 0.5).all(), masks.scores


# -- options ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"model": "sam-vit-base"}, "uses no model; got --model sam-vit-base"),
    ({"features": "dinov2-small"}, "uses no feature model"),
    ({"device": "cuda"}, "runs on the CPU only; got --device cuda"),
    ({"colour_bins": 3}, "unknown option(s) of the classical few-shot method: colour_bins"),
    ({"detector": "surf"}, "detector must be one of sift, orb"),
    ({"threshold": 2}, "threshold must be a number in [0, 1]"),
])
def test_classical_options_are_checked(kwargs, message):
    with pytest.raises(InputError) as e:
        ClassicalMethod.from_options(**kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_orb_detector_and_cpu_device(cat_ref, three_cats):
    seg = Segmenter(method="classical", device="cpu", detector="orb").fit([cat_ref])
    masks = seg.predict(three_cats[0], instances="one")
    assert len(masks) == 1 and masks.masks.shape[1:] == (H, W)

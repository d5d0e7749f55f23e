"""Cut-outs (anyseg.edit.cutout): trimap, closed-form matting with foreground colour, feathering."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from anyseg.edit.cutout import cutout, trimap
from anyseg.errors import InputError, ModelError
from anyseg.masks.rle import decode

FG = np.array([230.0, 40.0, 30.0])


def _soft_disc(h: int = 64, w: int = 80, ramp: float = 6.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A flat red disc whose alpha falls linearly over ``ramp`` px, composited with that known alpha
    over a textured background: (image, true alpha in 0..1, the hard mask alpha > 0.5)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    alpha = np.clip((0.3 * min(h, w) - np.hypot(yy - h / 2, xx - w / 2)) / ramp + 0.5, 0.0, 1.0)
    bg = cv2.GaussianBlur(rng.random((h, w, 3)), (0, 0), 1.5) * 255.0
    image = alpha[..., None] * FG + (1.0 - alpha[..., None]) * bg
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), alpha, alpha > 0.5


def _exact_outside_and_core(rgba: np.ndarray, mask: np.ndarray, band: int) -> None:
    tri = trimap(mask, band)
    assert (rgba[..., 3][tri == 255] == 255).all()
    assert (rgba[..., 3][tri == 0] == 0).all()


def test_matting_beats_the_hard_mask_and_decontaminates_the_edge():
    image, alpha, mask = _soft_disc()
    result = cutout(image, mask, band=6)
    rgba = result.image
    assert rgba.shape == (64, 80, 4) and rgba.dtype == np.uint8
    matted = rgba[..., 3] / 255.0
    sad, sad_hard = np.abs(matted - alpha).sum(), np.abs(mask - alpha).sum()
    mse, mse_hard = ((matted - alpha) ** 2).mean(), ((mask - alpha) ** 2).mean()
    assert sad < 0.5 * sad_hard and mse < 0.3 * mse_hard, (sad, sad_hard, mse, mse_hard)
    _exact_outside_and_core(rgba, mask, 6)
    soft = (alpha > 0.2) & (alpha < 0.8)
    bleed_in = np.abs(image[soft] - FG).mean()
    bleed_out = np.abs(rgba[..., :3][soft] - FG).mean()
    assert bleed_out < 0.6 * bleed_in, (bleed_out, bleed_in)  # the background's colour is taken out
    far = trimap(mask, 6) != 128
    assert np.array_equal(rgba[..., :3][far], image[far])
    record = result.record
    assert record["method"] == "matting" and record["band"] == 6 and record["feather"] == 0
    assert "closed-form" in record["engine"] and record["scale"] == 1.0
    assert np.array_equal(decode(record["mask"]), mask) and np.array_equal(result.mask, mask)


def test_feathering_needs_no_pymatting_and_keeps_core_and_outside_exact(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymatting", None)
    image, alpha, mask = _soft_disc()
    result = cutout(image, mask, method="feather", feather=4, band=2)
    a = result.image[..., 3]
    assert result.record["band_outer"] == 4  # the band grows to the feather's reach
    _exact_outside_and_core(result.image, mask, 4)
    assert ((a > 0) & (a < 255)).sum() > 50
    assert np.array_equal(result.image[..., :3], image)
    hard = cutout(image, mask, method="feather")
    assert np.array_equal(hard.image[..., 3] > 0, mask) and set(np.unique(hard.image[..., 3])) == {0, 255}


def test_missing_pymatting_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymatting", None)
    image, _, mask = _soft_disc()
    with pytest.raises(ModelError) as err:
        cutout(image, mask)
    text = str(err.value)
    assert "pip install 'anyseg[matting]'" in text and "--feather" in text and "\n" not in text


def test_odd_sizes_a_thin_object_and_a_full_mask():
    image, _, mask = _soft_disc(37, 53, ramp=3.0)
    result = cutout(image, mask, band=4)
    assert result.image.shape == (37, 53, 4)
    _exact_outside_and_core(result.image, mask, 4)
    thin = np.zeros((37, 53), bool)
    thin[18:21, 5:48] = True  # 3 px thick: a 10 px erosion would leave no core
    result = cutout(image, thin, band=10)
    assert result.record["band_core"] < 10 and (result.image[..., 3][thin].max() == 255)
    near = cv2.dilate(thin.astype(np.uint8), np.ones((21, 21), np.uint8)) > 0
    assert (result.image[..., 3][~near] == 0).all()
    full = cutout(image, np.ones((37, 53), bool))
    assert (full.image[..., 3] == 255).all()


def test_a_huge_unknown_band_is_matted_at_a_lower_resolution():
    image, alpha, mask = _soft_disc()
    result = cutout(image, mask, band=6, max_unknown=300)
    assert result.record["scale"] < 1.0
    _exact_outside_and_core(result.image, mask, 6)
    matted = result.image[..., 3] / 255.0
    assert np.abs(matted - alpha).sum() < np.abs(mask - alpha).sum()


def test_trimap_values_and_band_zero():
    mask = np.zeros((20, 30), bool)
    mask[5:15, 8:22] = True
    tri = trimap(mask, 2)
    assert set(np.unique(tri)) == {0, 128, 255}
    assert (tri[mask] > 0).all() and (tri[7:13, 10:20] == 255).all() and tri[0, 0] == 0
    assert np.array_equal(trimap(mask, 0) == 255, mask)
    image = np.full((20, 30, 3), 90, np.uint8)
    hard = cutout(image, mask, band=0)
    assert np.array_equal(hard.image[..., 3] == 255, mask) and np.array_equal(hard.image[..., 3] == 0, ~mask)


@pytest.mark.parametrize("kwargs, words", [
    ({"mask": np.zeros((10, 12), bool)}, "empty"),
    ({"mask": np.ones((11, 12), bool)}, "12x11"),
    ({"method": "grabcut"}, "method"),
    ({"band": -1}, "--band"),
    ({"feather": 1.5}, "--feather"),
    ({"image": np.zeros((10, 12, 3, 1), np.uint8)}, "image must have shape"),
    ({"max_unknown": 0}, "max_unknown"),
])
def test_bad_inputs_are_one_line_input_errors(kwargs, words):
    args = {"image": np.zeros((10, 12, 3), np.uint8), "mask": np.eye(10, 12, dtype=bool)}
    args.update(kwargs)
    with pytest.raises(InputError) as err:
        cutout(**args)
    assert words in str(err.value) and "\n" not in str(err.value)

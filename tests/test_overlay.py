"""Palette, overlays and prompt drawing."""

from __future__ import annotations

import numpy as np
import pytest

from anyseg.errors import InputError
from anyseg.masks import draw_prompt, overlay, palette
from anyseg.types import Masks, Prompt


def _scene():
    image = np.full((60, 80, 3), 100, np.uint8)
    m = np.zeros((2, 60, 80), bool)
    m[0, 5:50, 5:60] = True  # large
    m[1, 20:30, 20:30] = True  # small, inside the large one
    return image, Masks(m, scores=[0.9, 0.8])


def test_palette_deterministic_and_distinct():
    p = palette(20)
    assert p.shape == (20, 3) and p.dtype == np.uint8
    np.testing.assert_array_equal(p, palette(20))
    assert len({tuple(c) for c in p}) == 20
    assert not np.array_equal(palette(5, seed=1), palette(5))
    assert palette(0).shape == (0, 3)


def test_overlay_changes_masked_pixels_only():
    image, masks = _scene()
    before = image.copy()
    out = overlay(image, masks, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)  # input untouched
    assert not np.array_equal(out[40, 40], image[40, 40])  # inside the large mask
    np.testing.assert_array_equal(out[57, 75], image[57, 75])  # outside every mask
    # the small mask is drawn after (on top of) the large one
    colors = palette(2)
    inner = out[25, 25].astype(int)
    assert np.abs(inner - colors[1]).sum() < np.abs(inner - colors[0]).sum()


def test_overlay_options_and_errors():
    image, masks = _scene()
    red = overlay(image, masks, alpha=1.0, colors=np.array([[255, 0, 0], [255, 0, 0]]), contours=False)
    np.testing.assert_array_equal(red[40, 40], [255, 0, 0])
    np.testing.assert_array_equal(overlay(image, Masks.empty(60, 80)), image)
    assert overlay(image[:, :, 0], masks).shape == (60, 80, 3)
    with pytest.raises(InputError, match="same size"):
        overlay(image[:50], masks)
    with pytest.raises(InputError, match="alpha"):
        overlay(image, masks, alpha=1.5)
    with pytest.raises(InputError, match="colors"):
        overlay(image, masks, colors=np.zeros((1, 3)))
    with pytest.raises(InputError, match="uint8"):
        overlay(image.astype(np.float32), masks)


def test_draw_prompt():
    image = np.zeros((100, 100, 3), np.uint8)
    prompt = Prompt(points=[[20, 20], [70, 70]], labels=[1, 0], box=[10, 10, 90, 90])
    out = draw_prompt(image, prompt)
    assert not image.any()  # input untouched
    assert out.shape == image.shape and out.dtype == np.uint8
    r, g, b = out[20, 20]
    assert g > 150 and r < 50  # positive point: green
    r, g, b = out[70, 70]
    assert r > 150 and g < 50  # negative point: red
    assert out[10, 50].any()  # box edge drawn
    assert not out[50, 50].any()

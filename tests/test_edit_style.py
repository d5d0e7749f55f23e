"""Region style transfer (``anyseg edit style``) on a synthetic content / style pair.

What is checked: Reinhard's transfer gives the region the style's Lab means and deviations;
histogram matching gives it the style's per-channel CDFs; the guided-filter texture step raises the
region's high-frequency energy toward the style's and follows He et al.'s filter; every pixel outside
the mask is bit-identical, strength 0 is the identity inside too, and the seam is feathered; the
generative engine (the tiny inpainting pipeline, 2 steps) needs a prompt and is reproducible; bad
style images and options are one-line errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from anyseg.edit.style import METHODS, guided_filter, style
from anyseg.errors import InputError

H, W = 64, 96


def _content() -> np.ndarray:
    """A smooth content image: colour ramps, no texture."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([40 + xx, 80 + yy, 60 + (xx + yy) // 2], -1).clip(0, 255).astype(np.uint8)


def _style() -> np.ndarray:
    """A warm, grainy style image (48 x 40): orange with strong fine noise and stripes."""
    rng = np.random.default_rng(1)
    img = np.zeros((40, 48, 3), np.float32)
    img[...] = (200, 90, 40)
    img[:, ::4] += 35
    img += rng.normal(0, 18, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _mask() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[10:54, 20:80] = True
    return m


def _lab(img: np.ndarray, where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    lab = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    pixels = lab[where] if where is not None else lab.reshape(-1, 3)
    return pixels.mean(0), pixels.std(0)


def _hf(img: np.ndarray, where: np.ndarray | None = None) -> float:
    """High-frequency energy: mean squared difference from a Gaussian blur (sigma 1.5)."""
    import cv2

    x = img.astype(np.float32)
    d = (x - cv2.GaussianBlur(x, (0, 0), 1.5)) ** 2
    return float((d[where] if where is not None else d.reshape(-1, 3)).mean())


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert text and "\n" not in text
    return text


def test_reinhard_matches_the_styles_lab_statistics():
    content, mask = _content(), _mask()
    result = style(content, mask, _style(), method="reinhard", feather=0)
    mu, sd = _lab(result.image, mask)
    mu_s, sd_s = _lab(_style())
    assert np.abs(mu - mu_s).max() < 1.5, (mu, mu_s)
    assert np.all(np.abs(sd - sd_s) < 0.12 * sd_s + 0.5), (sd, sd_s)
    mu_c, _ = _lab(content, mask)
    assert np.abs(mu_c - mu_s).max() > 20  # the pair differs: the match is the transfer's doing
    assert result.record["method"] == "reinhard" and result.record["strength"] == 1.0


def test_histogram_matching_matches_the_cdfs():
    content, mask = _content(), _mask()
    out = style(content, mask, _style(), method="histogram", feather=0).image
    for c in range(3):
        region = np.bincount(out[mask][:, c], minlength=256).cumsum() / mask.sum()
        ref = np.bincount(_style()[..., c].ravel(), minlength=256).cumsum() / _style()[..., 0].size
        before = np.bincount(content[mask][:, c], minlength=256).cumsum() / mask.sum()
        assert np.abs(region - ref).max() < 0.03 and np.abs(before - ref).max() > 0.3


def test_texture_raises_high_frequency_energy_toward_the_style():
    content, mask = _content(), _mask()
    out = style(content, mask, _style(), method="texture", feather=0).image
    inner = np.zeros_like(mask)
    inner[14:50, 24:76] = True  # away from the region's edge
    hf, hf_content, hf_style = _hf(out, inner), _hf(content, inner), _hf(_style())
    assert hf_content < 1.0 < hf_style
    assert 0.5 * hf_style < hf < 2.0 * hf_style
    # the structure stays the content's: the region's local means follow its ramps, not the style's flat colour
    import cv2

    smooth = cv2.blur(out.astype(np.float32), (9, 9))
    assert np.corrcoef(smooth[..., 0][inner], content[..., 0][inner].astype(np.float32))[0, 1] > 0.8


def test_guided_filter_follows_he_et_al():
    rng = np.random.default_rng(0)
    step = np.zeros((32, 32), np.float32)
    step[:, 16:] = 1.0
    noisy = step + rng.normal(0, 0.05, step.shape).astype(np.float32)
    q = guided_filter(noisy, noisy, 4, 0.01)
    assert q.shape == step.shape and np.abs(q - step)[:, :12].mean() < 0.03  # smooths the flat parts
    assert q[:, 18:].mean() - q[:, :14].mean() > 0.9  # keeps the edge
    flat = np.full((16, 16), 0.3, np.float32)
    assert np.allclose(guided_filter(flat, flat, 3, 0.01), 0.3, atol=1e-5)  # constants pass through
    rgb = np.stack([noisy, 1 - noisy, noisy * 0.5], -1)
    out = guided_filter(noisy, rgb, 4, 0.01)
    assert out.shape == rgb.shape and np.allclose(out[..., 0], q, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_outside_the_mask_is_bit_identical_and_strength_zero_is_the_identity(method):
    content, mask = _content(), _mask()
    result = style(content, mask, _style(), method=method, feather=6, seed=2)
    assert result.image.shape == content.shape and result.image.dtype == np.uint8
    assert np.array_equal(result.image[~mask], content[~mask]) and np.array_equal(result.mask, mask)
    assert not np.array_equal(result.image[mask], content[mask])
    assert np.array_equal(style(content, mask, _style(), method=method, strength=0.0).image, content)


def test_strength_blends_and_the_seam_is_feathered():
    content, mask = _content(), _mask()
    full = style(content, mask, _style(), method="reinhard", feather=0).image.astype(np.float32)
    half = style(content, mask, _style(), method="reinhard", feather=0, strength=0.5).image.astype(np.float32)
    assert np.abs(half[mask] - (content[mask] + full[mask]) / 2).max() <= 1.0
    seam = style(content, mask, _style(), method="reinhard", feather=8).image.astype(np.float32)
    edge, core = (12, 40), (30, 50)  # 2 px and 10+ px inside the mask's edge
    assert np.abs(seam[edge] - content[edge]).sum() < np.abs(full[edge] - content[edge]).sum()
    assert np.array_equal(seam[core], full[core])
    everything = style(content, np.ones((H, W), bool), _style(), method="reinhard", device="cpu")  # all-image: fine
    assert everything.image.shape == content.shape


def test_texture_is_reproducible_per_seed():
    content, mask = _content(), _mask()
    a, b, c = (style(content, mask, _style(), seed=s).image for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("bad, words", [
    ("style.png", "image array"), ([[1, 2], [3, 4]], "image array"), (np.zeros(10), "shape 10"),
    (np.zeros((8, 8, 2)), "shape 8x8x2"), (np.array([[{}]] * 8, dtype=object), "object"), (np.zeros((2, 9, 3)), "too small"),
    (np.full((8, 8, 3), np.nan), "NaN"),
])
def test_a_style_that_is_not_an_image_is_one_line(bad, words):
    with pytest.raises(InputError) as e:
        style(_content(), _mask(), bad)
    assert words in _one_line(e)


@pytest.mark.parametrize("kwargs, words", [
    ({"engine": "gan"}, "unknown engine"), ({"method": "poisson"}, "unknown method"), ({"strength": 1.5}, "--strength"),
    ({"feather": -1}, "--feather"), ({"radius": 0}, "radius"), ({"steps": 3}, "unknown option"),
    ({"seed": -1}, "--seed"), ({"model": "sd-inpainting"}, "uses no model"), ({"weights": "w"}, "uses no weights"), ({"engine": "sd"}, "--prompt"), ({"engine": "sd", "prompt": "  "}, "--prompt"),
])
def test_bad_options_are_one_line(kwargs, words):
    with pytest.raises(InputError) as e:
        style(_content(), _mask(), _style(), **kwargs)
    assert words in _one_line(e)


def test_bad_masks_are_one_line():
    with pytest.raises(InputError, match="empty"):
        style(_content(), np.zeros((H, W), bool), _style())
    with pytest.raises(InputError, match="96x64"):
        style(_content(), np.ones((10, 10), bool), _style())


def test_the_generative_engine_with_the_tiny_pipeline(tmp_path):
    pytest.importorskip("diffusers")
    from tiny_inpaint import tiny_inpaint_folder

    from anyseg.edit.sd import SdInpaintEngine

    folder = tiny_inpaint_folder(tmp_path / "tiny-inpaint")
    sd = SdInpaintEngine.from_options(model=str(folder), device="cpu", steps=2, guidance=1.0)
    content, mask = _content(), _mask()
    a = style(content, mask, _style(), engine="sd", prompt="an orange painting", seed=4, model=sd)
    b = style(content, mask, _style(), engine="sd", prompt="an orange painting", seed=4, model=sd)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.image[~mask], content[~mask])
    rec = a.record
    assert rec["engine"] == "sd" and rec["denoise"] == 0.6 and rec["precolour"] and rec["prompt"] == "an orange painting"
    assert "strength0.6" in rec["model"] and rec["style_size"] == [48, 40]
    by_path = style(content, mask, _style(), engine="sd", prompt="x", model=str(folder), device="cpu", steps=2,
                    denoise=0.5, precolour=False, strength=0.0)
    assert np.array_equal(by_path.image, content)  # strength 0: the input, whatever was generated
    with pytest.raises(InputError) as e:
        style(content, mask, _style(), engine="sd", prompt="x", model=sd, denoise=0.1)  # 2 steps x 0.1: none left
    assert "no denoising step" in _one_line(e)

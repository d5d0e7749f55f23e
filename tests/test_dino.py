"""DINOv2 / DINOv3 patch features: tiny random checkpoints loaded through the users' path.

Loading (``--model FOLDER``, ``$ANYSEG_MODELS/NAME``, ``auto``), the patch grid of non-square
images and its pixel mapping, mask pooling, normalisation against transformers' own DINOv2
image processor (its PIL backend: no torchvision), register tokens (DINOv3), determinism and
one-line errors.
"""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import build_dinov2, build_dinov3, build_sam

from anyseg.errors import InputError, ModelError
from anyseg.models.dino import DinoFeatures, load_features
from anyseg.models.families import FEATURES
from anyseg.models.features import FeatureExtractor, PatchFeatures, grid_for
from anyseg.models.resolver import resolve


@pytest.fixture(scope="module")
def dinov2_folder(tmp_path_factory):
    return build_dinov2(tmp_path_factory.mktemp("dino") / "dinov2-tiny")


@pytest.fixture(scope="module")
def dinov3_folder(tmp_path_factory):
    return build_dinov3(tmp_path_factory.mktemp("dino") / "dinov3-tiny")


def _image(h: int = 200, w: int = 300, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


# -- loading through the users' path -----------------------------------------------------------
def test_folder_resolves_to_its_family_and_loads(dinov2_folder, dinov3_folder):
    assert resolve(dinov2_folder, FEATURES).family == "dinov2"
    assert resolve(dinov3_folder, FEATURES).family == "dinov3"
    for folder, patch, registers in ((dinov2_folder, 14, 0), (dinov3_folder, 16, 4)):
        feats = load_features(folder, device="cpu")
        assert isinstance(feats, DinoFeatures) and isinstance(feats, FeatureExtractor)
        assert feats.patch_size == patch and feats.num_registers == registers
        assert feats.size == round(518 / patch) * patch  # 518 (37 x 14) / 512 (32 x 16)


def test_registry_name_from_anyseg_models(dinov2_folder, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(dinov2_folder, tmp_path / "dinov2-small")
    monkeypatch.setenv("ANYSEG_MODELS", str(tmp_path))
    feats = load_features("dinov2-small", device="cpu", allow_download=False)
    assert feats.name == "dinov2-small" and feats.model_id.startswith("dinov2-small")
    assert load_features("auto", device="cpu").name == "dinov2-small"  # the feature model present


def test_errors_are_one_line(dinov2_folder, tmp_path):
    with pytest.raises(ModelError, match="dinov2-small") as e:
        load_features("dinov2-small", allow_download=False)
    assert "\n" not in str(e.value)
    sam = build_sam(tmp_path / "sam")
    with pytest.raises(ModelError, match="not a feature model") as e:
        load_features(sam)
    assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match="no feature model .* is present locally.*dinov2-small"):
        load_features("auto")
    with pytest.raises(InputError, match="feature size"):
        load_features(dinov2_folder, device="cpu", size=7)
    with pytest.raises(InputError, match="side"):
        load_features(dinov2_folder, device="cpu", side="diagonal")
    with pytest.raises(InputError, match="device"):
        load_features(dinov2_folder, device="gpu")


# -- geometry ------------------------------------------------------------------------------------
def test_non_square_grid_and_pixel_mapping(dinov2_folder):
    feats = load_features(dinov2_folder, device="cpu")
    pf = feats.patch_features(_image(200, 300))  # W=300, H=200: the longer side to 518 = 37 patches
    assert pf.grid == (25, 37) and pf.input_size == (350, 518) and pf.original_size == (200, 300)
    assert pf.features.shape == (25, 37, 32) and pf.features.dtype == np.float32
    centers = pf.cell_centers()
    assert centers.shape == (25 * 37, 2)
    np.testing.assert_allclose(centers[0], (300 / 37 / 2, 200 / 25 / 2))
    np.testing.assert_allclose(centers[-1], (300 - 300 / 37 / 2, 200 - 200 / 25 / 2))
    np.testing.assert_array_equal(pf.cells_at(centers), np.arange(25 * 37))  # cells <-> pixels round trip
    assert pf.cells_at([[0, 0], [299.9, 199.9], [-5, 1e6]]).tolist() == [0, 25 * 37 - 1, 24 * 37]
    tall = feats.patch_features(_image(300, 120))
    assert tall.grid == (37, 15) and tall.input_size == (518, 210)
    short = load_features(dinov2_folder, device="cpu", size=224, side="shortest").patch_features(_image(200, 300))
    assert short.grid == (16, 24)  # the shorter side to 224 = 16 patches


def test_grid_rounding_and_limits():
    assert grid_for((200, 300), 14, 518) == (25, 37)
    assert grid_for((1, 1000), 14, 518) == (1, 37)  # at least one patch a side
    gh, gw = grid_for((4000, 4000), 14, 4000, "shortest", max_cells=1024)
    assert gh * gw <= 1024
    with pytest.raises(InputError):
        grid_for((10, 10), 14, 518, side="middle")


def test_pool_mask_fractions(dinov2_folder):
    pf = load_features(dinov2_folder, device="cpu").patch_features(_image(200, 300))
    mask = np.zeros((200, 300), bool)
    mask[:, :150] = True  # the left half
    frac = pf.pool_mask(mask)
    assert frac.shape == pf.grid and frac.dtype == np.float32
    assert np.all((frac >= 0) & (frac <= 1))
    assert frac[:, :18].min() == 1.0 and frac[:, 19:].max() == 0.0 and 0 < frac[0, 18] < 1
    np.testing.assert_allclose(frac.mean(), 0.5, atol=1e-6)  # the area is kept
    exact = PatchFeatures(np.zeros((2, 3, 4)), 14, (28, 42), (20, 30))
    block = np.zeros((20, 30), bool)
    block[:10, :10] = True
    np.testing.assert_array_equal(exact.pool_mask(block), [[1, 0, 0], [0, 0, 0]])
    with pytest.raises(InputError, match="mask is"):
        pf.pool_mask(np.zeros((10, 10), bool))


def test_patch_features_validation():
    with pytest.raises(InputError, match="input"):
        PatchFeatures(np.zeros((2, 3, 4)), 14, (28, 40), (20, 30))
    with pytest.raises(InputError, match="shape"):
        PatchFeatures(np.zeros((2, 3)), 14, (28, 42), (20, 30))
    pf = PatchFeatures(np.ones((2, 3, 4)), 14, (28, 42), (20, 30))
    np.testing.assert_allclose(np.linalg.norm(pf.normalized(), axis=1), 1.0)


# -- numbers -----------------------------------------------------------------------------------
def test_normalisation_matches_transformers_dinov2_processor(dinov2_folder):
    """The resize + normalise equals transformers' BitImageProcessor (PIL backend, bicubic) at the same size."""
    from transformers import BitImageProcessorPil

    feats = load_features(dinov2_folder, device="cpu", size=98)
    image = _image(200, 300, seed=1)
    x, (gh, gw) = feats.preprocess(image)
    proc = BitImageProcessorPil(do_resize=True, size={"height": gh * 14, "width": gw * 14}, do_center_crop=False,
                                resample=3, image_mean=list(feats.mean), image_std=list(feats.std))
    y = proc(images=image, return_tensors="np")["pixel_values"][0]
    assert x.shape == y.shape == (3, gh * 14, gw * 14)
    np.testing.assert_allclose(x, y, atol=1e-5)


def test_preprocessor_config_mean_std_win(tmp_path):
    folder = build_dinov2(tmp_path / "half", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    feats = load_features(folder, device="cpu")
    assert feats.mean == (0.5, 0.5, 0.5) and feats.std == (0.25, 0.25, 0.25)
    x, _ = feats.preprocess(np.full((28, 28, 3), 255, np.uint8))
    np.testing.assert_allclose(x, 2.0, atol=1e-6)  # (1 - 0.5) / 0.25


def test_features_are_the_models_patch_tokens(dinov2_folder, dinov3_folder):
    """CLS and register tokens skipped; prenorm = the last hidden state before the final LayerNorm."""
    import torch

    image = _image(90, 130)
    for folder in (dinov2_folder, dinov3_folder):
        for prenorm in (True, False):
            feats = load_features(folder, device="cpu", size=128, prenorm=prenorm)
            pf = feats.patch_features(image)
            x, (gh, gw) = feats.preprocess(image)
            with torch.inference_mode():
                out = feats.model(pixel_values=torch.from_numpy(x)[None], output_hidden_states=True)
            tokens = out.hidden_states[-1] if prenorm else out.last_hidden_state
            want = tokens[0, 1 + feats.num_registers:].numpy().reshape(gh, gw, -1)
            assert tokens.shape[1] == 1 + feats.num_registers + gh * gw
            np.testing.assert_allclose(pf.features, want, atol=1e-5)
            again = feats.patch_features(image)
            np.testing.assert_array_equal(again.features, pf.features)  # deterministic

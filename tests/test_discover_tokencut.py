"""TokenCut and MaskCut: tiny random DINO checkpoints through the users' path, planted features exactly.

* DINO v1 (``ViTModel``, patch 8, no pooler) and DINOv2 with registers are saved with
  ``save_pretrained`` and loaded by path; their ``keys`` are the last layer's key projection of
  the patch tokens (checked against the layer's own modules), non-square images give masks of
  the image's size.
* A fake feature extractor returns planted two- and three-region key grids: TokenCut must return
  exactly the planted object, MaskCut exactly the planted objects (distinct, disjoint); uniform
  and random keys score low.
* Too-small images and bad options are one-line errors.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from tiny_discover import build_dino_vit, build_dinov2_registers

from anyseg.discover.tokencut import MaskCut, TokenCut, grid_to_image
from anyseg.errors import InputError, ModelError
from anyseg.models.dino import DINO_SIZE, load_features
from anyseg.models.features import PatchFeatures


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    return build_dino_vit(tmp_path_factory.mktemp("dino") / "dino-tiny")


@pytest.fixture(scope="module")
def registers_folder(tmp_path_factory):
    return build_dinov2_registers(tmp_path_factory.mktemp("dino") / "dinov2-reg-tiny")


def _image(h: int = 64, w: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3)) * 60).astype(np.uint8)
    img[h // 4: 3 * h // 4, w // 3: 2 * w // 3] += 150  # a bright square on a dark, noisy ground
    return img


# -- keys and loading through the users' path ------------------------------------------------------
def _layer_keys(feats, image):
    """The last layer's keys recomputed from its modules: k_proj(pre-attention norm(input of the layer))."""
    import torch

    x, (gh, gw) = feats.preprocess(image)
    kwargs = {"interpolate_pos_encoding": True} if feats.interpolate else {}
    with torch.inference_mode():
        out = feats.model(pixel_values=torch.from_numpy(x)[None], output_hidden_states=True, **kwargs)
        layers = feats.model.layers if hasattr(feats.model, "layers") else feats.model.encoder.layer
        last = layers[-1]
        norm = last.layernorm_before if hasattr(last, "layernorm_before") else last.norm1
        keys = last.attention.k_proj(norm(out.hidden_states[-2]))
    return keys[0, 1 + feats.num_registers:].numpy().reshape(gh, gw, -1)


@pytest.mark.parametrize("which", ["vit", "registers"])
def test_keys_are_the_last_layers_key_projection(which, vit_folder, registers_folder):
    folder = vit_folder if which == "vit" else registers_folder
    feats = load_features(folder, device="cpu", size=112)
    image = _image(70, 110)
    keys = feats.patch_features(image, kind="keys")
    tokens = feats.patch_features(image)
    assert keys.grid == tokens.grid and keys.features.shape[-1] == 32  # 2 heads x 16, concatenated
    assert keys.model_id != tokens.model_id and keys.model_id.endswith(":keys")
    np.testing.assert_allclose(keys.features, _layer_keys(feats, image), atol=1e-5)
    assert not np.allclose(keys.features, tokens.features)
    with pytest.raises(InputError, match="feature kind"):
        feats.patch_features(image, kind="values")


def test_dino_v1_folder_loads_without_pooler_at_its_default_size(vit_folder):
    feats = load_features(vit_folder, device="cpu")
    assert feats.family == "dino" and feats.patch_size == 8 and feats.size == DINO_SIZE == 480
    assert getattr(feats.model, "pooler", None) is None and feats.interpolate
    pf = feats.patch_features(_image(60, 80), kind="keys")  # 480 x 360: position embeddings interpolated
    assert pf.grid == (45, 60) and pf.input_size == (360, 480)


@pytest.mark.parametrize("cls,which", [(TokenCut, "vit"), (MaskCut, "vit"), (MaskCut, "registers")])
def test_methods_from_a_folder_give_masks_of_the_image_size(cls, which, vit_folder, registers_folder):
    folder = vit_folder if which == "vit" else registers_folder
    method = cls.from_options(model=folder, device="cpu", size=112)
    assert method.kind == "objects" and method.model_id.endswith(f":tau{method.tau:g}:eps1e-05")
    image = _image(66, 101)
    masks = method.discover(image)
    assert masks.masks.shape[1:] == (66, 101) and len(masks) <= (1 if cls is TokenCut else 3)
    assert masks.scores.dtype == np.float32 and np.all((masks.scores >= 0) & (masks.scores <= 1))
    assert masks.data["feature"].shape == (len(masks), 32) and masks.data["feature"].dtype == np.float32
    assert all(m.any() for m in masks.masks)
    again = method.discover(image)
    np.testing.assert_array_equal(again.masks, masks.masks)  # deterministic


def test_default_model_is_dino_vits16_when_present(vit_folder, tmp_path, monkeypatch):
    shutil.copytree(vit_folder, tmp_path / "dino-vits16")
    monkeypatch.setenv("ANYSEG_MODELS", str(tmp_path))
    method = TokenCut.from_options(device="cpu", allow_download=False, size=64)
    assert method.extractor.name == "dino-vits16" and method.model_id.startswith("dino-vits16:longest64:keys")


# -- planted features ----------------------------------------------------------------------------
class PlantedKeys:
    """A fake feature extractor: the same planted ``(gh, gw, C)`` key grid for any image."""

    name = "planted"
    family = "test"
    patch_size = 8

    def __init__(self, grid: np.ndarray) -> None:
        self.grid = np.asarray(grid, np.float32)

    @property
    def model_id(self) -> str:
        return "planted"

    def patch_features(self, image: np.ndarray, kind: str = "tokens") -> PatchFeatures:
        gh, gw, _ = self.grid.shape
        return PatchFeatures(self.grid, 8, (gh * 8, gw * 8), image.shape[:2], f"planted:{kind}")


def _planted(regions, gh: int = 12, gw: int = 20, c: int = 16, noise: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(c, c)))[0]
    labels = np.zeros((gh, gw), int)
    for k, (r0, r1, c0, c1) in enumerate(regions, 1):
        labels[r0:r1, c0:c1] = k
    return basis[labels] + noise * rng.normal(size=(gh, gw, c)), labels


def test_tokencut_returns_exactly_the_planted_object():
    grid, labels = _planted([(3, 8, 4, 10)])
    image = np.zeros((60, 100, 3), np.uint8)  # 5x5 pixels a cell
    masks = TokenCut(PlantedKeys(grid)).discover(image)
    assert len(masks) == 1 and masks.masks.shape == (1, 60, 100)
    np.testing.assert_array_equal(masks.masks[0], np.kron(labels == 1, np.ones((5, 5), int)) > 0)
    assert masks.scores[0] > 0.9
    np.testing.assert_allclose(masks.data["feature"][0], grid[labels == 1].mean(axis=0), rtol=1e-5)
    odd = TokenCut(PlantedKeys(grid)).discover(np.zeros((61, 99, 3), np.uint8))  # not a multiple of the grid
    np.testing.assert_array_equal(odd.masks[0], grid_to_image(labels == 1, (61, 99)))
    assert odd.masks[0].sum() == pytest.approx(30 / 240 * 61 * 99, rel=0.1)


def test_maskcut_returns_the_planted_objects_distinct():
    grid, labels = _planted([(1, 5, 2, 7), (7, 11, 12, 18), (1, 4, 12, 17)])
    image = np.zeros((60, 100, 3), np.uint8)
    masks = MaskCut(PlantedKeys(grid)).discover(image)
    assert len(masks) == 3 and np.all(masks.scores > 0.85)
    planted = {k: grid_to_image(labels == k, (60, 100)) for k in (1, 2, 3)}
    matched = sorted(k for m in masks.masks for k, p in planted.items() if np.array_equal(m, p))
    assert matched == [1, 2, 3]  # each planted object exactly once
    assert masks.masks.sum(axis=0).max() == 1  # disjoint
    one = MaskCut(PlantedKeys(grid)).discover(image, objects=1)
    np.testing.assert_array_equal(one.masks[0], masks.masks[0])  # discovery order: the first cut first
    two, _ = _planted([(3, 8, 4, 10)])
    few = MaskCut(PlantedKeys(two)).discover(image, objects=5)
    assert 1 <= len(few) <= 5 and few.scores[0] > 0.75  # tau 0.15: some noisy pairs across the cut
    assert all(not np.array_equal(a, b) for i, a in enumerate(few.masks) for b in few.masks[i + 1:])


def test_structureless_keys_score_low():
    image = np.zeros((60, 100, 3), np.uint8)
    uniform = np.ones((12, 20, 16), np.float32)
    for cls in (TokenCut, MaskCut):
        assert len(cls(PlantedKeys(uniform)).discover(image)) == 0  # a complete graph: nothing to cut
    rng = np.random.default_rng(1)
    for c in (16, 64, 384):
        noise = rng.normal(size=(12, 20, c))
        for cls in (TokenCut, MaskCut):
            masks = cls(PlantedKeys(noise)).discover(image)
            assert np.all(masks.scores < 0.3), (cls.__name__, c, masks.scores)


# -- errors ----------------------------------------------------------------------------------------
def test_too_small_images_and_bad_options_are_one_line_errors():
    grid, _ = _planted([(3, 8, 4, 10)])
    method = TokenCut(PlantedKeys(grid))
    for bad in (np.zeros((10, 40, 3), np.uint8), np.zeros((40, 15, 3), np.uint8)):
        with pytest.raises(InputError, match="too small") as e:
            method.discover(bad)
        assert "\n" not in str(e.value)
    thin = TokenCut(PlantedKeys(grid[:1]))
    with pytest.raises(InputError, match="too thin"):
        thin.discover(np.zeros((60, 100, 3), np.uint8))
    for kwargs, what in (({"tau": 1.5}, "tau"), ({"tau": 0}, "tau"), ({"eps": -1}, "eps"), ({"tau": "x"}, "tau"),
                         ({"colour": 1}, "unknown"), ({"max_cells": 10 ** 6}, "max_cells")):
        for cls in (TokenCut, MaskCut):
            with pytest.raises(InputError, match=what) as e:
                cls.from_options(model=PlantedKeys(grid), **kwargs)
            assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="objects"):
        MaskCut(PlantedKeys(grid)).discover(np.zeros((60, 100, 3), np.uint8), objects=0)

    class Tokens:  # a feature model without attention keys
        name, family, patch_size, model_id = "tokens-only", "x", 8, "t"

        def patch_features(self, image):
            raise AssertionError("not called")

    with pytest.raises(ModelError, match="no attention keys"):
        TokenCut(Tokens())
    with pytest.raises(ModelError, match="not found"):
        MaskCut.from_options(model="/nonexistent/dino")
    with pytest.raises(InputError, match="size go with a model name"):
        TokenCut.from_options(model=PlantedKeys(np.ones((4, 4, 4))), size=64)

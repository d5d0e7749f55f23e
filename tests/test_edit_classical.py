"""The classical fill engines (anyseg.edit.classical): telea, ns, fsr, biharmonic, mean."""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest

from anyseg.edit import classical
from anyseg.edit.base import InpaintEngine, engine_factory, run_inpaint
from anyseg.errors import InputError, ModelError

H, W = 64, 96
SMOOTH = ("telea", "ns", "biharmonic")


def _background(h: int = H, w: int = W) -> np.ndarray:
    """A smooth colour gradient: what the smooth fills should restore well, a flat fill should not."""
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    rgb = np.stack([40 + 180 * xx / w, 200 - 150 * yy / h, 60 + 60 * (xx + yy) / (h + w)], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _scene(h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A saturated square object pasted on the gradient: (image, clean background, object mask)."""
    clean = _background(h, w)
    mask = np.zeros((h, w), bool)
    mask[h // 3: h // 3 + h // 4, w // 3: w // 3 + w // 4] = True
    image = clean.copy()
    image[mask] = (255, 0, 255)
    return image, clean, mask


def _hole_error(result: np.ndarray, clean: np.ndarray, hole: np.ndarray) -> float:
    return float(np.abs(result[hole].astype(np.float64) - clean[hole]).mean())


@pytest.mark.parametrize("name", ["telea", "ns", "biharmonic", "mean"])
def test_each_engine_removes_the_object_and_keeps_every_other_pixel(name):
    image, clean, mask = _scene()
    engine = engine_factory(name)()
    assert isinstance(engine, InpaintEngine) and engine.name == name and not engine.generative
    result = run_inpaint(engine, image, mask, "remove", dilate=2)
    used = result.mask
    assert result.image.shape == image.shape and result.image.dtype == np.uint8
    assert np.array_equal(result.image[~used], image[~used])
    assert _hole_error(result.image, clean, mask) < 40.0  # the magenta square is gone
    assert np.array_equal(run_inpaint(engine, image, mask, "remove", dilate=2).image, result.image)  # deterministic
    assert result.record["engine"] == name and result.record["model"] == engine.model_id


def test_smooth_fills_beat_the_flat_mean_colour_baseline():
    image, clean, mask = _scene()
    errors = {}
    for name in (*SMOOTH, "mean"):
        filled = engine_factory(name)().inpaint(image, mask)
        errors[name] = _hole_error(filled, clean, mask)
    for name in SMOOTH:
        assert errors[name] < 0.6 * errors["mean"], errors


def test_the_mean_engine_fills_with_the_rings_mean_colour():
    image = np.zeros((40, 50, 3), np.uint8)
    image[:] = (10, 20, 30)
    image[:, 35:] = (200, 200, 200)  # far from the hole: outside its ring
    mask = np.zeros((40, 50), bool)
    mask[15:25, 10:20] = True
    image[mask] = (255, 0, 0)
    out = engine_factory("mean")(ring=4).inpaint(image, mask)
    assert (out[mask] == (10, 20, 30)).all()
    assert np.array_equal(out[~mask], image[~mask])


def test_odd_sizes_and_a_hole_at_the_border():
    image, clean, _ = _scene(37, 53)
    mask = np.zeros((37, 53), bool)
    mask[:9, 40:] = True
    for name in (*SMOOTH, "mean"):
        out = engine_factory(name)().inpaint(image, mask)
        assert out.shape == (37, 53, 3) and np.array_equal(out[~mask], image[~mask])


def test_a_large_crop_is_scaled_to_the_working_size():
    image, clean, mask = _scene()
    engine = engine_factory("ns")(working_size=64)
    assert engine.working_size == 64
    result = run_inpaint(engine, image, mask, "remove", dilate=1)
    assert result.record["scale"] < 1.0
    assert np.array_equal(result.image[~result.mask], image[~result.mask])
    assert _hole_error(result.image, clean, mask) < 40.0


def test_working_sizes_and_radius_are_recorded_defaults():
    assert engine_factory("telea")().working_size == 1024
    assert engine_factory("ns")().working_size == 1024
    assert engine_factory("biharmonic")().working_size == 384
    assert "radius=5" in engine_factory("telea")().model_id
    assert "radius=3" in engine_factory("ns")(radius=3).model_id


@pytest.mark.parametrize("kwargs, words", [
    ({"weights": "x.pt"}, "uses no weights"),
    ({"model": "lama"}, "uses no model"),
    ({"strength": 1}, "unknown option"),
    ({"radius": 0}, "radius"),
    ({"radius": 2.5}, "radius"),
    ({"working_size": 8}, "working_size"),
    ({"working_size": True}, "working_size"),
])
def test_bad_options_are_one_line_input_errors(kwargs, words):
    with pytest.raises(InputError) as err:
        engine_factory("telea")(**kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_bad_calls_are_one_line_input_errors():
    image, _, mask = _scene()
    engine = engine_factory("mean")()
    with pytest.raises(InputError, match="mask"):
        engine.inpaint(image, mask[:-1])
    with pytest.raises(InputError, match="whole crop"):
        engine.inpaint(image, np.ones((H, W), bool))
    with pytest.raises(InputError, match="unknown inpaint option"):
        engine.inpaint(image, mask, steps=3)
    with pytest.raises(InputError, match="ring"):
        engine_factory("mean")(ring=-1)
    assert np.array_equal(engine.inpaint(image, np.zeros((H, W), bool)), image)  # nothing to fill


# -- fsr: opencv-contrib's xphoto, absent from the headless wheel -----------------------------------
def test_fsr_without_contrib_says_how_to_get_it(monkeypatch):
    monkeypatch.delattr(cv2, "xphoto", raising=False)
    with pytest.raises(ModelError) as err:
        engine_factory("fsr")()
    text = str(err.value)
    assert "cv2.xphoto" in text and "\n" not in text
    assert "pip uninstall opencv-python-headless && pip install opencv-contrib-python-headless==" in text
    assert cv2.__version__.split("-")[0] in text


def _fake_xphoto(calls: list) -> types.SimpleNamespace:
    """xphoto.inpaint's contract: ``mask`` non-zero marks the *valid* pixels; ``dst`` is written in place."""

    def inpaint(src, mask, dst, algorithm):
        calls.append((src.copy(), mask.copy(), algorithm))
        valid = mask > 0
        dst[:] = src
        dst[~valid] = np.rint(src[valid].mean(axis=0)).astype(np.uint8)

    return types.SimpleNamespace(inpaint=inpaint, INPAINT_FSR_FAST=11, INPAINT_FSR_BEST=12, INPAINT_SHIFTMAP=0)


@pytest.mark.parametrize("mode, flag", [("fast", 11), ("best", 12)])
def test_fsr_with_contrib_runs_with_xphotos_conventions(monkeypatch, mode, flag):
    calls: list = []
    monkeypatch.setattr(cv2, "xphoto", _fake_xphoto(calls), raising=False)
    image, _, mask = _scene()
    engine = engine_factory("fsr")(mode=mode)
    assert engine.working_size == 512 and f"mode={mode}" in engine.model_id
    result = run_inpaint(engine, image, mask, "remove", dilate=2)
    src, valid, algorithm = calls[-1]
    assert algorithm == flag
    x0, y0, x1, y1 = result.record["crop"]
    assert np.array_equal(valid == 0, result.mask[y0:y1, x0:x1])  # the mask inverted
    assert np.array_equal(src, image[y0:y1, x0:x1, ::-1])  # BGR, as OpenCV expects
    assert np.array_equal(result.image[~result.mask], image[~result.mask])
    assert not (result.image[mask] == (255, 0, 255)).all(axis=-1).any()


def test_fsr_rejects_an_unknown_mode(monkeypatch):
    monkeypatch.setattr(cv2, "xphoto", _fake_xphoto([]), raising=False)
    with pytest.raises(InputError, match="fast"):
        engine_factory("fsr")(mode="medium")


def test_check_int_and_check_pair_are_shared_helpers():
    assert classical.check_int("n", np.int64(3), 1, 5) == 3
    image, mask = classical.check_pair("x", np.zeros((4, 5, 3), np.float32), np.zeros((4, 5, 1), np.uint8))
    assert image.dtype == np.uint8 and mask.dtype == bool and mask.shape == (4, 5)

"""ONNX Runtime fast path (fp32 and dynamic int8) against the torch predictor, on a tiny random SAM.

Tolerances: ``onnx`` (fp32) must reproduce the torch masks (IoU >= 0.99) and scores (|diff|
<= 1e-4 + 1e-3 * |score|). ``onnx-int8`` (int8 encoder, fp32 decoder) must reach IoU >= 0.95
and |score diff| <= 0.05 + 0.05 * |score| (measured on the tiny model: IoU 1.0, |score diff|
~3e-9). The tiny random model's logits are of order 1e-4 or smaller; with the decoder also
quantized (``quantize_decoder=True``) its IoU drops to 0.76-0.94, so that variant is only
checked for being exported and runnable.
SAM 2 (tiny Hiera) is checked for fp32 parity only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from tiny_models import BUILDERS

from anyseg.errors import InputError
from anyseg.models import load_model
from anyseg.runtime import onnx as ort_rt
from anyseg.types import Prompt

INT8_TINY_IOU = 0.95


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory) -> Path:
    return BUILDERS["sam"](tmp_path_factory.mktemp("onnx") / "sam")


@pytest.fixture(scope="module")
def sam2_pair(tmp_path_factory):
    folder = BUILDERS["sam2"](tmp_path_factory.mktemp("onnx2") / "sam2")
    torch_model = load_model("sam2.1-hiera-tiny", weights=folder, device="cpu")
    return torch_model, ort_rt.load_runtime(torch_model, "onnx", intra_op_num_threads=1, decoder="onnx")


@pytest.fixture(scope="module")
def torch_pred(tiny_sam):
    return load_model("sam-vit-base", weights=tiny_sam, device="cpu")


@pytest.fixture(scope="module")
def onnx_pred(torch_pred):  # the exported decoder graph for every prompt: these tests check the graph
    return ort_rt.load_runtime(torch_pred, "onnx", intra_op_num_threads=1, decoder="onnx")


@pytest.fixture(scope="module")
def int8_pred(torch_pred):
    return ort_rt.load_runtime(torch_pred, "onnx-int8", intra_op_num_threads=1, decoder="onnx")


def _image(h=120, w=200, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


PROMPTS = {
    "one_click": Prompt(points=[[50, 60]]),
    "three_clicks": Prompt(points=[[50, 60], [150, 30], [20, 100]], labels=[1, 0, 1]),
    "box": Prompt(box=[10, 10, 150, 100]),
    "click_and_box": Prompt(points=[[60, 50]], box=[10, 10, 150, 100]),
}


def _check(ref, got, min_iou, score_tol):
    assert len(ref) == len(got)
    assert got.masks.shape == ref.masks.shape and got.logits.shape == ref.logits.shape
    for i in range(len(ref)):
        assert _iou(ref.masks[i], got.masks[i]) >= min_iou
    np.testing.assert_allclose(got.scores, ref.scores, atol=score_tol, rtol=1e-3)


def test_load_runtime_torch_and_attributes(torch_pred, onnx_pred, int8_pred):
    assert ort_rt.load_runtime(torch_pred, "torch") is torch_pred
    assert onnx_pred.runtime == "onnx" and int8_pred.runtime == "onnx-int8"
    assert onnx_pred.model_id != torch_pred.model_id  # embeddings of both runtimes never mix in a cache
    for name in ("encoder.onnx", "decoder.onnx", "manifest.json"):
        assert (onnx_pred.artifacts / name).is_file() and (int8_pred.artifacts / name).is_file()
    assert onnx_pred.artifacts.parent == Path(torch_pred.folder) / ".anyseg-onnx"
    assert int8_pred.artifacts != onnx_pred.artifacts
    import onnx

    def ops(folder, name):
        return {n.op_type for n in onnx.load(str(folder / name)).graph.node}

    # int8: integer matmuls in the encoder; the decoder stays fp32 unless quantize_decoder
    assert "MatMulInteger" in ops(int8_pred.artifacts, "encoder.onnx")
    assert "MatMulInteger" not in ops(int8_pred.artifacts, "decoder.onnx")
    assert "MatMulInteger" not in ops(onnx_pred.artifacts, "encoder.onnx")


def test_bad_runtime_name(torch_pred):
    with pytest.raises(InputError) as err:
        ort_rt.load_runtime(torch_pred, "tensorrt")
    assert "\n" not in str(err.value) and "onnx-int8" in str(err.value)


@pytest.mark.parametrize("name", list(PROMPTS))
@pytest.mark.parametrize("multimask", [False, True])
def test_onnx_fp32_matches_torch(torch_pred, onnx_pred, name, multimask):
    img = _image()
    ref = torch_pred.predict(torch_pred.embed(img), PROMPTS[name], multimask=multimask)
    got = onnx_pred.predict(onnx_pred.embed(img), PROMPTS[name], multimask=multimask)
    assert len(got) == (3 if multimask else 1)
    _check(ref, got, 0.99, 1e-4)
    np.testing.assert_allclose(got.logits, ref.logits, atol=1e-4 * max(1e-30, np.abs(ref.logits).max()) + 1e-12)


def test_onnx_embedding_and_batch(torch_pred, onnx_pred):
    img = _image(97, 333, seed=1)
    et, eo = torch_pred.embed(img), onnx_pred.embed(img)
    assert eo.original_size == et.original_size and eo.input_size == et.input_size
    prompts = [PROMPTS["one_click"], Prompt(points=[[10, 20]]), PROMPTS["three_clicks"].__class__(
        points=[[5, 5], [90, 80], [30, 40]], labels=[1, 1, 0]), Prompt(box=[0, 0, 90, 60]),
        Prompt(box=[40, 10, 300, 90]), Prompt(points=[[60, 50]], box=[0, 0, 320, 96])]
    refs = torch_pred.predict_batch(et, prompts, multimask=True)
    gots = onnx_pred.predict_batch(eo, prompts, multimask=True)
    for ref, got in zip(refs, gots):
        _check(ref, got, 0.99, 1e-4)


def test_refinement_with_mask_logits(torch_pred, onnx_pred):
    img = _image()
    et, eo = torch_pred.embed(img), onnx_pred.embed(img)
    first = torch_pred.predict(et, PROMPTS["one_click"])
    p = Prompt(points=[[50, 60], [120, 80]], labels=[1, 0], mask_logits=first.logits[0])
    _check(torch_pred.predict(et, p), onnx_pred.predict(eo, p), 0.99, 1e-4)
    for p in (Prompt(mask_logits=first.logits[0]), Prompt(mask=first.masks[0]), Prompt(box=[10, 10, 150, 100], mask=first.masks[0])):
        _check(torch_pred.predict(et, p, multimask=True), onnx_pred.predict(eo, p, multimask=True), 0.99, 1e-4)


def test_decode_points_matches_torch(torch_pred, onnx_pred):
    img = _image()
    et, eo = torch_pred.embed(img), onnx_pred.embed(img)
    pts = np.array([[10, 10], [50, 60], [190, 110]], dtype=float)
    lt, st = torch_pred.decode_points(et, pts)
    lo, so = onnx_pred.decode_points(eo, pts)
    assert tuple(lo.shape) == tuple(lt.shape) and tuple(so.shape) == tuple(st.shape)
    np.testing.assert_allclose(so.numpy(), st.numpy(), atol=1e-4, rtol=1e-3)
    assert ((lo > 0) == (lt > 0)).float().mean() >= 0.99


@pytest.mark.parametrize("name", list(PROMPTS))
def test_onnx_int8_close_to_torch(torch_pred, int8_pred, name):
    img = _image()
    ref = torch_pred.predict(torch_pred.embed(img), PROMPTS[name])
    got = int8_pred.predict(int8_pred.embed(img), PROMPTS[name])
    assert got.masks.shape == ref.masks.shape
    assert _iou(ref.masks[0], got.masks[0]) >= INT8_TINY_IOU
    assert abs(float(got.scores[0] - ref.scores[0])) <= 0.05 + 0.05 * abs(float(ref.scores[0]))


def test_cache_reuse_and_key(torch_pred, onnx_pred, int8_pred):
    mtimes = {f: f.stat().st_mtime_ns for f in onnx_pred.artifacts.iterdir()}
    count = ort_rt.EXPORT_COUNT
    again = ort_rt.load_runtime(torch_pred, "onnx")
    again8 = ort_rt.load_runtime(torch_pred, "onnx-int8")
    assert not again.exported and not again8.exported and ort_rt.EXPORT_COUNT == count
    assert again.artifacts == onnx_pred.artifacts and again8.artifacts == int8_pred.artifacts
    assert {f: f.stat().st_mtime_ns for f in again.artifacts.iterdir()} == mtimes
    # options and weights are part of the key
    k32 = ort_rt.cache_key(torch_pred, ort_rt._options(False))
    assert k32 == onnx_pred.artifacts.name
    assert ort_rt.cache_key(torch_pred, ort_rt._options(True)) == int8_pred.artifacts.name != k32
    assert ort_rt.cache_key(torch_pred, {**ort_rt._options(False), "opset": 18}) != k32
    assert ort_rt.cache_key(torch_pred, ort_rt._options(True, quantize_decoder=True)) != int8_pred.artifacts.name
    weights = next(Path(torch_pred.folder).glob("*.safetensors"))
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert ort_rt.cache_key(torch_pred, ort_rt._options(False)) != k32
    finally:
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_export_to_folder(torch_pred, tmp_path):
    import onnx

    out = ort_rt.export(torch_pred, tmp_path / "int8", quantize=True, quantize_decoder=True)
    for name in ("encoder.onnx", "decoder.onnx"):
        onnx.checker.check_model(str(out / name))
        assert "MatMulInteger" in {n.op_type for n in onnx.load(str(out / name)).graph.node}
    pred = ort_rt.OnnxRuntimePredictor(torch_pred, "onnx-int8", artifacts=out)
    assert not pred.exported and len(pred.predict(pred.embed(_image()), PROMPTS["box"])) == 1


def test_unwritable_weights_folder_falls_back_to_home(torch_pred, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(ort_rt, "_writable", lambda root: False)
    assert ort_rt.cache_root(torch_pred) == tmp_path / "home" / ".cache" / "anyseg" / "onnx"


def test_sam2_matches_torch(sam2_pair):
    """SAM 2: high-resolution features, box padding point, dynamic single-mask fallback."""
    torch_pred, onnx_pred = sam2_pair
    img = _image(97, 333, seed=2)
    et, eo = torch_pred.embed(img), onnx_pred.embed(img)
    assert [tuple(t.shape) for t in eo.features["image_embeddings"]] == [tuple(t.shape) for t in et.features["image_embeddings"]]
    first = torch_pred.predict(et, Prompt(points=[[50, 60]]))
    prompts = [Prompt(points=[[50, 60]]), Prompt(points=[[50, 60], [300, 30], [20, 90]], labels=[1, 0, 1]),
               Prompt(box=[10, 10, 150, 90]), Prompt(points=[[60, 50]], box=[10, 10, 150, 90]),
               Prompt(mask_logits=first.logits[0]), Prompt(points=[[5, 6]], mask=first.masks[0])]
    for multimask in (False, True):
        for ref, got in zip(torch_pred.predict_batch(et, prompts, multimask), onnx_pred.predict_batch(eo, prompts, multimask)):
            _check(ref, got, 0.99, 1e-4)
        (lt, st), (lo, so) = (torch_pred.decode_points(et, [[10, 10], [50, 60]], multimask=multimask),
                              onnx_pred.decode_points(eo, [[10, 10], [50, 60]], multimask=multimask))
        np.testing.assert_allclose(so.numpy(), st.numpy(), atol=1e-4, rtol=1e-3)
        assert ((lo > 0) == (lt > 0)).float().mean() >= 0.99


def test_unsupported_family_is_model_error():
    from anyseg.errors import ModelError

    class Fake:
        name, family = "sam-hq-vit-base", "sam_hq"

    with pytest.raises(ModelError):
        ort_rt.export(Fake())


def test_int8_keeps_the_sensitive_hiera_matmuls_fp32(sam2_pair, onnx_pred):
    """The stage-transition projections, MLP output projections and last stage stay fp32 (SAM 2 only)."""
    _, sam2_onnx = sam2_pair
    keep = ort_rt._fp32_nodes(sam2_onnx.artifacts / "encoder.onnx")
    assert keep and all("/backbone/blocks." in n for n in keep)
    assert any("/mlp/proj_out/" in n for n in keep)
    assert any("/proj/" in n and "/attn/" not in n and "/mlp/" not in n for n in keep)  # a stage transition
    assert not any("/mlp/proj_in/" in n for n in keep if "blocks.0/" in n), "early MLP inputs are quantized"
    assert ort_rt._fp32_nodes(onnx_pred.artifacts / "encoder.onnx") == []  # SAM's ViT: quantized as before
    assert ort_rt._options(True)["encoder_fp32"] == list(ort_rt.INT8_KEEP_FP32)  # part of the cache key


def test_auto_decoder_uses_the_torch_decoder_for_points_and_boxes(torch_pred, monkeypatch):
    """decoder='auto' (the default): ONNX encoder, anyseg's torch decoder; the graph for mask inputs."""
    auto = ort_rt.load_runtime(torch_pred, "onnx", intra_op_num_threads=1)
    assert auto.decoder == "auto"
    img = _image(seed=4)
    et, eo = torch_pred.embed(img), auto.embed(img)
    graph_calls = []
    real = auto.decode
    monkeypatch.setattr(auto, "decode", lambda *a, **k: graph_calls.append(1) or real(*a, **k))
    prompts = [Prompt(points=[[50, 60]]), Prompt(box=[10, 10, 150, 90]), Prompt(points=[[5, 6], [90, 40]], labels=[1, 0])]
    got = auto.predict_batch(eo, prompts, multimask=True)
    lo, so = auto.decode_points(eo, [[10, 10], [50, 60]])
    assert graph_calls == []
    for ref, g in zip(torch_pred.predict_batch(et, prompts, multimask=True), got):
        _check(ref, g, 0.99, 1e-4)
    lt, st = torch_pred.decode_points(et, [[10, 10], [50, 60]])
    np.testing.assert_allclose(so.numpy(), st.numpy(), atol=1e-4, rtol=1e-3)
    first = got[0]
    auto.predict(eo, Prompt(points=[[50, 60]], mask_logits=first.logits[0]))
    assert graph_calls == [1]  # mask inputs: the exported graph
    with pytest.raises(InputError, match="unknown decoder"):
        ort_rt.OnnxRuntimePredictor(torch_pred, decoder="tensorrt")

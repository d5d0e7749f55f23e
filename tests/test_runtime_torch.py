"""Torch runtimes (anyseg.runtime.torch_fast) on tiny SAM and SAM 2: parity with the fp32 predictor."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from anyseg.errors import InputError
from anyseg.models import load_model
from anyseg.runtime.torch_fast import RUNTIMES, apply_runtime, cpu_bf16_support
from anyseg.types import Prompt

from tiny_models import BUILDERS

FAMILY_MODEL = {"sam": "sam-vit-base", "sam2": "sam2.1-hiera-tiny"}


@pytest.fixture(scope="module")
def predictors(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_rt")
    return {fam: load_model(name, weights=BUILDERS[fam](root / fam), device="cpu") for fam, name in FAMILY_MODEL.items()}


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (120, 200, 3), dtype=np.uint8)


def _prompts() -> list[Prompt]:
    rng = np.random.default_rng(1)
    pts = [Prompt(points=[tuple(rng.uniform([0, 0], [199, 119]))]) for _ in range(3)]
    xy = rng.uniform([0, 0], [100, 60], size=(6, 2))
    boxes = [Prompt(box=np.concatenate([p, p + 40])) for p in xy]
    return pts + boxes


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _min_iou(ref, cand) -> float:
    return min(_iou(r.masks[k], c.masks[k]) for r, c in zip(ref, cand) for k in range(r.masks.shape[0]))


def _run(pred, image):
    emb = pred.embed(image)
    return emb, pred.predict_batch(emb, _prompts(), multimask=True)


@pytest.mark.parametrize("family", list(FAMILY_MODEL))
def test_torch_runtime_is_exact(predictors, family):
    base = predictors[family]
    image = _image()
    _, ref = _run(base, image)
    fast = apply_runtime(base, "torch", decode_chunk=2)
    emb, out = _run(fast, image)
    assert emb.model_id == base.model_id
    assert _min_iou(ref, out) >= 0.99
    for r, c in zip(ref, out):
        np.testing.assert_allclose(r.scores, c.scores, atol=1e-4)
        np.testing.assert_allclose(r.logits, c.logits, atol=1e-3)
    # the fp32 embedding is interchangeable with the base predictor's
    assert len(fast.predict_batch(base.embed(image), _prompts()[:2])) == 2


@pytest.mark.parametrize("family", list(FAMILY_MODEL))
def test_bf16_runtime_parity(predictors, family):
    base = predictors[family]
    image = _image()
    _, ref = _run(base, image)
    fast = apply_runtime(base, "torch-bf16")
    assert str(fast.decoder_dtype) == "torch.bfloat16"
    # the encoder's parity here; a bf16 decoder on tiny random weights (logits ~1e-5, sums of
    # larger terms) is noise, so its parity is measured on the real-size model by bench.latency
    fast.decoder_dtype = None
    emb, out = _run(fast, image)
    assert emb.model_id.endswith("@bf16")
    feats = emb.features["image_embeddings"]
    for t in feats if isinstance(feats, (list, tuple)) else [feats]:
        assert str(t.dtype) == "torch.float32"
    assert _min_iou(ref, out) >= 0.95
    assert base.embed(image).model_id == base.model_id  # the base predictor is unchanged


@pytest.mark.skipif(os.environ.get("ANYSEG_TEST_COMPILE") != "1",
                    reason="torch.compile on CPU takes ~10-60 s per model (inductor C++ build); set ANYSEG_TEST_COMPILE=1")
@pytest.mark.parametrize("family", list(FAMILY_MODEL))
def test_compile_runtime_parity(predictors, family):
    base = predictors[family]
    image = _image()
    _, ref = _run(base, image)
    fast = apply_runtime(base, "torch-compile")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _, out = _run(fast, image)
    if fast.compile_failed:
        pytest.skip(f"torch.compile is not usable here: {fast.compile_failed}")
    assert _min_iou(ref, out) >= 0.99


def test_compile_failure_falls_back(predictors, monkeypatch):
    import torch

    def broken(*a, **k):
        raise RuntimeError("no compiler\nsecond line")

    monkeypatch.setattr(torch, "compile", broken)
    base = predictors["sam"]
    with pytest.warns(RuntimeWarning, match="running eager"):
        fast = apply_runtime(base, "torch-compile")
    assert fast.compile_failed == "RuntimeError: no compiler"
    _, out = _run(fast, _image())
    _, ref = _run(base, _image())
    assert _min_iou(ref, out) >= 0.99


def test_unknown_runtime_is_one_line(predictors):
    with pytest.raises(InputError) as exc:
        apply_runtime(predictors["sam"], "torch-fp8")
    assert "\n" not in str(exc.value) and "torch-fp8" in str(exc.value)
    for rt in RUNTIMES:
        assert rt in str(exc.value)
    with pytest.raises(InputError):
        apply_runtime(predictors["sam"], "torch", decode_chunk=0)
    with pytest.raises(InputError):
        apply_runtime(object(), "torch")  # type: ignore[arg-type]


def test_cpu_bf16_support_reports_flags():
    info = cpu_bf16_support()
    assert set(info) >= {"avx512_bf16", "amx_bf16", "native"}


def test_chunked_bf16_attention_matches_sdpa():
    import torch
    import torch.nn.functional as F

    from anyseg.runtime.torch_fast import ATTENTION_CHUNK, _chunked_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 2 * ATTENTION_CHUNK + 40, 16, generator=g) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, scale=0.3).transpose(1, 2)
    got, _ = _chunked_attention(None, q.bfloat16(), k.bfloat16(), v.bfloat16(), scaling=0.3, is_causal=False)
    assert got.dtype == torch.bfloat16 and got.shape == ref.shape
    torch.testing.assert_close(got.float(), ref, rtol=0, atol=0.03)
    same, _ = _chunked_attention(None, q, k, v, scaling=0.3, is_causal=False)  # fp32: transformers' SDPA path, unchanged
    torch.testing.assert_close(same, ref, rtol=1e-6, atol=1e-6)


def test_bf16_runtime_leaves_fp32_embeddings_unchanged(predictors):
    import torch

    base = predictors["sam2"]
    image = _image()
    before = base.embed(image).features["image_embeddings"]
    apply_runtime(base, "torch-bf16").embed(image)
    after = base.embed(image).features["image_embeddings"]
    assert all(torch.equal(a, b) for a, b in zip(before, after))

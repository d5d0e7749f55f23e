"""FastMaskDecoder: transformers' SAM / SAM 2 / SAM 3 tracker decoder rescheduled, same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import BUILDERS

from anyseg.models import load_model
from anyseg.models.sam_decoder import CACHE_IMAGES, FastMaskDecoder, supports_fast_decoder
from anyseg.types import Prompt

FAMILY_MODEL = {"sam": "sam-vit-base", "sam2": "sam2.1-hiera-tiny", "sam3_tracker": "sam3"}


@pytest.fixture(scope="module")
def preds(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fastdec")
    return {fam: load_model(name, weights=BUILDERS[fam](root / fam), device="cpu") for fam, name in FAMILY_MODEL.items()}


def _image(h: int = 90, w: int = 130, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _prompt_kwargs(kind: str, b: int, frame: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    if kind == "click":
        return {"input_points": torch.rand(1, b, 1, 2, generator=g) * frame, "input_labels": torch.ones(1, b, 1, dtype=torch.long)}
    if kind == "clicks":
        return {"input_points": torch.rand(1, b, 3, 2, generator=g) * frame,
                "input_labels": torch.tensor([[[1, 0, 1]] * b])}
    xy = torch.rand(1, b, 2, generator=g) * frame / 2
    kw = {"input_boxes": torch.cat([xy, xy + frame / 3], -1)}
    if kind == "box+click":
        kw.update(input_points=(xy + frame / 6)[:, :, None], input_labels=torch.ones(1, b, 1, dtype=torch.long))
    return kw


@pytest.mark.parametrize("family", list(FAMILY_MODEL))
@pytest.mark.parametrize("kind", ["click", "clicks", "box", "box+click"])
@pytest.mark.parametrize("multimask", [True, False])
def test_matches_the_models_forward(preds, family, kind, multimask):
    p = preds[family]
    model = p.model
    assert supports_fast_decoder(model, family)
    emb = p.embed(_image())
    feats = emb.features["image_embeddings"]
    kw = _prompt_kwargs(kind, 3, p.frame)
    with torch.inference_mode():
        ref = model(image_embeddings=feats, multimask_output=multimask, **kw)
        sparse, _ = model.prompt_encoder(input_points=kw.get("input_points"), input_labels=kw.get("input_labels"),
                                         input_boxes=kw.get("input_boxes"), input_masks=None)
        masks, iou = FastMaskDecoder(model)(feats, sparse[0], multimask)
    want_m, want_s = ref.pred_masks[0], ref.iou_scores[0]
    assert masks.shape == want_m.shape and iou.shape == want_s.shape
    scale = float(want_m.abs().max())
    assert scale > 0
    torch.testing.assert_close(masks, want_m, rtol=0, atol=1e-4 * scale)
    torch.testing.assert_close(iou, want_s, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", list(FAMILY_MODEL))
def test_predictor_uses_it_and_agrees_with_the_model_path(preds, family, monkeypatch):
    p = preds[family]
    emb = p.embed(_image(70, 100, seed=1))
    prompts = [Prompt(points=[[20, 30]]), Prompt(points=[[60, 40], [10, 10]], labels=[1, 0]),
               Prompt(box=[5, 5, 80, 60]), Prompt(points=[[50, 50]])]
    calls = []
    forward = p.model.forward
    monkeypatch.setattr(p.model, "forward", lambda *a, **k: calls.append(k) or forward(*a, **k))
    fast = [p.predict_batch(emb, prompts, multimask=mm) for mm in (True, False)]
    assert calls == [], "point and box prompts go through the fast decoder"
    monkeypatch.setattr(p, "fast_decoder_chunk", 3)
    chunked = p.predict_batch(emb, prompts, multimask=True)
    monkeypatch.setattr(p, "fast_decoder", False)
    slow = [p.predict_batch(emb, prompts, multimask=mm) for mm in (True, False)]
    assert len(calls) > 0
    for got_list, want_list in zip(fast + [chunked], slow + [slow[0]]):
        for got, want in zip(got_list, want_list):
            np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)
            scale = np.abs(want.logits).max()
            np.testing.assert_allclose(got.logits, want.logits, rtol=0, atol=1e-4 * scale)
            # masks threshold the same logits: only pixels within rounding of 0 may differ
            assert (got.masks != want.masks).mean() < 1e-3


def test_segment_everything_points_use_it(preds):
    p = preds["sam2"]
    emb = p.embed(_image(64, 64, seed=2))
    pts = np.array([[10.0, 20.0], [50.0, 30.0], [33.0, 60.0]])
    fast_logits, fast_scores = p.decode_points(emb, pts)
    p.fast_decoder = False
    try:
        logits, scores = p.decode_points(emb, pts)
    finally:
        p.fast_decoder = True
    torch.testing.assert_close(fast_scores, scores, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_logits, logits, rtol=0, atol=1e-4 * float(logits.abs().max()))


def test_mask_inputs_and_sam_hq_take_the_models_forward(preds, tmp_path, monkeypatch):
    p = preds["sam"]
    emb = p.embed(_image())
    first = p.predict(emb, Prompt(points=[[30, 40]]), multimask=True)
    calls = []
    forward = p.model.forward
    monkeypatch.setattr(p.model, "forward", lambda *a, **k: calls.append(k) or forward(*a, **k))
    p.predict(emb, Prompt(points=[[30, 40]], mask_logits=first.logits[0]))
    assert len(calls) == 1 and "input_masks" in calls[0]
    hq = load_model("sam-hq-vit-base", weights=BUILDERS["sam_hq"](tmp_path / "hq"), device="cpu")
    assert not supports_fast_decoder(hq.model, "sam_hq") and hq._fast_decoder() is None
    assert hq.predict(hq.embed(_image()), Prompt(points=[[30, 40]])).masks.shape == (1, 90, 130)


def test_per_image_state_is_computed_once_and_bounded(preds, monkeypatch):
    p = preds["sam2"]
    fast = p._fast_decoder()
    built = []
    real = FastMaskDecoder._build_state
    monkeypatch.setattr(FastMaskDecoder, "_build_state", lambda self, *a: built.append(1) or real(self, *a))
    embs = [p.embed(_image(seed=s)) for s in range(CACHE_IMAGES + 2)]
    for _ in range(3):
        p.predict(embs[0], Prompt(points=[[30, 40]]))
    assert len(built) == 1, "clicks on one embedding reuse its decoder state"
    outs = [p.predict(e, Prompt(points=[[30, 40]])) for e in embs]
    assert len(built) == 1 + len(embs) - 1
    assert len(fast._images) == CACHE_IMAGES
    # another image's state is never reused: different embeddings give different masks
    assert not np.allclose(outs[0].logits, outs[1].logits)


def test_bf16_gemms_run_in_bf16(preds, monkeypatch):
    """Plumbing only: tiny random decoders cancel to ~1e-5 logits, where bf16 is noise. Accuracy on
    the real-size architecture is measured by ``python -m bench.latency`` (mask IoU vs fp32)."""
    p = preds["sam2"]
    emb = p.embed(_image(seed=3))
    prompt = Prompt(points=[[40, 50]])
    ref = p.predict(emb, prompt, multimask=True)
    monkeypatch.setattr(p, "decoder_dtype", torch.bfloat16)
    got = p.predict(emb, prompt, multimask=True)
    assert got.logits.dtype == np.float32 and got.masks.shape == ref.masks.shape
    assert np.isfinite(got.logits).all() and not np.array_equal(got.logits, ref.logits)
    import anyseg.models.sam_decoder as sd

    seen = []
    real = sd._mm
    monkeypatch.setattr(sd, "_mm", lambda a, b, dt: seen.append(dt) or real(a, b, dt))
    again = p.predict(emb, prompt, multimask=True)
    assert seen and set(seen) == {torch.bfloat16}  # every image-sized GEMM ran in bf16
    np.testing.assert_array_equal(again.logits, got.logits)


def test_unknown_decoders_are_not_claimed():
    class Bare:
        pass

    assert not supports_fast_decoder(Bare(), "sam2")
    assert not supports_fast_decoder(Bare(), "classical")

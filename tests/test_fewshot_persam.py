"""PerSAM / PerSAM-F on tiny random SAM-family models, loaded through the users' path."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from tiny_models import BUILDERS

from anyseg.errors import InputError, ModelError
from anyseg.fewshot import Reference, Segmenter
from anyseg.fewshot.persam import PerSamFMethod, PerSamMethod, fit_scale_weights, grid_coverage, guided_decode
from anyseg.models import load_model
from anyseg.models.sam import Geometry
from anyseg.types import Prompt

FAMILY_MODEL = {"sam": "sam-vit-base", "sam_hq": "sam-hq-vit-base", "sam2": "sam2.1-hiera-tiny", "sam3_tracker": "sam3"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("persam")
    return {fam: BUILDERS[fam](root / fam) for fam in FAMILY_MODEL}


@pytest.fixture(scope="module")
def preds(folders) -> dict:
    return {fam: load_model(FAMILY_MODEL[fam], weights=folders[fam], device="cpu") for fam in FAMILY_MODEL}


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _refs() -> list[Reference]:
    a, b = _image(90, 150, 1), _image(120, 80, 2)
    ma = np.zeros(a.shape[:2], bool)
    ma[20:50, 30:80] = True
    mb = np.zeros(b.shape[:2], bool)
    mb[60:110, 10:40] = True
    return [Reference(a, ma, "a"), Reference(b, mb, "b")]


class _CountEmbeds:
    def __init__(self, predictor):
        self.p, self.n = predictor, 0
        self._embed = predictor.embed

    def __enter__(self):
        def embed(image):
            self.n += 1
            return self._embed(image)

        self.p.embed = embed
        return self

    def __exit__(self, *exc):
        del self.p.embed


def test_loads_a_model_folder_and_segments(folders):
    seg = Segmenter(method="persam", model=str(folders["sam"]), device="cpu").fit(_refs()[:1])
    masks = seg.predict(_image(70, 110, 5))
    assert masks.masks.shape[1:] == (70, 110) and len(masks) <= 1
    assert np.all((masks.scores >= 0) & (masks.scores <= 1))


@pytest.mark.parametrize("family", list(FAMILY_MODEL))
@pytest.mark.parametrize("method", ["persam", "persam-f"])
def test_reference_features_once_and_masks_image_size(preds, family, method):
    p = preds[family]
    refs = _refs()
    with _CountEmbeds(p) as count:
        seg = Segmenter(method=method, model=p).fit(refs)
        assert count.n == len(refs)  # each reference embedded once per fit
        for size in [(64, 64), (97, 181), (150, 60)]:
            before = count.n
            one = seg.predict(_image(*size, seed=size[0]))
            every = seg.predict(_image(*size, seed=size[0]), instances="all")
            assert count.n == before + 2  # one encoder pass per target, the references not again
            for m in (one, every):
                assert m.masks.shape[1:] == size
                assert np.all((m.scores >= 0) & (m.scores <= 1))
            assert len(one) <= 1 and len(every) <= PerSamMethod(p).max_instances
            assert list(every.scores) == sorted(every.scores, reverse=True)
    assert seg.fits == 1 and seg._fitted.references == 2


def test_fusion_of_references_averages_their_features(preds):
    p = preds["sam"]
    refs = _refs()
    m = PerSamMethod(p)
    f1, f2, both = m.fit(refs[:1]), m.fit(refs[1:]), m.fit(refs)
    want = torch.nn.functional.normalize(f1.location + f2.location, dim=0)
    torch.testing.assert_close(both.location, want)
    torch.testing.assert_close(both.semantic, (f1.semantic + f2.semantic) / 2)
    assert both.cells == f1.cells + f2.cells
    assert torch.isclose(both.location.norm(), torch.tensor(1.0))


def test_mask_coverage_on_the_embedding_grid():
    geo = Geometry.for_family("sam", (100, 200), 256)  # longest side: 128 x 256 inside the 256 frame
    mask = np.zeros((100, 200), bool)
    mask[:, :100] = True
    cov = grid_coverage(geo, mask, (16, 16))
    assert cov[:8, :8].min() > 0.99 and cov[:, 8:].max() < 0.01
    assert cov[8:].max() == 0  # the padding rows
    geo2 = Geometry.for_family("sam2", (100, 200), 256)  # square: stretched
    assert grid_coverage(geo2, mask, (16, 16))[:, :8].min() > 0.99


@pytest.mark.parametrize("family", ["sam", "sam_hq", "sam2", "sam3_tracker"])
def test_guided_decode_default_off_is_the_models_decoder(preds, family):
    p = preds[family]
    emb = p.embed(_image(90, 130))
    prompt = Prompt(points=np.array([[40.0, 30.0], [100.0, 70.0]]), labels=np.array([1, 0]))
    plain = guided_decode(p, emb, prompt)
    p.fast_decoder = False  # the model's own forward, as guided_decode calls it
    try:
        want = p.predict(emb, prompt)
    finally:
        del p.fast_decoder
    np.testing.assert_array_equal(plain.logits, want.logits)
    np.testing.assert_array_equal(plain.masks, want.masks)
    np.testing.assert_allclose(plain.scores, want.scores)
    fast = p.predict(emb, prompt)  # the default (fast) decoder: the same up to float rounding
    np.testing.assert_allclose(fast.logits, want.logits, atol=1e-4 * np.abs(want.logits).max())


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_guidance_changes_the_decoder_and_leaves_the_model_alone(preds, family):
    p = preds[family]
    emb = p.embed(_image(90, 130))
    prompt = Prompt(points=np.array([[40.0, 30.0]]))
    last = emb.features["image_embeddings"]
    last = last[-1] if isinstance(last, list) else last
    c, n = last.shape[1], last.shape[2] * last.shape[3]
    attn = torch.linspace(0, 1, n).reshape(1, 1, 1, n)
    target = torch.full((1, 1, 1, c), 3.0)
    before = guided_decode(p, emb, prompt)
    guided = guided_decode(p, emb, prompt, attention_similarity=attn, target_embedding=target)
    assert np.abs(guided.logits - before.logits).max() > 0.05 * np.abs(before.logits).max()  # random weights: small logits
    np.testing.assert_array_equal(guided_decode(p, emb, prompt).logits, before.logits)  # nothing kept
    np.testing.assert_array_equal(p.predict(emb, prompt).logits, p.predict(emb, prompt).logits)


def test_persam_f_trains_two_weights_and_nothing_else(preds):
    p = preds["sam"]
    state = {k: v.clone() for k, v in p.model.state_dict().items()}
    grads = {k: v.requires_grad for k, v in p.model.named_parameters()}
    fitted = PerSamFMethod(p).fit(_refs())  # (its speed is bench/fewshot_latency.py's, not a test's)
    w = fitted.weights
    assert w.shape == (3,) and abs(float(w.sum()) - 1) < 1e-5
    assert not np.allclose(w, 1 / 3)  # trained
    for k, v in p.model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert {k: v.requires_grad for k, v in p.model.named_parameters()} == grads
    assert all(q.grad is None for q in p.model.parameters())


def test_scale_weights_move_to_the_output_that_fits():
    torch.manual_seed(0)
    gt = (torch.rand(400) > 0.6).float()
    good = gt * 16 - 8
    outputs = [(torch.stack([torch.randn(400), good, torch.randn(400)]), gt)]
    w = fit_scale_weights(outputs, steps=200, lr=2e-2)
    assert w[1] > 0.6 and w[1] == max(w)


def test_bad_options_and_models_are_one_line(preds):
    with pytest.raises(InputError, match="--features is for --method matcher"):
        PerSamMethod.from_options(model=preds["sam"], features="dinov2-small")
    with pytest.raises(InputError, match="unknown option"):
        PerSamMethod.from_options(model=preds["sam"], topk=3)
    with pytest.raises(InputError, match="unknown option"):
        PerSamFMethod.from_options(model=preds["sam"], guidance=False)
    with pytest.raises(InputError, match="min_evidence"):
        PerSamMethod(preds["sam"], min_evidence=2)
    with pytest.raises(ModelError, match="anyseg models pull sam-vit-base") as e:
        PerSamMethod.from_options(model="classical")
    assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match="no SAM-family weights are present locally"):
        Segmenter(method="persam", quiet=True, model=None)
    with pytest.raises(InputError):
        PerSamMethod.from_options(model=3)


def test_persam_without_guidance_is_an_ablation(preds):
    p = preds["sam2"]
    seg = Segmenter(method="persam", model=p, guidance=False).fit(_refs()[:1])
    assert seg.predict(_image(80, 80)).masks.shape[1:] == (80, 80)

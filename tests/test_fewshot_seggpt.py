"""SegGPT on a tiny random SegGptForImageSegmentation, loaded through the users' path (--model FOLDER / resolve)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_fewshot import SIZE, build_seggpt

from anyseg.errors import InputError, ModelError
from anyseg.fewshot import Reference, Segmenter
from anyseg.fewshot.seggpt import PALETTE, SegGptMethod, SegGptModel, palette_confidence
from anyseg.models.families import FEWSHOT
from anyseg.models.resolver import resolve


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_seggpt(tmp_path_factory.mktemp("seggpt") / "tiny-seggpt")


@pytest.fixture(scope="module")
def model(folder) -> SegGptModel:
    return SegGptMethod.from_options(model=str(folder), device="cpu").model


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _refs() -> list[Reference]:
    a, b = _image(90, 150, 1), _image(120, 80, 2)
    ma = np.zeros(a.shape[:2], bool)
    ma[20:50, 30:80] = True
    mb = np.zeros(b.shape[:2], bool)
    mb[60:110, 10:40] = True
    return [Reference(a, ma, "a"), Reference(b, mb, "b")]


class _Spy:
    """Records the keyword arguments of the transformers model's forward."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self._forward = model.forward

    def __enter__(self):
        def forward(*args, **kwargs):
            self.calls.append(kwargs)
            return self._forward(*args, **kwargs)

        self.model.forward = forward
        return self

    def __exit__(self, *exc):
        del self.model.forward


def test_a_model_folder_resolves_to_the_seggpt_family(folder, model):
    spec = resolve(str(folder), FEWSHOT)
    assert spec.family == "seggpt" and spec.path == folder
    assert type(model.model).__name__ == "SegGptForImageSegmentation"
    assert model.size == (SIZE, SIZE)
    assert type(model.processor).__name__ == "SegGptImageProcessorPil"


def test_fit_once_and_masks_at_the_image_size(folder):
    seg = Segmenter(method="seggpt", model=str(folder), device="cpu")
    prompts = []
    real = seg.method.model.prompts
    seg.method.model.prompts = lambda refs: prompts.append(1) or real(refs)
    seg.fit(_refs())
    assert len(prompts) == 1
    fitted = seg._fitted
    assert tuple(fitted.pixel_values.shape) == (2, 3, SIZE, SIZE) == tuple(fitted.masks.shape)
    with _Spy(seg.method.model.model) as spy:
        for size in [(64, 64), (77, 201), (150, 40)]:
            one = seg.predict(_image(*size, seed=size[1]))
            every = seg.predict(_image(*size, seed=size[1]), instances="all")
            for m in (one, every):
                assert m.masks.shape[1:] == size
                assert np.all((m.scores >= 0) & (m.scores <= 1))
            assert len(one) == 1 and len(every) >= 1  # the gray-biased tiny model paints some foreground
            assert list(every.scores) == sorted(every.scores, reverse=True)
            assert not (every.masks.sum(0) > 1).any()  # components are disjoint
            assert every.masks.any(0).sum() <= one.masks[0].sum()
    assert len(prompts) == 1  # predict never preprocesses the references again
    for call in spy.calls:
        assert call["prompt_pixel_values"] is fitted.pixel_values and call["prompt_masks"] is fitted.masks


def test_prompt_masks_are_painted_with_the_palette(model):
    ref = _refs()[0]
    p = model.prompts([ref])
    mean = torch.tensor(model.processor.image_mean).view(3, 1, 1)
    std = torch.tensor(model.processor.image_std).view(3, 1, 1)
    rgb = ((p.masks[0] * std + mean) * 255).round()
    colours = {tuple(int(v) for v in c) for c in rgb.reshape(3, -1).T.tolist()}
    assert colours == set(PALETTE)  # nearest-neighbour resize keeps the two colours


def test_fusion_of_two_references_uses_the_feature_ensemble(model):
    refs = _refs()
    method = SegGptMethod(model)
    target = _image(70, 90, 7)
    with _Spy(model.model) as spy:
        one = model.paint(target, method.fit(refs[:1]))
        both = model.paint(target, method.fit(refs))
        swapped = model.paint(target, method.fit(refs[::-1]))
    assert spy.calls[0]["feature_ensemble"] is False and spy.calls[1]["feature_ensemble"] is True
    assert spy.calls[1]["pixel_values"].shape[0] == 2
    assert np.abs(both - one).max() > 1e-3  # the second reference changes the painting
    np.testing.assert_allclose(both, swapped, atol=1e-3)  # and the order of the references does not


def test_palette_confidence():
    painted = np.zeros((4, 4, 3), np.float32)
    painted[:2] = 255
    painted[2, :] = 127.5
    conf = palette_confidence(painted, (4, 4))
    np.testing.assert_allclose(conf[:2], 1, atol=1e-6)
    np.testing.assert_allclose(conf[3], -1, atol=1e-6)
    np.testing.assert_allclose(conf[2], 0, atol=1e-6)
    assert palette_confidence(painted, (40, 10)).shape == (40, 10)


def test_nothing_painted_is_no_mask(model, monkeypatch):
    method = SegGptMethod(model)
    fitted = method.fit(_refs()[:1])
    monkeypatch.setattr(model, "paint", lambda image, prompts, embedding_type="instance": np.zeros((8, 8, 3), np.float32))
    for instances in ("one", "all"):
        m = method.predict(fitted, _image(30, 50), instances)
        assert len(m) == 0 and m.masks.shape == (0, 30, 50)


def test_instances_are_connected_components(model, monkeypatch):
    method = SegGptMethod(model)
    painted = np.zeros((SIZE, SIZE, 3), np.float32)
    painted[4:20, 4:20] = 255  # a confident blob
    painted[40:60, 30:60] = 170  # a fainter one
    painted[62, 62] = 255  # a speck below min_area
    monkeypatch.setattr(model, "paint", lambda image, prompts, embedding_type="instance": painted)
    m = method.predict(method.fit(_refs()[:1]), _image(SIZE, SIZE), "all")
    assert len(m) == 2 and m.scores[0] > m.scores[1] > 0
    assert m.masks[0][4:20, 4:20].all()


def test_bad_input_is_one_line(folder, model, tmp_path):
    with pytest.raises(InputError, match="--features is for --method matcher"):
        SegGptMethod.from_options(model=str(folder), features="dinov2-small")
    with pytest.raises(InputError, match="unknown option"):
        SegGptMethod.from_options(model=str(folder), topk=1)
    with pytest.raises(InputError, match="embedding_type"):
        SegGptMethod(model, embedding_type="panoptic")
    with pytest.raises(ModelError) as e:  # the default registry name, offline and absent
        SegGptMethod.from_options(allow_download=False)
    assert "seggpt-vit-large" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ModelError):  # a promptable model is not an in-context one
        SegGptMethod.from_options(model="sam-vit-base", allow_download=False)


def test_the_other_in_context_family_is_refused(tmp_path):
    from tiny_sam3 import build_sam3

    from anyseg.fewshot.sam3 import Sam3ExemplarMethod

    sam3 = build_sam3(tmp_path / "sam3")
    with pytest.raises(ModelError, match="--method seggpt needs a SegGPT model"):
        SegGptMethod.from_options(model=str(sam3), device="cpu")
    seggpt = build_seggpt(tmp_path / "seggpt")
    with pytest.raises(ModelError, match="--method sam3 needs a SAM 3 model"):
        Sam3ExemplarMethod.from_options(model=str(seggpt), device="cpu")

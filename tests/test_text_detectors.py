"""Grounding DINO and OWLv2 text -> boxes on tiny random models of the real architectures.

The models are loaded through the users' path (``weights=`` folder and ``$ANYSEG_MODELS/<name>``).
Box geometry and label mapping are checked by replacing the model's forward with one that
returns known normalised boxes and logits, so the expected pixel boxes are exact.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from anyseg.errors import InputError, ModelError, ModelNotAvailable
from anyseg.text.base import Detections
from anyseg.text.detectors import (
    DEFAULT_THRESHOLDS,
    GroundingDinoDetector,
    Owlv2Detector,
    cxcywh_to_pixels,
    dino_resize_shape,
    load_detector,
)
from anyseg.text.vocab import ClassName, TextTruncatedWarning, parse_classes

from tiny_detectors import BUILDERS, CLIP_NORM, DINO_LONGEST, DINO_MAX_TEXT_LEN, DINO_SHORTEST, OWL_FRAME

MODEL = {"grounding_dino": "grounding-dino-tiny", "owlv2": "owlv2-base"}
CLASSES = parse_classes("person|pedestrian,red car,sky")


@pytest.fixture(scope="module")
def models_root(tmp_path_factory) -> Path:
    """``$ANYSEG_MODELS``-style folder: ``<root>/<model name>`` per family."""
    root = tmp_path_factory.mktemp("anyseg_models")
    for family, name in MODEL.items():
        BUILDERS[family](root / name)
    return root


@pytest.fixture(scope="module")
def detectors(models_root) -> dict:
    return {fam: load_detector(name, weights=str(models_root / name), device="cpu") for fam, name in MODEL.items()}


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# -- fake model outputs ------------------------------------------------------------------------
class FakeDino:
    """Replaces a Grounding DINO forward: box ``q`` gets ``pred_boxes[q]`` and ``sigmoid(logit) = p`` on ``tokens``."""

    def __init__(self, model, boxes: list, hits: list[tuple[int, list[int], float]]):
        self.max_len = model.config.max_text_len
        self.boxes, self.hits, self.calls = boxes, hits, []

    def __call__(self, **kw):
        self.calls.append(kw)
        n_tok = kw["input_ids"].shape[1]
        logits = torch.full((1, len(self.boxes), self.max_len), float("-inf"))
        logits[0, :, :n_tok] = -20.0
        for q, toks, p in self.hits:
            logits[0, q, toks] = _logit(p)
        return SimpleNamespace(logits=logits, pred_boxes=torch.tensor([self.boxes], dtype=torch.float32))


class FakeOwl:
    """Replaces an OWLv2 forward: patch ``i`` gets ``pred_boxes[i]`` and ``sigmoid(logit) = p`` for query ``q``."""

    def __init__(self, boxes: list, hits: list[tuple[int, int, float]]):
        self.boxes, self.hits, self.calls = boxes, hits, []

    def __call__(self, **kw):
        self.calls.append(kw)
        logits = torch.full((1, len(self.boxes), kw["input_ids"].shape[0]), -20.0)
        for i, q, p in self.hits:
            logits[0, i, q] = _logit(p)
        return SimpleNamespace(logits=logits, pred_boxes=torch.tensor([self.boxes], dtype=torch.float32))


def _caption_tokens(det: GroundingDinoDetector, classes) -> list[str]:
    """The caption's tokens as the tokenizer writes them (independently of the detector's span mapping)."""
    names = [n.lower() for c in classes for n in c.names]
    caption = " . ".join(names) + " ."
    return det.tokenizer.convert_ids_to_tokens(det.tokenizer(caption)["input_ids"])


# -- loading -------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(MODEL))
def test_load_via_weights_and_anyseg_models(models_root, detectors, monkeypatch, family):
    det = detectors[family]
    assert det.name == MODEL[family] and det.device == "cpu"
    assert isinstance(det, GroundingDinoDetector if family == "grounding_dino" else Owlv2Detector)
    monkeypatch.setenv("ANYSEG_MODELS", str(models_root))
    monkeypatch.setenv("ANYSEG_DEVICE", "cpu")  # device=None -> default_device()
    again = load_detector(MODEL[family])
    assert type(again) is type(det) and again.device == "cpu"
    for a, b in zip(again.model.state_dict().values(), det.model.state_dict().values()):
        assert torch.equal(a, b)


def test_preprocessor_config_is_read(detectors):
    dino, owl = detectors["grounding_dino"], detectors["owlv2"]
    assert (dino.shortest_edge, dino.longest_edge) == (DINO_SHORTEST, DINO_LONGEST)
    assert owl.frame == OWL_FRAME
    assert np.allclose(owl.mean, CLIP_NORM[0]) and np.allclose(owl.std, CLIP_NORM[1])


@pytest.mark.parametrize("name", ["sam-vit-base", "clip-vit-b16", "classical"])
def test_non_detector_name_is_model_error(name):
    with pytest.raises(ModelError, match="not a text detector"):
        load_detector(name)


def test_weights_without_tokenizer_is_model_error(models_root, tmp_path):
    import shutil

    folder = tmp_path / "owl"
    folder.mkdir()
    for f in ("config.json", "model.safetensors", "preprocessor_config.json"):
        shutil.copy(models_root / MODEL["owlv2"] / f, folder / f)
    with pytest.raises(ModelError, match="tokenizer") as e:
        load_detector("owlv2-base", weights=str(folder), device="cpu")
    assert "\n" not in str(e.value)


def test_unknown_name_is_model_error():
    with pytest.raises(ModelError, match="unknown model"):
        load_detector("grounding-dino-huge")


@pytest.mark.parametrize("name", list(MODEL.values()))
def test_offline_missing_weights_is_one_line(name):
    with pytest.raises(ModelNotAvailable) as e:
        load_detector(name)
    assert "\n" not in str(e.value) and name in str(e.value)


# -- real forward passes ---------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(MODEL))
@pytest.mark.parametrize("shape", [(200, 300), (300, 200)])
def test_real_forward_gives_valid_detections(detectors, family, shape):
    det = detectors[family]
    out = det.detect(_image(*shape), CLASSES, box_threshold=0.0, text_threshold=0.0)
    assert isinstance(out, Detections) and len(out) > 0
    h, w = shape
    assert out.boxes.dtype == np.float32 and out.boxes.shape == (len(out), 4)
    assert np.all(out.boxes[:, [0, 2]] >= 0) and np.all(out.boxes[:, [0, 2]] <= w)
    assert np.all(out.boxes[:, [1, 3]] >= 0) and np.all(out.boxes[:, [1, 3]] <= h)
    assert np.all(out.boxes[:, 2] > out.boxes[:, 0]) and np.all(out.boxes[:, 3] > out.boxes[:, 1])
    assert set(out.labels.tolist()) <= {0, 1, 2}
    names = [n for c in CLASSES for n in c.names]
    assert all(p in names for p in out.phrases)
    for lab, phrase in zip(out.labels, out.phrases):
        assert phrase in CLASSES[lab].names
    again = det.detect(_image(*shape), CLASSES, box_threshold=0.0, text_threshold=0.0)
    assert np.array_equal(out.boxes, again.boxes), "no per-image state: the same image gives the same boxes"


def test_grounding_dino_caption_reaches_text_encoder(detectors):
    det = detectors["grounding_dino"]
    seen = []
    hook = det.model.model.text_backbone.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    try:
        det.detect(_image(100, 150), CLASSES)
    finally:
        hook.remove()
    expected = det.tokenizer("person . pedestrian . red car . sky .")["input_ids"]
    assert len(seen) == 1 and seen[0].tolist() == [expected]


def test_owlv2_queries_reach_text_encoder(detectors):
    det = detectors["owlv2"]
    seen = []

    def grab(mod, args, kwargs):
        seen.append(kwargs["input_ids"].clone())

    hook = det.model.owlv2.text_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        det.detect(_image(100, 150), CLASSES)
    finally:
        hook.remove()
    expected = det.tokenizer(["person", "pedestrian", "red car", "sky"], padding="max_length", max_length=16)
    assert len(seen) == 1, "all queries go through the text tower in one batch"
    assert seen[0].tolist() == expected["input_ids"] and seen[0].shape == (4, 16)


# -- preprocessing -----------------------------------------------------------------------------------
def test_dino_resize_shape_matches_transformers():
    from transformers.image_transforms import get_size_with_aspect_ratio

    for h, w in [(480, 640), (640, 480), (1000, 3000), (3000, 1000), (800, 800), (333, 97), (1080, 1920)]:
        assert dino_resize_shape(h, w) == get_size_with_aspect_ratio((h, w), 800, 1333), (h, w)
    assert dino_resize_shape(200, 300, DINO_SHORTEST, DINO_LONGEST) == (96, 144)
    assert dino_resize_shape(100, 1000, 800, 1333) == (133, 1333)


@pytest.mark.parametrize("shape", [(200, 300), (300, 200), (50, 400)])
def test_dino_input_keeps_aspect_and_pixel_mask(detectors, monkeypatch, shape):
    det = detectors["grounding_dino"]
    fake = FakeDino(det.model, [[0.5, 0.5, 0.2, 0.2]], [])
    monkeypatch.setattr(det.model, "forward", fake)
    det.detect(_image(*shape), CLASSES)
    kw = fake.calls[0]
    expected = dino_resize_shape(*shape, DINO_SHORTEST, DINO_LONGEST)
    assert tuple(kw["pixel_values"].shape) == (1, 3, *expected)
    assert tuple(kw["pixel_mask"].shape) == (1, *expected) and bool(kw["pixel_mask"].all())


@pytest.mark.parametrize("shape", [(200, 300), (300, 200)])
def test_owlv2_pads_to_square_bottom_right_with_grey(detectors, monkeypatch, shape):
    det = detectors["owlv2"]
    fake = FakeOwl([[0.5, 0.5, 0.2, 0.2]], [])
    monkeypatch.setattr(det.model, "forward", fake)
    det.detect(np.zeros((*shape, 3), dtype=np.uint8), CLASSES)
    x = fake.calls[0]["pixel_values"][0]
    assert tuple(x.shape) == (3, OWL_FRAME, OWL_FRAME)
    mean, std = torch.tensor(CLIP_NORM[0]).view(3, 1, 1), torch.tensor(CLIP_NORM[1]).view(3, 1, 1)
    grey, black = (0.5 - mean) / std, (0.0 - mean) / std
    inside = OWL_FRAME * 2 // 3  # the image covers 2/3 of the square along its short side
    h, w = shape
    if h < w:  # padding at the bottom
        image, pad = x[:, : inside - 2], x[:, inside + 2:]
    else:  # padding on the right
        image, pad = x[:, :, : inside - 2], x[:, :, inside + 2:]
    assert torch.allclose(image, black.expand_as(image), atol=1e-5)
    assert torch.allclose(pad, grey.expand_as(pad), atol=1e-5)


# -- Detections: columnar, validated, frozen (like Masks) ---------------------------------------------
def test_detections_are_validated_and_frozen():
    import dataclasses

    det = Detections([[1, 2, 30, 40], [5, 5, 9, 9]], [0.9, 0.2], [0, 1], ["cat", "dog"])
    assert det.boxes.dtype == np.float32 and det.scores.dtype == np.float32 and det.labels.dtype == np.int64
    with pytest.raises(dataclasses.FrozenInstanceError):
        det.scores = np.zeros(2)
    with pytest.raises(ValueError, match="read-only"):
        det.boxes[0, 0] = 7
    picked = det.select([1])
    assert picked.phrases == ["dog"] and picked.boxes.tolist() == [[5, 5, 9, 9]] and len(det) == 2
    assert Detections(np.zeros((0, 4)), [], []).phrases == [] and Detections([], [], []).boxes.shape == (0, 4)
    assert Detections([1, 2, 3, 4], 0.5, 2).phrases == [""]  # one box, unbatched
    for kwargs, message in (
        (dict(scores=[0.9, 0.2, 0.1]), "Detections.scores must have shape (2,) to match 2 boxes; got 3"),
        (dict(labels=[[0, 1]]), "Detections.labels must have shape (2,) to match 2 boxes; got 1x2"),
        (dict(phrases=["cat"]), "Detections.phrases must have 2 entries to match 2 boxes; got 1"),
        (dict(boxes=[[1, 2, 3], [4, 5, 6]]), "Detections.boxes must have shape (N, 4); got 2x3"),
        (dict(boxes=[[1, 2, np.inf, 4], [0, 0, 1, 1]]), "Detections.boxes must be finite numbers"),
        (dict(scores=[1.5, 0.2]), "Detections.scores must be confidences in [0, 1]; got 0.2 to 1.5"),
    ):
        columns = dict(boxes=det.boxes, scores=det.scores, labels=det.labels, phrases=det.phrases)
        columns.update(kwargs)
        with pytest.raises(InputError) as e:
            Detections(**columns)
        assert str(e.value) == message


# -- geometry: known normalised boxes -> original pixels ---------------------------------------------
def test_cxcywh_to_pixels_clips():
    out = cxcywh_to_pixels(np.array([[0.5, 0.5, 1.2, 0.5]]), 100, 50, 50, 100)
    assert np.allclose(out, [[0, 12.5, 100, 37.5]])


@pytest.mark.parametrize("shape", [(200, 300), (300, 200)])
def test_dino_boxes_scale_by_width_and_height(detectors, monkeypatch, shape):
    det = detectors["grounding_dino"]
    toks = _caption_tokens(det, CLASSES)
    fake = FakeDino(det.model, [[0.5, 0.25, 0.2, 0.1], [0.1, 0.9, 0.4, 0.4]],
                    [(0, [toks.index("sky")], 0.9), (1, [toks.index("person")], 0.8)])
    monkeypatch.setattr(det.model, "forward", fake)
    out = det.detect(_image(*shape), CLASSES)
    h, w = shape
    order = np.argsort(-out.scores)
    assert np.allclose(out.boxes[order], [[0.4 * w, 0.2 * h, 0.6 * w, 0.3 * h], [0, 0.7 * h, 0.3 * w, h]], atol=1e-3)
    assert out.labels[order].tolist() == [2, 0] and [out.phrases[i] for i in order] == ["sky", "person"]


@pytest.mark.parametrize("shape", [(200, 300), (300, 200)])
def test_owlv2_boxes_scale_by_padded_side(detectors, monkeypatch, shape):
    det = detectors["owlv2"]
    h, w = shape
    side = max(h, w)
    boxes = [
        [0.5, 0.25, 0.2, 0.1],  # inside the image
        [0.6, 0.6, 0.2, 0.2],  # crosses into the padding along the short side: clipped
        [0.9, 0.9, 0.1, 0.1],  # wholly in the padding: dropped
    ]
    fake = FakeOwl(boxes, [(0, 3, 0.9), (1, 2, 0.8), (2, 0, 0.7)])
    monkeypatch.setattr(det.model, "forward", fake)
    out = det.detect(_image(*shape), CLASSES)
    assert len(out) == 2
    order = np.argsort(-out.scores)
    first, second = out.boxes[order]
    assert np.allclose(first, [0.4 * side, 0.2 * side, 0.6 * side, 0.3 * side], atol=1e-3)
    expected = np.array([0.5 * side, 0.5 * side, 0.7 * side, 0.7 * side])
    expected[[0, 2]] = np.minimum(expected[[0, 2]], w)
    expected[[1, 3]] = np.minimum(expected[[1, 3]], h)
    assert np.allclose(second, expected, atol=1e-3)
    assert second[2] == w or second[3] == h, "the box was clipped at the image's short side"
    assert out.labels[order].tolist() == [2, 1] and [out.phrases[i] for i in order] == ["sky", "red car"]


# -- labels and synonyms ----------------------------------------------------------------------------------
def test_dino_synonym_hit_gives_owning_class(detectors, monkeypatch):
    det = detectors["grounding_dino"]
    toks = _caption_tokens(det, CLASSES)
    car = toks.index("car")  # one token of the two-token name "red car": max over the name's tokens
    fake = FakeDino(det.model, [[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]],
                    [(0, [toks.index("pedestrian")], 0.9), (1, [car], 0.7)])
    monkeypatch.setattr(det.model, "forward", fake)
    out = det.detect(_image(120, 90), CLASSES)
    got = sorted(zip(out.labels.tolist(), out.phrases, [round(float(s), 4) for s in out.scores]))
    assert got == [(0, "pedestrian", 0.9), (1, "red car", 0.7)]


def test_dino_separators_and_specials_do_not_count(detectors, monkeypatch):
    det = detectors["grounding_dino"]
    toks = _caption_tokens(det, CLASSES)
    dots = [i for i, t in enumerate(toks) if t in (".", "[CLS]", "[SEP]")]
    fake = FakeDino(det.model, [[0.5, 0.5, 0.2, 0.2]], [(0, dots, 0.99)])
    monkeypatch.setattr(det.model, "forward", fake)
    assert len(det.detect(_image(64, 64), CLASSES)) == 0


def test_owlv2_synonym_hit_gives_owning_class(detectors, monkeypatch):
    det = detectors["owlv2"]
    fake = FakeOwl([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]], [(0, 1, 0.6), (0, 0, 0.4), (1, 2, 0.3)])
    monkeypatch.setattr(det.model, "forward", fake)
    out = det.detect(_image(90, 120), CLASSES)
    got = sorted(zip(out.labels.tolist(), out.phrases, [round(float(s), 4) for s in out.scores]))
    assert got == [(0, "pedestrian", 0.6), (1, "red car", 0.3)], "best query per box; synonyms map to their class"


def test_class_name_objects_and_strings_are_accepted(detectors, monkeypatch):
    det = detectors["owlv2"]
    fake = FakeOwl([[0.5, 0.5, 0.2, 0.2]], [(0, 1, 0.6)])
    monkeypatch.setattr(det.model, "forward", fake)
    out = det.detect(_image(64, 64), [ClassName("cat", ()), ClassName("dog", ("puppy",))])
    assert out.labels.tolist() == [1] and out.phrases == ["dog"]
    out = det.detect(_image(64, 64), "cat,dog|puppy")
    assert out.labels.tolist() == [1]
    out = det.detect(_image(64, 64), ["cat", "dog|puppy"])
    assert out.labels.tolist() == [1]
    with pytest.raises(InputError, match="duplicate"):
        det.detect(_image(64, 64), ["cat", "Cat"])


# -- thresholds ----------------------------------------------------------------------------------------------
def test_default_thresholds():
    assert DEFAULT_THRESHOLDS == {"grounding_dino": (0.35, 0.25), "owlv2": (0.1, None)}


def test_dino_thresholds_filter(detectors, monkeypatch):
    det = detectors["grounding_dino"]
    toks = _caption_tokens(det, CLASSES)
    sky = toks.index("sky")
    ps = [0.9, 0.5, 0.3, 0.2]
    fake = FakeDino(det.model, [[0.5, 0.5, 0.2, 0.2]] * 4, [(q, [sky], p) for q, p in enumerate(ps)])
    monkeypatch.setattr(det.model, "forward", fake)
    img = _image(64, 80)
    assert np.allclose(np.sort(det.detect(img, CLASSES).scores), [0.5, 0.9])  # defaults 0.35 / 0.25
    assert np.allclose(det.detect(img, CLASSES, box_threshold=0.6).scores, [0.9])
    assert np.allclose(np.sort(det.detect(img, CLASSES, box_threshold=0.1).scores), [0.3, 0.5, 0.9])  # text 0.25
    assert np.allclose(np.sort(det.detect(img, CLASSES, box_threshold=0.1, text_threshold=0.1).scores),
                       [0.2, 0.3, 0.5, 0.9])
    assert np.allclose(np.sort(det.detect(img, CLASSES, box_threshold=0.1, text_threshold=0.4).scores), [0.5, 0.9])
    assert len(det.detect(img, CLASSES, box_threshold=1.0)) == 0


def test_owlv2_thresholds_filter(detectors, monkeypatch):
    det = detectors["owlv2"]
    ps = [0.9, 0.5, 0.3, 0.05]
    fake = FakeOwl([[0.5, 0.5, 0.2, 0.2]] * 4, [(i, 3, p) for i, p in enumerate(ps)])
    monkeypatch.setattr(det.model, "forward", fake)
    img = _image(64, 80)
    assert np.allclose(np.sort(det.detect(img, CLASSES).scores), [0.3, 0.5, 0.9])  # default 0.1
    assert np.allclose(np.sort(det.detect(img, CLASSES, box_threshold=0.4).scores), [0.5, 0.9])
    assert np.allclose(np.sort(det.detect(img, CLASSES, box_threshold=0.4, text_threshold=0.99).scores), [0.5, 0.9])


@pytest.mark.parametrize("family", list(MODEL))
@pytest.mark.parametrize("kwargs", [{"box_threshold": -0.1}, {"box_threshold": 1.5}, {"box_threshold": float("nan")},
                                    {"text_threshold": 2.0}, {"box_threshold": "high"}])
def test_bad_thresholds_are_input_errors(detectors, family, kwargs):
    with pytest.raises(InputError, match="threshold"):
        detectors[family].detect(_image(32, 32), CLASSES, **kwargs)


@pytest.mark.parametrize("family", list(MODEL))
@pytest.mark.parametrize("classes", [[], "", ()])
def test_empty_classes_are_input_errors(detectors, family, classes):
    with pytest.raises(InputError, match="empty"):
        detectors[family].detect(_image(32, 32), classes)


# -- truncation -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("last, detectable", [("disc", False), ("blue square", True), ("red blue square", False)])
def test_dino_long_caption_truncates_with_warning(detectors, last, detectable):
    det = detectors["grounding_dino"]
    words = ["cat", "dog", "car", "sky", "road", "tree", "building", "person", "photo", "scene"]
    if last == "disc":
        words += ["background"]
    classes = parse_classes(",".join([*words, last]))  # [CLS] + 2 tokens per word + last's tokens + "." + [SEP]
    n_tokens = 2 + 2 * len(words) + len(last.split()) + 1
    assert n_tokens > DINO_MAX_TEXT_LEN
    seen = []
    hook = det.model.model.text_backbone.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    match = "truncated to the model's 24" if detectable else f"cannot detect the names cut off: '{last}'"
    try:
        with pytest.warns(TextTruncatedWarning, match=match):
            out = det.detect(_image(64, 96), classes, box_threshold=0.0, text_threshold=0.0)
    finally:
        hook.remove()
    assert seen[0].shape[1] == DINO_MAX_TEXT_LEN
    with pytest.warns(TextTruncatedWarning, match=f"has {n_tokens} tokens"):
        caption = det.encode_text(classes)
    assert all(caption.tokens[:-1]) and bool(caption.tokens[-1]) == detectable
    if not detectable:
        assert last not in out.phrases and len(classes) - 1 not in out.labels.tolist()


def test_dino_short_caption_does_not_warn(detectors, recwarn):
    detectors["grounding_dino"].detect(_image(64, 64), CLASSES)
    assert not [w for w in recwarn if issubclass(w.category, TextTruncatedWarning)]


def test_owlv2_long_query_truncates_with_warning(detectors):
    det = detectors["owlv2"]
    long_name = " ".join(["red car on the left"] * 4)  # 20 words: > 16 tokens
    classes = [ClassName("car", (long_name,)), ClassName("sky", ())]
    seen = []

    def grab(mod, args, kwargs):
        seen.append(kwargs["input_ids"].clone())

    hook = det.model.owlv2.text_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with pytest.warns(TextTruncatedWarning, match="truncated to the model's 16"):
            out = det.detect(_image(64, 64), classes, box_threshold=0.0)
    finally:
        hook.remove()
    assert seen[0].shape == (3, 16)
    assert seen[0][1, -1].item() == det.tokenizer.eos_token_id, "a cut query still ends with the end token"
    assert isinstance(out, Detections)

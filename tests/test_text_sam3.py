"""SAM 3 concept (text) prompts on a tiny random SAM 3 of the real architecture, loaded through the users' path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.models.sam3.modeling_sam3 import Sam3ImageSegmentationOutput

from anyseg.errors import InputError, ModelError, ModelNotAvailable
from anyseg.text.sam3 import DEFAULT_THRESHOLD, Sam3TextSegmenter, load_sam3_text
from anyseg.text.vocab import TextTruncatedWarning, flatten, parse_classes
from anyseg.types import masks_to_boxes

from tiny_models import build_sam3_tracker
from tiny_sam3 import FRAME, NUM_QUERIES, TEXT_TOKENS, build_sam3, build_sam3_video

LOW = 4 * FRAME // 14  # low-res mask side of the tiny model (288 for the real one)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return build_sam3(tmp_path_factory.mktemp("sam3") / "sam3")


@pytest.fixture(scope="module")
def seg(folder) -> Sam3TextSegmenter:
    return load_sam3_text("sam3", weights=str(folder), device="cpu")


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _rect(y0: float, y1: float, x0: float, x1: float) -> torch.Tensor:
    """Low-res logits: +10 inside the normalised rectangle, -10 outside."""
    m = torch.full((LOW, LOW), -10.0)
    m[round(y0 * LOW):round(y1 * LOW), round(x0 * LOW):round(x1 * LOW)] = 10.0
    return m


def _fake_model(seg: Sam3TextSegmenter, monkeypatch, per_phrase: dict, presence: float = 10.0) -> None:
    """Make ``seg.model`` answer each phrase (decoded from its input ids) with given detections.

    ``per_phrase[phrase]`` is a list of ``(logit, normalised xyxy box, low-res mask logits)``;
    the other queries get logit -20 (score ~ 0) and empty masks.
    """

    def forward(vision_embeds=None, input_ids=None, attention_mask=None, **kwargs):
        b = input_ids.shape[0]
        logits = torch.full((b, NUM_QUERIES), -20.0)
        boxes = torch.zeros((b, NUM_QUERIES, 4))
        masks = torch.full((b, NUM_QUERIES, LOW, LOW), -10.0)
        for i in range(b):
            phrase = seg.tokenizer.decode(input_ids[i], skip_special_tokens=True).strip()
            for q, (logit, box, mask) in enumerate(per_phrase.get(phrase, [])):
                logits[i, q], boxes[i, q], masks[i, q] = logit, torch.tensor(box), mask
        return Sam3ImageSegmentationOutput(pred_masks=masks, pred_boxes=boxes, pred_logits=logits,
                                           presence_logits=torch.full((b, 1), presence))

    monkeypatch.setattr(seg.model, "forward", forward)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


# -- loading ---------------------------------------------------------------------------------
def test_loads_through_weights_path_and_models_dir(folder, monkeypatch):
    seg = load_sam3_text("sam3", weights=str(folder), device="cpu")
    assert (seg.name, seg.spec.name, seg.device) == ("sam3", "sam3", "cpu")
    assert type(seg.model).__name__ == "Sam3Model"
    assert (seg.frame, seg.max_text_tokens, seg.mean, seg.std) == (FRAME, TEXT_TOKENS, (0.5,) * 3, (0.5,) * 3)
    monkeypatch.setenv("ANYSEG_MODELS", str(folder.parent))
    via_env = load_sam3_text("sam3", device="cpu")
    assert via_env.folder == folder
    img = _image(40, 60)
    a, b = seg.segment(img, "cat", threshold=0.0), via_env.segment(img, "cat", threshold=0.0)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_hub_layout_sam3_video_checkpoint_loads_the_detector(tmp_path):
    from safetensors.torch import load_file

    folder = build_sam3_video(tmp_path / "sam3")
    seg = load_sam3_text("sam3", weights=str(folder), device="cpu")
    saved = {k[len("detector_model."):]: v for k, v in load_file(str(folder / "model.safetensors")).items()
             if k.startswith("detector_model.")}
    state = seg.model.state_dict()
    assert set(state) <= set(saved)
    assert all(torch.equal(state[k], saved[k]) for k in state)
    assert seg.segment(_image(30, 50), "cat", threshold=0.0).image_size == (30, 50)


def test_tracker_only_folder_is_a_one_line_error(tmp_path):
    folder = build_sam3_tracker(tmp_path / "sam3")
    with pytest.raises(ModelError, match="full SAM 3 checkpoint") as e:
        load_sam3_text("sam3", weights=str(folder), device="cpu")
    assert "\n" not in str(e.value) and "sam3_tracker" in str(e.value)


@pytest.mark.parametrize("name, match", [("sam-vit-base", "not a SAM 3 model"), ("grounding-dino-tiny", "not a SAM 3"),
                                         ("nonesuch", "unknown model")])
def test_other_names_are_model_errors(name, match):
    with pytest.raises(ModelError, match=match):
        load_sam3_text(name, device="cpu")


@pytest.mark.parametrize("allow_download", [True, False])
def test_offline_missing_weights_is_one_line(allow_download):
    with pytest.raises(ModelNotAvailable) as e:
        load_sam3_text("sam3", device="cpu", allow_download=allow_download)
    text = str(e.value)
    assert "\n" not in text and "sam3" in text and "ANYSEG_MODELS" in text


# -- the real (tiny) model -----------------------------------------------------------------
def test_segment_matches_direct_model_calls_per_phrase(seg, monkeypatch):
    """Shared vision features + batched prompts == one full ``Sam3Model`` call per phrase."""
    monkeypatch.setattr(seg, "prompt_batch", 2)
    h, w = 90, 130
    img = _image(h, w, seed=1)
    names = ["cat", "dog", "red car"]
    out = seg.segment(img, names, threshold=0.0)
    assert len(out) == len(names) * NUM_QUERIES and out.masks.shape[1:] == (h, w)
    assert np.all(np.diff(out.scores) <= 0)
    for k, name in enumerate(names):
        enc = seg.tokenizer([name], padding="max_length", max_length=TEXT_TOKENS, return_tensors="pt")
        with torch.inference_mode():
            ref = seg.model(pixel_values=seg.preprocess(img), input_ids=enc.input_ids, attention_mask=enc.attention_mask)
        scores = (ref.pred_logits.sigmoid() * ref.presence_logits.sigmoid())[0].numpy()
        order = np.argsort(-scores, kind="stable")
        boxes = np.clip(ref.pred_boxes[0].numpy() * [w, h, w, h], 0, [w, h, w, h])[order]
        probs = torch.nn.functional.interpolate(ref.pred_masks.sigmoid(), (h, w), mode="bilinear", align_corners=False)
        masks = (probs[0] > 0.5).numpy()[order]
        mine = out[out.data["phrase"] == name]
        assert list(mine.labels) == [name] * NUM_QUERIES and set(mine.data["class_id"]) == {k}
        np.testing.assert_allclose(mine.scores, scores[order], atol=1e-5)
        np.testing.assert_allclose(mine.boxes, boxes, atol=1e-3)
        assert (mine.masks != masks).mean() < 1e-3


def test_prompts_reach_the_text_encoder(seg):
    classes = parse_classes("cat,person|pedestrian,red car")
    names, _ = flatten(classes)
    seen = []
    hook = seg.model.text_encoder.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone())),
        with_kwargs=True)
    try:
        seg.segment(_image(50, 70), classes)
    finally:
        hook.remove()
    ids = torch.cat([s[0] for s in seen])
    mask = torch.cat([s[1] for s in seen])
    expected = seg.tokenizer(names, padding="max_length", max_length=TEXT_TOKENS, return_tensors="pt")
    assert torch.equal(ids, expected.input_ids) and torch.equal(mask, expected.attention_mask)
    assert [seg.tokenizer.decode(i, skip_special_tokens=True) for i in ids] == names


def test_vision_encoder_runs_once_per_image(seg, monkeypatch):
    monkeypatch.setattr(seg, "prompt_batch", 2)
    calls = []
    hook = seg.model.vision_encoder.register_forward_pre_hook(lambda mod, args: calls.append(tuple(args[0].shape)))
    img = _image(120, 45, seed=2)
    classes = "cat,dog|puppy,red car,tree"
    try:
        direct = seg.segment(img, classes, threshold=0.0)
        assert calls == [(1, 3, FRAME, FRAME)]  # 5 prompts in 3 decoder calls, one image encoding
        emb = seg.embed(img)
        assert len(calls) == 2 and emb.original_size == (120, 45)
        reused = seg.segment(img, classes, threshold=0.0, embedding=emb)
        assert len(calls) == 2
    finally:
        hook.remove()
    np.testing.assert_array_equal(direct.scores, reused.scores)
    np.testing.assert_array_equal(direct.masks, reused.masks)


def test_embedding_must_come_from_this_image_and_model(seg):
    emb = seg.embed(_image(40, 40, seed=3))
    with pytest.raises(InputError, match="another image"):
        seg.segment(_image(40, 40, seed=4), "cat", embedding=emb)
    with pytest.raises(InputError, match="another image"):
        seg.segment(_image(40, 41, seed=3), "cat", embedding=emb)
    other = type(emb)("sam3:somewhere", emb.original_size, emb.input_size, emb.features, emb.image_hash)
    with pytest.raises(InputError, match="embed the image with this model"):
        seg.segment(_image(40, 40, seed=3), "cat", embedding=other)


# -- geometry, scores, synonyms (model output replaced by known values) -------------------
@pytest.mark.parametrize("h, w", [(200, 300), (300, 200)])
def test_boxes_and_masks_map_back_to_original_pixels(seg, monkeypatch, h, w):
    box = (0.1, 0.2, 0.5, 0.8)  # normalised XYXY in the stretched S x S frame
    outside = (-0.1, 0.5, 1.2, 1.05)
    _fake_model(seg, monkeypatch, {"cat": [(5.0, box, _rect(0.25, 0.75, 0.0, 0.5)),
                                           (4.0, outside, _rect(0.5, 1.0, 0.5, 1.0))]})
    out = seg.segment(_image(h, w), "cat")
    assert len(out) == 2 and out.masks.shape == (2, h, w)
    np.testing.assert_allclose(out.boxes[0], [0.1 * w, 0.2 * h, 0.5 * w, 0.8 * h], atol=1e-3)
    np.testing.assert_allclose(out.boxes[1], [0, 0.5 * h, w, h], atol=1e-3)  # clipped to the image
    tight = masks_to_boxes(out.masks)
    np.testing.assert_allclose(tight[0], [0, 0.25 * h, 0.5 * w, 0.75 * h], atol=1)
    np.testing.assert_allclose(tight[1], [0.5 * w, 0.5 * h, w, h], atol=1)
    assert abs(out.masks[0].mean() - 0.25) < 0.01


def test_scores_and_threshold(seg, monkeypatch):
    logits = (3.0, 0.0, -1.0)
    _fake_model(seg, monkeypatch, {"cat": [(x, (0.1, 0.1, 0.4, 0.4), _rect(0.1, 0.4, 0.1, 0.4)) for x in logits]},
                presence=2.0)
    img = _image(64, 96)
    expected = np.array([_sig(x) * _sig(2.0) for x in logits], dtype=np.float32)  # 0.84, 0.44, 0.24
    out = seg.segment(img, "cat")
    assert DEFAULT_THRESHOLD == 0.3
    np.testing.assert_allclose(out.scores, expected[:2], rtol=1e-5)
    assert len(seg.segment(img, "cat", threshold=0.2)) == 3
    assert len(seg.segment(img, "cat", threshold=0.5)) == 1
    assert len(seg.segment(img, "cat", threshold=0.0)) == NUM_QUERIES  # every score is > 0
    none = seg.segment(img, "cat", threshold=1.0)
    assert len(none) == 0 and none.masks.shape == (0, 64, 96)
    assert none.labels is not None and set(none.data) == {"class_id", "phrase"}
    # mask_threshold applies to the upsampled probability
    _fake_model(seg, monkeypatch, {"cat": [(3.0, (0, 0, 1, 1), torch.full((LOW, LOW), 0.5))]})  # p = 0.62
    assert seg.segment(img, "cat", mask_threshold=0.6).masks.all()
    assert not seg.segment(img, "cat", mask_threshold=0.65).masks.any()


def test_synonyms_belong_to_their_class_and_duplicates_merge(seg, monkeypatch):
    a, b = _rect(0.0, 0.5, 0.0, 0.5), _rect(0.0, 1.0, 0.5, 1.0)
    c, d = _rect(0.5, 1.0, 0.0, 0.25), _rect(0.5, 1.0, 0.25, 0.5)
    box = (0.0, 0.0, 0.5, 0.5)
    _fake_model(seg, monkeypatch, {
        "cat": [(2.0, box, a), (1.5, box, a)],  # one name: overlapping detections are both kept
        "person": [(1.0, box, b), (0.5, box, c)],
        "pedestrian": [(3.0, box, b), (0.0, box, d)],  # its b beats person's b
    })
    classes = parse_classes("cat,person|pedestrian")
    out = seg.segment(_image(80, 80), classes)
    assert list(out.labels) == ["person", "cat", "cat", "person", "person"]
    assert list(out.data["phrase"]) == ["pedestrian", "cat", "cat", "person", "pedestrian"]
    assert out.data["class_id"].dtype == np.int64 and list(out.data["class_id"]) == [1, 0, 0, 1, 1]
    np.testing.assert_allclose(out.scores, [_sig(x) * _sig(10.0) for x in (3.0, 2.0, 1.5, 0.5, 0.0)], rtol=1e-5)


def test_long_text_is_truncated_with_a_warning(seg):
    long = " ".join(["red"] * 40)
    seen = []
    hook = seg.model.text_encoder.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["input_ids"].clone()), with_kwargs=True)
    try:
        with pytest.warns(TextTruncatedWarning, match="truncated to the model's 32"):
            out = seg.segment(_image(30, 30), [long, "cat"], threshold=0.0)
    finally:
        hook.remove()
    ids = seen[0]
    assert ids.shape == (2, TEXT_TOKENS) and int(ids[0, -1]) == seg.tokenizer.eos_token_id
    assert set(out.data["phrase"]) == {long, "cat"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seg.segment(_image(30, 30), "red car")  # short text: no warning


@pytest.mark.parametrize("kwargs, match", [
    (dict(classes=[]), "empty"),
    (dict(classes=""), "empty"),
    (dict(classes="cat", threshold=-0.1), "threshold"),
    (dict(classes="cat", threshold=1.5), "threshold"),
    (dict(classes="cat", mask_threshold=2.0), "mask_threshold"),
    (dict(classes=[3]), "ClassName"),
])
def test_bad_inputs_are_input_errors(seg, kwargs, match):
    with pytest.raises(InputError, match=match):
        seg.segment(_image(20, 20), **kwargs)

"""CLIP mask classification and dense CLIP (MaskCLIP / SCLIP) on a tiny random CLIP, loaded through the users' path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anyseg.errors import InputError, ModelError
from anyseg.text.clip import (CLIP_MEAN, ClipModel, crop_box, load_clip, mask_crop, sliding_windows,
                              vote_in_masks)
from anyseg.text.vocab import ClassName, TextTruncatedWarning, parse_classes
from anyseg.types import Masks

from tiny_clip import IMAGE_SIZE, MEAN, PATCH_SIZE, STD, build_clip

CLASSES = parse_classes("cat,dog|puppy,sky")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return build_clip(tmp_path_factory.mktemp("clip") / "clip-vit-b16")


@pytest.fixture(scope="module")
def clip(folder) -> ClipModel:
    return load_clip("clip-vit-b16", weights=str(folder), device="cpu")


@pytest.fixture
def fresh(clip) -> ClipModel:
    """A ClipModel sharing the loaded weights, with an empty text cache."""
    return ClipModel(clip.spec, clip.model, clip.tokenizer, device="cpu", mean=clip.mean, std=clip.std)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class _TextSpy:
    """Records the input_ids the transformers text model receives."""

    def __init__(self, model):
        self.module, self.ids = model.text_model, []

    def __enter__(self):
        self.handle = self.module.register_forward_pre_hook(
            lambda m, args, kwargs: self.ids.append(kwargs["input_ids"].clone()), with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _text_features(clip: ClipModel, text: str) -> torch.Tensor:
    """One prompt's normalised projected embedding, computed directly with transformers."""
    enc = clip.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        pooled = clip.model.text_model(**enc).pooler_output
        return F.normalize(clip.model.text_projection(pooled), dim=-1)[0]


# -- loading -----------------------------------------------------------------------------------
def test_load_through_weights_and_models_dir(folder, tmp_path, monkeypatch):
    a = load_clip("clip-vit-b16", weights=str(folder), device="cpu")
    assert (a.image_size, a.patch_size) == (IMAGE_SIZE, PATCH_SIZE)
    assert a.mean == MEAN and a.std == STD, "normalisation comes from preprocessor_config.json"
    root = tmp_path / "models"
    root.mkdir()
    (root / "clip-vit-b32").symlink_to(folder, target_is_directory=True)
    monkeypatch.setenv("ANYSEG_MODELS", str(root))
    b = load_clip("clip-vit-b32", device="cpu")
    assert b.name == "clip-vit-b32" and b.folder == root / "clip-vit-b32"
    torch.testing.assert_close(b.text_embeddings(CLASSES), a.text_embeddings(CLASSES))


def test_default_normalisation_without_preprocessor_config(tmp_path):
    folder = build_clip(tmp_path / "c", preprocessor=False)
    assert load_clip("clip-vit-b16", weights=str(folder), device="cpu").mean == CLIP_MEAN


def test_model_errors_are_one_line(folder):
    with pytest.raises(ModelError, match="not a CLIP model") as e:
        load_clip("sam-vit-base", weights=str(folder))
    assert "clip-vit-b16" in str(e.value)
    with pytest.raises(ModelError, match="unknown model"):
        load_clip("clip-vit-b99")
    with pytest.raises(ModelError) as e:  # conftest: HF_HUB_OFFLINE=1 and an empty cache
        load_clip("clip-vit-l14")
    assert "\n" not in str(e.value) and "clip-vit-l14" in str(e.value) and "offline" in str(e.value)


# -- text ------------------------------------------------------------------------------------------
def test_prompt_reaches_the_text_encoder(fresh):
    with _TextSpy(fresh.model) as spy:
        fresh.text_embeddings([ClassName("cat", ())], templates=("a photo of a {}.",))
    assert len(spy.ids) == 1
    expected = fresh.tokenizer("a photo of a cat.")["input_ids"]
    assert spy.ids[0].tolist() == [expected]
    assert expected[0] == fresh.tokenizer.bos_token_id and expected[-1] == fresh.tokenizer.eos_token_id
    assert fresh.tokenizer.decode(expected, skip_special_tokens=True).replace(" ", "") == "aphotoofacat."


def test_template_ensemble_and_synonyms_are_a_normalised_mean(fresh):
    templates = ("a photo of a {}.", "there is a {} in the scene.")
    emb = fresh.text_embeddings([ClassName("dog", ("puppy",)), ClassName("sky", ())], templates)
    assert emb.shape == (2, 16) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    prompts = [t.format(n) for n in ("dog", "puppy") for t in templates]
    manual = F.normalize(torch.stack([_text_features(fresh, p) for p in prompts]).mean(0), dim=0)
    torch.testing.assert_close(emb[0], manual, atol=1e-5, rtol=1e-5)
    alone = fresh.text_embeddings([ClassName("dog", ())], templates)[0]
    assert not torch.allclose(alone, emb[0], atol=1e-3), "synonyms change the class embedding"
    single = fresh.text_embeddings([ClassName("dog", ())], templates[:1])[0]
    torch.testing.assert_close(single, _text_features(fresh, "a photo of a dog."), atol=1e-5, rtol=1e-5)


def test_text_embeddings_are_cached(fresh):
    with _TextSpy(fresh.model) as spy:
        a = fresh.text_embeddings(CLASSES)
        n = len(spy.ids)
        b = fresh.text_embeddings(list(reversed(CLASSES)))
        assert len(spy.ids) == n, "cached classes are not encoded again"
        fresh.text_embeddings([*CLASSES, ClassName("tree", ())])
        assert sum(len(i) for i in spy.ids[n:]) == 15, "only the new class's 15 prompts are encoded"
    torch.testing.assert_close(a, b.flip(0))


def test_long_text_is_truncated_with_a_warning(fresh):
    long_name = " ".join(["xylophone"] * 20)  # byte-level tokens: far more than 77
    with _TextSpy(fresh.model) as spy, pytest.warns(TextTruncatedWarning, match="truncated to the model's 77"):
        emb = fresh.text_embeddings([ClassName(long_name, ())], templates=("a photo of a {}.",))
    ids = spy.ids[0][0].tolist()
    assert len(ids) == 77 and ids[-1] == fresh.tokenizer.eos_token_id, "CLIP pools the kept end-of-text token"
    assert torch.isfinite(emb).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.text_embeddings([ClassName("cat", ())])  # the default templates fit


# -- mask classification ------------------------------------------------------------------------------
def test_crop_box_and_mask_crop_geometry():
    h, w = 60, 100
    yy, xx = np.mgrid[:h, :w]
    image = np.stack([yy, xx, (yy + xx) % 256], axis=-1).astype(np.uint8)  # pixels name their position
    mask = np.zeros((h, w), bool)
    mask[10:20, 50:80] = True  # box x 50..80, y 10..20 (30 x 10)
    assert crop_box(mask, 0.1) == (47, 9, 83, 21)
    assert crop_box(mask, 0.0) == (50, 10, 80, 20)
    assert crop_box(mask, 1.0) == (20, 0, 100, 30), "enlarged then clipped to the image"
    assert crop_box(np.zeros((h, w), bool), 0.1) is None
    fill = (1, 2, 3)
    crop = mask_crop(image, mask, "none", 0.1, fill=fill)
    assert crop.shape == (36, 36, 3)  # 36 x 12 padded to a square, 12 rows above and below
    np.testing.assert_array_equal(crop[12:24], image[9:21, 47:83])
    assert (crop[:12] == fill).all() and (crop[24:] == fill).all()
    grey = mask_crop(image, mask, "grey", 0.1, fill=fill)
    inside = np.zeros((36, 36), bool)
    inside[13:23, 3:33] = True
    np.testing.assert_array_equal(grey[inside], crop[inside])
    assert (grey[~inside] == fill).all()
    blur = mask_crop(image, mask, "blur", 0.1, fill=fill)
    np.testing.assert_array_equal(blur[inside], crop[inside])
    assert not np.array_equal(blur[~inside], grey[~inside])
    tall = np.zeros((h, w), bool)
    tall[5:55, 3:8] = True  # 5 x 50: pads columns
    t = mask_crop(image, tall, "none", 0.0, fill=fill)
    assert t.shape == (50, 50, 3)
    np.testing.assert_array_equal(t[:, 22:27], image[5:55, 3:8])
    resized = mask_crop(image, mask, "blur", 0.1, size=IMAGE_SIZE, fill=fill)
    assert resized.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and resized.dtype == np.uint8
    assert mask_crop(image, np.zeros((h, w), bool)) is None


def test_classify_masks_probabilities(clip):
    image = _image(90, 150)
    m = np.zeros((4, 90, 150), bool)
    m[0, 10:40, 20:100] = True
    m[1, 50:80, 5:30] = True
    m[3, 0:90, 140:150] = True  # mask 2 is empty
    for background in ("blur", "grey", "none"):
        p = clip.classify_masks(image, m, CLASSES, background=background)
        assert p.shape == (4, 3) and p.dtype == np.float32
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(p[2], 1 / 3, err_msg="an empty mask gets a uniform row")
    masks = Masks(m)
    np.testing.assert_allclose(clip.classify_masks(image, masks, CLASSES), clip.classify_masks(image, m, CLASSES))
    assert clip.classify_masks(image, Masks.empty(90, 150), CLASSES).shape == (0, 3)


def test_classify_masks_picks_the_class_of_each_crop(fresh, monkeypatch):
    image = np.zeros((60, 150, 3), np.uint8)
    image[:, :50, 0] = 255  # red | green | blue
    image[:, 50:100, 1] = 255
    image[:, 100:, 2] = 255
    m = np.zeros((3, 60, 150), bool)
    m[0, 10:50, 60:90] = True  # green
    m[1, 20:40, 110:140] = True  # blue
    m[2, 5:55, 10:40] = True  # red
    basis = torch.eye(16)
    seen = []

    def image_embeddings(crops):
        seen.append(len(crops))
        for c in crops:
            assert c.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        return torch.stack([basis[int(np.argmax(c[IMAGE_SIZE // 2, IMAGE_SIZE // 2]))] for c in crops])

    monkeypatch.setattr(fresh, "image_embeddings", image_embeddings)
    monkeypatch.setattr(fresh, "text_embeddings", lambda classes, templates=None: basis[:3])
    monkeypatch.setattr(fresh, "batch_size", 2)
    p = fresh.classify_masks(image, m, parse_classes("red,green,blue"))
    assert p.argmax(axis=1).tolist() == [1, 2, 0]
    assert seen == [2, 1], "crops are embedded in batches of batch_size"
    assert p.max() > 0.9  # logit_scale * (1 - 0) separates them


# -- dense CLIP ------------------------------------------------------------------------------------------
def _reference_dense(clip: ClipModel, image: np.ndarray, text: torch.Tensor, method: str) -> np.ndarray:
    """Dense cosine map of a one-window image, written from the weights with plain torch."""
    sd = clip.model.state_dict()
    cfg = clip.model.config.vision_config
    assert cfg.hidden_act == "quick_gelu"
    p, heads, d = cfg.patch_size, cfg.num_attention_heads, cfg.hidden_size
    hd = d // heads

    def lin(x, name):
        return x @ sd[name + ".weight"].T + sd[name + ".bias"]

    def ln(x, name):
        return F.layer_norm(x, (d,), sd[name + ".weight"], sd[name + ".bias"], cfg.layer_norm_eps)

    def split(t):
        return t.view(1, -1, heads, hd).transpose(1, 2)

    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    v = "vision_model."
    x = F.conv2d(x, sd[v + "embeddings.patch_embedding.weight"], stride=p)
    g = x.shape[-1]
    x = torch.cat([sd[v + "embeddings.class_embedding"].view(1, 1, d), x.flatten(2).transpose(1, 2)], dim=1)
    x = ln(x + sd[v + "embeddings.position_embedding.weight"][None], v + "pre_layrnorm")
    for i in range(cfg.num_hidden_layers):
        pre = f"{v}encoder.layers.{i}."
        h = ln(x, pre + "layer_norm1")
        q, k, val = (split(lin(h, pre + f"self_attn.{n}_proj")) for n in "qkv")
        last = i == cfg.num_hidden_layers - 1
        if last and method == "maskclip":
            a = val  # each token attends only to itself
        elif last and method == "sclip":
            a = (torch.softmax(q @ q.transpose(-1, -2) * hd ** -0.5, -1)
                 + torch.softmax(k @ k.transpose(-1, -2) * hd ** -0.5, -1)) @ val
        else:
            a = torch.softmax(q @ k.transpose(-1, -2) * hd ** -0.5, -1) @ val
        x = x + lin(a.transpose(1, 2).reshape(1, -1, d), pre + "self_attn.out_proj")
        h = lin(ln(x, pre + "layer_norm2"), pre + "mlp.fc1")
        x = x + lin(h * torch.sigmoid(1.702 * h), pre + "mlp.fc2")
    feats = ln(x[:, 1:], v + "post_layernorm") @ sd["visual_projection.weight"].T
    cos = F.normalize(feats, dim=-1)[0] @ text.T  # (g * g, C)
    cos = cos.T.reshape(1, -1, g, g)
    return F.interpolate(cos, size=image.shape[:2], mode="bilinear", align_corners=False)[0].numpy()


@pytest.mark.parametrize("method", ["maskclip", "sclip"])
def test_dense_matches_a_hand_computation_for_one_window(clip, method):
    image = _image(IMAGE_SIZE, IMAGE_SIZE, seed=3)
    text = clip.text_embeddings(CLASSES)
    with torch.no_grad():
        want = _reference_dense(clip, image, text, method)
    got = clip.dense_logits(image, CLASSES, method=method, window=IMAGE_SIZE)
    assert got.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_sclip_differs_from_maskclip_and_hook_is_removed(clip):
    image = _image(90, 150, seed=1)
    a = clip.dense_logits(image, CLASSES, method="maskclip")
    b = clip.dense_logits(image, CLASSES, method="sclip")
    assert np.abs(a - b).max() > 1e-3
    assert not clip.model.vision_model.encoder.layers[-1].self_attn._forward_hooks, "the dense hook is removed"
    crop = clip.image_embeddings([image])
    clip.dense_logits(image, CLASSES)
    torch.testing.assert_close(clip.image_embeddings([image]), crop)


@pytest.mark.parametrize("size", [(90, 150), (150, 90), (37, 300), (64, 64)])
def test_dense_shapes_and_coverage(clip, size):
    image = _image(*size, seed=2)
    out = clip.dense_logits(image, CLASSES)
    assert out.shape == (3, *size) and out.dtype == np.float32
    assert np.isfinite(out).all() and (np.abs(out) <= 1 + 1e-5).all()
    assert (np.abs(out).max(axis=0) > 0).all(), "no uncovered (zero) pixels"


def test_windows_are_averaged_over_the_whole_image(fresh, monkeypatch):
    """Constant patch features give a constant map only if every pixel is covered and overlaps are averaged."""
    text = fresh.text_embeddings(CLASSES)
    calls = []

    def constant(pixels, method="sclip"):
        calls.append(tuple(pixels.shape))
        b, _, h, w = pixels.shape
        return text[0].view(1, -1, 1, 1).expand(b, -1, h // PATCH_SIZE, w // PATCH_SIZE)

    monkeypatch.setattr(fresh, "patch_embeddings", constant)
    out = fresh.dense_logits(_image(90, 150), CLASSES, window=80, stride=20)
    np.testing.assert_allclose(out[0], 1.0, atol=1e-5)
    np.testing.assert_allclose(out[1], float(text[0] @ text[1]), atol=1e-5)
    windows = sliding_windows(80, 133, IMAGE_SIZE, 20)  # 90 x 150 with short side 80
    assert sum(c[0] for c in calls) == len(windows) > 1
    assert all(c[2:] == (IMAGE_SIZE, IMAGE_SIZE) for c in calls)


@pytest.mark.parametrize("h,w,size,stride", [(96, 96, 64, 32), (80, 133, 64, 43), (50, 64, 64, 32), (300, 70, 64, 64),
                                             (64, 64, 64, 10)])
def test_sliding_windows_cover_the_image(h, w, size, stride):
    wins = sliding_windows(h, w, size, stride)
    cover = np.zeros((h, w), int)
    for y0, x0, y1, x1 in wins:
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        assert (y1 - y0, x1 - x0) == (min(size, h), min(size, w))
        cover[y0:y1, x0:x1] += 1
    assert (cover > 0).all()
    assert len(wins) == len(set(wins))


@pytest.mark.parametrize("window", [40, 48, 100])
def test_windows_other_than_the_training_size(clip, window):
    """Smaller windows than image_size (pos-embedding interpolation) and larger resized images both work."""
    out = clip.dense_logits(_image(90, 150, seed=4), CLASSES, method="sclip", window=window)
    assert out.shape == (3, 90, 150) and np.isfinite(out).all()
    pixels = torch.zeros((1, 3, 40, 56))
    assert clip.patch_embeddings(pixels, "maskclip").shape == (1, 16, 5, 7)


def test_vote_in_masks_follows_mask_boundaries():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 30, 40)).astype(np.float32)
    m = np.zeros((3, 30, 40), bool)
    m[0, 0:20, 0:30] = True  # large
    m[1, 5:10, 5:12] = True  # small, inside the large one: it wins where they overlap
    # mask 2 empty
    out = vote_in_masks(logits, Masks(m))
    only_large = m[0] & ~m[1]
    small_mean = logits[:, m[1]].mean(1, keepdims=True)
    np.testing.assert_allclose(out[:, m[1]], np.repeat(small_mean, m[1].sum(), 1), rtol=1e-5)
    np.testing.assert_allclose(out[:, only_large][:, 0], logits[:, m[0]].mean(1), rtol=1e-5)
    for region in (m[1], only_large):
        assert len(np.unique(out.argmax(0)[region])) == 1, "argmax constant inside a mask"
    outside = ~m[0]
    np.testing.assert_array_equal(out[:, outside], logits[:, outside])
    assert not np.shares_memory(out, logits)
    with pytest.raises(InputError, match="masks are 40x30 but the image is 41x30"):
        vote_in_masks(np.zeros((3, 30, 41), np.float32), m)


def test_dense_then_vote(clip):
    image = _image(90, 150)
    m = np.zeros((1, 90, 150), bool)
    m[0, 20:70, 30:120] = True
    out = vote_in_masks(clip.dense_logits(image, CLASSES), m)
    assert len(np.unique(out.argmax(0)[m[0]])) == 1


# -- bad input ------------------------------------------------------------------------------------------
def test_bad_inputs_are_input_errors(clip):
    image = _image(40, 50)
    m = np.zeros((1, 40, 50), bool)
    m[0, 5:10, 5:10] = True
    cases = [
        (lambda: clip.text_embeddings([]), "class list is empty"),
        (lambda: clip.dense_logits(image, []), "class list is empty"),
        (lambda: clip.classify_masks(image, m, []), "class list is empty"),
        (lambda: clip.dense_logits(image, CLASSES, method="clearclip"), "unknown dense method 'clearclip'"),
        (lambda: clip.classify_masks(image, m, CLASSES, background="white"), "unknown background 'white'"),
        (lambda: clip.classify_masks(image, np.zeros((1, 41, 50), bool), CLASSES),
         "masks are 50x41 but the image is 50x40"),
        (lambda: clip.classify_masks(image, m, CLASSES, margin="wide"), "margin must be"),
        (lambda: clip.classify_masks(image, m, CLASSES, margin=-0.5), "margin must be"),
        (lambda: clip.text_embeddings(CLASSES, templates=("a photo",)), "has no '{}'"),
        (lambda: clip.text_embeddings(CLASSES, templates=()), "template list is empty"),
        (lambda: clip.text_embeddings(["cat"]), "ClassName"),
        (lambda: clip.dense_logits(image, CLASSES, window=4), "window must be"),
        (lambda: clip.dense_logits(image, CLASSES, stride=0), "stride must be"),
        (lambda: clip.dense_logits(np.zeros((4, 5)), CLASSES), None),
        (lambda: clip.dense_logits(np.zeros((4, 5, 2), np.uint8), CLASSES), "image must have shape"),
    ]
    for call, message in cases:
        if message is None:
            call()  # a grey image is accepted (converted to RGB)
            continue
        with pytest.raises(InputError, match=message) as e:
            call()
        assert "\n" not in str(e.value)

"""SAM-family adapters on tiny random models of the real architectures, loaded through the users' path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from anyseg.cache import EmbeddingCache
from anyseg.errors import ModelError, ModelNotAvailable, PromptError
from anyseg.models import load_model, model_status, resolve_auto
from anyseg.models.registry import get_spec
from anyseg.models.sam import Geometry, SamFamilyPredictor
from anyseg.types import Prompt

from tiny_models import BUILDERS

FAMILY_MODEL = {"sam": "sam-vit-base", "sam_hq": "sam-hq-vit-base", "sam2": "sam2.1-hiera-tiny", "sam3_tracker": "sam3"}
SIZES = [(120, 200), (333, 97), (480, 854), (64, 64)]


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {fam: BUILDERS[fam](root / fam) for fam in FAMILY_MODEL}


@pytest.fixture(scope="module")
def predictors(tiny_folders) -> dict[str, SamFamilyPredictor]:
    return {fam: load_model(FAMILY_MODEL[fam], weights=tiny_folders[fam], device="cpu") for fam in FAMILY_MODEL}


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class _Spy:
    """Records the keyword arguments the model's prompt encoder receives (both decoder paths call it)."""

    def __init__(self, model):
        self.model, self.calls = model.prompt_encoder, []
        self._forward = self.model.forward

    def __enter__(self):
        def forward(*args, **kwargs):
            self.calls.append(kwargs)
            return self._forward(*args, **kwargs)

        self.model.forward = forward
        return self

    def __exit__(self, *exc):
        del self.model.forward


@pytest.mark.parametrize("family", list(FAMILY_MODEL))
def test_shapes_multimask_and_logits(predictors, family):
    p = predictors[family]
    image = _image(120, 200)
    emb = p.embed(image)
    assert emb.original_size == (120, 200)
    one = p.predict(emb, Prompt(points=[[50, 60]]))
    three = p.predict(emb, Prompt(points=[[50, 60]]), multimask=True)
    assert one.masks.shape == (1, 120, 200) and one.masks.dtype == bool
    assert three.masks.shape == (3, 120, 200)
    assert np.all(np.diff(three.scores) <= 0), "multimask candidates are sorted by score"
    low = p.model.config.prompt_encoder_config.image_size // (14 if family == "sam3_tracker" else 16) * 4
    assert three.logits.shape == (3, low, low)
    box = p.predict(emb, Prompt(box=[10, 20, 150, 100]))
    assert box.boxes.shape == (1, 4)


@pytest.mark.parametrize("family", list(FAMILY_MODEL))
def test_refinement_feeds_previous_logits(predictors, family):
    p = predictors[family]
    emb = p.embed(_image(100, 140))
    first = p.predict(emb, Prompt(points=[[30, 40]]), multimask=True)
    prompt = Prompt(points=[[30, 40], [90, 70]], labels=[1, 0], mask_logits=first.logits[0])
    with _Spy(p.model) as spy:
        refined = p.predict(emb, prompt)
    sent = spy.calls[0]["input_masks"]
    assert tuple(sent.shape) == (1, 1, *first.logits.shape[1:])
    np.testing.assert_allclose(sent[0, 0].numpy(), first.logits[0])
    plain = p.predict(emb, Prompt(points=[[30, 40], [90, 70]], labels=[1, 0]))
    assert not np.allclose(refined.logits, plain.logits), "the mask input changes the decoder output"
    with pytest.raises(PromptError, match="low-resolution logits"):
        p.predict(emb, Prompt(points=[[30, 40]], mask_logits=np.zeros((7, 7))))


@pytest.mark.parametrize("family", list(FAMILY_MODEL))
@pytest.mark.parametrize("size", SIZES)
def test_prompt_coordinates_reach_the_model_where_the_reference_puts_them(predictors, family, size):
    """A prompt in original pixels reaches the prompt encoder at the reference preprocessing's place."""
    from transformers.models.sam2.processing_sam2 import Sam2Processor

    p = predictors[family]
    h, w = size
    pts = np.array([[0.0, 0.0], [w / 3, h / 2], [w - 1, h - 1]])
    box = np.array([w * 0.1, h * 0.2, w * 0.9, h * 0.8])
    emb = p.embed(_image(h, w))
    with _Spy(p.model) as spy:
        p.predict(emb, Prompt(points=pts, labels=[1, 0, 1], box=box))
    got_pts = spy.calls[0]["input_points"][0, 0].numpy()
    got_box = spy.calls[0]["input_boxes"][0, 0].numpy()
    frame = p.frame
    if family in ("sam", "sam_hq"):
        from transformers import SamImageProcessorPil, SamProcessor

        ip = SamImageProcessorPil(size={"longest_edge": frame}, pad_size={"height": frame, "width": frame})
        ref = SamProcessor(image_processor=ip)(
            images=_image(h, w), input_points=[[pts.tolist()]], input_boxes=[[box.tolist()]], return_tensors="pt"
        )
        want_pts, want_box = ref["input_points"][0, 0].numpy(), ref["input_boxes"][0, 0].numpy()
        assert tuple(ref["reshaped_input_sizes"][0].tolist()) == emb.input_size
    else:
        want_pts = Sam2Processor._normalize_coordinates(None, frame, torch.tensor(pts), (h, w)).numpy()
        want_box = Sam2Processor._normalize_coordinates(None, frame, torch.tensor(box), (h, w), is_bounding_box=True)
        want_box = want_box.reshape(4).numpy()
    np.testing.assert_allclose(got_pts, want_pts, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got_box, want_box, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("size", SIZES)
def test_sam_pixels_and_masks_match_transformers_reference(predictors, size):
    """SAM v1: pixel values and final masks equal transformers' (PIL) processor on the same weights."""
    from transformers import SamImageProcessorPil

    p = predictors["sam"]
    h, w = size
    image = _image(h, w, seed=3)
    ip = SamImageProcessorPil(size={"longest_edge": p.frame}, pad_size={"height": p.frame, "width": p.frame})
    ref = ip(image, return_tensors="pt")
    ours, geo = p.preprocess(image)
    assert tuple(ours.shape) == tuple(ref["pixel_values"].shape)
    np.testing.assert_allclose(ours.numpy(), ref["pixel_values"].numpy(), atol=1e-5)
    emb = p.embed(image)
    out = p.predict(emb, Prompt(points=[[w / 2, h / 2]]), multimask=True)
    with torch.inference_mode():
        raw = p.model(pixel_values=ref["pixel_values"],
                      input_points=torch.tensor([[[[w / 2 * geo.input_size[1] / w, h / 2 * geo.input_size[0] / h]]]]),
                      input_labels=torch.tensor([[[1]]]), multimask_output=True)
    ref_masks = ip.post_process_masks(raw.pred_masks, ref["original_sizes"], ref["reshaped_input_sizes"])[0][0].numpy()
    order = np.argsort(-raw.iou_scores[0, 0].numpy(), kind="stable")
    agree = (ref_masks[order] == out.masks).mean()
    assert agree > 0.999, f"masks agree on {agree:.4%} of pixels"


def test_embedding_is_computed_once_per_image_and_model(predictors):
    p = predictors["sam2"]
    cache = EmbeddingCache(max_bytes=64 << 20)
    image = _image(90, 130)
    calls = []
    original = p.model.get_image_embeddings

    def counting(*a, **k):
        calls.append(1)
        return original(*a, **k)

    p.model.get_image_embeddings = counting
    try:
        emb = cache.get_or_embed(image, p.model_id, p.embed)
        for x in range(5, 120, 20):
            p.predict(emb, Prompt(points=[[x, 40]]))
        again = cache.get_or_embed(image.copy(), p.model_id, p.embed)
    finally:
        del p.model.get_image_embeddings
    assert len(calls) == 1 and again is emb and cache.hits == 1


def test_embedding_from_another_model_is_refused(predictors):
    emb = predictors["sam"].embed(_image(50, 60))
    with pytest.raises(Exception, match="embedding was made by"):
        predictors["sam2"].predict(emb, Prompt(points=[[5, 5]]))


def test_batched_prompts_equal_single_prompts(predictors):
    p = predictors["sam"]
    emb = p.embed(_image(100, 150))
    prompts = [Prompt(box=[10, 10, 60, 70]), Prompt(box=[40, 30, 140, 90]), Prompt(points=[[20, 30]])]
    batched = p.predict_batch(emb, prompts)
    for prompt, b in zip(prompts, batched):
        single = p.predict(emb, prompt)
        np.testing.assert_allclose(b.logits, single.logits, atol=1e-4)


def test_points_outside_the_image_are_refused(predictors):
    p = predictors["sam"]
    emb = p.embed(_image(100, 150))
    with pytest.raises(PromptError, match="outside"):
        p.predict(emb, Prompt(points=[[151, 10]]))
    with pytest.raises(PromptError, match="outside"):
        p.predict(emb, Prompt(box=[-5, 0, 20, 20]))


# -- weight resolution: the users' path -----------------------------------------------------


def _fake_hf_cache(cache_dir: Path, repo_id: str, folder: Path) -> None:
    """Lay ``folder`` out as huggingface_hub caches a download of ``repo_id`` at revision main."""
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    shutil.copytree(folder, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_resolution_order_path_then_models_dir_then_hf_cache(tiny_folders, tmp_path, monkeypatch):
    spec = get_spec("sam2.1-hiera-tiny")
    assert not model_status(spec.name).present
    # the HF cache layout (offline: found without any network access)
    _fake_hf_cache(Path(os.environ["HF_HUB_CACHE"]), spec.hub_id, tiny_folders["sam2"])
    st = model_status(spec.name)
    assert st.present and st.source == "hf-cache"
    assert isinstance(load_model(spec.name, device="cpu"), SamFamilyPredictor)
    # ANYSEG_MODELS wins over the cache
    models = tmp_path / "models"
    shutil.copytree(tiny_folders["sam2"], models / spec.name)
    monkeypatch.setenv("ANYSEG_MODELS", str(models))
    assert model_status(spec.name).source == "ANYSEG_MODELS"
    # auto picks the best SAM-family model present
    assert resolve_auto(quiet=True) == spec.name


def test_auto_falls_back_to_classical_with_a_notice(capsys):
    assert resolve_auto() == "classical"
    assert "classical" in capsys.readouterr().err


def test_named_model_missing_offline_is_one_clear_error():
    with pytest.raises(ModelNotAvailable) as e:
        load_model("sam-vit-base")
    msg = str(e.value)
    assert "\n" not in msg and "anyseg models pull sam-vit-base" in msg and "offline" in msg


def test_bad_weights_folders_are_clear_errors(tiny_folders, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"lacks config\.json and \*\.safetensors"):
        load_model("sam-vit-base", weights=empty)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "sam"}))
    (pickled / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(ModelError, match="pickled pytorch_model.bin"):
        load_model("sam-vit-base", weights=pickled)
    with pytest.raises(ModelError, match="holds a 'sam2' model"):
        load_model("sam-vit-base", weights=tiny_folders["sam2"])
    broken = tmp_path / "broken"
    shutil.copytree(tiny_folders["sam"], broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot load sam-vit-base"):
        load_model("sam-vit-base", weights=broken)
    with pytest.raises(ModelError, match="weights path not found"):
        load_model("sam-vit-base", weights=tmp_path / "nope")
    with pytest.raises(ModelError, match="unknown model 'sam-vit-bse'.*did you mean 'sam-vit-base'"):
        load_model("sam-vit-bse")


def test_edgetam_without_timm_is_a_clear_error(tmp_path):
    import importlib.util

    if importlib.util.find_spec("timm") and importlib.util.find_spec("torchvision"):
        pytest.skip("timm and torchvision are installed here")
    folder = tmp_path / "edgetam"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "edgetam"}))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="edgetam needs .*timm"):
        load_model("edgetam", weights=folder)


def test_geometry_matches_resize_longest_side():
    geo = Geometry.for_family("sam", (480, 854), 1024)
    assert geo.input_size == (576, 1024)  # int(480 * 1024 / 854 + 0.5)
    np.testing.assert_allclose(geo.to_model(np.array([[854, 480]])), [[1024, 576]])
    assert Geometry.for_family("sam2", (480, 854), 1024).input_size == (1024, 1024)


def test_sam3_tracker_loads_the_hubs_full_sam3_checkpoint_exactly(tmp_path):
    """facebook/sam3 is a ``sam3_video`` checkpoint (detector + tracker); the tracker's weights are renamed, not left random."""
    from safetensors.torch import load_file

    from tiny_sam3 import build_sam3_video

    folder = build_sam3_video(tmp_path / "sam3")
    p = load_model("sam3", weights=folder)
    source = load_file(str(folder / "model.safetensors"))
    renames = (("vision_encoder.backbone.", "detector_model.vision_encoder.backbone."),
               ("vision_encoder.neck.", "tracker_neck."), ("", "tracker_model."),
               ("", "tracker_model.tracker_model."))
    params = dict(p.model.named_parameters())
    for key, value in params.items():
        src = [old + key[len(new):] for new, old in renames if key.startswith(new) and old + key[len(new):] in source]
        assert src and torch.equal(value, source[src[0]]), key
    out = p.predict(p.embed(np.zeros((40, 60, 3), np.uint8)), Prompt(points=[[30, 20]], labels=[1]))
    assert out.masks.shape == (1, 40, 60)


def test_a_checkpoint_lacking_weights_is_an_error_not_random_weights(tiny_folders, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "sam"
    shutil.copytree(tiny_folders["sam"], broken)
    state = load_file(str(broken / "model.safetensors"))
    dropped = [k for k in state if "mask_decoder" in k][:3]
    save_file({k: v for k, v in state.items() if k not in dropped}, str(broken / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(ModelError, match="lacks 3 of sam-vit-base's weights"):
        load_model("sam-vit-base", weights=broken)
    monkeypatch.setenv("ANYSEG_ALLOW_MISSING_WEIGHTS", "1")
    with pytest.warns(UserWarning, match="random"):
        load_model("sam-vit-base", weights=broken)


@pytest.mark.parametrize("family", ["sam", "sam_hq", "sam2"])
def test_shared_first_layer_projections_change_nothing(predictors, family, monkeypatch):
    """The first block's image-side projections run once per click batch: results bit-identical."""
    import anyseg.models.sam as sam_mod

    p = predictors[family]
    monkeypatch.setattr(p, "fast_decoder", False)  # the model's forward (SAM-HQ, mask inputs) uses them
    block = p.model.mask_decoder.transformer.layers[0]
    assert isinstance(block.cross_attn_token_to_image.k_proj, sam_mod._SharedRowsLinear)
    assert "mask_decoder.transformer.layers.0.cross_attn_token_to_image.k_proj.weight" in p.model.state_dict()
    emb = p.embed(_image(70, 110))
    pts = np.array([[10.0, 20.0], [50.0, 30.0], [100.0, 60.0], [5.0, 5.0], [60.0, 40.0]])
    shared = p.decode_points(emb, pts)
    calls = []
    real = block.cross_attn_token_to_image.k_proj.linear
    monkeypatch.setattr(block.cross_attn_token_to_image.k_proj, "linear", lambda x: calls.append(x.shape[0]) or real(x))
    p.decode_points(emb, pts)
    assert calls == [1]  # one row computed for five clicks

    class Off:
        def set(self, value):
            return None

        def reset(self, token):
            pass

        def get(self):
            return False

    monkeypatch.setattr(sam_mod, "_SHARED_ROWS", Off())
    plain = p.decode_points(emb, pts)
    assert torch.equal(shared[0], plain[0]) and torch.equal(shared[1], plain[1])


@pytest.mark.parametrize("size", [(480, 640), (640, 480), (97, 333), (1024, 1024), (700, 701), (3, 2000)])
def test_upsample_to_input_equals_the_two_step_reference(size):
    """Upsampling only the rows and columns the crop keeps gives bit-identical values."""
    import torch.nn.functional as F

    from anyseg.models.sam import Geometry, _upsample_to_input

    x = torch.randn(3, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    geo = Geometry.for_family("sam", size, 1024)
    nh, nw = geo.input_size
    ref = F.interpolate(x, (1024, 1024), mode="bilinear", align_corners=False)[..., :nh, :nw]
    got = _upsample_to_input(x, geo)
    assert got.shape == ref.shape
    assert torch.equal(got, ref)

"""DiffSeg and the Stable Diffusion loader, on a tiny random diffusers folder loaded by path.

What is checked: the diffusers folder is a valid weights folder of the ``stable_diffusion``
family (model type, checks, hub download patterns) without changing other families; the
recording attention processor records every self-attention layer, computes what the default
processor computes, keeps one buffer per resolution and gives the same maps in any chunking;
the aggregation, KL merging, closest-pair merging and k-means on planted attention maps; and
DiffSeg's partition (disjoint, covering, labels, scores in [0, 1], features) at the image's size.
"""

from __future__ import annotations

import importlib.util
import shutil
from fnmatch import fnmatch

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

from anyseg.errors import InputError, ModelError  # noqa: E402
from anyseg.models.registry import REGISTRY  # noqa: E402


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    from tiny_diffusion import tiny_sd_folder

    return tiny_sd_folder(tmp_path_factory.mktemp("tiny_sd") / "tiny-sd")


@pytest.fixture(scope="module")
def sd_model(sd_folder):
    from anyseg.models.diffusion import load_diffusion

    return load_diffusion(sd_folder, device="cpu")


def _image(h: int = 64, w: int = 96) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, w // 2:] = 230
    img[h // 6:h // 2, w // 8:w // 3] = (200, 30, 30)
    return img


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and text
    return text


# -- weights folder ------------------------------------------------------------------------------
def test_diffusers_folder_is_a_weights_folder(sd_folder, tmp_path):
    from anyseg.models.weights import check_weights_dir, read_model_type

    assert read_model_type(sd_folder) == "stable-diffusion"
    spec = REGISTRY["sd-v1-4"]
    assert check_weights_dir(sd_folder, spec) == sd_folder
    with pytest.raises(ModelError) as e:  # a SAM spec given a diffusers folder
        check_weights_dir(sd_folder, REGISTRY["sam-vit-base"])
    assert "stable-diffusion" in _one_line(e)
    broken = tmp_path / "broken"
    shutil.copytree(sd_folder, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").rename(broken / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelError) as e:
        check_weights_dir(broken, spec)
    assert "unet/diffusion_pytorch_model.safetensors" in _one_line(e) and "pickled" in str(e.value)
    # the fp16 variant alone is accepted
    (broken / "unet" / "diffusion_pytorch_model.bin").rename(broken / "unet" / "diffusion_pytorch_model.fp16.safetensors")
    assert check_weights_dir(broken, spec) == broken


def test_download_patterns_fetch_only_what_diffseg_needs():
    from anyseg.models.weights import DOWNLOAD_PATTERNS, download_patterns

    patterns = download_patterns(REGISTRY["sd-v1-5"])
    wanted = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
              "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
              "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
              "scheduler/scheduler_config.json"]
    unwanted = ["v1-5-pruned.safetensors", "v1-5-pruned-emaonly.ckpt", "v1-5-pruned-emaonly.safetensors",
                "safety_checker/model.safetensors", "safety_checker/config.json", "feature_extractor/preprocessor_config.json",
                "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.non_ema.safetensors",
                "unet/diffusion_pytorch_model.bin", "text_encoder/pytorch_model.bin"]
    assert all(any(fnmatch(f, p) for p in patterns) for f in wanted)
    assert not [f for f in unwanted if any(fnmatch(f, p) for p in patterns)]
    assert download_patterns(REGISTRY["sam-vit-base"]) == DOWNLOAD_PATTERNS == ["*.json", "*.safetensors", "*.txt",
                                                                                "*.model"]


def test_resolution_by_path_name_and_errors(sd_folder, tmp_path, monkeypatch):
    from anyseg.models.diffusion import resolve_diffusion
    from anyseg.models.resolver import model_status

    spec, folder = resolve_diffusion(str(sd_folder))
    assert spec.family == "stable_diffusion" and folder == sd_folder and spec.path == sd_folder
    monkeypatch.setenv("ANYSEG_MODELS", str(tmp_path))  # a registry name found in $ANYSEG_MODELS/NAME
    (tmp_path / "sd-v1-5").symlink_to(sd_folder, target_is_directory=True)
    assert resolve_diffusion("sd-v1-5")[1] == tmp_path / "sd-v1-5" and model_status("sd-v1-5").present
    assert resolve_diffusion("auto")[0].name == "sd-v1-5"
    monkeypatch.delenv("ANYSEG_MODELS")
    with pytest.raises(ModelError) as e:
        resolve_diffusion("sam-vit-base")
    assert "not a diffusion model" in _one_line(e) and "sd-v1-4" in str(e.value)
    with pytest.raises(ModelError) as e:  # offline (conftest) and absent
        resolve_diffusion("sd-v1-4")
    assert "diffusers folder" in _one_line(e)
    with pytest.raises(ModelError) as e:
        resolve_diffusion("auto")
    assert "anyseg models pull" in _one_line(e)


def test_missing_diffusers_is_one_line_naming_the_extra(sd_folder, monkeypatch):
    from anyseg.models.diffusion import DiffusionModel, load_diffusion
    from anyseg.models.diffusion import resolve_diffusion

    spec, folder = resolve_diffusion(sd_folder)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffusers" else real(name, *a))
    for call in (lambda: DiffusionModel.from_folder(spec, folder, "cpu"), lambda: load_diffusion(sd_folder)):
        with pytest.raises(ModelError) as e:
            call()
        assert "anyseg[diffusion]" in _one_line(e) and "diffusers" in str(e.value)


# -- attention capture ---------------------------------------------------------------------------
def test_capture_records_every_self_attention_layer(sd_model):
    names = sorted(n[: -len(".processor")] for n in sd_model.unet.attn_processors if n.endswith("attn1.processor"))
    before = {n: type(p) for n, p in sd_model.unet.attn_processors.items()}
    sa = sd_model.self_attention(_image())
    from tiny_diffusion import SAMPLE_SIZE, SELF_ATTENTION_LAYERS

    assert len(names) == SELF_ATTENTION_LAYERS
    assert sorted(n for layers in sa.layers.values() for n in layers) == names
    assert sorted(sa.maps) == [(SAMPLE_SIZE // 2) ** 2, SAMPLE_SIZE ** 2] and sa.resolution == SAMPLE_SIZE
    for n, a in sa.maps.items():  # one (n, n) mean per resolution, rows are distributions
        assert a.shape == (n, n) and torch.allclose(a.sum(1), torch.ones(n), atol=1e-4)
    assert sa.features.shape == (SAMPLE_SIZE ** 2, 16)
    assert {n: type(p) for n, p in sd_model.unet.attn_processors.items()} == before  # restored


def test_recording_processor_matches_default_and_bounds_memory(sd_model):
    from anyseg.models.diffusion import AttentionRecorder, RecordingProcessor, preprocess

    unet = sd_model.unet
    latent = sd_model.encode(preprocess(_image(), sd_model.default_size))
    t, ctx = torch.tensor([300]), sd_model.empty_context()
    with torch.inference_mode():
        reference = unet(latent, t, encoder_hidden_states=ctx).sample
    original = dict(unet.attn_processors)
    results = []
    for chunk in (1 << 24, 2048):  # whole maps at once, and 4 or 16 query rows at a time
        rec = AttentionRecorder()
        unet.set_attn_processor({n: RecordingProcessor(rec, n, chunk) if n.endswith("attn1.processor") else p
                                 for n, p in original.items()})
        try:
            with torch.inference_mode():
                out = unet(latent, t, encoder_hidden_states=ctx).sample
        finally:
            unet.set_attn_processor(dict(original))
        assert torch.allclose(out, reference, atol=1e-5)
        assert len(rec.sums) == 2  # one buffer per resolution, not one per layer
        results.append(rec.result())
    for n in results[0].maps:
        assert torch.allclose(results[0].maps[n], results[1].maps[n], rtol=1e-4, atol=1e-5)


# -- the algorithm on synthetic attention --------------------------------------------------------
def _planted(res: int = 8, groups: int = 2, noise: float = 0.05, seed: int = 0) -> torch.Tensor:
    """``(res, res, res, res)``: cells in vertical band ``g`` attend to band ``g`` (plus noise)."""
    rng = np.random.default_rng(seed)
    band = (np.arange(res) * groups // res)[None, :].repeat(res, 0).reshape(-1)  # column bands
    attn = (band[:, None] == band[None, :]).astype(np.float64) + noise * rng.random((res * res, res * res))
    attn /= attn.sum(1, keepdims=True)
    return torch.from_numpy(attn.astype(np.float32)).reshape(res, res, res, res)


def test_sampling_grid_follows_the_reference():
    from anyseg.discover.diffseg import sampling_grid

    g = sampling_grid(64, 16)
    assert g.shape == (256, 2) and sorted(set(g[:, 0])) == list(range(1, 62, 4))
    assert sampling_grid(16, 16).shape == (256, 2) and sampling_grid(9, 1).tolist() == [[4, 4]]


def test_aggregate_upsamples_normalises_and_weights():
    from anyseg.discover.diffseg import aggregate

    rng = np.random.default_rng(1)
    maps = {}
    for s in (8, 4):
        a = rng.random((s * s, s * s)).astype(np.float32)
        maps[s * s] = torch.from_numpy(a / a.sum(1, keepdims=True))
    out = aggregate(maps)
    assert out.shape == (8, 8, 8, 8)
    assert torch.allclose(out.sum((2, 3)), torch.ones(8, 8), atol=1e-5)
    # alone, the top resolution is the input itself
    assert torch.allclose(aggregate({64: maps[64]}).reshape(64, 64), maps[64], atol=1e-6)
    # the coarse part (weight 4 / (8 + 4)): cell (0, 0)'s map upsampled to 8 x 8 and renormalised,
    # tiled to the fine cells (0..1, 0..1)
    coarse = (out - aggregate({64: maps[64]}) * 8 / 12) * 12 / 4
    up = torch.nn.functional.interpolate(maps[16][0].reshape(1, 1, 4, 4), size=(8, 8), mode="bilinear")[0, 0]
    assert torch.allclose(coarse[0, 0], up / up.sum(), atol=1e-5)
    assert torch.allclose(coarse[1, 1], coarse[0, 0], atol=1e-6) and not torch.allclose(coarse[2, 2], coarse[0, 0])


def test_kl_merging_finds_two_planted_groups():
    from anyseg.discover.diffseg import _nms, kmeans_refine, merge_attention, sampling_grid, symmetric_kl

    attn = _planted()
    flat = attn.reshape(64, 64)
    kl = symmetric_kl(flat[:3], flat)
    assert torch.allclose(kl[0, 0], torch.tensor(0.0), atol=1e-5) and kl.min() >= 0
    props = merge_attention(attn, sampling_grid(8, 4), kl_threshold=1.1, iterations=3)
    assert len(props) == 2
    label, mass = _nms(props, 8, 32)
    left, right = label[:, :16], label[:, 16:]
    assert len(np.unique(left)) == 1 and len(np.unique(right)) == 1 and left[0, 0] != right[0, 0]
    assert (mass > 0.9).all()
    assert len(kmeans_refine(flat, props)) == 2
    # a tiny threshold merges nothing beyond identical maps; a huge one merges everything
    assert len(merge_attention(attn, sampling_grid(8, 4), 1e-6, 3)) > 2
    assert len(merge_attention(attn, sampling_grid(8, 4), 100.0, 3)) == 1


def test_merge_to_joins_the_closest_proposals():
    from anyseg.discover.diffseg import merge_attention, merge_to, sampling_grid

    props = merge_attention(_planted(groups=4), sampling_grid(8, 8), 1.1, 3)
    assert len(props) == 4
    two = merge_to(props, 2)
    assert len(two) == 2 and torch.allclose(two.sum(1), torch.ones(2), atol=1e-5)
    assert len(merge_to(props, 8)) == 4


def test_scores_are_evidence():
    from anyseg.discover.diffseg import _nms, _partition, merge_attention, sampling_grid

    props = merge_attention(_planted(), sampling_grid(8, 4), 1.1, 3)
    label, mass = _nms(props, 8, 32)
    parts = _partition(label, mass, torch.randn(64, 5), 8, (40, 50))
    assert len(parts) == 2 and (parts.scores > 0.8).all() and parts.data["feature"].shape == (2, 5)
    uniform = torch.full((1, 64), 1 / 64)  # diffuse attention: one segment, no evidence of structure
    label, mass = _nms(uniform, 8, 32)
    one = _partition(label, mass, None, 8, (40, 50))
    assert len(one) == 1 and one.scores[0] == 0.0 and one.masks.all()


# -- DiffSeg end to end --------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(64, 96), (50, 37)])
def test_diffseg_partitions_non_square_images(sd_model, size):
    from anyseg.discover.base import method_factory
    from anyseg.discover.diffseg import DiffSeg

    assert method_factory("diffseg") == DiffSeg.from_options
    d = DiffSeg.from_options(model=sd_model)
    assert d.kind == "partition" and "kl1.1" in d.model_id
    masks = d.discover(_image(*size))
    n = len(masks)
    assert n >= 2 and masks.masks.shape == (n, *size)
    assert (masks.masks.sum(0) == 1).all()  # disjoint and covering
    assert masks.labels.tolist() == list(range(n))
    assert ((masks.scores >= 0) & (masks.scores <= 1)).all() and masks.scores.dtype == np.float32
    assert masks.data["feature"].shape == (n, 16) and np.isfinite(masks.data["feature"]).all()
    few = d.discover(_image(*size), objects=2)
    assert 1 <= len(few) <= 2 and (few.masks.sum(0) == 1).all()


def test_diffseg_by_path_with_refinement(sd_folder):
    from anyseg.discover.diffseg import DiffSeg

    d = DiffSeg.from_options(model=str(sd_folder), device="cpu", refine=True, anchors=8, kl_threshold=0.9)
    masks = d.discover(_image(48, 40))
    assert masks.masks.shape[1:] == (48, 40) and (masks.masks.sum(0) == 1).all()


@pytest.mark.parametrize("options, words", [
    ({"kl_threshold": -1}, "kl_threshold"), ({"kl_threshold": float("nan")}, "kl_threshold"),
    ({"anchors": 0}, "anchors"), ({"anchors": 17}, "latent grid"), ({"iterations": 2.5}, "iterations"),
    ({"refine": "yes"}, "refine"), ({"foo": 1}, "unknown diffseg options"), ({"size": 65}, "multiple of"),
    ({"size": 1024}, "above"), ({"timestep": 5000}, "timestep"), ({"seed": "x"}, "seed"),
])
def test_bad_options_are_one_line(sd_model, options, words):
    from anyseg.discover.diffseg import DiffSeg

    with pytest.raises(InputError) as e:
        DiffSeg.from_options(model=sd_model, **options)  # at construction, before any image
    assert words in _one_line(e)


def test_bad_images_and_objects_are_one_line(sd_model):
    from anyseg.discover.diffseg import DiffSeg

    d = DiffSeg.from_options(model=sd_model)
    with pytest.raises(InputError) as e:
        d.discover(np.zeros((6, 40, 3), np.uint8))
    assert "too small" in _one_line(e)
    with pytest.raises(InputError) as e:
        d.discover(_image(), objects=0)
    assert "--objects" in _one_line(e)


def test_noise_option_noises_the_latent_reproducibly(sd_model):
    from anyseg.discover.diffseg import DiffSeg

    clean = sd_model.self_attention(_image())
    noisy = [sd_model.self_attention(_image(), noise=True, seed=1) for _ in range(2)]
    top = max(clean.maps)
    assert torch.equal(noisy[0].maps[top], noisy[1].maps[top]) and not torch.allclose(clean.maps[top], noisy[0].maps[top])
    masks = DiffSeg.from_options(model=sd_model, noise=True, seed=1).discover(_image())
    assert (masks.masks.sum(0) == 1).all()

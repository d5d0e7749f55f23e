"""The Stable Diffusion inpainting engine (``--engine sd``) on tiny random diffusers folders, loaded by path
and by registry name through ``$ANYSEG_MODELS``.

What is checked: the inpainting folders are weights folders of the ``sd_inpaint`` / ``sdxl_inpaint``
families (model types, the folder check, hub download patterns: no safety checker, no pickles, the
chosen variant) without changing DiffSeg's; the capability ``inpaint`` in the resolver; the engine through
:func:`anyseg.edit.base.run_inpaint` (size, bit-exact outside the dilated mask, reproducible per seed,
SDXL's two text encoders, img2img strength); one-line errors for a missing prompt and bad settings.
"""

from __future__ import annotations

import shutil
from fnmatch import fnmatch

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("torch")

from anyseg.errors import InputError, ModelError  # noqa: E402
from anyseg.models.registry import REGISTRY  # noqa: E402
from tiny_inpaint import WORKING_SIZE  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from tiny_inpaint import tiny_inpaint_folder, tiny_sdxl_inpaint_folder

    root = tmp_path_factory.mktemp("tiny_inpaint")
    return {"sd": tiny_inpaint_folder(root / "tiny-sd-inpaint"), "sdxl": tiny_sdxl_inpaint_folder(root / "tiny-sdxl")}


@pytest.fixture(scope="module")
def engine(folders):
    from anyseg.edit.sd import SdInpaintEngine

    return SdInpaintEngine.from_options(model=str(folders["sd"]), device="cpu", steps=2, guidance=1.0)  # no CFG: fast


def _image(h: int = 64, w: int = 96) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, w // 2:] = 210
    img[h // 4:3 * h // 4, w // 4:w // 2] = (200, 40, 30)
    return np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)


def _mask(h: int = 64, w: int = 96) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[h // 4:3 * h // 4, w // 4:w // 2] = True
    return m


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert text and "\n" not in text
    return text


# -- the weights folders -------------------------------------------------------------------------
def test_inpainting_folders_are_weights_folders(folders, tmp_path):
    from anyseg.models.weights import check_weights_dir, read_model_type

    assert read_model_type(folders["sd"]) == "stable-diffusion-inpaint"
    assert read_model_type(folders["sdxl"]) == "stable-diffusion-xl-inpaint"
    assert check_weights_dir(folders["sd"], REGISTRY["sd-inpainting"]) == folders["sd"]
    assert check_weights_dir(folders["sdxl"], REGISTRY["sdxl-inpainting"]) == folders["sdxl"]
    with pytest.raises(ModelError) as e:  # DiffSeg's text-to-image spec does not take an inpainting folder
        check_weights_dir(folders["sd"], REGISTRY["sd-v1-4"])
    assert "stable-diffusion-inpaint" in _one_line(e)
    broken = tmp_path / "no-te2"
    shutil.copytree(folders["sdxl"], broken)
    shutil.rmtree(broken / "text_encoder_2")
    shutil.rmtree(broken / "tokenizer_2")
    with pytest.raises(ModelError) as e:
        check_weights_dir(broken, REGISTRY["sdxl-inpainting"])
    assert "text_encoder_2/config.json" in _one_line(e) and "tokenizer_2/vocab.json" in str(e.value)


def test_download_patterns_fetch_only_what_the_pipelines_need():
    from anyseg.models.weights import DIFFUSERS_PATTERNS, download_patterns

    def fetched(name: str, files: list[str]) -> list[str]:
        patterns = download_patterns(REGISTRY[name])
        return [f for f in files if any(fnmatch(f, p) for p in patterns)]

    never = ["safety_checker/model.safetensors", "safety_checker/config.json", "feature_extractor/preprocessor_config.json",
             "sd-v1-5-inpainting.ckpt", "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.bin",
             "text_encoder/pytorch_model.bin", "512-inpainting-ema.safetensors"]
    fp16 = ["unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/model.fp16.safetensors"]
    fp32 = [f.replace(".fp16", "") for f in fp16]
    common = ["model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
              "unet/config.json", "vae/config.json", "text_encoder/config.json"]
    # SD 1.5 inpainting: its only safetensors weights are the fp16 files; SD 2: the fp32 ones
    assert fetched("sd-inpainting", common + fp16 + fp32 + never) == common + fp16
    assert fetched("sd2-inpainting", common + fp16 + fp32 + never) == common + fp32
    xl = ["text_encoder_2/config.json", "text_encoder_2/model.fp16.safetensors", "tokenizer_2/vocab.json",
          "tokenizer_2/merges.txt"]
    assert fetched("sdxl-inpainting", common + fp16 + xl + fp32 + ["text_encoder_2/model.safetensors"] + never) == \
        common + fp16 + xl
    assert download_patterns(REGISTRY["sd-v1-5"]) == DIFFUSERS_PATTERNS  # DiffSeg's, unchanged
    assert REGISTRY["sd2-inpainting"].hub_id == "sd2-community/stable-diffusion-2-inpainting"


def test_the_inpaint_capability_in_the_resolver():
    from anyseg.models.families import DIFFUSION, INPAINT, get_family
    from anyseg.models.registry import models_with
    from anyseg.models.resolver import resolve

    assert [s.name for s in models_with(INPAINT)] == ["sdxl-inpainting", "sd2-inpainting", "sd-inpainting"]
    assert get_family("sd_inpaint").has(INPAINT) and not get_family("sd_inpaint").has(DIFFUSION)
    with pytest.raises(ModelError) as e:
        resolve("sd-v1-4", INPAINT)
    assert "not a Stable Diffusion inpainting model" in _one_line(e) and "sd-inpainting" in str(e.value)
    with pytest.raises(ModelError) as e:  # DiffSeg reads a 4-channel UNet's attention, not an inpainting one
        resolve("sd-inpainting", DIFFUSION)
    assert "not a diffusion model" in _one_line(e)


def test_by_name_through_anyseg_models_and_offline_errors(folders, tmp_path, monkeypatch, engine):
    from anyseg.edit.base import engine_factory
    from anyseg.models.families import INPAINT
    from anyseg.models.resolver import resolve

    monkeypatch.setenv("ANYSEG_MODELS", str(tmp_path))
    (tmp_path / "sd-inpainting").symlink_to(folders["sd"], target_is_directory=True)
    named = engine_factory("sd")(model="sd-inpainting", device="cpu", steps=2, guidance=3.0, strength=0.5)
    assert named.spec.name == "sd-inpainting" and named.model_id == "sd-inpainting@steps2-cfg3-strength0.5"
    assert resolve("auto", INPAINT).name == "sd-inpainting"
    default = engine_factory("sd")(device="cpu", steps=2)  # no --model: sd-inpainting
    assert default.spec.name == "sd-inpainting" and default.working_size == WORKING_SIZE
    monkeypatch.delenv("ANYSEG_MODELS")
    with pytest.raises(ModelError) as e:  # offline (conftest) and absent
        engine_factory("sd")(model="sdxl-inpainting", device="cpu")
    assert "diffusers folder" in _one_line(e) and "sdxl-inpainting" in str(e.value)
    assert engine.spec.path == folders["sd"] and not engine.xl


# -- inpainting ----------------------------------------------------------------------------------
def test_run_inpaint_is_bit_exact_outside_and_reproducible(engine):
    from anyseg.edit.base import run_inpaint

    image, mask = _image(), _mask()
    a = run_inpaint(engine, image, mask, "fill", prompt="a red car", seed=3, dilate=4)
    b = run_inpaint(engine, image, mask, "fill", prompt="a red car", seed=3, dilate=4)
    c = run_inpaint(engine, image, mask, "fill", prompt="a red car", seed=4, dilate=4)
    assert a.image.shape == image.shape and a.image.dtype == np.uint8
    assert np.array_equal(a.image[~a.mask], image[~a.mask]) and a.mask.sum() > mask.sum()
    assert not np.array_equal(a.image[mask], image[mask])  # generated, not copied
    assert np.array_equal(a.image, b.image) and not np.array_equal(a.image, c.image)
    rec = a.record
    assert rec["engine"] == "sd" and rec["seed"] == 3 and rec["prompt"] == "a red car"
    assert rec["model"].endswith("@steps2-cfg1-strength1") and rec["mask_area"] == int(a.mask.sum())


def test_crops_run_at_the_working_size_in_multiples_of_eight(engine):
    assert engine.working_size == WORKING_SIZE == 32
    sizes = {(40, 60): (24, 32), (13, 97): (8, 32), (64, 64): (32, 32), (300, 20): (32, 8), (10, 12): (24, 32)}
    assert {hw: engine.run_size(*hw) for hw in sizes} == sizes
    out = engine.inpaint(_image(37, 51), _mask(37, 51), prompt="a dog", seed=0, steps=1)
    assert out.shape == (37, 51, 3) and out.dtype == np.uint8


def test_img2img_strength_and_per_call_settings(engine):
    image, mask = _image(), _mask()
    full = engine.inpaint(image, mask, prompt="a tree", seed=1)
    half = engine.inpaint(image, mask, prompt="a tree", seed=1, strength=0.5, guidance=4.0)  # with CFG
    assert half.shape == full.shape and not np.array_equal(half, full)
    assert engine.model_id.endswith("@steps2-cfg4-strength0.5")  # the record says what the call ran with
    assert engine.settings["strength"] == 1.0  # the engine's own settings stay
    engine.inpaint(image, mask, prompt="a tree", seed=1)
    assert engine.model_id.endswith("@steps2-cfg1-strength1")


def test_sdxl_two_text_encoders(folders):
    from anyseg.edit.base import run_inpaint
    from anyseg.edit.sd import SdInpaintEngine

    xl = SdInpaintEngine.from_options(model=folders["sdxl"], device="cpu", steps=2, guidance=1.0)
    assert xl.xl and xl.spec.family == "sdxl_inpaint" and xl.pipeline.text_encoder_2 is not None
    image, mask = _image(), _mask()
    a = run_inpaint(xl, image, mask, "fill", prompt="a blue square", seed=5)
    b = run_inpaint(xl, image, mask, "fill", prompt="a blue square", seed=5)
    assert np.array_equal(a.image[~a.mask], image[~a.mask]) and a.record["model"].startswith(str(folders["sdxl"]))
    assert np.array_equal(a.image, b.image) and not np.array_equal(a.image[mask], image[mask])


def test_a_missing_prompt_is_one_line(engine):
    from anyseg.edit.base import run_inpaint

    for prompt in (None, "", "   "):
        with pytest.raises(InputError) as e:
            run_inpaint(engine, _image(), _mask(), "fill", prompt=prompt)
        assert "--prompt" in _one_line(e)
        with pytest.raises(InputError) as e:
            engine.inpaint(_image(), _mask(), prompt=prompt)
        assert "--prompt" in _one_line(e)


@pytest.mark.parametrize("options, words", [
    ({"steps": 0}, "--steps"), ({"steps": 2.5}, "--steps"), ({"guidance": -1}, "--guidance"),
    ({"strength": 0}, "--strength"), ({"strength": 1.5}, "--strength"), ({"steps": 2, "strength": 0.3}, "no denoising"),
    ({"negative_prompt": 3}, "--negative-prompt"), ({"sampler": "x"}, "unknown option"), ({"dtype": "int8"}, "--dtype"),
])
def test_bad_settings_are_one_line_before_loading(options, words, tmp_path):
    from anyseg.edit.sd import SdInpaintEngine

    with pytest.raises(InputError) as e:  # the folder does not exist: the settings are checked first
        SdInpaintEngine.from_options(model=str(tmp_path / "absent"), device="cpu", **options)
    assert words in _one_line(e)


def test_bad_calls_are_one_line(engine):
    with pytest.raises(InputError) as e:
        engine.inpaint(_image(), _mask(32, 32), prompt="x")
    assert "mask" in _one_line(e)
    with pytest.raises(InputError) as e:
        engine.inpaint(_image(), _mask(), prompt="x", seed=-1)
    assert "--seed" in _one_line(e)
    with pytest.raises(InputError) as e:
        engine.inpaint(_image(), _mask(), prompt="x", eta=1)
    assert "unknown option" in _one_line(e)

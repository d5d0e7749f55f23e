"""``anyseg models convert``: original SAM / SAM 2.1 checkpoints -> transformers folders.

Each test writes an ORIGINAL-layout checkpoint from a tiny transformers model: its state dict
renamed (and SAM 2's point-embedding table split into rows) by this file's own inverse table,
written from the reference code's module names (segment_anything/modeling, sam2/modeling), and
saved with ``torch.save`` in the original container (SAM: a plain state dict; SAM 2:
``{"model": state_dict}``). The CLI converts it, and anyseg's loader must give the tiny model's
own predictions. Bad checkpoints (an extra key, a missing key, a wrong shape, a pickle that
needs full unpickling) each fail with one line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from anyseg.cli import main  # noqa: E402
from anyseg.errors import InputError, ModelError  # noqa: E402
from anyseg.models import convert, load_model  # noqa: E402
from anyseg.types import Prompt  # noqa: E402
from tiny_models import build_sam  # noqa: E402
from tiny_video import build_sam2_video  # noqa: E402

# -- the inverse table: transformers names -> the reference code's (applied in order) --------------
_HEADS = r"(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head|obj_ptr_proj)"
_MLP3 = [(_HEADS + r"\.layers\.0\.", r"\1.layers.1."), (_HEADS + r"\.proj_in\.", r"\1.layers.0."),
         (_HEADS + r"\.proj_out\.", r"\1.layers.2.")]  # sam2_utils.MLP / mask_decoder.MLP: layers.0..2
_PROMPT = [(r"shared_embedding\.positional_embedding$", "pe_layer.positional_encoding_gaussian_matrix"),
           (r"mask_embed\.conv1\.", "mask_downscaling.0."), (r"mask_embed\.layer_norm1\.", "mask_downscaling.1."),
           (r"mask_embed\.conv2\.", "mask_downscaling.3."), (r"mask_embed\.layer_norm2\.", "mask_downscaling.4."),
           (r"mask_embed\.conv3\.", "mask_downscaling.6."), (r"point_embed\.(\d+)\.", r"point_embeddings.\1.")]
_DECODER = [(r"(transformer\.layers\.\d+)\.layer_norm(\d)", r"\1.norm\2"), ("layer_norm_final_attn", "norm_final_attn"),
            (r"upscale_conv1\.", "output_upscaling.0."), (r"upscale_layer_norm\.", "output_upscaling.1."),
            (r"upscale_conv2\.", "output_upscaling.3."), *_MLP3]
SAM_INVERSE = [
    (r"^vision_encoder\.layers\.", "image_encoder.blocks."), (r"^vision_encoder\.", "image_encoder."),
    (r"patch_embed\.projection\.", "patch_embed.proj."), (r"(blocks\.\d+)\.layer_norm([12])", r"\1.norm\2"),
    (r"neck\.conv1\.", "neck.0."), (r"neck\.layer_norm1\.", "neck.1."), (r"neck\.conv2\.", "neck.2."),
    (r"neck\.layer_norm2\.", "neck.3."), *_PROMPT, *_DECODER,
]
SAM2_INVERSE = [
    (r"^vision_encoder\.backbone\.", "image_encoder.trunk."), (r"^vision_encoder\.neck\.convs\.(\d+)\.",
                                                               r"image_encoder.neck.convs.\1.conv."),
    (r"patch_embed\.projection\.", "patch_embed.proj."), (r"(trunk\.blocks\.\d+)\.layer_norm", r"\1.norm"),
    (r"(trunk\.blocks\.\d+\.mlp)\.proj_in\.", r"\1.layers.0."), (r"(trunk\.blocks\.\d+\.mlp)\.proj_out\.",
                                                                 r"\1.layers.1."),
    (r"^prompt_encoder\.", "sam_prompt_encoder."), (r"^mask_decoder\.", "sam_mask_decoder."), *_PROMPT,
    (r"\.o_proj\.", ".out_proj."), (r"(transformer\.layers\.\d+\.mlp)\.proj_in\.", r"\1.layers.0."),
    (r"(transformer\.layers\.\d+\.mlp)\.proj_out\.", r"\1.layers.1."),
    (r"(memory_attention\.layers\.\d+)\.layer_norm", r"\1.norm"), (r"^memory_attention\.layer_norm\.", "memory_attention.norm."),
    (r"mask_downsampler\.final_conv\.", "mask_downsampler.encoder.12."),  # 4 x (Conv2d, LayerNorm2d, GELU), Conv2d
    (r"feature_projection\.", "pix_feat_proj."), (r"memory_encoder\.projection\.", "memory_encoder.out_proj."),
    (r"memory_fuser\.layers\.(\d+)\.depthwise_conv\.", r"fuser.layers.\1.dwconv."),
    (r"memory_fuser\.layers\.(\d+)\.layer_norm\.", r"fuser.layers.\1.norm."),
    (r"memory_fuser\.layers\.(\d+)\.pointwise_conv", r"fuser.layers.\1.pwconv"),
    (r"memory_fuser\.layers\.(\d+)\.scale$", r"fuser.layers.\1.gamma"),
    ("^memory_temporal_positional_encoding$", "maskmem_tpos_enc"), ("^no_memory_embedding$", "no_mem_embed"),
    ("^no_memory_positional_encoding$", "no_mem_pos_enc"), ("^no_object_pointer$", "no_obj_ptr"),
    ("^occlusion_spatial_embedding_parameter$", "no_obj_embed_spatial"),
    (r"^object_pointer_proj\.", "obj_ptr_proj."), (r"^temporal_positional_encoding_projection_layer\.", "obj_ptr_tpos_proj."),
    *_DECODER,
]

#: names read in the reference code (segment_anything/modeling/*.py, sam2/modeling/**/*.py), as the
#: released checkpoints (sam_vit_b_01ec64.pth, sam2.1_hiera_tiny.pt) hold them
SAM_ORIGINAL = ["image_encoder.pos_embed", "image_encoder.patch_embed.proj.weight", "image_encoder.blocks.0.norm1.weight",
                "image_encoder.blocks.1.attn.qkv.weight", "image_encoder.blocks.1.attn.rel_pos_h",
                "image_encoder.blocks.0.mlp.lin2.bias", "image_encoder.neck.0.weight", "image_encoder.neck.3.bias",
                "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", "prompt_encoder.point_embeddings.3.weight",
                "prompt_encoder.mask_downscaling.6.weight", "prompt_encoder.no_mask_embed.weight",
                "mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.weight",
                "mask_decoder.transformer.layers.0.norm4.bias", "mask_decoder.transformer.layers.0.mlp.lin1.weight",
                "mask_decoder.transformer.norm_final_attn.weight", "mask_decoder.output_upscaling.1.weight",
                "mask_decoder.output_hypernetworks_mlps.3.layers.2.bias", "mask_decoder.iou_prediction_head.layers.1.weight"]
SAM2_ORIGINAL = ["image_encoder.trunk.pos_embed_window", "image_encoder.trunk.blocks.1.proj.weight",
                 "image_encoder.trunk.blocks.0.mlp.layers.1.bias", "image_encoder.neck.convs.3.conv.weight",
                 "memory_attention.layers.0.cross_attn_image.k_proj.weight", "memory_attention.layers.0.norm3.bias",
                 "memory_attention.norm.weight", "memory_encoder.mask_downsampler.encoder.10.weight",
                 "memory_encoder.mask_downsampler.encoder.12.bias", "memory_encoder.pix_feat_proj.weight",
                 "memory_encoder.fuser.layers.0.gamma", "memory_encoder.fuser.layers.0.pwconv2.weight",
                 "memory_encoder.out_proj.bias", "maskmem_tpos_enc", "no_mem_embed", "no_obj_embed_spatial",
                 "obj_ptr_proj.layers.2.weight", "obj_ptr_tpos_proj.bias", "mask_downsample.weight",
                 "sam_prompt_encoder.point_embeddings.3.weight", "sam_mask_decoder.obj_score_token.weight",
                 "sam_mask_decoder.pred_obj_score_head.layers.2.bias", "sam_mask_decoder.conv_s1.weight",
                 "sam_mask_decoder.transformer.layers.1.mlp.layers.0.weight",
                 "sam_mask_decoder.transformer.final_attn_token_to_image.out_proj.bias"]


def _downsampler(name: str) -> str:
    m = re.search(r"mask_downsampler\.layers\.(\d+)\.(conv|layer_norm)\.", name)
    if not m:
        return name
    index = 3 * int(m.group(1)) + (m.group(2) == "layer_norm")
    return name[:m.start()] + f"mask_downsampler.encoder.{index}." + name[m.end():]


def to_original(model_state: dict, family: str) -> dict:
    """A transformers state dict in the reference layout, as the original code names and shapes it."""
    table = SAM_INVERSE if family == "sam" else SAM2_INVERSE
    out = {}
    for name, tensor in model_state.items():
        if name == "shared_image_embedding.positional_embedding":  # transformers keeps the matrix twice (tied)
            if "prompt_encoder.shared_embedding.positional_embedding" in model_state:
                continue
            name = "prompt_encoder.shared_embedding.positional_embedding"
        if family == "sam2" and name == "prompt_encoder.point_embed.weight":
            for i in range(tensor.shape[0]):  # sam2 PromptEncoder: nn.ModuleList of four nn.Embedding(1, C)
                out[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = tensor[i:i + 1].clone()
            continue
        for pattern, repl in table:
            name = re.sub(pattern, repl, name)
        out[_downsampler(name)] = tensor.clone()
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    sam2 = build_sam2_video(root / "sam2")
    # the reference keeps one random-Fourier matrix for the image and the prompts (PromptEncoder.pe_layer);
    # transformers' Sam2VideoModel draws two at random: make them one, as any converted checkpoint has them
    from safetensors.torch import save_file

    state = _state(sam2)
    state["shared_image_embedding.positional_embedding"] = state["prompt_encoder.shared_embedding.positional_embedding"]
    save_file({k: v.clone() for k, v in state.items()}, str(sam2 / "model.safetensors"), metadata={"format": "pt"})
    return {"sam": build_sam(root / "sam"), "sam2": sam2}


def _state(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def write_original(folder: Path, family: str, path: Path, edit=None) -> Path:
    state = to_original(_state(folder), family)
    if edit is not None:
        edit(state)
    torch.save(state if family == "sam" else {"model": state}, str(path))
    return path


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["models", "convert", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


IMAGE = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)
BOX = Prompt(box=np.array([10.0, 8.0, 70.0, 50.0]))


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_converted_checkpoint_predicts_like_the_model_it_came_from(tiny, family, tmp_path, capsys):
    ckpt = write_original(tiny[family], family, tmp_path / "orig.pt")
    loaded = torch.load(str(ckpt), weights_only=True)
    raw = loaded if family == "sam" else loaded["model"]
    keys = set(raw)
    assert set(SAM_ORIGINAL if family == "sam" else SAM2_ORIGINAL) <= keys  # the reference names
    if family == "sam":
        assert raw["image_encoder.blocks.0.attn.qkv.weight"].shape == (96, 32)  # fused q, k, v (3 x 32)
    else:
        assert raw["sam_prompt_encoder.point_embeddings.0.weight"].shape == (1, 128)

    out = tmp_path / "hf"
    code, stdout, err = _cli(capsys, ckpt, "--family", family, "--out", out, "--config", tiny[family])
    assert code == 0, err
    assert "converted" in stdout and str(out) in stdout
    assert json.loads((out / "config.json").read_text())["model_type"] == ("sam" if family == "sam" else "sam2_video")
    assert (out / "preprocessor_config.json").is_file()
    a, b = _state(tiny[family]), _state(out)
    for k in a:  # every weight arrives unchanged
        assert torch.equal(a[k], b[k]), k

    ref, got = load_model(tiny[family], device="cpu"), load_model(out, device="cpu")
    x, y = ref.segment(IMAGE, BOX, multimask=True), got.segment(IMAGE, BOX, multimask=True)
    assert np.array_equal(x.masks, y.masks) and x.masks.shape[1:] == IMAGE.shape[:2]
    assert 0 < x.masks.mean() < 1  # masks that depend on the weights, not empty or full
    np.testing.assert_allclose(x.scores, y.scores, atol=1e-5)
    if x.logits is not None:
        np.testing.assert_allclose(x.logits, y.logits, atol=1e-5)


def test_converted_sam2_tracks_like_the_model_it_came_from(tiny, tmp_path, capsys):
    from anyseg.video.base import ObjectPrompt
    from anyseg.video.frames import ArrayFrames
    from anyseg.video.sam2 import load_video_tracker

    out = tmp_path / "hf"
    ckpt = write_original(tiny["sam2"], "sam2", tmp_path / "orig.pt")
    assert _cli(capsys, ckpt, "--family", "sam2", "--out", out, "--config", tiny["sam2"] / "config.json")[0] == 0
    frames = np.stack([np.roll(IMAGE, 3 * t, axis=1) for t in range(3)])
    runs = []
    for folder in (tiny["sam2"], out):
        tracker = load_video_tracker(str(folder), device="cpu")
        state = tracker.start(ArrayFrames(frames))
        tracker.add_prompt(state, ObjectPrompt(frame=0, obj_id=1, box=[10, 8, 70, 50]))
        runs.append([m.masks.copy() for _t, m in tracker.propagate(state, 0, 2)])
        tracker.close(state)
    assert all(np.array_equal(p, q) for p, q in zip(*runs)) and len(runs[0]) == 3
    assert 0 < np.mean(runs[0]) < 1


def test_variants_are_inferred_from_the_shapes(tiny):
    meta = {"sam": {}, "sam2": {}}
    for name in ("sam-vit-base", "sam-vit-huge"):
        width, depth = convert.SAM_VITS[name][:2]
        state = {"image_encoder.patch_embed.proj.weight": torch.empty(width, 3, 16, 16, device="meta"),
                 **{f"image_encoder.blocks.{i}.norm1.weight": torch.empty(1, device="meta") for i in range(depth)}}
        meta["sam"][name] = convert.infer_config_name("sam", state)
    for hiera in ("tiny", "large"):
        embed, _h, stages, *_ = convert.HIERAS[hiera]
        state = {"image_encoder.trunk.patch_embed.proj.weight": torch.empty(embed, 3, 7, 7, device="meta"),
                 **{f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.empty(1) for i in range(sum(stages))}}
        meta["sam2"][f"sam2-hiera-{hiera}"] = convert.infer_config_name("sam2", state)
        state["no_obj_embed_spatial"] = torch.empty(1, 64)
        meta["sam2"][f"sam2.1-hiera-{hiera}"] = convert.infer_config_name("sam2", state)
    assert all(k == v for fam in meta.values() for k, v in fam.items())
    cfg, label, _ = convert.build_config("sam2", "medsam2")  # bowang-lab/MedSAM2's sam2.1_hiera_t512.yaml
    assert cfg.image_size == 512 and cfg.prompt_encoder_config.image_size == 512 and label == "medsam2"
    assert cfg.memory_attention_rope_feat_sizes == [32, 32]
    with pytest.raises(ModelError, match="--family sam2"):
        convert.infer_config_name("sam", {"image_encoder.trunk.patch_embed.proj.weight": torch.empty(96, 3, 7, 7)})
    with pytest.raises(ModelError, match="no known sam variant has a 32-wide image encoder of 2 blocks"):
        convert.infer_config_name("sam", to_original(_state(tiny["sam"]), "sam"))


def _drop(key):
    return lambda s: s.pop(key)


def _add(key):
    return lambda s: s.__setitem__(key, torch.zeros(2))


def _reshape(key):
    return lambda s: s.__setitem__(key, torch.zeros(*s[key].shape[:-1], s[key].shape[-1] + 1))


BAD = [
    ("sam", _add("image_encoder.blocks.0.attn.extra_bias"), r"^1 \(image_encoder\.blocks\.0\.attn\.extra_bias\) keys of "
                                                            r"the checkpoint match no rule"),
    ("sam", _drop("mask_decoder.iou_token.weight"), r"lacks weights .*: 1 \(mask_decoder\.iou_token\.weight\)"),
    ("sam", _reshape("mask_decoder.iou_prediction_head.layers.2.weight"),
     r"shapes differ .*: 1 \(mask_decoder\.iou_prediction_head\.proj_out\.weight \(4, 33\) vs \(4, 32\)\)"),
    ("sam2", _drop("no_obj_embed_spatial"), r"lacks weights .*occlusion_spatial_embedding_parameter"),
    ("sam2", _add("memory_encoder.fuser.layers.0.extra"), r"match no rule"),
    ("sam2", _reshape("memory_attention.layers.0.cross_attn_image.k_proj.weight"), r"shapes differ"),
]


@pytest.mark.parametrize("family,edit,message", BAD)
def test_bad_checkpoints_fail_with_one_line(tiny, tmp_path, capsys, family, edit, message):
    ckpt = write_original(tiny[family], family, tmp_path / "bad.pt", edit)
    out = tmp_path / "hf"
    code, _out, err = _cli(capsys, ckpt, "--family", family, "--out", out, "--config", tiny[family])
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err.split("error: ", 1)[-1]), err
    assert not out.exists()  # nothing is written before every check passed


class Pickled:
    """A custom class instance: a checkpoint holding one needs full unpickling."""

    def __init__(self):
        self.value = 1


def test_pickles_needing_full_unpickling_are_refused(tiny, tmp_path, capsys):
    state = to_original(_state(tiny["sam"]), "sam")
    torch.save({"model": state, "optimizer": Pickled()}, str(tmp_path / "full.pt"))
    code, _out, err = _cli(capsys, tmp_path / "full.pt", "--family", "sam", "--out", tmp_path / "hf")
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "needs full unpickling" in err and "Pickled" in err and "weights_only=True" in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code, _out, err = _cli(capsys, tmp_path / "junk.pt", "--family", "sam", "--out", tmp_path / "hf")
    assert code != 0 and "not a readable PyTorch checkpoint" in err and len(err.strip().splitlines()) == 1


def test_out_folder_and_options(tiny, tmp_path, capsys):
    ckpt = write_original(tiny["sam"], "sam", tmp_path / "orig.pt")
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _o, err = _cli(capsys, ckpt, "--family", "sam", "--out", out, "--config", tiny["sam"])
    assert code != 0 and "not empty; pass --force" in err and len(err.strip().splitlines()) == 1
    (out / "model-00001-of-00002.safetensors").write_bytes(b"stale")
    assert _cli(capsys, ckpt, "--family", "sam", "--out", out, "--config", tiny["sam"], "--force")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "notes.txt",
                                                     "preprocessor_config.json"]
    for argv, message in [((ckpt, "--family", "sam2", "--out", tmp_path / "x", "--config", "sam-vit-base"),
                           "is a sam config, not a sam2 one"),
                          ((ckpt, "--family", "sam", "--out", tmp_path / "x", "--config", "sam-vit-bsae"),
                           "unknown --config 'sam-vit-bsae'"),
                          ((tmp_path / "missing.pt", "--family", "sam", "--out", tmp_path / "x"), "checkpoint not found"),
                          ((ckpt, "--family", "sam", "--out", tmp_path / "x", "--config", "sam-vit-base"),
                           "lacks weights the sam-vit-base model needs")]:
        code, _o, err = _cli(capsys, *argv)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(InputError, match="unknown checkpoint family"):
        convert.rules("sam3")


# -- MedSAM and MedSAM2 in the registry --------------------------------------------------------------
def test_medsam_specs():
    from anyseg.models.registry import get_spec

    medsam, medsam2 = get_spec("medsam"), get_spec("medsam2")
    assert (medsam.family, medsam.hub_id, medsam.checkpoint) == ("sam", "flaviagiammarino/medsam-vit-base", None)
    assert "box" in medsam.notes
    assert (medsam2.family, medsam2.hub_id, medsam2.checkpoint) == ("sam2", "wanglab/MedSAM2", "MedSAM2_latest.pt")
    assert "medsam2" in convert.CONFIG_NAMES["sam2"] and "medsam" in convert.CONFIG_NAMES["sam"]


def test_medsam2_without_its_converted_folder_is_one_line(tmp_path, monkeypatch, capsys):
    from anyseg.errors import ModelNotAvailable

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for allow in (False, True):  # not local; and (offline) no download
        with pytest.raises(ModelNotAvailable) as e:
            load_model("medsam2", allow_download=allow, device="cpu")
        text = str(e.value)
        assert "\n" not in text and "anyseg models pull medsam2" in text
        assert (f"huggingface-cli download wanglab/MedSAM2 MedSAM2_latest.pt --local-dir .`, then `anyseg models convert "
                f"MedSAM2_latest.pt --family sam2 --config medsam2 --out {tmp_path / 'cache' / 'anyseg' / 'models' / 'medsam2'}"
                in text)
    assert main(["models", "pull", "medsam2"]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "anyseg models convert MedSAM2_latest.pt" in err


def test_pull_medsam2_downloads_the_original_and_converts_it(tiny, tmp_path, monkeypatch, capsys):
    """The pull path end to end, with the hub replaced by a tiny original checkpoint and ``medsam2``'s
    config by the tiny one (the real one is a 39M-parameter model)."""
    import huggingface_hub
    from transformers import Sam2VideoConfig

    from anyseg.models import model_status
    from anyseg.models import weights

    ckpt = write_original(tiny["sam2"], "sam2", tmp_path / "MedSAM2_latest.pt")
    calls = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None):
        calls.append((repo_id, filename))
        return str(ckpt)

    named = convert._named_config
    monkeypatch.setattr(convert, "_named_config", lambda family, name: Sam2VideoConfig.from_json_file(
        str(tiny["sam2"] / "config.json")) if name == "medsam2" else named(family, name))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(weights, "_hub_reachable", lambda timeout=3.0: True)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("ANYSEG_MODELS", str(tmp_path / "models"))
    assert main(["models", "pull", "medsam2"]) == 0, capsys.readouterr().err
    assert calls == [("wanglab/MedSAM2", "MedSAM2_latest.pt")]
    folder = tmp_path / "models" / "medsam2"
    assert str(folder) in capsys.readouterr().out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status = model_status("medsam2")
    assert status.present and status.location == str(folder)
    got = load_model("medsam2", allow_download=False, device="cpu").segment(IMAGE, BOX)
    ref = load_model(tiny["sam2"], device="cpu").segment(IMAGE, BOX)
    assert np.array_equal(got.masks, ref.masks)
    assert main(["models", "pull", "medsam2"]) == 0 and "already present" in capsys.readouterr().out

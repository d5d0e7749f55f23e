"""Original SAM / SAM 2 / SAM 2.1 checkpoints -> transformers folders (``anyseg models convert``).

The original checkpoints are those of Meta's reference code and of models fine-tuned with it:
``facebookresearch/segment-anything`` (``sam_vit_b_01ec64.pth``: a plain state dict of
``segment_anything.modeling.Sam``; MedSAM's ``medsam_vit_b.pth``) and
``facebookresearch/sam2`` (``sam2.1_hiera_tiny.pt``: ``{"model": state_dict}`` of
``sam2.modeling.sam2_base.SAM2Base``; MedSAM2's ``MedSAM2_latest.pt``). They are read with
``torch.load(weights_only=True)`` only: a file that needs full unpickling (Python objects
beyond tensors) is refused with one line, never executed.

Keys are renamed by anyseg's own tables (:func:`rules`), written from the module names of the
reference code (``image_encoder.blocks.N.norm1`` in ``segment_anything/modeling/image_encoder.py``,
``image_encoder.trunk`` / ``sam_mask_decoder`` / ``memory_encoder.fuser`` in ``sam2/modeling``)
and the transformers 5 classes (``SamModel``, ``Sam2VideoModel``). The layouts agree tensor by
tensor (both keep the ViT's and Hiera's fused ``qkv``, the decoders' separate ``q/k/v_proj``)
except SAM 2's prompt encoder, whose four ``point_embeddings.N`` (1, C) rows transformers
stacks into one ``point_embed`` (4, C) table, and the prompt encoder's random-Fourier matrix,
which transformers keeps twice (``shared_image_embedding`` and the prompt encoder's copy).
Conversion fails with one line when a source key matches no rule, when an expected
transformers key is left without a source, or when any shape differs from the model built
from the config (on the ``meta`` device: no weights are allocated for the check).

Configs are built from the published hyper-parameters (no hub config is downloaded):

* SAM ViT-B / L / H: ``segment_anything/build_sam.py`` (embed 768 / 1024 / 1280, depth 12 / 24 /
  32, heads 12 / 16 / 16, global attention blocks, window 14, 1024 px, prompt dim 256), which
  are transformers' ``SamConfig`` defaults apart from the encoder size.
* SAM 2 / 2.1 Hiera tiny / small / base-plus / large: ``sam2/configs/sam2.1/*.yaml`` and
  ``Hiera``'s defaults in ``sam2/modeling/backbones/hieradet.py`` (embed 96 / 96 / 112 / 144, heads
  1 / 1 / 2 / 2, stages, global blocks, window spec, window-embedding background size); SAM 2.0
  (``sam2/configs/sam2``) lacks 2.1's occlusion embedding (``no_obj_embed_spatial``) and object
  pointer temporal projection (``obj_ptr_tpos_proj``). The rest are ``Sam2VideoConfig``'s defaults
  (the values of ``facebook/sam2.1-hiera-*``).
* MedSAM2: ``bowang-lab/MedSAM2``'s ``sam2/configs/sam2.1_hiera_t512.yaml``: SAM 2.1 Hiera-T at
  512 px (memory attention RoPE on a 32 x 32 grid). The input size cannot be read from the
  weights (Hiera's position embedding is interpolated), so it takes ``--config medsam2``.

Without ``--config`` the variant is inferred from the checkpoint (patch-embedding width and
number of blocks; SAM 2.1 vs 2.0 from ``no_obj_embed_spatial``), at the reference 1024 px.
``--config`` also takes a folder or ``config.json`` of a transformers config (e.g. a
non-standard fine-tune's). Functions take the checkpoint's ``layout``: the ``--family`` value,
``sam`` or ``sam2`` (the family records' names of the models they become).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from anyseg.errors import InputError, ModelError

__all__ = ["LAYOUTS", "CONFIG_NAMES", "SAM_VITS", "HIERAS", "SAM2_VARIANTS", "TARGETS", "rules", "load_original",
           "infer_config_name", "build_config", "map_state_dict", "expected_shapes", "check_against",
           "preprocessor_config", "convert_checkpoint", "IMAGENET_MEAN", "IMAGENET_STD"]

#: the checkpoint layouts (``--family``): segment-anything's ``Sam`` and sam2's ``SAM2Base``
LAYOUTS = ("sam", "sam2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # SAM's pixel_mean / 255 (build_sam.py); SAM 2's and MedSAM2's img_mean
IMAGENET_STD = (0.229, 0.224, 0.225)

#: SAM ViT variants, segment_anything/build_sam.py: (embed dim, depth, heads, global attention blocks)
SAM_VITS: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "sam-vit-base": (768, 12, 12, (2, 5, 8, 11)),
    "sam-vit-large": (1024, 24, 16, (5, 11, 17, 23)),
    "sam-vit-huge": (1280, 32, 16, (7, 15, 23, 31)),
    "medsam": (768, 12, 12, (2, 5, 8, 11)),  # MedSAM fine-tunes SAM ViT-B (bowang-lab/MedSAM)
}
#: Hiera trunks, sam2/configs/sam2.1/*.yaml over hieradet.Hiera's defaults:
#: (embed dim, heads, blocks per stage, global attention blocks, window spec, window-embedding background)
HIERAS: dict[str, tuple[int, int, tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, int]]] = {
    "tiny": (96, 1, (1, 2, 7, 2), (5, 7, 9), (8, 4, 14, 7), (7, 7)),
    "small": (96, 1, (1, 2, 11, 2), (7, 10, 13), (8, 4, 14, 7), (7, 7)),
    "base-plus": (112, 2, (2, 3, 16, 3), (12, 16, 20), (8, 4, 14, 7), (14, 14)),
    "large": (144, 2, (2, 6, 36, 4), (23, 33, 43), (8, 4, 16, 8), (7, 7)),
}
#: SAM 2 config names: (Hiera, input size, SAM 2.1?)
SAM2_VARIANTS: dict[str, tuple[str, int, bool]] = {
    **{f"sam2.1-hiera-{h}": (h, 1024, True) for h in HIERAS},
    **{f"sam2-hiera-{h}": (h, 1024, False) for h in HIERAS},  # SAM 2.0 (facebook/sam2-hiera-*)
    "medsam2": ("tiny", 512, True),  # bowang-lab/MedSAM2: sam2.1_hiera_t512.yaml
}
#: per layout: the names ``--config`` takes (registry names, and SAM 2.0's)
CONFIG_NAMES: dict[str, tuple[str, ...]] = {"sam": tuple(SAM_VITS), "sam2": tuple(SAM2_VARIANTS)}
#: the transformers model type / class / config class a layout converts to
TARGETS = {"sam": ("sam", "SamModel", "SamConfig"), "sam2": ("sam2_video", "Sam2VideoModel", "Sam2VideoConfig")}
#: layouts whose input size cannot be read from the weights (Hiera interpolates its position embedding;
#: SAM's ViT position embedding and relative positions have the input size in their shapes)
SIZE_NOT_IN_WEIGHTS = ("sam2",)
#: keys of the original state dicts that hold no weights of the transformers model
SKIPPED = {"sam": ("pixel_mean", "pixel_std"), "sam2": ()}

Rule = tuple[str, tuple[str, ...]]
_WB = r"\.(weight|bias)"
#: a target that starts with ``ROWS`` is one row of a stacked table (the rule's first group: the row)
ROWS = "rows:"


def _mlp3(src: str, dst: str) -> list[Rule]:
    """A 3-layer ``MLP`` (``layers.0/1/2`` in both reference repos) -> transformers' ``proj_in``, ``layers.0``, ``proj_out``."""
    return [(rf"{src}\.layers\.0{_WB}", (rf"{dst}.proj_in.\g<w>",)),
            (rf"{src}\.layers\.1{_WB}", (rf"{dst}.layers.0.\g<w>",)),
            (rf"{src}\.layers\.2{_WB}", (rf"{dst}.proj_out.\g<w>",))]


def _prompt_rules(src: str, rows: bool) -> list[Rule]:
    """``PromptEncoder`` (segment_anything/modeling/prompt_encoder.py; the same in sam2/modeling/sam)."""
    p = re.escape(src)
    point = (f"{ROWS}prompt_encoder.point_embed.weight",) if rows else (r"prompt_encoder.point_embed.\1.weight",)
    return [
        (rf"{p}\.pe_layer\.positional_encoding_gaussian_matrix",
         ("prompt_encoder.shared_embedding.positional_embedding", "shared_image_embedding.positional_embedding")),
        (rf"{p}\.point_embeddings\.(\d+)\.weight", point),
        (rf"{p}\.(not_a_point_embed|no_mask_embed)\.weight", (r"prompt_encoder.\1.weight",)),
        # mask_downscaling: Conv2d, LayerNorm2d, GELU, Conv2d, LayerNorm2d, GELU, Conv2d
        *[(rf"{p}\.mask_downscaling\.{i}{_WB}", (rf"prompt_encoder.mask_embed.{name}.\g<w>",))
          for i, name in ((0, "conv1"), (1, "layer_norm1"), (3, "conv2"), (4, "layer_norm2"), (6, "conv3"))],
    ]


def _decoder_rules(src: str, out_proj: str, mlp: tuple[str, str, str, str]) -> list[Rule]:
    """``MaskDecoder`` and its ``TwoWayTransformer``; ``mlp``: the blocks' MLP layer names (source, source, target, target)."""
    p, d = re.escape(src), "mask_decoder"
    attn = r"(layers\.\d+\.(?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token)|final_attn_token_to_image)"
    rules: list[Rule] = [
        (rf"{p}\.(iou_token|mask_tokens|obj_score_token)\.weight", (rf"{d}.\1.weight",)),
        (rf"{p}\.transformer\.{attn}\.([qkv])_proj{_WB}", (rf"{d}.transformer.\1.\2_proj.\g<w>",)),
        (rf"{p}\.transformer\.{attn}\.out_proj{_WB}", (rf"{d}.transformer.\1.{out_proj}.\g<w>",)),
        (rf"{p}\.transformer\.layers\.(\d+)\.norm([1-4]){_WB}", (rf"{d}.transformer.layers.\1.layer_norm\2.\g<w>",)),
        (rf"{p}\.transformer\.layers\.(\d+)\.mlp\.{mlp[0]}{_WB}", (rf"{d}.transformer.layers.\1.mlp.{mlp[2]}.\g<w>",)),
        (rf"{p}\.transformer\.layers\.(\d+)\.mlp\.{mlp[1]}{_WB}", (rf"{d}.transformer.layers.\1.mlp.{mlp[3]}.\g<w>",)),
        (rf"{p}\.transformer\.norm_final_attn{_WB}", (rf"{d}.transformer.layer_norm_final_attn.\g<w>",)),
        # output_upscaling: ConvTranspose2d, LayerNorm2d, GELU, ConvTranspose2d, GELU
        (rf"{p}\.output_upscaling\.0{_WB}", (rf"{d}.upscale_conv1.\g<w>",)),
        (rf"{p}\.output_upscaling\.1{_WB}", (rf"{d}.upscale_layer_norm.\g<w>",)),
        (rf"{p}\.output_upscaling\.3{_WB}", (rf"{d}.upscale_conv2.\g<w>",)),
        (rf"{p}\.(conv_s[01]){_WB}", (rf"{d}.\1.\g<w>",)),  # SAM 2's high-resolution skips
    ]
    for head in (r"output_hypernetworks_mlps\.(?P<n>\d+)", "iou_prediction_head", "pred_obj_score_head"):
        dst = f"{d}.output_hypernetworks_mlps.\\g<n>" if head.startswith("output") else f"{d}.{head}"
        rules += _mlp3(rf"{p}\.{head}", dst)
    return rules


def _sam_rules() -> list[Rule]:
    """``segment_anything.modeling.Sam`` -> ``SamModel``."""
    e, v = r"image_encoder", "vision_encoder"
    return [
        (rf"{e}\.pos_embed", (f"{v}.pos_embed",)),
        (rf"{e}\.patch_embed\.proj{_WB}", (rf"{v}.patch_embed.projection.\g<w>",)),
        (rf"{e}\.blocks\.(\d+)\.norm([12]){_WB}", (rf"{v}.layers.\1.layer_norm\2.\g<w>",)),
        (rf"{e}\.blocks\.(\d+)\.attn\.(qkv|proj){_WB}", (rf"{v}.layers.\1.attn.\2.\g<w>",)),
        (rf"{e}\.blocks\.(\d+)\.attn\.rel_pos_([hw])", (rf"{v}.layers.\1.attn.rel_pos_\2",)),
        (rf"{e}\.blocks\.(\d+)\.mlp\.(lin[12]){_WB}", (rf"{v}.layers.\1.mlp.\2.\g<w>",)),
        # neck: Conv2d 1x1, LayerNorm2d, Conv2d 3x3, LayerNorm2d
        (rf"{e}\.neck\.0\.weight", (f"{v}.neck.conv1.weight",)),
        (rf"{e}\.neck\.1{_WB}", (rf"{v}.neck.layer_norm1.\g<w>",)),
        (rf"{e}\.neck\.2\.weight", (f"{v}.neck.conv2.weight",)),
        (rf"{e}\.neck\.3{_WB}", (rf"{v}.neck.layer_norm2.\g<w>",)),
        *_prompt_rules("prompt_encoder", rows=False),
        *_decoder_rules("mask_decoder", "out_proj", ("lin1", "lin2", "lin1", "lin2")),
    ]


def _sam2_rules(downsampler_layers: int) -> list[Rule]:
    """``sam2.modeling.sam2_base.SAM2Base`` -> ``Sam2VideoModel``; ``downsampler_layers``: the mask
    downsampler's conv / norm / GELU triples (log2 of total stride / stride: 4), its final 1x1 conv next."""
    t, b = r"image_encoder\.trunk", "vision_encoder.backbone"
    m, f = r"memory_encoder", r"memory_encoder\.fuser\.layers\.(\d+)"
    n = downsampler_layers
    rules: list[Rule] = [
        (rf"{t}\.(pos_embed|pos_embed_window)", (rf"{b}.\1",)),
        (rf"{t}\.patch_embed\.proj{_WB}", (rf"{b}.patch_embed.projection.\g<w>",)),
        (rf"{t}\.blocks\.(\d+)\.norm([12]){_WB}", (rf"{b}.blocks.\1.layer_norm\2.\g<w>",)),
        (rf"{t}\.blocks\.(\d+)\.attn\.(qkv|proj){_WB}", (rf"{b}.blocks.\1.attn.\2.\g<w>",)),
        (rf"{t}\.blocks\.(\d+)\.mlp\.layers\.0{_WB}", (rf"{b}.blocks.\1.mlp.proj_in.\g<w>",)),
        (rf"{t}\.blocks\.(\d+)\.mlp\.layers\.1{_WB}", (rf"{b}.blocks.\1.mlp.proj_out.\g<w>",)),
        (rf"{t}\.blocks\.(\d+)\.proj{_WB}", (rf"{b}.blocks.\1.proj.\g<w>",)),  # a stage's first block widens
        (rf"image_encoder\.neck\.convs\.(\d+)\.conv{_WB}", (r"vision_encoder.neck.convs.\1.\g<w>",)),
        (rf"memory_attention\.layers\.(\d+)\.(self_attn|cross_attn_image)\.([qkv])_proj{_WB}",
         (r"memory_attention.layers.\1.\2.\3_proj.\g<w>",)),
        (rf"memory_attention\.layers\.(\d+)\.(self_attn|cross_attn_image)\.out_proj{_WB}",
         (r"memory_attention.layers.\1.\2.o_proj.\g<w>",)),
        (rf"memory_attention\.layers\.(\d+)\.(linear[12]){_WB}", (r"memory_attention.layers.\1.\2.\g<w>",)),
        (rf"memory_attention\.layers\.(\d+)\.norm([123]){_WB}", (r"memory_attention.layers.\1.layer_norm\2.\g<w>",)),
        (rf"memory_attention\.norm{_WB}", (r"memory_attention.layer_norm.\g<w>",)),
        *[(rf"{m}\.mask_downsampler\.encoder\.{3 * i + j}{_WB}",
           (rf"memory_encoder.mask_downsampler.layers.{i}.{part}.\g<w>",))
          for i in range(n) for j, part in ((0, "conv"), (1, "layer_norm"))],
        (rf"{m}\.mask_downsampler\.encoder\.{3 * n}{_WB}", (r"memory_encoder.mask_downsampler.final_conv.\g<w>",)),
        (rf"{m}\.pix_feat_proj{_WB}", (r"memory_encoder.feature_projection.\g<w>",)),
        (rf"{f}\.dwconv{_WB}", (r"memory_encoder.memory_fuser.layers.\1.depthwise_conv.\g<w>",)),
        (rf"{f}\.norm{_WB}", (r"memory_encoder.memory_fuser.layers.\1.layer_norm.\g<w>",)),
        (rf"{f}\.pwconv([12]){_WB}", (r"memory_encoder.memory_fuser.layers.\1.pointwise_conv\2.\g<w>",)),
        (rf"{f}\.gamma", (r"memory_encoder.memory_fuser.layers.\1.scale",)),
        (rf"{m}\.out_proj{_WB}", (r"memory_encoder.projection.\g<w>",)),
        ("maskmem_tpos_enc", ("memory_temporal_positional_encoding",)),
        ("no_mem_embed", ("no_memory_embedding",)),
        ("no_mem_pos_enc", ("no_memory_positional_encoding",)),
        ("no_obj_ptr", ("no_object_pointer",)),
        ("no_obj_embed_spatial", ("occlusion_spatial_embedding_parameter",)),  # SAM 2.1 only
        (rf"mask_downsample{_WB}", (r"mask_downsample.\g<w>",)),
        (rf"obj_ptr_tpos_proj{_WB}", (r"temporal_positional_encoding_projection_layer.\g<w>",)),  # SAM 2.1 only
        *_mlp3("obj_ptr_proj", "object_pointer_proj"),
        *_prompt_rules("sam_prompt_encoder", rows=True),
        *_decoder_rules("sam_mask_decoder", "o_proj", (r"layers\.0", r"layers\.1", "proj_in", "proj_out")),
    ]
    return rules


def rules(layout: str, config: Any = None) -> list[tuple[re.Pattern[str], tuple[str, ...]]]:
    """anyseg's key table for ``layout``: (compiled pattern fully matching an original key, the
    transformers name templates it becomes). ``config`` (a ``Sam2VideoConfig``) sets SAM 2's mask
    downsampler depth (4 conv layers for the reference total stride 16 / stride 2)."""
    _check_layout(layout)
    if layout == "sam":
        table = _sam_rules()
    else:
        stride = int(getattr(config, "mask_downsampler_stride", 2))
        total = int(getattr(config, "mask_downsampler_total_stride", 16))
        table = _sam2_rules(int(round(math.log(total) / math.log(stride))))
    return [(re.compile(pat.replace(_WB, r"\.(?P<w>weight|bias)")), dst) for pat, dst in table]


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise InputError(f"unknown checkpoint family {layout!r}; expected one of {', '.join(LAYOUTS)}")


def _offenders(items: list[str]) -> str:
    shown = ", ".join(items[:3])
    return f"{len(items)} ({shown}{', ...' if len(items) > 3 else ''})"


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, memory-mapped where the file's format allows (zip files)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # a legacy (non-zip) file


def load_original(path: str | os.PathLike) -> dict[str, Any]:
    """The state dict of an original checkpoint: a plain state dict (SAM) or ``{"model": ...}`` (SAM 2;
    ``{"state_dict": ...}`` is accepted too). Read with ``torch.load(weights_only=True)`` only.

    Raises:
        InputError: the file does not exist.
        ModelError: a file that needs full unpickling (one line naming the first Python object
            it refers to), an unreadable file, or a container without a dict of tensors.
    """
    import pickle

    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        obj = _torch_load(path)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))  # torch names the first global it refused
        if found is None:
            raise ModelError(f"{path} is not a readable PyTorch checkpoint (not a torch.save file)") from None
        what = f"a {found.group(1)} object"
        raise ModelError(f"{path} needs full unpickling (it holds {what}, not only tensors); anyseg reads checkpoints "
                         "only with torch.load(weights_only=True): re-save its state dict with "
                         "torch.save(model.state_dict(), PATH)") from None
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: one line
        line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"{path} is not a readable PyTorch checkpoint ({line})") from None
    state = obj
    for container in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(container), dict):
            state = obj[container]
            break
    if not isinstance(state, dict) or not state:
        raise ModelError(f"{path} holds no state dict (a dict of tensors, or {{'model': state_dict}} as SAM 2 saves it)")
    bad = [repr(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"{path}: {_offenders(bad)} entries of its state dict are not named tensors")
    return state


#: per layout: the patch embedding's key (its width) and the blocks' prefix (their number)
_PATCH = {"sam": ("image_encoder.patch_embed.proj.weight", "image_encoder.blocks"),
          "sam2": ("image_encoder.trunk.patch_embed.proj.weight", "image_encoder.trunk.blocks")}


def _blocks(state: dict[str, Any], prefix: str) -> int:
    pat = re.compile(rf"{re.escape(prefix)}\.(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pat.match(k))}
    return max(found) + 1 if found else 0


def infer_config_name(layout: str, state: dict[str, Any]) -> str:
    """The config name of an original checkpoint, from its shapes: the patch embedding's width and
    the number of blocks (SAM ViT-B / L / H; Hiera tiny / small / base-plus / large), SAM 2.1 vs 2.0
    from 2.1's ``no_obj_embed_spatial``. The input size is the reference 1024 px (it is not in the weights)."""
    _check_layout(layout)
    key, blocks = _PATCH[layout]
    if key not in state:
        other = "sam2" if layout == "sam" else "sam"
        hint = f"; it looks like a {other} checkpoint (--family {other})" if _PATCH[other][0] in state else ""
        raise ModelError(f"not an original {layout} checkpoint: it has no {key}{hint}")
    width, depth = int(state[key].shape[0]), _blocks(state, blocks)
    if layout == "sam":
        for name in ("sam-vit-base", "sam-vit-large", "sam-vit-huge"):
            if SAM_VITS[name][:2] == (width, depth):
                return name
        known = "ViT-B 768 x 12, ViT-L 1024 x 24, ViT-H 1280 x 32"
    else:
        v21 = "no_obj_embed_spatial" in state
        for hiera, (embed, _heads, stages, *_rest) in HIERAS.items():
            if (embed, sum(stages)) == (width, depth):
                return f"sam2.1-hiera-{hiera}" if v21 else f"sam2-hiera-{hiera}"
        known = ", ".join(f"{h} {v[0]} x {sum(v[2])}" for h, v in HIERAS.items())
    raise ModelError(f"no known {layout} variant has a {width}-wide image encoder of {depth} blocks (known: {known}); "
                     "pass --config with the folder or config.json of its transformers config")


def _sam_config(name: str) -> Any:
    from transformers import SamConfig

    width, depth, heads, global_blocks = SAM_VITS[name]
    cfg = SamConfig(vision_config=dict(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads,
                                       global_attn_indexes=list(global_blocks)),
                    prompt_encoder_config={}, mask_decoder_config={})
    cfg.architectures = ["SamModel"]
    return cfg


def _sam2_config(name: str) -> Any:
    from transformers import Sam2VideoConfig

    hiera, size, v21 = SAM2_VARIANTS[name]
    embed, heads, stages, global_blocks, windows, background = HIERAS[hiera]
    dims = [embed * 2 ** i for i in range(len(stages))]  # Hiera's dim_mul = head_mul = 2 at each stage
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=embed, num_attention_heads=heads,
                    image_size=[size, size], blocks_per_stage=list(stages), embed_dim_per_stage=dims,
                    num_attention_heads_per_stage=[heads * 2 ** i for i in range(len(stages))],
                    window_size_per_stage=list(windows), global_attention_blocks=list(global_blocks),
                    window_positional_embedding_background_size=list(background))
    vision = dict(backbone_config=backbone, backbone_channel_list=dims[::-1], fpn_hidden_size=256,
                  backbone_feature_sizes=[[size // s, size // s] for s in (4, 8, 16)])
    cfg = Sam2VideoConfig(vision_config=vision, prompt_encoder_config=dict(image_size=size), mask_decoder_config={},
                          image_size=size, memory_attention_rope_feat_sizes=[size // 16, size // 16],
                          enable_occlusion_spatial_embedding=v21, enable_temporal_pos_encoding_for_object_pointers=v21)
    cfg.architectures = ["Sam2VideoModel"]
    return cfg


def _config_from_path(layout: str, path: Path) -> tuple[Any, dict[str, Any]]:
    import transformers

    file = path / "config.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"--config {path}: cannot read {file} as JSON ({e})") from None
    model_type, _cls, config_cls = TARGETS[layout]
    if not isinstance(data, dict) or data.get("model_type") != model_type:
        got = data.get("model_type") if isinstance(data, dict) else None
        raise InputError(f"--config {path}: a {layout} checkpoint converts to a {model_type!r} config; {file} is {got!r}")
    preprocessor = file.parent / "preprocessor_config.json"
    try:
        extra = json.loads(preprocessor.read_text()) if preprocessor.is_file() else {}
    except (OSError, ValueError):
        extra = {}
    return getattr(transformers, config_cls).from_dict(data), extra if isinstance(extra, dict) else {}


def build_config(layout: str, config: str | os.PathLike | None = None, state: dict[str, Any] | None = None
                 ) -> tuple[Any, str, dict[str, Any]]:
    """``(transformers config, where it came from, preprocessor values)`` for a conversion.

    ``config``: a name of :data:`CONFIG_NAMES` (``sam-vit-base``, ``sam2.1-hiera-tiny``, ``medsam2``, ...),
    the path of a folder or ``config.json`` holding a transformers config of the layout's target
    type (``sam`` / ``sam2_video``; the folder's ``preprocessor_config.json`` mean/std are kept), or
    ``None``: inferred from ``state`` (:func:`infer_config_name`).
    """
    _check_layout(layout)
    if config is None:
        if state is None:
            raise InputError("build_config needs a config name or the checkpoint's state dict")
        name = infer_config_name(layout, state)
        return _named_config(layout, name), f"{name} (inferred from the checkpoint's shapes)", {}
    text = os.fspath(config)
    if text in CONFIG_NAMES[layout]:
        return _named_config(layout, text), text, {}
    path = Path(text).expanduser()
    if path.exists():
        cfg, extra = _config_from_path(layout, path)
        return cfg, str(path), extra
    other = next((f for f in LAYOUTS if text in CONFIG_NAMES[f]), None)
    if other is not None:
        raise InputError(f"--config {text} is a {other} config, not a {layout} one (--family {other})")
    raise InputError(f"unknown --config {text!r} for --family {layout}: expected one of "
                     f"{', '.join(CONFIG_NAMES[layout])}, or a folder / config.json of a transformers config")


def _named_config(layout: str, name: str) -> Any:
    return _sam_config(name) if layout == "sam" else _sam2_config(name)


def map_state_dict(layout: str, state: dict[str, Any], config: Any = None) -> dict[str, Any]:
    """The original ``state`` renamed (and SAM 2's point embeddings stacked) by :func:`rules`.

    A key that matches no rule, two keys that land on one name, or rows of a stacked table that
    are not 0..N-1 are one-line :class:`ModelError` s naming the first offenders and their count.
    """
    import torch

    table = rules(layout, config)
    out: dict[str, Any] = {}
    rows: dict[str, dict[int, Any]] = {}
    unmapped, clashes = [], []
    for key, tensor in state.items():
        if key in SKIPPED[layout]:
            continue
        match, targets = next(((m, t) for p, t in table if (m := p.fullmatch(key))), (None, ()))
        if match is None:
            unmapped.append(key)
            continue
        for i, template in enumerate(targets):
            if template.startswith(ROWS):
                rows.setdefault(template[len(ROWS):], {})[int(match.group(1))] = tensor
                continue
            name = match.expand(template)
            if name in out:
                clashes.append(key)
            out[name] = tensor if i == 0 else tensor.clone()  # a weight transformers keeps twice
    if unmapped:
        raise ModelError(f"{_offenders(unmapped)} keys of the checkpoint match no rule of anyseg's {layout} key table: "
                         f"not an original {layout} checkpoint, or a variant anyseg does not know")
    if clashes:
        raise ModelError(f"{_offenders(clashes)} keys of the checkpoint land on a name another key has taken")
    for name, parts in rows.items():
        if sorted(parts) != list(range(len(parts))):
            raise ModelError(f"the checkpoint's rows of {name} are {sorted(parts)}, not 0..{len(parts) - 1}")
        out[name] = torch.cat([parts[i] for i in range(len(parts))], dim=0)
    return out


def expected_shapes(layout: str, config: Any) -> dict[str, tuple[int, ...]]:
    """Every key of the transformers model ``config`` builds and its shape (built on the ``meta``
    device: nothing is allocated)."""
    import torch
    import transformers

    cls = getattr(transformers, TARGETS[layout][1])
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with torch.device("meta"):
            model = cls(config)
    except Exception as e:  # noqa: BLE001 - a config transformers rejects: one line
        line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"cannot build a {TARGETS[layout][1]} from the config ({line})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_against(tensors: dict[str, Any], expected: dict[str, tuple[int, ...]], label: str) -> None:
    """Fail with one line unless ``tensors`` has exactly ``expected``'s keys with its shapes."""
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ModelError(f"the checkpoint has weights the {label} model lacks: {_offenders(extra)} "
                         "(a bigger variant? pass the right --config)")
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ModelError(f"the checkpoint lacks weights the {label} model needs: {_offenders(missing)}")
    wrong = [f"{k} {tuple(tensors[k].shape)} vs {expected[k]}" for k in sorted(expected)
             if tuple(tensors[k].shape) != expected[k]]
    if wrong:
        raise ModelError(f"shapes differ from the {label} model: {_offenders(wrong)}")


def _normalization(layout: str, state: dict[str, Any], extra: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Mean / std: the ``--config`` folder's preprocessor, else a SAM checkpoint's own ``pixel_mean`` /
    ``pixel_std`` (0..255, as build_sam.py sets them), else ImageNet's (both reference repos' default)."""
    if isinstance(extra.get("image_mean"), list) and isinstance(extra.get("image_std"), list):
        return [float(v) for v in extra["image_mean"]], [float(v) for v in extra["image_std"]]
    if layout == "sam" and "pixel_mean" in state and "pixel_std" in state:
        mean, std = state["pixel_mean"].flatten(), state["pixel_std"].flatten()
        if mean.numel() == 3 and std.numel() == 3:
            return [round(float(v) / 255.0, 6) for v in mean], [round(float(v) / 255.0, 6) for v in std]
    return list(IMAGENET_MEAN), list(IMAGENET_STD)


def preprocessor_config(layout: str, size: int, mean: list[float], std: list[float]) -> dict[str, Any]:
    """A ``preprocessor_config.json`` like the hub folders' (SAM: longest side then pad; SAM 2: square)."""
    low = size // 4  # the mask decoder's low-resolution masks
    common = {"do_resize": True, "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "image_mean": mean, "image_std": std, "do_convert_rgb": True}
    if layout == "sam":
        return {"image_processor_type": "SamImageProcessor", **common, "size": {"longest_edge": size},
                "do_pad": True, "pad_size": {"height": size, "width": size}, "mask_size": {"longest_edge": low},
                "mask_pad_size": {"height": low, "width": low}}
    return {"image_processor_type": "Sam2ImageProcessorFast", **common, "size": {"height": size, "width": size},
            "mask_size": {"height": low, "width": low}}


#: what a conversion writes (``--force`` replaces these, and any other safetensors / index files)
WRITTEN = ("config.json", "model.safetensors", "preprocessor_config.json")


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; it must be a folder (new, empty, or with --force)")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise InputError(f"--out {out} exists and is not empty; pass --force to overwrite it")
        for stale in [*out.glob("*.safetensors"), out / "model.safetensors.index.json", *(out / n for n in WRITTEN)]:
            if stale.is_file():
                stale.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _write(out: Path, config: Any, tensors: dict[str, Any], preprocessor: dict[str, Any]) -> None:
    """The weights first (under a temporary name), the config last: an interrupted run leaves no loadable folder."""
    from safetensors.torch import save_file

    partial = out / "model.safetensors.partial"
    try:
        save_file({k: t.contiguous() for k, t in tensors.items()}, str(partial), metadata={"format": "pt"})
        os.replace(partial, out / "model.safetensors")
    finally:
        if partial.exists():
            partial.unlink()
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    config.save_pretrained(str(out))


def convert_checkpoint(checkpoint: str | os.PathLike, layout: str, out: str | os.PathLike,
                       config: str | os.PathLike | None = None, force: bool = False) -> dict[str, Any]:
    """Convert an original SAM / SAM 2 / SAM 2.1 checkpoint into the transformers folder ``out``.

    ``out`` gets ``config.json`` (``model_type`` ``sam`` or ``sam2_video``), ``model.safetensors``
    and ``preprocessor_config.json``, which ``anyseg segment --model DIR`` / ``anyseg track --model
    DIR`` load like a hub folder. Everything is checked before anything is written
    (:func:`map_state_dict`, :func:`check_against`); ``out`` must be new or empty unless ``force``.
    Returns what was done: ``out``, ``config`` (its name or path), ``inferred`` (from the shapes),
    ``note`` (a caveat, or ``None``), ``model_type``, ``tensors``, ``parameters`` and ``image_size``.
    """
    _check_layout(layout)
    out = Path(out).expanduser()
    if out.is_dir() and any(out.iterdir()) and not force:  # fail before reading a multi-GB file
        _prepare_out(out, force)
    state = load_original(checkpoint)
    cfg, label, extra = build_config(layout, config, state)
    tensors = map_state_dict(layout, state, cfg)
    check_against(tensors, expected_shapes(layout, cfg), label.split(" (")[0])
    size = int(cfg.vision_config.image_size if layout == "sam" else cfg.image_size)
    mean, std = _normalization(layout, state, extra)
    _prepare_out(out, force)
    _write(out, cfg, tensors, preprocessor_config(layout, size, mean, std))
    inferred = config is None
    note = (f"the input size ({size} px) is not in the weights: a model trained at another size needs --config "
            "(e.g. --config medsam2 for MedSAM2 at 512 px)") if inferred and layout in SIZE_NOT_IN_WEIGHTS else None
    return {"out": str(out), "config": label, "inferred": inferred, "note": note, "model_type": TARGETS[layout][0],
            "tensors": len(tensors),
            "parameters": int(sum(t.numel() for t in tensors.values())), "image_size": size}

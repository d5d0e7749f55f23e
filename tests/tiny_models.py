"""Tiny random-weight configs of the real SAM-family architectures, saved like hub checkpoints.

Each builder returns a folder with ``config.json`` + ``model.safetensors`` (+ a
``preprocessor_config.json``) that anyseg then loads through the users' path (``--weights``,
``ANYSEG_MODELS`` or the Hugging Face cache layout). The input frame is small (``S = 256``
or ``252`` for SAM 3) so that tests run in seconds; the preprocessing geometry is the same
function of ``S`` as for the real 1024 / 1008 models.
"""

from __future__ import annotations

import json
from pathlib import Path

FRAME = 256


def _sam_vision(hidden: int = 32, image_size: int = FRAME) -> dict:
    return dict(
        hidden_size=hidden, output_channels=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=16, window_size=4, global_attn_indexes=[1], mlp_dim=64,
        num_pos_feats=16,
    )


def _sam_common(image_size: int = FRAME) -> dict:
    grid = image_size // 16
    return dict(
        prompt_encoder_config=dict(hidden_size=32, image_size=image_size, patch_size=16, mask_input_channels=4,
                                   num_point_embeddings=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                 iou_head_hidden_dim=32, num_multimask_outputs=3),
        _grid=grid,
    )


def _hiera_vision(image_size: int) -> dict:
    s4 = image_size // 4
    return dict(
        backbone_config=dict(
            model_type="sam2_hiera_det_model", hidden_size=16, num_attention_heads=1, image_size=[image_size, image_size],
            blocks_per_stage=[1, 2, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
            num_attention_heads_per_stage=[1, 1, 2, 2], window_size_per_stage=[4, 4, 4, 4],
            global_attention_blocks=[4], window_positional_embedding_background_size=[4, 4],
        ),
        backbone_channel_list=[128, 64, 32, 16],
        backbone_feature_sizes=[[s4, s4], [s4 // 2, s4 // 2], [s4 // 4, s4 // 4]],
        fpn_hidden_size=32,
    )


def _save(model, folder: Path, mean, std, size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": list(mean), "image_std": list(std),
                                                                   "size": {"longest_edge": size}}))
    return folder


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def build_sam(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import SamConfig, SamModel

    torch.manual_seed(seed)
    common = _sam_common()
    common.pop("_grid")
    common["prompt_encoder_config"]["image_embedding_size"] = FRAME // 16
    cfg = SamConfig(vision_config=_sam_vision(), **common)
    return _save(SamModel(cfg).eval(), folder, *IMAGENET, FRAME)


def build_sam_hq(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import SamHQConfig, SamHQModel

    torch.manual_seed(seed)
    common = _sam_common()
    common.pop("_grid")
    common["prompt_encoder_config"]["image_embedding_size"] = FRAME // 16
    common["mask_decoder_config"]["vit_dim"] = 32
    cfg = SamHQConfig(vision_config=_sam_vision(), **common)
    return _save(SamHQModel(cfg).eval(), folder, *IMAGENET, FRAME)


def _sam2_like(config_cls, model_cls, folder: Path, seed: int, image_size: int, mean, std, **extra) -> Path:
    import torch

    torch.manual_seed(seed)
    cfg = config_cls(
        vision_config=_hiera_vision(image_size),
        prompt_encoder_config=dict(hidden_size=32, image_size=image_size, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                 iou_head_hidden_dim=32),
        **extra,
    )
    return _save(model_cls(cfg).eval(), folder, mean, std, image_size)


def build_sam2(folder: Path, seed: int = 0) -> Path:
    from transformers import Sam2Config, Sam2Model

    return _sam2_like(Sam2Config, Sam2Model, folder, seed, FRAME, *IMAGENET)


BUILDERS = {"sam": build_sam, "sam_hq": build_sam_hq, "sam2": build_sam2}


SAM3_FRAME = 252  # 18 x 18 patches of 14 pixels (the real model: 1008 = 72 x 14)


def sam3_vision(frame: int, fpn_hidden: int, **extra) -> dict:
    """A tiny SAM 3 ViT vision config (patch 14) for a ``frame``-pixel input, as a dict."""
    g = frame // 14
    return dict(
        model_type="sam3_vision_model",
        backbone_config=dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, image_size=frame, patch_size=14, window_size=6,
                             global_attn_indexes=[1], pretrain_image_size=frame),
        fpn_hidden_size=fpn_hidden,
        backbone_feature_sizes=[[4 * g, 4 * g], [2 * g, 2 * g], [g, g]],
        **extra,
    )


def build_sam3_tracker(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import Sam3TrackerConfig, Sam3TrackerModel

    torch.manual_seed(seed)
    vision = sam3_vision(SAM3_FRAME, 32)
    cfg = Sam3TrackerConfig(
        vision_config=vision,
        prompt_encoder_config=dict(hidden_size=32, image_size=SAM3_FRAME, patch_size=14, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                 iou_head_hidden_dim=32),
    )
    return _save(Sam3TrackerModel(cfg).eval(), folder, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), SAM3_FRAME)


BUILDERS["sam3_tracker"] = build_sam3_tracker


DINO_IMAGE = 112  # the tiny DINOv2's position-embedding grid: 8 x 8 patches of 14 (interpolated to any size)


def _save_dino(model, folder: Path, size: int, mean=IMAGENET[0], std=IMAGENET[1]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": list(mean), "image_std": list(std), "size": {"shortest_edge": size}, "resample": 3}))
    return folder


def build_dinov2(folder: Path, seed: int = 0, mean=IMAGENET[0], std=IMAGENET[1]) -> Path:
    """A tiny random DINOv2 (``Dinov2Model``: patch 14, hidden 32, 2 layers), saved like facebook/dinov2-small."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=14,
                       image_size=DINO_IMAGE)
    return _save_dino(Dinov2Model(cfg).eval(), folder, DINO_IMAGE, mean, std)


def build_dinov3(folder: Path, seed: int = 0, registers: int = 4) -> Path:
    """A tiny random DINOv3 ViT (``DINOv3ViTModel``: patch 16, hidden 32, 2 layers, register tokens)."""
    import torch
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(seed)
    cfg = DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          patch_size=16, image_size=128, num_register_tokens=registers)
    return _save_dino(DINOv3ViTModel(cfg).eval(), folder, 128)

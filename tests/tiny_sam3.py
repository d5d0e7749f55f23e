"""A tiny random-weight SAM 3 (detector: vision + CLIP text + DETR + mask head), saved like the hub checkpoint.

:func:`build_sam3` saves a ``Sam3Model`` (``model_type: sam3``); :func:`build_sam3_video`
saves a ``Sam3VideoModel`` (``model_type: sam3_video``: detector + tracker under
``detector_model.`` / ``tracker_model.``), the layout of ``facebook/sam3`` on the hub. Both
folders also hold the tiny CLIP tokenizer and a ``preprocessor_config.json`` (mean/std 0.5,
size 252). Every sub-model is the real architecture at width 32: the ViT backbone of
``tiny_models.build_sam3_tracker`` (252 = 18 x 14 pixels, windows of 6, one global layer),
a 2-layer CLIP text encoder with SAM 3's 32 positions, a 1-layer DETR encoder, a 2-layer
DETR decoder with 16 queries and a mask decoder with 3 upsampling stages (low-res masks
72 x 72 = 4 x 18). Building takes well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

from tiny_tokenizers import clip_tokenizer, save

FRAME = 252  # 18 x 18 patches of 14 pixels (the real model: 1008 = 72 x 14)
NUM_QUERIES = 16
TEXT_TOKENS = 32  # SAM 3's CLIP text encoder: max_position_embeddings = 32
HIDDEN = 32


def _vision() -> dict:
    g = FRAME // 14
    return dict(
        model_type="sam3_vision_model",
        backbone_config=dict(model_type="sam3_vit_model", hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, image_size=FRAME, patch_size=14, window_size=6,
                             global_attn_indexes=[1], pretrain_image_size=FRAME),
        fpn_hidden_size=HIDDEN,
        backbone_feature_sizes=[[4 * g, 4 * g], [2 * g, 2 * g], [g, g]],
    )


def sam3_config_dict(tokenizer) -> dict:
    """Keyword arguments of a tiny ``Sam3Config`` whose text encoder matches ``tokenizer``."""
    small = dict(hidden_size=HIDDEN, num_attention_heads=2, intermediate_size=64)
    return dict(
        vision_config=_vision(),
        text_config=dict(model_type="clip_text_model", vocab_size=len(tokenizer), hidden_size=HIDDEN,
                         intermediate_size=64, projection_dim=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=TEXT_TOKENS, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        geometry_encoder_config=dict(num_layers=1, **small),
        detr_encoder_config=dict(num_layers=1, **small),
        detr_decoder_config=dict(num_layers=2, num_queries=NUM_QUERIES, **small),
        mask_decoder_config=dict(hidden_size=HIDDEN, num_attention_heads=2, num_upsampling_stages=3),
    )


def _finish(model, tokenizer, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    save(tokenizer, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Sam3ImageProcessor", "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "rescale_factor": 1 / 255, "size": {"height": FRAME, "width": FRAME},
    }))
    return folder


def build_sam3(folder: Path, seed: int = 0) -> Path:
    """A tiny ``Sam3Model`` checkpoint (``model_type: sam3``) in ``folder``."""
    import torch
    from transformers import Sam3Config, Sam3Model

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(TEXT_TOKENS)
    model = Sam3Model(Sam3Config(**sam3_config_dict(tokenizer))).eval()
    return _finish(model, tokenizer, folder)


def build_sam3_video(folder: Path, seed: int = 0) -> Path:
    """A tiny ``Sam3VideoModel`` checkpoint (``model_type: sam3_video``, the hub layout) in ``folder``."""
    import torch
    from transformers import Sam3VideoConfig, Sam3VideoModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(TEXT_TOKENS)
    detector = dict(model_type="sam3", **sam3_config_dict(tokenizer))
    tracker = dict(
        model_type="sam3_tracker_video", vision_config=_vision(),
        prompt_encoder_config=dict(hidden_size=HIDDEN, image_size=FRAME, patch_size=14, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=HIDDEN, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                 iou_head_hidden_dim=HIDDEN),
    )
    model = Sam3VideoModel(Sam3VideoConfig(detector_config=detector, tracker_config=tracker)).eval()
    return _finish(model, tokenizer, folder)

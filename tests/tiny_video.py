"""Tiny random-weight video trackers (SAM 2 video, SAM 3 tracker video), saved like hub checkpoints.

:func:`build_sam2_video` saves a ``Sam2VideoModel`` (``model_type: sam2_video``, the layout of
``facebook/sam2.1-hiera-*`` on the hub); :func:`build_sam3_tracker_video` a
``Sam3TrackerVideoModel`` (``sam3_tracker_video``); :func:`build_sam3_video` a ``Sam3VideoModel``
(``sam3_video``: detector + tracker under ``detector_model.`` / ``tracker_model.``, the layout
of ``facebook/sam3``). Every one is the real architecture (Hiera or ViT backbone, FPN neck,
prompt encoder, mask decoder, memory attention, memory encoder, object pointers) at width
128 with the real memory width 64 (transformers fixes it at 64, and needs the width above it:
object pointers are split in two, as the real models split 256 in four), and a small input
frame: ``S = 128`` for SAM 2 (an 8 x 8 top-level grid) and ``S = 84`` for SAM 3 (6 x 6
patches of 14 pixels). The preprocessing geometry is the same function of ``S`` as for the real 1024 / 1008 models.

Random weights are drawn with ``initializer_range = 0.1`` (transformers' default 0.02 makes the
outputs nearly independent of the inputs) and the object-score head's last bias is set to +10,
so that masks are never blanked by a random "object absent" score: masks then depend on the
frames, the prompts and the memory, which is what the tests compare.
EdgeTAM is not built: its RepViT backbone needs timm (and torchvision).
"""

from __future__ import annotations

import json
from pathlib import Path

from tiny_models import _hiera_vision, sam3_vision

SAM2_FRAME = 128
SAM2_HIDDEN = 128
SAM3_FRAME = 84
SAM3_HIDDEN = 128
MEM_DIM = 64  # transformers fixes the memory attention's key/value width at 64; the hidden width must exceed it
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
INIT_RANGE = 0.1
OBJECT_SCORE_BIAS = 10.0


def _objects_always_present(model) -> None:
    """Make the (random) object-score head say "present" so that masks are not blanked."""
    import torch

    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(OBJECT_SCORE_BIAS)


def _memory(hidden: int, grid: int) -> dict:
    """The video-only parts (memory attention, memory encoder, mask downsampler, fuser), small."""
    return dict(
        num_maskmem=7, memory_attention_hidden_size=hidden, memory_attention_num_layers=1,
        memory_attention_num_attention_heads=1, memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[grid, grid], memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=MEM_DIM, mask_downsampler_embed_dim=hidden, memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=64, memory_fuser_num_layers=1,
    )


def _heads(hidden: int, image_size: int, patch: int) -> dict:
    return dict(
        prompt_encoder_config=dict(hidden_size=hidden, image_size=image_size, patch_size=patch, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=hidden, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                 iou_head_hidden_dim=32),
    )


def _save_preprocessor(folder: Path, mean, std, size: int) -> Path:
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": list(mean), "image_std": list(std), "size": {"height": size, "width": size},
    }))
    return folder


def sam2_video_config():
    from transformers import Sam2VideoConfig

    s = SAM2_FRAME
    vision = {**_hiera_vision(s), "fpn_hidden_size": SAM2_HIDDEN}
    return Sam2VideoConfig(vision_config=vision, image_size=s, initializer_range=INIT_RANGE,
                           **_heads(SAM2_HIDDEN, s, 16), **_memory(SAM2_HIDDEN, s // 16))


def build_sam2_video(folder: Path, seed: int = 0) -> Path:
    """A tiny ``Sam2VideoModel`` checkpoint (``model_type: sam2_video``) in ``folder``."""
    import torch
    from transformers import Sam2VideoModel

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = Sam2VideoModel(sam2_video_config()).eval()
    _objects_always_present(model)
    model.save_pretrained(str(folder), safe_serialization=True)
    return _save_preprocessor(folder, *IMAGENET, SAM2_FRAME)


def sam3_tracker_video_dict() -> dict:
    """Keyword arguments of a tiny ``Sam3TrackerVideoConfig``."""
    g = SAM3_FRAME // 14
    vision = sam3_vision(SAM3_FRAME, SAM3_HIDDEN, image_size=SAM3_FRAME)
    return dict(vision_config=vision, image_size=SAM3_FRAME, initializer_range=INIT_RANGE,
                **_heads(SAM3_HIDDEN, SAM3_FRAME, 14), **_memory(SAM3_HIDDEN, g))


def build_sam3_tracker_video(folder: Path, seed: int = 0) -> Path:
    """A tiny ``Sam3TrackerVideoModel`` checkpoint (``model_type: sam3_tracker_video``) in ``folder``."""
    import torch
    from transformers import Sam3TrackerVideoConfig, Sam3TrackerVideoModel

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = Sam3TrackerVideoModel(Sam3TrackerVideoConfig(**sam3_tracker_video_dict())).eval()
    _objects_always_present(model)
    model.save_pretrained(str(folder), safe_serialization=True)
    return _save_preprocessor(folder, *HALF, SAM3_FRAME)


def build_sam3_video(folder: Path, seed: int = 0) -> Path:
    """A tiny ``Sam3VideoModel`` checkpoint (``model_type: sam3_video``, the layout of ``facebook/sam3``).

    The detector is ``tiny_sam3``'s (CLIP text encoder, DETR, mask head) on the tracker's ViT
    backbone and width; the tracker reads the detector's backbone and its own neck
    (``tracker_neck.``), as in the hub checkpoint.
    """
    import torch
    from tiny_sam3 import TEXT_TOKENS, sam3_config_dict
    from tiny_tokenizers import clip_tokenizer
    from transformers import Sam3VideoConfig, Sam3VideoModel

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tracker = sam3_tracker_video_dict()
    detector = dict(model_type="sam3", **sam3_config_dict(clip_tokenizer(TEXT_TOKENS)))
    detector["vision_config"] = tracker["vision_config"]
    for key in ("geometry_encoder_config", "detr_encoder_config", "detr_decoder_config", "mask_decoder_config"):
        detector[key]["hidden_size"] = SAM3_HIDDEN
    detector["text_config"]["projection_dim"] = SAM3_HIDDEN
    model = Sam3VideoModel(Sam3VideoConfig(detector_config=detector,
                                           tracker_config=dict(model_type="sam3_tracker_video", **tracker))).eval()
    _objects_always_present(model.tracker_model)
    model.save_pretrained(str(folder), safe_serialization=True)
    _hub_layout(folder / "model.safetensors")
    return _save_preprocessor(folder, *HALF, SAM3_FRAME)


def _hub_layout(path: Path) -> None:
    """Write the tracker's keys as the hub's ``facebook/sam3`` has them (``tracker_model.<name>``).

    transformers 5 saves a ``Sam3VideoModel``'s tracker as ``tracker_model.tracker_model.<name>``
    (its load-time renaming for the tracker, reversed on save, adds the prefix a second time);
    the hub checkpoint, converted from Meta's, has the prefix once.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
        tensors = {k.replace("tracker_model.tracker_model.", "tracker_model.", 1): f.get_tensor(k)
                   for k in f.keys()}  # noqa: SIM118
    save_file(tensors, str(path), metadata=metadata)

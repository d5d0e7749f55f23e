"""Tiny random-weight SegGPT (the real architecture at width 32), saved like the hub checkpoint.

:func:`build_seggpt` saves a ``SegGptForImageSegmentation`` (``model_type: seggpt``) whose
input is a pair of ``SIZE x SIZE`` images stacked vertically (the real model: 448 -> 896 x 448),
with 16-pixel patches, 4 layers (the prompt/target halves merged after layer 1, as the real
model merges after layer 2 of 24) and a ``preprocessor_config.json`` like ``BAAI/seggpt-vit-large``'s.
Building takes well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

SIZE = 64  # each of the two stacked images (the real model: 448)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def build_seggpt(folder: Path, seed: int = 0, gray: bool = True) -> Path:
    """A tiny ``SegGptForImageSegmentation`` checkpoint in ``folder``.

    ``gray``: shift the painting head's bias so that the random model paints around mid-gray,
    half-way between the two palette colours: its masks then have foreground and background
    (unshifted, a random model paints the ImageNet mean colour, nearer black: empty masks).
    """
    import torch
    from transformers import SegGptConfig, SegGptForImageSegmentation

    torch.manual_seed(seed)
    cfg = SegGptConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_dim=64,
                       image_size=[2 * SIZE, SIZE], patch_size=16, pretrain_image_size=SIZE, decoder_hidden_size=16,
                       merge_index=1, intermediate_hidden_state_indices=[2, 3], drop_path_rate=0.0)
    model = SegGptForImageSegmentation(cfg).eval()
    if gray:
        mean, std = (torch.tensor(v) for v in IMAGENET)
        with torch.no_grad():
            model.decoder.decoder_pred.head.bias += (128 / 255 - mean) / std
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "SegGptImageProcessor", "do_resize": True, "size": {"height": SIZE, "width": SIZE},
        "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(IMAGENET[0]), "image_std": list(IMAGENET[1]), "do_convert_rgb": True,
    }))
    return folder

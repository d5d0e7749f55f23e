"""A tiny random Stable Diffusion folder, laid out like the hub's diffusers checkpoints.

:func:`tiny_sd_folder` saves ``model_index.json`` (``StableDiffusionPipeline``) and the
subfolders ``unet/`` (``UNet2DConditionModel``: two cross-attention down blocks, so
self-attention runs at two resolutions, 16 and 8 latent cells, plus the mid block),
``vae/`` (``AutoencoderKL``, 4-pixel latent cells), ``text_encoder/`` (``CLIPTextModel``),
``tokenizer/`` (the tiny CLIP tokenizer of :mod:`tiny_tokenizers`) and ``scheduler/``
(``PNDMScheduler``, SD's scaled-linear betas). The UNet's ``sample_size`` is 16, so the
default input is 64 x 64 pixels: the same geometry as SD 1.x's 64 latent cells of 8 pixels,
scaled down. ``sharpen`` scales the self-attention query and key weights so that a random
UNet attends to a few cells rather than almost uniformly (a trained UNet's attention is
peaked; a random one's symmetric KL divergences are ~0.004, far below DiffSeg's 1.1).
"""

from __future__ import annotations

import json
from pathlib import Path

#: self-attention layers of the tiny UNet: down 1 + 1, mid 1, up 2 + 2
SELF_ATTENTION_LAYERS = 7
#: pixels per latent cell of the tiny VAE (three encoder blocks)
VAE_FACTOR = 4
#: latent side of the tiny UNet's default input
SAMPLE_SIZE = 16


def _unet(cross_dim: int, sharpen: float):
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=SAMPLE_SIZE, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_dim,
        attention_head_dim=2, norm_num_groups=8,
    )
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn1"):
                module.to_q.weight.mul_(sharpen)
                module.to_k.weight.mul_(sharpen)
    return unet


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), latent_channels=4,
        norm_num_groups=8, sample_size=SAMPLE_SIZE * VAE_FACTOR, layers_per_block=1,
    )


def _text_encoder(tokenizer, hidden: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length, projection_dim=hidden,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def tiny_sd_folder(folder: Path, seed: int = 0, sharpen: float = 5.0) -> Path:
    """Save a tiny random Stable Diffusion pipeline folder at ``folder`` and return it."""
    import torch
    from diffusers import PNDMScheduler

    from tiny_tokenizers import clip_tokenizer

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = clip_tokenizer(max_length=16)
    tokenizer.pad_token = "<|endoftext|>"
    hidden = 16
    _unet(hidden, sharpen).save_pretrained(str(folder / "unet"))
    _vae().save_pretrained(str(folder / "vae"))
    _text_encoder(tokenizer, hidden).save_pretrained(str(folder / "text_encoder"))
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                  num_train_timesteps=1000).save_pretrained(str(folder / "scheduler"))
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder

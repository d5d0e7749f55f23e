"""Tiny random Stable Diffusion inpainting folders, laid out like the hub's diffusers checkpoints.

:func:`tiny_inpaint_folder` saves ``model_index.json`` (``StableDiffusionInpaintPipeline``) and
``unet/`` (``UNet2DConditionModel`` with 9 input channels: the noisy latent, the mask and the
masked image's latent, as SD inpainting's), ``vae/`` and ``text_encoder/`` (the tiny VAE and
CLIP text encoder of :mod:`tiny_diffusion`: 4-pixel latent cells), ``tokenizer/`` (the tiny CLIP
tokenizer of :mod:`tiny_tokenizers`) and ``scheduler/`` (``DDIMScheduler``, as SD 1.5
inpainting ships). The UNet's ``sample_size`` is 8, so the engine's working size is 32 pixels.

:func:`tiny_sdxl_inpaint_folder` saves the SDXL layout (``StableDiffusionXLInpaintPipeline``):
two text encoders (``CLIPTextModel`` + ``CLIPTextModelWithProjection``) and tokenizers, a UNet
whose cross-attention width is the two encoders' hidden sizes together and whose added
conditioning is ``text_time`` (the pooled projection plus six size / crop ids), and an
``EulerDiscreteScheduler`` (SDXL's).
"""

from __future__ import annotations

import json
from pathlib import Path

#: the tiny UNet's latent side and the VAE's cell: the working size is their product
SAMPLE_SIZE = 8
WORKING_SIZE = 32
_HIDDEN = 16


def _unet(cross_dim: int, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=SAMPLE_SIZE, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_dim, attention_head_dim=2, norm_num_groups=8, **extra,
    )


def _tokenizer():
    from tiny_tokenizers import clip_tokenizer

    tokenizer = clip_tokenizer(max_length=16)
    tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def _index(class_name: str, components: dict, **extra) -> dict:
    return {"_class_name": class_name, "_diffusers_version": "0.42.1", **components, **extra}


def tiny_inpaint_folder(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random SD inpainting pipeline folder at ``folder`` and return it."""
    import torch
    from diffusers import DDIMScheduler

    from tiny_diffusion import _text_encoder, _vae

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    _unet(_HIDDEN).save_pretrained(str(folder / "unet"))
    _vae().save_pretrained(str(folder / "vae"))
    _text_encoder(tokenizer, _HIDDEN).save_pretrained(str(folder / "text_encoder"))
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1).save_pretrained(str(folder / "scheduler"))
    components = {"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                  "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
                  "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": ["stable_diffusion",
                  "StableDiffusionSafetyChecker"], "feature_extractor": ["transformers", "CLIPImageProcessor"]}
    # the hub's index names a safety checker and a feature extractor anyseg neither fetches nor loads
    index = _index("StableDiffusionInpaintPipeline", components, requires_safety_checker=True)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def tiny_sdxl_inpaint_folder(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random SDXL inpainting pipeline folder at ``folder`` and return it."""
    import torch
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from tiny_diffusion import _text_encoder, _vae

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    hidden2, projection, time_dim = 24, 12, 4
    _unet(_HIDDEN + hidden2, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
          projection_class_embeddings_input_dim=6 * time_dim + projection).save_pretrained(str(folder / "unet"))
    _vae().save_pretrained(str(folder / "vae"))
    _text_encoder(tokenizer, _HIDDEN).save_pretrained(str(folder / "text_encoder"))
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden2, intermediate_size=2 * hidden2, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length, projection_dim=projection,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    CLIPTextModelWithProjection(config).save_pretrained(str(folder / "text_encoder_2"))
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    tokenizer.save_pretrained(str(folder / "tokenizer_2"))
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                           timestep_spacing="leading").save_pretrained(str(folder / "scheduler"))
    components = {"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                  "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
                  "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                  "tokenizer_2": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    index = _index("StableDiffusionXLInpaintPipeline", components, requires_aesthetics_score=False,
                   force_zeros_for_empty_prompt=True)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder

"""Tiny random DINO-family checkpoints for the discovery tests, saved like their hub checkpoints.

* :func:`build_dino_vit`: DINO v1 (``facebook/dino-vits16`` / ``dino-vits8``): transformers'
  ``ViTModel`` without pooler (the hub checkpoints have none), ``model_type`` ``vit``, patch 8
  by default, position embeddings for a small square image (anyseg interpolates them).
* :func:`build_dinov2_registers`: DINOv2 with registers (``facebook/dinov2-with-registers-small``):
  ``Dinov2WithRegistersModel``, patch 14, 4 register tokens.
* :func:`build_dinov2`, :func:`build_dinov3`: re-exported from ``tiny_models``.

Each returns the folder (``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``)
that anyseg loads by path.
"""

from __future__ import annotations

import json
from pathlib import Path

from tiny_models import build_dinov2, build_dinov3

__all__ = ["build_dino_vit", "build_dinov2_registers", "build_dinov2", "build_dinov3", "IMAGENET"]

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _save(model, folder: Path, size: int) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": list(IMAGENET[0]), "image_std": list(IMAGENET[1]), "size": {"height": size, "width": size},
        "resample": 2}))
    return folder


def build_dino_vit(folder: Path, seed: int = 0, patch_size: int = 8, image_size: int = 64, hidden: int = 32,
                   heads: int = 2) -> Path:
    """A tiny random DINO v1 ViT (``ViTModel``, no pooler: hidden 32, 2 layers, 2 heads)."""
    import torch
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    cfg = ViTConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads, intermediate_size=2 * hidden,
                    patch_size=patch_size, image_size=image_size, qkv_bias=True)
    return _save(ViTModel(cfg, add_pooling_layer=False).eval(), folder, image_size)


def build_dinov2_registers(folder: Path, seed: int = 0, registers: int = 4) -> Path:
    """A tiny random DINOv2 with registers (``Dinov2WithRegistersModel``: patch 14, hidden 32, 2 layers)."""
    import torch
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(seed)
    cfg = Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                    patch_size=14, image_size=112, num_register_tokens=registers)
    return _save(Dinov2WithRegistersModel(cfg).eval(), folder, 112)

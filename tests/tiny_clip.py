"""A tiny random-weight CLIP of the real architecture, saved like a hub checkpoint.

``build_clip(folder)`` writes ``config.json`` + ``model.safetensors`` (transformers'
``CLIPModel``), the tiny CLIP tokenizer of :mod:`tiny_tokenizers` (77 tokens, as CLIP) and a
``preprocessor_config.json`` with a recognisable mean/std, so that anyseg loads it through the
users' path (``load_clip(name, weights=folder)`` or ``$ANYSEG_MODELS/<name>``). The vision
tower takes 64 x 64 images in 8 x 8 patches (an 8 x 8 grid); building takes well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

from tiny_tokenizers import clip_tokenizer, save

IMAGE_SIZE = 64
PATCH_SIZE = 8
#: normalisation written to preprocessor_config.json (differs from CLIP's, so tests can tell)
MEAN = (0.5, 0.45, 0.4)
STD = (0.25, 0.26, 0.27)


def build_clip(folder: Path, seed: int = 0, preprocessor: bool = True) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    tok = clip_tokenizer(max_length=77)
    torch.manual_seed(seed)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    save(tok, folder)
    if preprocessor:
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "image_mean": list(MEAN), "image_std": list(STD), "size": {"shortest_edge": IMAGE_SIZE},
            "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}}))
    return folder

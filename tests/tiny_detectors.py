"""Tiny random-weight Grounding DINO and OWLv2 models of the real architectures, saved like hub checkpoints.

Each builder writes ``config.json`` + ``model.safetensors``, the model's tokenizer (built
locally by :mod:`tiny_tokenizers`: BERT WordPiece for Grounding DINO, CLIP BPE for OWLv2)
and a ``preprocessor_config.json`` with a small input size, so that anyseg loads them
through the users' path (``--weights`` or ``$ANYSEG_MODELS/<name>``) in a second or two and a
forward pass on CPU takes well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

from tiny_tokenizers import bert_tokenizer, clip_tokenizer, save

#: Grounding DINO: the resize's shortest / longest edge (real: 800 / 1333)
DINO_SHORTEST, DINO_LONGEST = 96, 160
#: Grounding DINO: tokens the text encoder takes (real: 256); small so truncation is easy to test
DINO_MAX_TEXT_LEN = 24
#: OWLv2: the square input side (real: 960 for B/16, 1008 for L/14) and patch size
OWL_FRAME, OWL_PATCH = 64, 16
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def _write_preprocessor(folder: Path, mean, std, size: dict) -> None:
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": list(mean), "image_std": list(std), "size": size}))


def build_grounding_dino(folder: Path, seed: int = 0) -> Path:
    """Tiny ``GroundingDinoForObjectDetection`` (Swin backbone, BERT text encoder) + BERT tokenizer."""
    import torch
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

    torch.manual_seed(seed)
    tokenizer = bert_tokenizer(max_length=64)  # the config's max_text_len is the tighter limit
    backbone = dict(model_type="swin", image_size=DINO_SHORTEST, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                    num_heads=[1, 1, 1, 2], window_size=4, mlp_ratio=1.0, out_indices=[2, 3, 4])
    text = dict(model_type="bert", vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                num_attention_heads=2, intermediate_size=16, max_position_embeddings=64)
    cfg = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, num_queries=12, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, d_model=32,
        encoder_n_points=1, decoder_n_points=1, max_text_len=DINO_MAX_TEXT_LEN,
    )
    folder.mkdir(parents=True, exist_ok=True)
    GroundingDinoForObjectDetection(cfg).eval().save_pretrained(str(folder), safe_serialization=True)
    save(tokenizer, folder)
    _write_preprocessor(folder, *IMAGENET, {"shortest_edge": DINO_SHORTEST, "longest_edge": DINO_LONGEST})
    return folder


def build_owlv2(folder: Path, seed: int = 0) -> Path:
    """Tiny ``Owlv2ForObjectDetection`` (ViT image tower, CLIP text tower) + CLIP tokenizer (16 tokens)."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(max_length=16)
    text = dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=0)
    vision = dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                  image_size=OWL_FRAME, patch_size=OWL_PATCH)
    cfg = Owlv2Config(text_config=text, vision_config=vision, projection_dim=16)
    folder.mkdir(parents=True, exist_ok=True)
    Owlv2ForObjectDetection(cfg).eval().save_pretrained(str(folder), safe_serialization=True)
    save(tokenizer, folder)
    _write_preprocessor(folder, *CLIP_NORM, {"height": OWL_FRAME, "width": OWL_FRAME})
    return folder


#: registry family -> builder
BUILDERS = {"grounding_dino": build_grounding_dino, "owlv2": build_owlv2}

"""The torch modules :mod:`anyseg.runtime.onnx` exports: the image encoder and the prompt encoder
plus mask decoder with segment-anything's ONNX prompt interface (same submodules and weights as
transformers' SAM / SAM 2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["encoder_module", "decoder_module"]


def encoder_module(model: Any) -> Any:
    """The image encoder as exported: SAM's ViT (``image_embeddings``), SAM 2's ``get_image_embeddings``
    reordered to ``(image_embeddings, high_res_0, high_res_1)``."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, vision_encoder: Any):
            super().__init__()
            self.vision_encoder = vision_encoder

        def forward(self, pixel_values: Any) -> Any:
            return self.vision_encoder(pixel_values)[0]

    class Sam2Encoder(torch.nn.Module):
        """``Sam2Model.get_image_embeddings``: two high-resolution maps, then the image embedding."""

        def __init__(self, model: Any):
            super().__init__()
            self.model = model

        def forward(self, pixel_values: Any) -> tuple[Any, Any, Any]:
            s0, s1, emb = self.model.get_image_embeddings(pixel_values)
            return emb, s0, s1

    if hasattr(model, "no_memory_embedding"):
        return Sam2Encoder(model).eval()
    return Encoder(model.vision_encoder).eval()


def decoder_module(model: Any) -> Any:
    """SAM / SAM 2 prompt encoder + mask decoder with segment-anything's ONNX prompt interface.

    Mirrors ``Sam(2)PromptEncoder`` / ``Sam(2)MaskDecoder.forward`` of transformers (the same
    submodules and weights), returning all ``1 + num_multimask_outputs`` masks and scores; the
    output selection (and SAM 2's stability fallback) is done by the caller.
    """
    import torch

    class Decoder(torch.nn.Module):
        def __init__(self, model: Any):
            super().__init__()
            pe = model.prompt_encoder
            self.sam2 = hasattr(model, "no_memory_embedding")
            self.pe_layer = pe.shared_embedding  # points; the image-wide PE is the model's own
            with torch.no_grad():
                weights = (pe.point_embed.weight if self.sam2 else torch.cat([e.weight for e in pe.point_embed]))
                self.register_buffer("point_weights", weights.detach().clone())  # (4, C): labels 0..3
            self.not_a_point_embed = pe.not_a_point_embed
            self.mask_embed = pe.mask_embed
            self.no_mask_embed = pe.no_mask_embed
            self.input_size = float(pe.input_image_size)
            self.mask_decoder = model.mask_decoder
            with torch.no_grad():
                self.register_buffer("image_pe", model.get_image_wide_positional_embeddings().detach().clone())

        def forward(self, image_embeddings: Any, point_coords: Any, point_labels: Any, mask_input: Any,
                    has_mask_input: Any, high_res_0: Any = None, high_res_1: Any = None) -> tuple[Any, Any]:
            md = self.mask_decoder
            # -- prompt encoder (points, box corners, padding point) --
            coords = (point_coords + 0.5) / self.input_size
            coords = 2 * coords - 1
            coords = coords @ self.pe_layer.positional_embedding
            coords = 2 * np.pi * coords
            emb = torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)  # (B, N, C)
            labels = point_labels.unsqueeze(-1).to(emb.dtype)
            emb = torch.where(labels == -1, self.not_a_point_embed.weight, emb)
            for k in range(4):
                emb = torch.where(labels == k, emb + self.point_weights[k], emb)
            sparse = emb.unsqueeze(0)  # (1, B, N, C)
            has = has_mask_input.reshape(1, 1, 1, 1).to(emb.dtype)
            dense = has * self.mask_embed(mask_input) + (1 - has) * self.no_mask_embed.weight.reshape(1, -1, 1, 1)
            # -- mask decoder (transformers' SamMaskDecoder.forward, all mask tokens) --
            _, num_channels, height, width = image_embeddings.shape
            point_batch = sparse.shape[1]
            first = 1 if self.sam2 else 0  # SAM 2 puts its object-score token first
            output_tokens = torch.cat(([md.obj_score_token.weight] if self.sam2 else [])
                                      + [md.iou_token.weight, md.mask_tokens.weight], dim=0)
            output_tokens = output_tokens.unsqueeze(0).unsqueeze(0).expand(1, point_batch, -1, -1)
            tokens = torch.cat((output_tokens, sparse), dim=2)
            src = (image_embeddings + dense).expand(point_batch, -1, -1, -1)
            pos = self.image_pe.expand(point_batch, -1, -1, -1)
            point_embedding, src = md.transformer(point_embeddings=tokens, image_embeddings=src,
                                                  image_positional_embeddings=pos,
                                                  attention_similarity=None, target_embedding=None)
            iou_token_out = point_embedding[:, :, first, :]
            mask_tokens_out = point_embedding[:, :, first + 1:(first + 1 + md.num_mask_tokens), :]
            src = src.transpose(2, 3).reshape(point_batch, num_channels, height, width)
            if self.sam2:
                up = md.upscale_conv1(src) + high_res_1.expand(point_batch, -1, -1, -1)
                up = md.activation(md.upscale_layer_norm(up))
                up = md.activation(md.upscale_conv2(up) + high_res_0.expand(point_batch, -1, -1, -1))
            else:
                up = md.upscale_conv1(src)
                up = md.activation(md.upscale_layer_norm(up))
                up = md.activation(md.upscale_conv2(up))
            hyper_in = torch.stack([md.output_hypernetworks_mlps[i](mask_tokens_out[:, :, i, :])
                                    for i in range(md.num_mask_tokens)], dim=2)
            _, c, h, w = up.shape
            up = up.reshape(1, point_batch, c, h * w)
            masks = (hyper_in @ up).reshape(point_batch, -1, h, w)
            iou = md.iou_prediction_head(iou_token_out)[0]
            return masks, iou

    return Decoder(model).eval()

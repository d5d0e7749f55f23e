"""DINO / DINOv2 / DINOv3 dense patch features through transformers (the ``features`` loader of the three families).

Preprocessing is done here (DINOv3's image processor needs torchvision, which anyseg does not
depend on): the image is resized with PIL bicubic (the resampling of DINOv2's
``BitImageProcessor``) so that its ``side`` (``longest`` by default) is about ``size`` pixels and
each side is a whole number of patches, keeping the aspect ratio up to that rounding (no
centre crop: every pixel has a cell); then scaled to ``[0, 1]`` and normalised with the
checkpoint's ``preprocessor_config.json`` mean/std, else the family record's (ImageNet).

The features are the patch tokens of the last layer, CLS and register tokens skipped
(``config.num_register_tokens``: DINOv3, DINOv2 with registers). ``prenorm=True`` (the default)
takes them before the final LayerNorm, as Matcher does (DINOv2's ``x_prenorm``);
``prenorm=False`` takes ``last_hidden_state``.

``patch_features(image, kind="keys")`` returns instead the last layer's self-attention *keys*
of the patch tokens (the features of TokenCut, MaskCut and deep spectral methods): the output of
the last layer's key projection (``k_proj``; ``attention.attention.key`` in the hub
checkpoints), caught by a forward hook, all heads concatenated (the full key vector, as
TokenCut's ``k.transpose(1, 2).reshape(B, N, -1)``), CLS and register tokens dropped. For
DINOv3 that is the key before its rotary position embedding (content only, no RoPE).

DINO v1 (family ``dino``, ``facebook/dino-vits16`` ...) loads as transformers' ``ViTModel``
without its pooler (``add_pooling_layer=False``: the hub checkpoints have none) and runs with
``interpolate_pos_encoding=True`` (its position embeddings are for 224x224). Its default size
is :data:`DINO_SIZE` (480 on the longest side: MaskCut's ``fixed_size``; TokenCut runs images at
their own size, about 500 pixels for VOC), ``max_cells`` (4096) bounding the grid: a ViT-S/8
gets a 60x45 grid for a 640x480 image.

>>> from anyseg.models.dino import load_features
>>> dino = load_features("dinov2-small")
>>> pf = dino.patch_features(image)        # PatchFeatures: (gh, gw, C) grid + geometry
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from anyseg.errors import InputError, ModelError
from anyseg.models.base import check_image
from anyseg.models.device import check_device
from anyseg.models.families import FEATURES
from anyseg.models.features import PatchFeatures, grid_for
from anyseg.models.registry import ModelSpec

__all__ = ["DinoFeatures", "load_features", "DEFAULT_SIZE", "DINO_SIZE", "SIDES", "KINDS"]

#: default resize target in pixels: Matcher's 518 (37 patches of 14); 512 for 16-pixel patches
DEFAULT_SIZE = 518
#: the DINO v1 family's default (MaskCut's fixed size; a whole number of 8- and 16-pixel patches)
DINO_SIZE = 480
SIDES = ("longest", "shortest")
#: what :meth:`DinoFeatures.patch_features` returns: the last layer's tokens or its attention keys
KINDS = ("tokens", "keys")
#: the transformers class of a checkpoint whose ``model_type`` is not the family record's default
_CLASS_OF_TYPE = {"dinov2_with_registers": "Dinov2WithRegistersModel"}
#: the default size of a checkpoint's ``model_type`` when not :data:`DEFAULT_SIZE` (DINO v1's ``vit``)
_SIZE_OF_TYPE = {"vit": DINO_SIZE}


def _last_key_projection(model: Any) -> Any:
    """The last transformer layer's key ``Linear`` (``...attention.k_proj`` in transformers 5,
    ``...attention.attention.key`` in earlier versions), found by name."""
    found = [m for name, m in model.named_modules() if name.endswith((".k_proj", ".attention.key"))]
    if not found:
        raise ModelError(f"{type(model).__name__} has no attention key projection (k_proj) to read keys from")
    return found[-1]  # named_modules walks the layers in order


def _patch_size(config: Any) -> int:
    p = getattr(config, "patch_size", 14)
    p = p[0] if isinstance(p, (list, tuple)) else p
    return int(p)


class DinoFeatures:
    """Patch features of a DINO / DINOv2 / DINOv3 model (satisfies :class:`anyseg.models.features.FeatureExtractor`).

    Args:
        spec: the model's registry spec (or the spec of a local folder).
        model: the loaded transformers model (``ViTModel``, ``Dinov2Model``, ``DINOv3ViTModel``, ...), in eval mode.
        device: torch device it is on.
        mean, std: normalisation; ``None``: the family record's.
        size: resize target in pixels for ``side`` (rounded to whole patches); default
            :data:`DEFAULT_SIZE` rounded to the patch size (:data:`DINO_SIZE` for DINO v1).
        side: ``longest`` (the longer side is about ``size``: bounded cost) or ``shortest``.
        prenorm: patch tokens before the final LayerNorm (Matcher's choice) or after it.
        max_cells: grids above this many patches are scaled down (attention cost is quadratic).
    """

    def __init__(self, spec: ModelSpec, model: Any, device: str = "cpu", mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None, size: int | None = None, side: str = "longest",
                 prenorm: bool = True, max_cells: int = 4096, folder: Path | None = None) -> None:
        self.spec, self.name, self.family, self.model, self.device, self.folder = (
            spec, spec.name, spec.family, model, device, folder)
        d_mean, d_std = spec.family_record.normalize or ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        self.mean, self.std = tuple(mean or d_mean), tuple(std or d_std)
        self.patch_size = _patch_size(model.config)
        self.num_registers = int(getattr(model.config, "num_register_tokens", 0) or 0)
        #: ViTModel (DINO v1) interpolates its 224x224 position embeddings only when asked
        self.interpolate = getattr(model.config, "model_type", "") == "vit"
        if size is None:
            target = _SIZE_OF_TYPE.get(getattr(model.config, "model_type", ""), DEFAULT_SIZE)
            size = max(1, round(target / self.patch_size)) * self.patch_size
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < self.patch_size:
            raise InputError(f"feature size must be a whole number of pixels >= the patch size {self.patch_size}; "
                             f"got {size!r}")
        if side not in SIDES:
            raise InputError(f"feature side must be one of {', '.join(SIDES)}; got {side!r}")
        if not isinstance(max_cells, (int, np.integer)) or max_cells < 1:
            raise InputError(f"max_cells must be a positive whole number; got {max_cells!r}")
        self.size, self.side, self.prenorm, self.max_cells = int(size), side, bool(prenorm), int(max_cells)

    @property
    def model_id(self) -> str:
        """Identity of the weights and of the settings that change the numbers (the tokens)."""
        return self.features_id("tokens")

    def features_id(self, kind: str = "tokens") -> str:
        """:attr:`model_id` of ``kind``'s features (the keys' differs from the tokens')."""
        if kind == "keys":
            return f"{self.name}:{self.side}{self.size}:keys"
        return f"{self.name}:{self.side}{self.size}{'' if self.prenorm else ':norm'}"

    @classmethod
    def from_folder(cls, spec: ModelSpec, folder: Path, device: str | None = None, **options: Any) -> "DinoFeatures":
        """Load ``spec``'s model from a resolved weights folder (the family record's ``features`` loader)."""
        from anyseg.models.hf import load_pretrained, preprocessor_normalization
        from anyseg.models.weights import read_model_type

        device = check_device(device)
        family = spec.family_record
        family.check_requires(spec.name)
        class_name = _CLASS_OF_TYPE.get(read_model_type(folder) or "", family.classes.get("features"))
        if not class_name:
            raise ModelError(f"the {family.title} family record names no transformers class for its features")
        # DINO v1 checkpoints have no pooler: ViTModel's default one would be reported missing
        extra = {"add_pooling_layer": False} if class_name == "ViTModel" else {}
        model = load_pretrained(spec, folder, class_name, device, **extra)
        mean, std = preprocessor_normalization(folder, family.normalize)
        return cls(spec, model, device=device, mean=mean, std=std, folder=Path(folder), **options)

    # -- preprocessing --------------------------------------------------------------------
    def grid(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """``(gh, gw)``: the patch grid an ``(H, W)`` image gets."""
        return grid_for(original_size, self.patch_size, self.size, self.side, self.max_cells)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """``(3, gh * p, gw * p)`` float32 pixel values (resized, normalised) and the grid ``(gh, gw)``."""
        from PIL import Image

        image = check_image(image)
        gh, gw = self.grid(image.shape[:2])
        rh, rw = gh * self.patch_size, gw * self.patch_size
        resized = np.asarray(Image.fromarray(image).resize((rw, rh), Image.BICUBIC), dtype=np.float32)
        x = (resized / 255.0 - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32), (gh, gw)

    # -- features -------------------------------------------------------------------------
    def patch_features(self, image: np.ndarray, kind: str = "tokens") -> PatchFeatures:
        """The ``(gh, gw, C)`` patch features of an ``(H, W, 3)`` uint8 RGB image.

        ``kind``: ``tokens`` (the last layer's patch tokens, see ``prenorm``) or ``keys`` (its
        self-attention keys, heads concatenated: TokenCut's features).
        """
        import torch

        if kind not in KINDS:
            raise InputError(f"feature kind must be one of {', '.join(KINDS)}; got {kind!r}")
        image = check_image(image)
        pixels, (gh, gw) = self.preprocess(image)
        x = torch.from_numpy(pixels)[None].to(self.device)
        kwargs: dict[str, Any] = {"interpolate_pos_encoding": True} if self.interpolate else {}
        caught: dict[str, Any] = {}
        hook = None
        if kind == "keys":
            hook = _last_key_projection(self.model).register_forward_hook(
                lambda _module, _inputs, output: caught.__setitem__("keys", output))
        try:
            with torch.inference_mode():
                out = self.model(pixel_values=x, output_hidden_states=self.prenorm and kind == "tokens", **kwargs)
        finally:
            if hook is not None:
                hook.remove()
        if kind == "keys":
            tokens = caught.get("keys")
            if tokens is None:
                raise ModelError(f"{self.name}: its last key projection did not run in the forward pass")
        else:
            tokens = out.hidden_states[-1] if self.prenorm else out.last_hidden_state
        start = 1 + self.num_registers
        patches = tokens[0, start:start + gh * gw]
        if patches.shape[0] != gh * gw:
            raise ModelError(f"{self.name} returned {patches.shape[0]} patch tokens for a {gw}x{gh} grid "
                             f"(expected {gh * gw}: is num_register_tokens right in its config.json?)")
        feats = patches.float().cpu().numpy().reshape(gh, gw, -1)
        return PatchFeatures(feats, self.patch_size, (gh * self.patch_size, gw * self.patch_size),
                             image.shape[:2], self.features_id(kind))

    def __repr__(self) -> str:
        return f"DinoFeatures({self.name!r}, patch={self.patch_size}, {self.side}={self.size}, device={self.device!r})"


def load_features(name_or_path: str | os.PathLike = "dinov2-small", device: str | None = None,
                  allow_download: bool = True, weights: str | os.PathLike | None = None,
                  **options: Any) -> Any:
    """Load a dense feature model (capability ``features``) by registry name, ``auto`` or local folder.

    The model is built by its family record's ``features`` loader (for DINO / DINOv2 / DINOv3:
    :meth:`DinoFeatures.from_folder`, which takes ``size``, ``side``, ``prenorm``, ``max_cells``).
    Errors (unknown name, a folder of another family, weights absent and not downloadable) are
    one-line :class:`~anyseg.errors.ModelError`.
    """
    from anyseg.models.resolver import resolve_folder

    if device is not None:
        device = check_device(device)
    spec, folder = resolve_folder(name_or_path, FEATURES, weights=weights, allow_download=allow_download, quiet=True)
    return spec.family_record.build("features", spec, folder, device, **options)

"""anyseg: image and video segmentation with foundation models.

Importing ``anyseg`` is cheap: torch and transformers load only when a model is loaded.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Masks", "Prompt", "Embedding", "EmbeddingCache", "load_model", "load_image", "__version__"]


def __getattr__(name: str) -> Any:  # lazy re-exports (PEP 562)
    if name in ("Masks", "Prompt", "Embedding"):
        from anyseg import types

        return getattr(types, name)
    if name == "EmbeddingCache":
        from anyseg.cache import EmbeddingCache

        return EmbeddingCache
    if name == "load_model":
        from anyseg.models import load_model

        return load_model
    if name == "load_image":
        from anyseg.io.images import load_image

        return load_image
    raise AttributeError(f"module 'anyseg' has no attribute {name!r}")

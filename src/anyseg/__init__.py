"""anyseg: image and video segmentation with foundation models.

Importing ``anyseg`` is cheap: torch and transformers load only when a model is loaded, and
the names below are imported on first use (``dir(anyseg)`` lists them all)::

    import anyseg

    model = anyseg.load_model("auto")            # best SAM-family model present, else "classical"
    image = anyseg.load_image("photo.jpg")       # (H, W, 3) uint8 RGB
    masks = model.predict(model.embed(image), anyseg.Prompt(points=[[230, 150]]))
    masks                                         # Masks(n=..., image=HxW, ...)
    vis = masks.overlay(image)                    # (H, W, 3) uint8 RGB
    masks.save("out/", image=image)               # one PNG per mask, an indexed PNG, the overlay

Segment everything: :func:`anyseg.tasks.everything.generate`; text prompts:
:mod:`anyseg.tasks.text`; video: :mod:`anyseg.video`; exporters: :mod:`anyseg.io.export`.
"""

from __future__ import annotations

from typing import Any

from anyseg.version import __version__

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


def __dir__() -> list[str]:  # PEP 562: the module's attributes plus the lazy exports
    return sorted(set(globals()) | set(__all__))

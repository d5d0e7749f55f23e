"""Model registry: short names -> specs (family, hub id, revision, size).

Adapters are imported lazily by :func:`anyseg.models.load_model`, so importing the registry
(and ``anyseg``) stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from anyseg.errors import ModelError


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model before loading it.

    Attributes:
        name: short name used on the command line.
        family: adapter family: ``sam`` (SAM, SlimSAM), ``sam_hq``, ``sam2`` (SAM 2 / 2.1),
            ``edgetam``, ``sam3_tracker`` (SAM 3: its point/box tracker, and its text interface
            from the same weights), ``grounding_dino`` / ``owlv2`` (text -> boxes), ``clip``
            or ``classical``.
        hub_id: Hugging Face repository with transformers-format safetensors weights.
        revision: hub revision (branch, tag or commit) to download.
        params_m: parameter count in millions, as published (the loaded model's own count is
            reported once it is loaded).
        quality: rank used by ``auto`` (higher is preferred when present locally).
        notes: one line for ``anyseg models list``.
    """

    name: str
    family: str
    hub_id: str | None
    params_m: float
    quality: int
    revision: str = "main"
    notes: str = ""

    @property
    def needs_weights(self) -> bool:
        return self.hub_id is not None


_SPECS = [
    ModelSpec("sam-vit-base", "sam", "facebook/sam-vit-base", 93.7, 40, notes="SAM ViT-B (Kirillov et al. 2023)"),
    ModelSpec("sam-vit-large", "sam", "facebook/sam-vit-large", 312.3, 60, notes="SAM ViT-L"),
    ModelSpec("sam-vit-huge", "sam", "facebook/sam-vit-huge", 641.1, 70, notes="SAM ViT-H"),
    ModelSpec("slimsam", "sam", "Zigeng/SlimSAM-uniform-50", 28.0, 10, notes="SlimSAM-50, pruned SAM ViT-B"),
    ModelSpec("sam-hq-vit-base", "sam_hq", "syscv-community/sam-hq-vit-base", 94.7, 45, notes="SAM-HQ ViT-B: sharper boundaries"),
    ModelSpec("sam2.1-hiera-tiny", "sam2", "facebook/sam2.1-hiera-tiny", 38.9, 50, notes="SAM 2.1 Hiera-T"),
    ModelSpec("sam2.1-hiera-small", "sam2", "facebook/sam2.1-hiera-small", 46.0, 55, notes="SAM 2.1 Hiera-S"),
    ModelSpec("sam2.1-hiera-base-plus", "sam2", "facebook/sam2.1-hiera-base-plus", 80.8, 75, notes="SAM 2.1 Hiera-B+"),
    ModelSpec("sam2.1-hiera-large", "sam2", "facebook/sam2.1-hiera-large", 224.4, 80, notes="SAM 2.1 Hiera-L"),
    ModelSpec("edgetam", "edgetam", "yonigozlan/EdgeTAM-hf", 13.9, 20, notes="EdgeTAM: on-device SAM 2 variant"),
    ModelSpec("sam3", "sam3_tracker", "facebook/sam3", 848.0, 90, notes="SAM 3 point/box tracker interface (gated on the hub)"),
    ModelSpec("classical", "classical", None, 0.0, 0, notes="OpenCV GrabCut, no weights: the offline default"),
    # text and open vocabulary (issue 5): detectors whose boxes prompt a SAM-family model, and CLIP
    ModelSpec("grounding-dino-tiny", "grounding_dino", "IDEA-Research/grounding-dino-tiny", 172.0, 30,
              notes="Grounding DINO Swin-T: text -> boxes (Grounded-SAM with --sam)"),
    ModelSpec("grounding-dino-base", "grounding_dino", "IDEA-Research/grounding-dino-base", 233.0, 40,
              notes="Grounding DINO Swin-B: text -> boxes"),
    ModelSpec("owlv2-base", "owlv2", "google/owlv2-base-patch16-ensemble", 155.0, 20,
              notes="OWLv2 ViT-B/16: open-vocabulary boxes"),
    ModelSpec("owlv2-large", "owlv2", "google/owlv2-large-patch14-ensemble", 438.0, 25,
              notes="OWLv2 ViT-L/14: open-vocabulary boxes"),
    ModelSpec("clip-vit-b32", "clip", "openai/clip-vit-base-patch32", 151.3, 10, notes="CLIP ViT-B/32: mask labels"),
    ModelSpec("clip-vit-b16", "clip", "openai/clip-vit-base-patch16", 149.6, 20,
              notes="CLIP ViT-B/16: mask labels, dense CLIP (MaskCLIP / SCLIP)"),
    ModelSpec("clip-vit-l14", "clip", "openai/clip-vit-large-patch14", 427.6, 30, notes="CLIP ViT-L/14: mask labels"),
]

REGISTRY: dict[str, ModelSpec] = {s.name: s for s in _SPECS}

#: families that are SAM-like promptable models loaded from transformers
SAM_FAMILIES = ("sam", "sam_hq", "sam2", "edgetam", "sam3_tracker")

#: families that turn words into boxes (then masks by a SAM-family model)
DETECTOR_FAMILIES = ("grounding_dino", "owlv2")

#: families that score image regions against words
CLIP_FAMILIES = ("clip",)


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; an unknown name is a one-line :class:`ModelError`."""
    try:
        return REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ModelError(
            f"unknown model {name!r}{hint}; known models: auto, {', '.join(REGISTRY)} (see `anyseg models list`)"
        ) from None


def sam_family_by_quality() -> list[ModelSpec]:
    """SAM-family specs, best first: the order in which ``auto`` looks for local weights."""
    return sorted((s for s in _SPECS if s.family in SAM_FAMILIES), key=lambda s: -s.quality)

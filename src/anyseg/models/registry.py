"""Model registry: short names -> :class:`ModelSpec` (family, hub id, revision, size).

A spec points at its family's record (:attr:`ModelSpec.family_record`,
:mod:`anyseg.models.families`); which models can do what, and in which order ``auto`` tries
them (:func:`models_with`), is derived from the records. Adapters are imported lazily by the
loaders, so importing the registry (and ``anyseg``) stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anyseg.errors import ModelError
from anyseg.models.families import PROMPTABLE, Family, get_family


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model before loading it.

    Attributes:
        name: short name used on the command line (for a local folder: the path as given).
        family: the name of its :class:`~anyseg.models.families.Family` record: ``sam`` (SAM,
            SlimSAM), ``sam_hq``, ``sam2`` (SAM 2 / 2.1), ``edgetam``, ``sam3_tracker`` (SAM 3:
            its point/box tracker, and its text interface from the same weights),
            ``grounding_dino`` / ``owlv2`` (text -> boxes), ``clip`` or ``classical``.
        hub_id: Hugging Face repository with transformers-format safetensors weights.
        params_m: parameter count in millions, as published (the loaded model's own count is
            reported once it is loaded).
        quality: rank used by ``auto`` within a family rank (higher is preferred when present locally).
        revision: hub revision (branch, tag or commit) to download.
        notes: one line for ``anyseg models list``.
        prefer: capabilities for which ``auto`` tries this model before its family's others
            (``clip-vit-b16`` for class maps: dense CLIP was measured on it).
        path: the local model folder of a spec made from ``--model PATH`` (not registered).
        variant: the weights-file variant fetched from the hub for a diffusers pipeline
            (``"fp16"``: the ``*.fp16.safetensors`` files); ``None``: the main (fp32) files.
        checkpoint: the file of an original-format (not transformers) checkpoint in :attr:`hub_id`
            (MedSAM2's ``MedSAM2_latest.pt``): ``anyseg models pull`` downloads it and converts it
            (:mod:`anyseg.models.convert`, with the config of this spec's name) into a local
            transformers folder (:func:`anyseg.models.weights.converted_dir`); ``None``: the hub
            repository is a transformers folder.
    """

    name: str
    family: str
    hub_id: str | None
    params_m: float
    quality: int
    revision: str = "main"
    notes: str = ""
    prefer: tuple[str, ...] = ()
    path: Path | None = None
    variant: str | None = None
    checkpoint: str | None = None

    @property
    def needs_weights(self) -> bool:
        return self.hub_id is not None or self.path is not None

    @property
    def family_record(self) -> Family:
        """The record of :attr:`family` (:func:`anyseg.models.families.get_family`)."""
        return get_family(self.family)


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
    # medical (issue 19): MedSAM (Ma et al., Nature Communications 2024; Apache-2.0) in transformers format, and
    # MedSAM2 (Ma et al. 2025; Apache-2.0), published only as an original SAM 2.1 checkpoint (converted on pull)
    ModelSpec("medsam", "sam", "flaviagiammarino/medsam-vit-base", 93.7, 5,
              notes="MedSAM: SAM ViT-B fine-tuned on medical images; trained with box prompts: give it a box"),
    ModelSpec("medsam2", "sam2", "wanglab/MedSAM2", 38.9, 5, checkpoint="MedSAM2_latest.pt",
              notes="MedSAM2: SAM 2.1 Hiera-T at 512 px fine-tuned on 3D medical images and video (converted on pull)"),
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
              notes="CLIP ViT-B/16: mask labels, dense CLIP (MaskCLIP / SCLIP)", prefer=("semantic",)),
    ModelSpec("clip-vit-l14", "clip", "openai/clip-vit-large-patch14", 427.6, 30, notes="CLIP ViT-L/14: mask labels"),
    # dense features and reference examples (issue 16): DINOv2 (Apache-2.0), DINOv3 (DINOv3 License, gated), SegGPT (MIT)
    ModelSpec("dinov2-small", "dinov2", "facebook/dinov2-small", 22.1, 10, notes="DINOv2 ViT-S/14: patch features (Matcher, PerSAM)"),
    ModelSpec("dinov2-base", "dinov2", "facebook/dinov2-base", 86.6, 20, notes="DINOv2 ViT-B/14: patch features"),
    ModelSpec("dinov2-large", "dinov2", "facebook/dinov2-large", 304.4, 30, notes="DINOv2 ViT-L/14: patch features (Matcher's)"),
    ModelSpec("dinov3-vits16", "dinov3", "facebook/dinov3-vits16-pretrain-lvd1689m", 21.6, 15,
              notes="DINOv3 ViT-S/16: patch features (gated: accept the DINOv3 License on the hub)"),
    ModelSpec("seggpt-vit-large", "seggpt", "BAAI/seggpt-vit-large", 370.0, 10,
              notes="SegGPT ViT-L: in-context segmentation from reference examples"),
    # discovery (issue 17): DINO v1 (Apache-2.0) for TokenCut / MaskCut, Stable Diffusion (CreativeML OpenRAIL-M) for DiffSeg
    ModelSpec("dino-vits16", "dino", "facebook/dino-vits16", 21.7, 10, notes="DINO ViT-S/16: TokenCut's main backbone"),
    ModelSpec("dino-vits8", "dino", "facebook/dino-vits8", 21.7, 20, notes="DINO ViT-S/8: finer patches (TokenCut, MaskCut)"),
    ModelSpec("dino-vitb16", "dino", "facebook/dino-vitb16", 85.8, 15, notes="DINO ViT-B/16"),
    ModelSpec("dino-vitb8", "dino", "facebook/dino-vitb8", 85.8, 25, notes="DINO ViT-B/8: MaskCut's (CutLER) backbone"),
    ModelSpec("sd-v1-4", "stable_diffusion", "CompVis/stable-diffusion-v1-4", 1066.0, 10,
              notes="Stable Diffusion v1.4: DiffSeg's self-attention (licence: CreativeML OpenRAIL-M)"),
    ModelSpec("sd-v1-5", "stable_diffusion", "stable-diffusion-v1-5/stable-diffusion-v1-5", 1066.0, 12,
              notes="Stable Diffusion v1.5: DiffSeg (licence: CreativeML OpenRAIL-M)"),
    # editing (issue 18): inpainting pipelines. The SD 1.5 repository's only safetensors weights are its fp16
    # files, and SDXL's fp16 files halve a 14 GB download; SD 2's mirror (stabilityai's repository is gone)
    # keeps fp32 safetensors. fp16 files are upcast on load where the engine computes in float32 (CPU).
    ModelSpec("sd-inpainting", "sd_inpaint", "stable-diffusion-v1-5/stable-diffusion-inpainting", 1066.0, 10,
              notes="Stable Diffusion 1.5 inpainting: fill / replace / style (licence: CreativeML OpenRAIL-M)",
              variant="fp16"),
    ModelSpec("sd2-inpainting", "sd_inpaint", "sd2-community/stable-diffusion-2-inpainting", 1304.0, 12,
              notes="Stable Diffusion 2 inpainting (licence: CreativeML Open RAIL++-M)"),
    ModelSpec("sdxl-inpainting", "sdxl_inpaint", "diffusers/stable-diffusion-xl-1.0-inpainting-0.1", 3470.0, 15,
              notes="SDXL 1.0 inpainting 0.1, 1024 px (licence: CreativeML Open RAIL++-M)", variant="fp16"),
]

#: name -> spec, in registration order (read it; add to it with :func:`register_model`)
REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to :data:`REGISTRY` (its family must be registered); returns it.

    Raises :class:`ModelError` for a taken name, an unregistered family, or a name that could
    be read as a path (``/``, ``\\``) or as ``auto``.
    """
    if not isinstance(spec, ModelSpec) or spec.path is not None:
        raise ModelError("register_model needs a ModelSpec without a path")
    get_family(spec.family)
    if spec.name in REGISTRY or spec.name == "auto":
        raise ModelError(f"a model named {spec.name!r} is already registered")
    if not spec.name or any(c in spec.name for c in "/\\") or spec.name.startswith(("~", ".")):
        raise ModelError(f"model name {spec.name!r} could be read as a path; pick a plain name")
    REGISTRY[spec.name] = spec
    return spec


for _spec in _SPECS:
    register_model(_spec)


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


def models_with(capability: str) -> list[ModelSpec]:
    """Registered models whose family can do ``capability``, in the order ``auto`` tries them.

    Families by :attr:`Family.auto_rank` for ``capability`` (higher first), then, within a
    family rank, the models that :attr:`~ModelSpec.prefer` it, then by :attr:`~ModelSpec.quality`.
    """
    fitting = [s for s in REGISTRY.values() if s.family_record.has(capability)]
    return sorted(fitting, key=lambda s: (-s.family_record.auto_rank.get(capability, 0), capability not in s.prefer,
                                          -s.quality))


def sam_family_by_quality() -> list[ModelSpec]:
    """Promptable models that need weights, best first: the order in which ``auto`` looks for local weights."""
    return [s for s in models_with(PROMPTABLE) if s.needs_weights]

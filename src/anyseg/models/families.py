"""Model families: one frozen :class:`Family` record per family, the one place code switches on one.

A family is what the code used to switch on by string (``family in ("sam", "sam_hq")``): the
``config.json`` ``model_type`` values its adapters read, the input geometry and normalisation,
the transformers classes, what its models can do (:data:`CAPABILITIES`), its reference
"segment everything" defaults, its runtimes, and the loaders that build its adapters. Every
other table is derived from these records: the model types a weights folder may hold
(:mod:`anyseg.models.weights`), which models ``auto`` considers for a task
(:func:`anyseg.models.registry.models_with`), the geometry of the SAM adapters, the video
tracker's classes, the runtimes ``--runtime`` may pick.

Adapters are named by import path (``"anyseg.models.sam:SamFamilyPredictor.from_folder"``) and
imported on first use, as transformers' auto-mappings name their classes: this module imports no
adapter, no torch and nothing above the models layer, so ``import anyseg`` stays fast. A
record may also hold the callable itself (a family registered from outside anyseg).

Adding a family = one :func:`register_family` call with its record (here, or in the adapter's
own package), its models' :class:`~anyseg.models.registry.ModelSpec` (:func:`anyseg.models.registry.register_model`)
and the adapter module the loaders point at. ``docs/ARCHITECTURE.md`` ("Model families") walks
through it; ``tests/test_families.py`` registers one from a test module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Union

from anyseg.errors import ModelError
from anyseg.runtime.table import ONNX_RUNTIMES, RUNTIMES, TORCH_RUNTIMES

__all__ = ["Family", "FAMILY_RECORDS", "CAPABILITIES", "GEOMETRIES", "ROLES", "TRAITS", "register_family", "get_family",
           "find_family", "family_for_model_type", "known_model_types", "families_with",
           "PROMPTABLE", "EVERYTHING", "GRID", "VIDEO", "TEXT", "SEMANTIC", "CONCEPTS", "DETECT", "LABELS",
           "FEATURES", "FEWSHOT", "DIFFUSION", "INPAINT"]

# -- capabilities: what a family's models can do ---------------------------------------------------
PROMPTABLE = "promptable"  #: points, boxes, masks -> masks: ``load_model`` builds a Predictor
EVERYTHING = "everything"  #: automatic masks ("segment everything"): by grid decoding, or a baseline's regions
GRID = "grid"  #: point-grid decoding (the SAM generator): the predictor is a models.base.GridDecoder
VIDEO = "video"  #: tracks objects through a video: ``load_tracker`` builds a video.base.Tracker
TEXT = "text"  #: reads words: instances of phrases (``anyseg text``), one of the three kinds below
SEMANTIC = "semantic"  #: class maps from class names (``anyseg semantic``)
CONCEPTS = "concepts"  #: words -> instance masks directly (SAM 3's concept prompts)
DETECT = "detect"  #: words -> boxes, masks then from a promptable model (Grounded-SAM)
LABELS = "labels"  #: scores image regions against words (CLIP: mask labels, dense class maps)
FEATURES = "features"  #: dense patch features of an image (DINOv2 / DINOv3): matching, discovery
FEWSHOT = "fewshot"  #: segments, in a new image, what reference examples show (SegGPT, SAM 3 exemplars)
DIFFUSION = "diffusion"  #: a text-to-image diffusion model whose UNet attention discovery reads (DiffSeg)
INPAINT = "inpaint"  #: fills masked regions from a text prompt (Stable Diffusion inpainting)
CAPABILITIES = (PROMPTABLE, EVERYTHING, GRID, VIDEO, TEXT, SEMANTIC, CONCEPTS, DETECT, LABELS, FEATURES, FEWSHOT,
                DIFFUSION, INPAINT)

#: how an image maps into the model's S x S input: resize the longest side to S and pad
#: bottom/right (segment-anything), or resize to S x S without keeping the aspect ratio (SAM 2)
GEOMETRIES = ("longest_side", "square")

#: adapter-specific switches the shared SAM-family code reads (documented here, set per record)
TRAITS = {
    "fast_decoder": "anyseg.models.sam_decoder.FastMaskDecoder reproduces this family's mask decoder",
    "hq_features": "the image encoder also returns intermediate ViT embeddings, which the decoder takes (SAM-HQ)",
    "sorted_multimask": "multimask candidates come sorted by score, not in the decoder's order (SAM-HQ): segment "
                        "everything keeps the first and accepts only granularity 'all'",
    "sam2_decoder": "SAM 2's prompt encoder and decoder: a padding point after box corners, high-resolution skips",
    "finetune": "anyseg.finetune trains its image path (LoRA on the encoder's qkv, the mask decoder, or every weight)",
}

#: the loaders a record can name, and the signature each is called with
ROLES = {
    "predictor": "(spec, folder, device) -> models.base.Predictor   [capability promptable]",
    "tracker": "(spec, folder, device, **options) -> video.base.Tracker   [capability video]",
    "text": "(spec, folder, device) -> the text adapter (segmenter, detector or CLIP)   [capability text]",
    "features": "(spec, folder, device) -> models.features.FeatureExtractor (dense patch features)   [capability features]",
    "fewshot": "(spec, folder, device) -> the in-context model of a fewshot method (SegGPT, SAM 3 exemplars)   "
               "[capability fewshot]",
    "diffusion": "(spec, folder, device) -> models.diffusion.DiffusionModel (UNet, VAE, text encoder)   "
                 "[capability diffusion]",
    "inpaint": "(spec, folder, device, **options) -> edit.sd.SdInpaintEngine (a diffusers inpainting pipeline)   "
               "[capability inpaint]",
}
_ROLE_OF = {PROMPTABLE: "predictor", VIDEO: "tracker", TEXT: "text", FEATURES: "features", FEWSHOT: "fewshot",
            DIFFUSION: "diffusion", INPAINT: "inpaint"}

#: a loader: ``"package.module:attribute[.attribute]"`` (imported on first use) or the callable itself
Loader = Union[str, Callable[..., Any]]

Norm = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True, eq=False)
class Family:
    """Everything the code needs to know about one model family.

    Attributes:
        name: the family id (``"sam2"``), the ``family`` of its specs and adapters.
        title: how messages name it (``"SAM 2"``).
        model_types: ``config.json`` ``model_type`` values its adapters read (the transformers
            convention); a folder given as ``--model PATH`` belongs to the family claiming its type.
        capabilities: what its models can do, from :data:`CAPABILITIES`.
        geometry: one of :data:`GEOMETRIES` for the SAM-style adapters, else ``None`` (the
            adapter does its own resizing).
        normalize: default ``(mean, std)`` (a checkpoint's ``preprocessor_config.json`` overrides it).
        predictor, tracker, text, features, fewshot, diffusion, inpaint: the loaders of its image
            predictor, video tracker, text adapter, dense feature extractor, in-context
            (reference-example) model, diffusion model and inpainting engine (see :data:`ROLES`);
            required by the capabilities promptable, video, text, features, fewshot, diffusion, inpaint.
        classes: transformers class names by role (``image``, ``video``, ``video_session``, ``text``).
        serves: capability -> the model types whose checkpoints can serve it (a capability not
            listed: every model type). ``auto`` skips a local folder that cannot serve the task,
            and the loaders refuse it with one line.
        key_mappings: model type -> checkpoint key renaming applied when loading the tracker
            classes (SAM 3's hub checkpoint).
        everything_defaults: the reference "segment everything" settings that differ from SAM's
            (:meth:`anyseg.tasks.everything.EverythingParams.for_family`).
        runtimes: the ``--runtime`` values its predictors run on (:mod:`anyseg.runtime.table`).
        traits: switches of the shared SAM-family code, from :data:`TRAITS`.
        requires: Python modules it needs beyond anyseg's dependencies; ``requires_why`` says why.
        auto_rank: capability -> rank of this family when ``auto`` picks a model for that
            capability (higher first; then :attr:`ModelSpec.quality`). Default 0.
        baseline: a no-weights engine (``classical``): ``auto`` falls back to it with a notice,
            and tasks say when its results stand in for a model's.
    """

    name: str
    title: str
    model_types: tuple[str, ...] = ()
    capabilities: frozenset[str] = frozenset()
    geometry: str | None = None
    normalize: Norm | None = None
    predictor: Loader | None = None
    tracker: Loader | None = None
    text: Loader | None = None
    features: Loader | None = None
    fewshot: Loader | None = None
    diffusion: Loader | None = None
    inpaint: Loader | None = None
    classes: Mapping[str, str] = field(default_factory=dict)
    serves: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    key_mappings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    everything_defaults: Mapping[str, Any] = field(default_factory=dict)
    runtimes: tuple[str, ...] = ()
    traits: frozenset[str] = frozenset()
    requires: tuple[str, ...] = ()
    requires_why: str = ""
    auto_rank: Mapping[str, int] = field(default_factory=dict)
    baseline: bool = False

    def __post_init__(self) -> None:
        for name in ("classes", "serves", "key_mappings", "everything_defaults", "auto_rank"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))  # read-only
        for name in ("capabilities", "traits"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))
        object.__setattr__(self, "model_types", tuple(self.model_types))
        problems = self._problems()
        if problems:
            raise ModelError(f"family record {self.name!r}: {'; '.join(problems)}")

    def _problems(self) -> list[str]:
        out = []
        if not self.name or not self.title:
            out.append("needs a name and a title")
        unknown = sorted(self.capabilities - set(CAPABILITIES))
        if unknown:
            out.append(f"unknown capabilities {unknown} (expected some of {', '.join(CAPABILITIES)})")
        if self.geometry is not None and self.geometry not in GEOMETRIES:
            out.append(f"unknown geometry {self.geometry!r} (expected one of {', '.join(GEOMETRIES)})")
        bad = [r for r in self.runtimes if r not in RUNTIMES or r == "auto"]
        if bad:
            out.append(f"unknown runtimes {bad} (expected some of {', '.join(RUNTIMES[1:])})")
        odd = sorted(self.traits - set(TRAITS))
        if odd:
            out.append(f"unknown traits {odd} (expected some of {', '.join(TRAITS)})")
        for capability, role in _ROLE_OF.items():
            if capability in self.capabilities and getattr(self, role) is None:
                out.append(f"capability {capability!r} needs a {role} loader")
        if PROMPTABLE in self.capabilities and not self.runtimes:
            out.append("a promptable family needs at least one runtime (e.g. 'torch')")
        return out

    def has(self, capability: str) -> bool:
        """Whether this family's models can do ``capability`` (one of :data:`CAPABILITIES`)."""
        return capability in self.capabilities

    def serves_type(self, capability: str, model_type: str | None) -> bool:
        """Whether a checkpoint of ``model_type`` can serve ``capability`` (unknown type: yes)."""
        types = self.serves.get(capability)
        return types is None or model_type is None or model_type in types

    def loader(self, role: str) -> Callable[..., Any]:
        """The ``role`` loader (one of :data:`ROLES`), imported now if the record names it by path."""
        if role not in ROLES:
            raise ModelError(f"unknown loader role {role!r}; expected one of {', '.join(ROLES)}")
        target = getattr(self, role)
        if target is None:
            raise ModelError(f"the {self.title} family has no {role} loader")
        return import_path(target) if isinstance(target, str) else target

    def build(self, role: str, spec: Any, folder: Any, device: str | None = None, **options: Any) -> Any:
        """Call the ``role`` loader: ``loader(spec, folder, device, **options)`` (see :data:`ROLES`)."""
        return self.loader(role)(spec, folder, device, **options)

    def check_requires(self, model: str) -> None:
        """A one-line :class:`ModelError` naming what ``model`` needs when :attr:`requires` are missing."""
        import importlib.util

        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            why = f" {self.requires_why}" if self.requires_why else ""
            raise ModelError(f"{model} needs {' and '.join(missing)}{why}; install them to use it")


def import_path(path: str, what: str = "the adapter") -> Callable[..., Any]:
    """``"package.module:attr.attr"`` -> the object (one-line error naming ``what`` when it cannot be
    imported). The loaders of the family records and the few-shot and discovery method tables use it."""
    module, _, attrs = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for attr in attrs.split(".") if attrs else ():
            obj = getattr(obj, attr)
    except (ImportError, AttributeError) as e:
        raise ModelError(f"cannot import {what} {path}: {e}") from None
    return obj


# -- the registry of families ----------------------------------------------------------------------
#: family name -> record, in registration order (read it; add to it with :func:`register_family`)
FAMILY_RECORDS: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add ``family`` to :data:`FAMILY_RECORDS`; returns it (so it can be used as ``X = register_family(...)``).

    Raises :class:`ModelError` when the name is taken or one of its model types is already
    claimed by another family (a ``config.json`` must name exactly one family).
    """
    if not isinstance(family, Family):
        raise ModelError(f"register_family needs a Family record; got {type(family).__name__}")
    if family.name in FAMILY_RECORDS:
        raise ModelError(f"a model family named {family.name!r} is already registered")
    for other in FAMILY_RECORDS.values():
        shared = sorted(set(family.model_types) & set(other.model_types))
        if shared:
            raise ModelError(f"family {family.name!r}: model types {shared} already belong to family {other.name!r}")
    FAMILY_RECORDS[family.name] = family
    return family


def find_family(name: str | None) -> Family | None:
    """The record of family ``name``, or ``None`` (e.g. a predictor from outside the registry)."""
    return FAMILY_RECORDS.get(name or "")


def get_family(name: str) -> Family:
    """The record of family ``name``; an unknown one is a one-line :class:`ModelError`."""
    family = find_family(name)
    if family is None:
        raise ModelError(f"unknown model family {name!r}; known families: {', '.join(FAMILY_RECORDS)}")
    return family


def family_for_model_type(model_type: str | None) -> Family | None:
    """The family whose adapters read ``config.json``'s ``model_type``, or ``None``."""
    for family in FAMILY_RECORDS.values():
        if model_type in family.model_types:
            return family
    return None


def known_model_types() -> list[str]:
    """Every ``model_type`` some family reads, sorted (for messages)."""
    return sorted(t for f in FAMILY_RECORDS.values() for t in f.model_types)


def families_with(capability: str) -> list[Family]:
    """The families that can do ``capability``, in registration order."""
    return [f for f in FAMILY_RECORDS.values() if capability in f.capabilities]


# -- anyseg's families -----------------------------------------------------------------------------
IMAGENET: Norm = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF: Norm = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
CLIP_NORM: Norm = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))

#: SAM 3's hub checkpoint (``sam3_video``: detector + tracker) read by the tracker classes: the
#: renaming transformers declares for ``sam3_tracker`` (conversion_mapping.py), which its
#: ``from_pretrained`` does not apply to a ``sam3_video`` config (checked with 5.23)
SAM3_TRACKER_KEYS = {
    r"^tracker_model\.": "",
    r"^detector_model\.vision_encoder\.backbone\.": "vision_encoder.backbone.",
    r"^tracker_neck\.": "vision_encoder.neck.",
}

_SAM = "anyseg.models.sam:SamFamilyPredictor.from_folder"
_SAM2_TRACKER = "anyseg.video.sam2:Sam2VideoTracker.from_folder"
_SAM_LIKE = frozenset({PROMPTABLE, EVERYTHING, GRID})
_SAM2_LIKE = _SAM_LIKE | {VIDEO}
_SAM2_EVERYTHING = {"pred_iou_thresh": 0.8}  # SAM2AutomaticMaskGenerator's default
_SAM3_TRACKER_TYPES = ("sam3_tracker", "sam3_tracker_video", "sam3_video")
_SAM3_TEXT_TYPES = ("sam3", "sam3_video")
# SAM 3's exemplar prompts (anyseg fewshot --method sam3) use the same "sam3" checkpoints as its text interface
_SAM3_FEWSHOT = "anyseg.fewshot.sam3:build_sam3_exemplars"


def _classical_predictor(spec: Any, folder: Any = None, device: Any = None) -> Any:
    from anyseg.models.classical import ClassicalPredictor

    return ClassicalPredictor()


register_family(Family(
    "sam", "SAM", ("sam",), _SAM_LIKE, "longest_side", IMAGENET, predictor=_SAM, classes={"image": "SamModel"},
    runtimes=TORCH_RUNTIMES + ONNX_RUNTIMES, traits={"fast_decoder", "finetune"}))
register_family(Family(
    "sam_hq", "SAM-HQ", ("sam_hq",), _SAM_LIKE, "longest_side", IMAGENET, predictor=_SAM,
    classes={"image": "SamHQModel"}, runtimes=TORCH_RUNTIMES, traits={"hq_features", "sorted_multimask", "finetune"}))
register_family(Family(
    "sam2", "SAM 2", ("sam2", "sam2_video"), _SAM2_LIKE, "square", IMAGENET, predictor=_SAM, tracker=_SAM2_TRACKER,
    classes={"image": "Sam2Model", "video": "Sam2VideoModel", "video_session": "Sam2VideoInferenceSession"},
    serves={VIDEO: ("sam2_video",)}, everything_defaults=_SAM2_EVERYTHING, runtimes=TORCH_RUNTIMES + ONNX_RUNTIMES,
    traits={"fast_decoder", "sam2_decoder", "finetune"}))
register_family(Family(
    "edgetam", "EdgeTAM", ("edgetam", "edgetam_video"), _SAM2_LIKE, "square", IMAGENET, predictor=_SAM,
    tracker=_SAM2_TRACKER,
    classes={"image": "EdgeTamModel", "video": "EdgeTamVideoModel", "video_session": "EdgeTamVideoInferenceSession"},
    serves={VIDEO: ("edgetam_video",)}, everything_defaults=_SAM2_EVERYTHING, runtimes=TORCH_RUNTIMES,
    traits={"fast_decoder", "sam2_decoder"}, requires=("timm", "torchvision"),
    requires_why="for its RepViT backbone (transformers builds it with timm)"))
register_family(Family(
    "sam3_tracker", "SAM 3", ("sam3_tracker", "sam3_tracker_video", "sam3", "sam3_video"),
    _SAM2_LIKE | {TEXT, SEMANTIC, CONCEPTS, FEWSHOT}, "square", HALF, predictor=_SAM, tracker=_SAM2_TRACKER,
    text="anyseg.text.sam3:build_sam3_text", fewshot=_SAM3_FEWSHOT,
    classes={"image": "Sam3TrackerModel", "video": "Sam3TrackerVideoModel",
             "video_session": "Sam3TrackerVideoInferenceSession", "text": "Sam3Model"},
    serves={PROMPTABLE: _SAM3_TRACKER_TYPES, EVERYTHING: _SAM3_TRACKER_TYPES, GRID: _SAM3_TRACKER_TYPES,
            VIDEO: ("sam3_video", "sam3_tracker_video"), TEXT: _SAM3_TEXT_TYPES, SEMANTIC: _SAM3_TEXT_TYPES,
            CONCEPTS: _SAM3_TEXT_TYPES, FEWSHOT: _SAM3_TEXT_TYPES},
    key_mappings={"sam3_video": SAM3_TRACKER_KEYS}, everything_defaults=_SAM2_EVERYTHING, runtimes=TORCH_RUNTIMES,
    traits={"fast_decoder", "sam2_decoder"}, auto_rank={TEXT: 3, SEMANTIC: 2}))
register_family(Family(
    "grounding_dino", "Grounding DINO", ("grounding-dino",), {TEXT, SEMANTIC, DETECT}, None, IMAGENET,
    text="anyseg.text.detectors:GroundingDinoDetector.from_folder", classes={"text": "GroundingDinoForObjectDetection"},
    auto_rank={TEXT: 2, SEMANTIC: 1}))
register_family(Family(
    "owlv2", "OWLv2", ("owlv2",), {TEXT, SEMANTIC, DETECT}, None, CLIP_NORM,
    text="anyseg.text.detectors:Owlv2Detector.from_folder", classes={"text": "Owlv2ForObjectDetection"},
    auto_rank={TEXT: 1, SEMANTIC: 0}))
register_family(Family(
    "clip", "CLIP", ("clip",), {TEXT, SEMANTIC, LABELS}, None, CLIP_NORM, text="anyseg.text.clip:build_clip",
    classes={"text": "CLIPModel"}, auto_rank={TEXT: 0, SEMANTIC: 3}))
register_family(Family(
    "dinov2", "DINOv2", ("dinov2", "dinov2_with_registers"), {FEATURES}, None, IMAGENET, features="anyseg.models.dino:DinoFeatures.from_folder",
    classes={"features": "Dinov2Model"}, auto_rank={FEATURES: 1}))
register_family(Family(
    "dinov3", "DINOv3", ("dinov3_vit",), {FEATURES}, None, IMAGENET, features="anyseg.models.dino:DinoFeatures.from_folder",
    classes={"features": "DINOv3ViTModel"}, auto_rank={FEATURES: 0}))
register_family(Family(
    "dino", "DINO", ("vit",), {FEATURES}, None, IMAGENET, features="anyseg.models.dino:DinoFeatures.from_folder",
    classes={"features": "ViTModel"}, auto_rank={FEATURES: -1}))
register_family(Family(
    "stable_diffusion", "Stable Diffusion", ("stable-diffusion",), {DIFFUSION}, None, None,
    diffusion="anyseg.models.diffusion:DiffusionModel.from_folder", requires=("diffusers",),
    requires_why="(the diffusion extra: pip install 'anyseg[diffusion]')"))
# editing (issue 18): Stable Diffusion inpainting pipelines (9-channel UNets: latent, mask, masked-image latent)
_SD_INPAINT = "anyseg.edit.sd:SdInpaintEngine.from_folder"
register_family(Family(
    "sd_inpaint", "Stable Diffusion inpainting", ("stable-diffusion-inpaint",), {INPAINT}, None, None,
    inpaint=_SD_INPAINT, requires=("diffusers",), requires_why="(the diffusion extra: pip install 'anyseg[diffusion]')"))
register_family(Family(
    "sdxl_inpaint", "SDXL inpainting", ("stable-diffusion-xl-inpaint",), {INPAINT}, None, None,
    inpaint=_SD_INPAINT, requires=("diffusers",), requires_why="(the diffusion extra: pip install 'anyseg[diffusion]')"))
register_family(Family(
    "seggpt", "SegGPT", ("seggpt",), {FEWSHOT}, None, IMAGENET, fewshot="anyseg.fewshot.seggpt:SegGptModel.from_folder",
    classes={"fewshot": "SegGptForImageSegmentation"}))
register_family(Family(
    "classical", "classical", (), {PROMPTABLE, EVERYTHING, VIDEO}, predictor=_classical_predictor,
    tracker="anyseg.video.session:classical_tracker", runtimes=("torch",), baseline=True))

"""Words to masks: instances of phrases, semantic class maps and panoptic segmentations.

Three kinds of backend, selected by the ``--model`` name's family and composable:

* **SAM 3** (``sam3``): native concept prompts; every instance of each phrase.
* **Grounded** (a Grounding DINO or OWLv2 name): boxes from the text, thresholded, then one
  NMS over all boxes (class-agnostic, IoU 0.8, as the Grounded-SAM demo), then one mask per
  box from a SAM-family model (``--sam``, default ``auto``: the best one present). The
  instance score is the detector's; SAM's predicted IoU is kept in ``data["mask_score"]``.
* **CLIP** (a CLIP name): segment-everything masks (``--sam``; the classical superpixel
  regions when no SAM weights are present) classified by CLIP from masked crops against the
  classes plus background queries; masks whose best class is a background query, or whose
  probability is below ``threshold``, are dropped. For class maps CLIP also offers
  training-free dense prediction (MaskCLIP / SCLIP), optionally voted inside SAM masks.

Class maps (``semantic``) have class ``i`` at value ``i`` and :data:`UNLABELED` (255) where
nothing was assigned. Instance backends paint their masks lowest score first (the most
confident mask wins a pixel); dense CLIP labels every pixel unless ``unlabeled_below`` is set.

Panoptic output follows the COCO panoptic format: an RGB PNG whose pixels encode segment ids
(``id = R + 256 G + 256^2 B``, 0 = void) and a JSON with ``segments_info`` (``id``,
``category_id``, ``area``, ``bbox`` XYWH, ``iscrowd``) and ``categories`` (``isthing``).
Things are instances; each stuff class is one segment (all its pixels), as COCO defines
stuff. Stuff comes from dense CLIP when a CLIP model is given for it, else from the instance
backend's masks of the stuff names merged per class. Things are drawn over stuff; segments
smaller than ``min_area`` pixels after overlaps are resolved are dropped (void).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from anyseg import cancel
from anyseg.errors import InputError, ModelError
from anyseg.models.families import SEMANTIC, TEXT
from anyseg.models.registry import models_with
from anyseg.text.vocab import UNLABELED, ClassName, parse_classes
from anyseg.types import Masks, Prompt

#: text-model names tried by ``auto``, best first (the first present locally is used): derived from
#: the family records (:func:`anyseg.models.registry.models_with`), as registered at import
AUTO_TEXT_ORDER = tuple(s.name for s in models_with(TEXT))
#: for class maps ``auto`` prefers dense CLIP (every pixel gets a class), then the instance backends
AUTO_SEMANTIC_ORDER = tuple(s.name for s in models_with(SEMANTIC))
#: queries that stand for "no class" when CLIP labels masks
BACKGROUND_QUERIES = ("background",)
#: Grounded-SAM's class-agnostic box NMS threshold
GROUNDED_NMS = 0.8
#: CLIP mask labels: least probability for a class to be kept
CLIP_THRESHOLD = 0.5
DENSE_METHODS = ("sclip", "maskclip")


# -- parameters ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextParams:
    """Thresholds shared by the backends (``None``: the backend's own default).

    Attributes:
        threshold: least instance score (SAM 3's detection score, CLIP's class probability).
        box_threshold, text_threshold: detector thresholds (Grounding DINO uses both).
        nms: class-agnostic IoU threshold over detector boxes (Grounded-SAM: 0.8).
        top: keep at most this many instances over all classes, best first (``1`` for
            referring expressions).
        min_area: drop instances with fewer pixels.
    """

    threshold: float | None = None
    box_threshold: float | None = None
    text_threshold: float | None = None
    nms: float = GROUNDED_NMS
    top: int | None = None
    min_area: int = 0

    def __post_init__(self) -> None:
        for name in ("threshold", "box_threshold", "text_threshold", "nms"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= float(v) <= 1.0:
                raise InputError(f"{name} must be in [0, 1]; got {v}")
        if self.top is not None and int(self.top) < 1:
            raise InputError(f"top must be at least 1; got {self.top}")
        if int(self.min_area) < 0:
            raise InputError(f"min_area must be >= 0; got {self.min_area}")


class InstanceBackend(Protocol):
    name: str

    def instances(self, image: np.ndarray, classes: Sequence[ClassName], params: TextParams) -> Masks:
        """Masks with ``scores``, ``labels`` (class label), ``data["class_id"]``, ``data["phrase"]``."""


def _empty(h: int, w: int) -> Masks:
    return Masks(np.zeros((0, h, w), bool), labels=np.zeros(0, dtype=object),
                 data={"class_id": np.zeros(0, np.int64), "phrase": np.zeros(0, dtype=object)})


def _labelled(masks: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, phrases: Sequence[str],
              classes: Sequence[ClassName], boxes: np.ndarray | None = None, **extra: np.ndarray) -> Masks:
    labels = np.array([classes[int(c)].label for c in class_ids], dtype=object)
    return Masks(masks, scores=scores, boxes=boxes, labels=labels,
                 data={"class_id": np.asarray(class_ids, np.int64), "phrase": np.array(list(phrases), dtype=object),
                       **extra})


# -- backends --------------------------------------------------------------------------------------
@dataclass
class Sam3Backend:
    """SAM 3's concept prompts (:mod:`anyseg.text.sam3`)."""

    segmenter: Any
    name: str = "sam3"

    def instances(self, image: np.ndarray, classes: Sequence[ClassName], params: TextParams) -> Masks:
        return self.segmenter.segment(image, classes, threshold=params.threshold)


@dataclass
class GroundedBackend:
    """Detector boxes from the text -> NMS -> one SAM-family mask per box (Grounded-SAM)."""

    detector: Any
    predictor: Any
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.detector.name}+{self.predictor.name}"

    def instances(self, image: np.ndarray, classes: Sequence[ClassName], params: TextParams) -> Masks:
        from anyseg.masks.boxes import nms

        h, w = image.shape[:2]
        det = self.detector.detect(image, classes, box_threshold=params.box_threshold,
                                   text_threshold=params.text_threshold)
        if len(det) == 0:
            return _empty(h, w)
        cancel.check()  # between the detector and the masks
        det = det.select(nms(det.boxes, det.scores, params.nms))
        if params.top is not None:
            det = det.select(np.arange(min(len(det), int(params.top))))
        emb = self.predictor.embed(image)
        prompts = [Prompt(box=b.tolist()) for b in det.boxes]
        out = self.predictor.predict_batch(emb, prompts, multimask=False)
        masks = np.stack([m.masks[0] for m in out])
        mask_scores = np.array([float(m.scores[0]) for m in out], np.float32)
        return _labelled(masks, det.scores, det.labels, det.phrases, classes, detector_box=det.boxes,
                        mask_score=mask_scores)


@dataclass
class ClipMaskBackend:
    """Segment-everything masks labelled by CLIP (masked crops, template ensemble, background queries)."""

    clip: Any
    generator: Any  # a Predictor for anyseg.tasks.everything.generate
    everything_params: Any = None
    background: Sequence[str] = BACKGROUND_QUERIES
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.clip.name}+{self.generator.name}"

    def instances(self, image: np.ndarray, classes: Sequence[ClassName], params: TextParams) -> Masks:
        from anyseg.tasks.everything import EverythingParams, generate

        p = self.everything_params
        if p is None:
            p = EverythingParams.for_family(self.generator.family)
        masks = generate(self.generator, image, p)
        cancel.check()  # between the masks and their labels
        return label_masks(self.clip, image, masks, classes, threshold=params.threshold, background=self.background)


def label_masks(clip: Any, image: np.ndarray, masks: Masks, classes: Sequence[ClassName],
                threshold: float | None = None, background: Sequence[str] = BACKGROUND_QUERIES,
                keep_all: bool = False) -> Masks:
    """Class labels for ``masks`` from CLIP (softmax over the classes and the background queries).

    Each mask gets the class with the highest probability; ``data["class_prob"]`` holds it.
    Unless ``keep_all``, masks whose best query is a background query or whose probability
    is below ``threshold`` (default :data:`CLIP_THRESHOLD`) are dropped, and the rest are
    sorted by probability. With ``keep_all`` every mask stays in its order, and masks that
    would be dropped get the label ``""`` and ``class_id`` -1.
    """
    h, w = image.shape[:2]
    if len(masks) == 0:
        return _empty(h, w)
    thr = CLIP_THRESHOLD if threshold is None else float(threshold)
    names = {n.lower() for c in classes for n in c.names}
    bg = [ClassName(b, ()) for b in background if b.lower() not in names]
    probs = np.asarray(clip.classify_masks(image, masks, [*classes, *bg]), dtype=np.float32)
    best = probs.argmax(axis=1)
    prob = probs[np.arange(len(best)), best]
    ok = (best < len(classes)) & (prob >= thr)
    if keep_all:
        class_id = np.where(ok, best, -1)
        labels = np.array([classes[c].label if c >= 0 else "" for c in class_id], dtype=object)
        data = {**masks.data, "class_id": class_id.astype(np.int64), "class_prob": prob, "phrase": labels.copy()}
        return Masks(masks.masks, scores=masks.scores, boxes=masks.boxes, labels=labels, data=data)
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(-prob[idx], kind="stable")]
    sel = masks[idx] if len(idx) else None
    if sel is None:
        return _empty(h, w)
    return _labelled(sel.masks, prob[idx], best[idx], [classes[c].label for c in best[idx]], classes,
                     boxes=sel.boxes, mask_score=sel.scores, class_prob=prob[idx])


def find_instances(image: np.ndarray, classes: Sequence[ClassName] | str, backend: InstanceBackend,
                   params: TextParams | None = None) -> Masks:
    """Every instance of ``classes`` in ``image``: sorted by score, ``top`` and ``min_area`` applied."""
    from anyseg.models.base import check_image

    image = check_image(image)
    if isinstance(classes, str):
        classes = parse_classes(classes)
    if not classes:
        raise InputError("no classes or phrases given: say what to segment")
    params = params or TextParams()
    cancel.check()
    out = backend.instances(image, classes, params)
    cancel.check()
    if len(out) and params.min_area > 0:
        big = np.flatnonzero(out.areas >= params.min_area)
        out = out[big] if len(big) else _empty(*image.shape[:2])
    if len(out):
        order = np.argsort(-out.scores, kind="stable")
        if params.top is not None:
            order = order[: int(params.top)]
        out = out[order]
    return out


# -- class maps ------------------------------------------------------------------------------------
@dataclass
class DenseClipSemantic:
    """Training-free dense CLIP class maps, optionally voted inside segment-everything masks."""

    clip: Any
    method: str = "sclip"
    refine: Any = None  # a Predictor: vote inside its segment-everything masks
    unlabeled_below: float | None = None  # softmax probability (CLIP's logit scale) under which pixels stay unlabeled
    name: str = ""

    def __post_init__(self) -> None:
        if self.method not in DENSE_METHODS:
            raise InputError(f"unknown dense CLIP method {self.method!r}; expected one of {', '.join(DENSE_METHODS)}")
        if self.unlabeled_below is not None and not 0.0 <= self.unlabeled_below <= 1.0:
            raise InputError(f"unlabeled_below must be in [0, 1]; got {self.unlabeled_below}")
        self.name = self.name or (f"{self.clip.name}:{self.method}" + (f"+{self.refine.name}" if self.refine else ""))

    def logits(self, image: np.ndarray, classes: Sequence[ClassName]) -> np.ndarray:
        """``(C, H, W)`` cosine similarities (voted inside masks when ``refine`` is set)."""
        logits = self.clip.dense_logits(image, classes, method=self.method)
        cancel.check()  # between the dense logits and the refinement
        if self.refine is not None:
            from anyseg.tasks.everything import EverythingParams, generate
            from anyseg.text.clip import vote_in_masks

            masks = generate(self.refine, image, EverythingParams.for_family(self.refine.family))
            logits = vote_in_masks(logits, masks)
        return logits

    def class_map(self, image: np.ndarray, classes: Sequence[ClassName]) -> np.ndarray:
        logits = self.logits(image, classes)
        out = logits.argmax(axis=0).astype(np.uint8)
        if self.unlabeled_below is not None:
            scale = float(getattr(self.clip, "logit_scale", 100.0))
            z = scale * (logits - logits.max(axis=0, keepdims=True))
            prob = 1.0 / np.exp(z).sum(axis=0)
            out[prob < self.unlabeled_below] = UNLABELED
        return out


@dataclass
class InstanceSemantic:
    """Class maps painted from an instance backend's masks (lowest score first, so the best wins)."""

    backend: Any
    params: TextParams = field(default_factory=TextParams)

    @property
    def name(self) -> str:
        return self.backend.name

    def class_map(self, image: np.ndarray, classes: Sequence[ClassName]) -> np.ndarray:
        masks = find_instances(image, classes, self.backend, self.params)
        return paint(masks, image.shape[:2])


def paint(masks: Masks, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` uint8 class map from labelled masks: lowest score painted first, unlabeled elsewhere."""
    out = np.full(size, UNLABELED, dtype=np.uint8)
    if len(masks) == 0:
        return out
    ids = np.asarray(masks.data["class_id"], dtype=np.int64)
    for i in np.argsort(masks.scores, kind="stable"):
        if ids[i] >= 0:
            out[masks.masks[i]] = ids[i]
    return out


def semantic_map(image: np.ndarray, classes: Sequence[ClassName] | str, backend: Any) -> np.ndarray:
    """``(H, W)`` uint8 class map: class ``i`` = ``i``, :data:`UNLABELED` = 255."""
    from anyseg.models.base import check_image

    image = check_image(image)
    if isinstance(classes, str):
        classes = parse_classes(classes)
    out = np.asarray(backend.class_map(image, classes))
    if out.shape != image.shape[:2]:
        raise ModelError(f"{backend.name} returned a {out.shape} class map for a {image.shape[:2]} image")
    return out


# -- panoptic --------------------------------------------------------------------------------------
@dataclass
class Panoptic:
    """A panoptic segmentation: ``(H, W)`` int32 segment ids (0 = void) and their info."""

    ids: np.ndarray
    segments: list[dict]  # {"id", "category_id", "label", "isthing", "score", "area", "bbox"}
    categories: list[dict]  # {"id", "name", "isthing", "color"}


def panoptic(image: np.ndarray, things: Sequence[ClassName] | str, stuff: Sequence[ClassName] | str,
             backend: InstanceBackend, stuff_backend: Any = None, params: TextParams | None = None,
             min_area: int = 64) -> Panoptic:
    """Things as instances over stuff regions, in COCO panoptic terms (see the module docstring).

    Category ids: things ``1..T`` in the given order, then stuff ``T+1..T+S``.
    """
    from anyseg.models.base import check_image
    from anyseg.masks.overlay import palette
    from anyseg.text.vocab import disjoint

    image = check_image(image)
    things = parse_classes(things, "thing classes") if isinstance(things, str) else list(things)
    stuff = parse_classes(stuff, "stuff classes") if isinstance(stuff, str) else list(stuff)
    if not things and not stuff:
        raise InputError("panoptic needs thing and/or stuff classes")
    disjoint(things, stuff)
    if min_area < 0:
        raise InputError(f"min_area must be >= 0; got {min_area}")
    params = params or TextParams()
    h, w = image.shape[:2]
    cats = [ClassName(c.label, c.synonyms) for c in (*things, *stuff)]
    colours = palette(len(cats))
    categories = [{"id": k + 1, "name": c.label, "isthing": int(k < len(things)),
                   "color": [int(v) for v in colours[k]]} for k, c in enumerate(cats)]
    seg_cat = np.zeros(h * w, dtype=np.int32)  # pixel -> category id (0 void), stuff first
    if stuff:
        if stuff_backend is not None:
            smap = semantic_map(image, stuff, stuff_backend)
        else:
            smap = paint(find_instances(image, stuff, backend, params), (h, w)) if stuff else None
        valid = smap != UNLABELED
        seg_cat[valid.ravel()] = smap[valid].astype(np.int32) + len(things) + 1
    ids = np.zeros(h * w, dtype=np.int32)
    segments: list[dict] = []
    next_id = 1
    for k in range(len(things), len(cats)):  # one segment per stuff class
        sel = seg_cat == k + 1
        if sel.any():
            ids[sel] = next_id
            segments.append({"id": next_id, "category_id": k + 1, "score": 1.0})
            next_id += 1
    cancel.check()  # between stuff and things
    if things:
        inst = find_instances(image, things, backend, params)
        for i in np.argsort(inst.scores, kind="stable"):  # best last: it wins overlaps
            ids[inst.masks[i].ravel()] = next_id
            segments.append({"id": next_id, "category_id": int(inst.data["class_id"][i]) + 1,
                             "score": round(float(inst.scores[i]), 6)})
            next_id += 1
    ids = ids.reshape(h, w)
    kept, final = [], np.zeros_like(ids)
    for s in segments:
        m = ids == s["id"]
        area = int(m.sum())
        if area == 0 or area < min_area:
            continue
        new_id = len(kept) + 1
        final[m] = new_id
        ys, xs = np.nonzero(m)
        cat = categories[s["category_id"] - 1]
        kept.append({"id": new_id, "category_id": s["category_id"], "label": cat["name"], "isthing": cat["isthing"],
                     "score": s["score"], "area": area,
                     "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]})
    return Panoptic(final, kept, categories)


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """COCO panoptic encoding: ``(H, W)`` ids -> ``(H, W, 3)`` uint8 with ``id = R + 256 G + 256^2 B``."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


# -- loading ---------------------------------------------------------------------------------------
def resolve_text_model(name: str, capability: str = TEXT) -> str:
    """``auto`` -> the best text model present locally for ``capability`` (:func:`anyseg.models.resolve`);
    a name or folder that cannot read text, or no text model present, is a one-line :class:`ModelError`."""
    from anyseg.models.resolver import resolve

    return resolve(name, capability).name


def _masks_model(predictor: Any, sam: str, sam_weights: str | None, device: str | None, allow_download: bool,
                 notice: bool) -> Any:
    """The promptable model that turns boxes (or everything's points) into masks: ``predictor``, else ``sam`` loaded."""
    if predictor is not None:
        return predictor
    from anyseg.models import load_model
    from anyseg.models.families import find_family

    loaded = load_model(sam, weights=sam_weights, device=device, allow_download=allow_download, quiet=False)
    family = find_family(getattr(loaded, "family", ""))
    if notice and family is not None and family.baseline:
        print(f"anyseg: notice: masks from the detector's boxes by the {family.title} engine (GrabCut); "
              "SAM-family weights give better masks", file=sys.stderr)
    return loaded


def load_instance_backend(model: str = "auto", sam: str = "auto", weights: str | None = None,
                          sam_weights: str | None = None, device: str | None = None,
                          allow_download: bool = True, predictor: Any = None) -> InstanceBackend:
    """An instance backend by model name or folder: SAM 3, a detector (+ ``sam``), or CLIP (+ ``sam``'s everything).

    Which one is read from the family record: its ``text`` loader builds the adapter, and its
    capabilities (``concepts``, ``detect``, ``labels``) say how masks are made. ``predictor`` (an
    already loaded promptable model, e.g. the service's) is used instead of loading ``sam``.
    """
    from anyseg.models.families import CONCEPTS, DETECT, LABELS
    from anyseg.models.resolver import resolve_folder

    name = resolve_text_model(model)
    spec, folder = resolve_folder(name, TEXT, weights=weights, allow_download=allow_download)
    family = spec.family_record
    adapter = family.build("text", spec, folder, device)
    if family.has(CONCEPTS):
        return Sam3Backend(adapter)
    if family.has(DETECT):
        return GroundedBackend(adapter, _masks_model(predictor, sam, sam_weights, device, allow_download, True))
    if family.has(LABELS):
        return ClipMaskBackend(adapter, _masks_model(predictor, sam, sam_weights, device, allow_download, False))
    raise ModelError(f"{spec.name}: the {family.title} family reads text but declares none of the capabilities "
                     f"{CONCEPTS}, {DETECT}, {LABELS} that say how its masks are made")


def load_semantic_backend(model: str = "auto", method: str = "sclip", refine: str | None = None,
                          sam: str = "auto", weights: str | None = None, sam_weights: str | None = None,
                          device: str | None = None, unlabeled_below: float | None = None,
                          params: TextParams | None = None, allow_download: bool = True) -> Any:
    """A class-map backend: dense CLIP for CLIP names (``method`` ``sclip``/``maskclip``,
    ``refine`` = a SAM-family name to vote inside its masks, or ``masks`` for CLIP-labelled
    everything masks), else instances painted by SAM 3 / a grounded detector."""
    from anyseg.models import load_model
    from anyseg.models.families import LABELS
    from anyseg.models.resolver import resolve, resolve_folder

    spec = resolve(model, SEMANTIC)  # auto: dense CLIP first, then the instance backends
    name = spec.name
    if spec.family_record.has(LABELS) and method != "masks":
        if method not in DENSE_METHODS:
            raise InputError(f"unknown method {method!r}; expected sclip, maskclip or masks")
        spec, folder = resolve_folder(name, LABELS, weights=weights, allow_download=allow_download)
        clip = spec.family_record.build("text", spec, folder, device)
        refiner = load_model(refine, device=device, allow_download=allow_download) if refine else None
        return DenseClipSemantic(clip, method=method, refine=refiner, unlabeled_below=unlabeled_below)
    backend = load_instance_backend(name, sam=sam, weights=weights, sam_weights=sam_weights, device=device,
                                    allow_download=allow_download)
    return InstanceSemantic(backend, params or TextParams())


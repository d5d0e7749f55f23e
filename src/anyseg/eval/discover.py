"""``anyseg eval discover``: object discovery and unsupervised segmentation, scored as the field does.

Three protocols (``--protocol``), each over a :class:`anyseg.discover.Discoverer`:

``saliency`` (single-object saliency: TokenCut's / SelfMask's ECSSD, DUTS, DUT-OMRON tables)
    The prediction is the union of the returned masks (methods of kind ``objects``; TokenCut
    returns one). Per image: IoU, pixel accuracy, precision and recall; the summary is the mean
    IoU, the mean accuracy and max F-beta (beta^2 = 0.3). TokenCut's
    ``unsupervised_saliency_detection/metric.py`` binarises the prediction at 255 thresholds
    (``pred > t``), takes each image's F-beta per threshold (precision 1 for an empty
    prediction, recall 1 for an empty ground truth, NaN -> 0), averages over images per
    threshold and keeps the best threshold: ``maxFbeta`` here. Discovered masks are binary, so
    every threshold gives the same mask: one point (``fbeta_thresholds: 1``), and max F-beta is
    the mean per-image F-beta. ``maxFbeta_meanPR`` is the other common convention (the SOD
    toolboxes': F-beta of the mean precision and the mean recall). Differences: pixels the
    ground truth ignores (GrabCut's 128 band, DAVIS's 255) are left out of every count
    (TokenCut's sets have none); SelfMask squares beta^2 again (0.09), which is not followed.
``corloc`` (the VOC07 / VOC12 / COCO20k convention of LOST and TokenCut's ``main_tokencut.py``)
    An image is found (1) when the tight box of any predicted mask has box IoU >= 0.5 with any
    ground-truth box, else 0; CorLoc is the mean. Boxes are pixel edges (``x2`` = last column
    + 1); VOC XML boxes are shifted by one as TokenCut does (``xmin - 1``, ``ymin - 1``).
    Ground-truth boxes: ``Annotations/*.xml`` (VOC; every object, TokenCut's default keeps
    the difficult ones), DAVIS object ids (one box per object), or the connected components
    (8-connected) of a binary mask with at least 1% of its foreground (Kvasir's several
    polyps; JPEG noise specks are no object).
``unsupervised-semantic`` (label maps: CamVid's ``labels/``, ``--void-id`` ignored)
    Each image's partition (kind ``partition``) is compared with the classes present. The
    Hungarian matching (``scipy.optimize.linear_sum_assignment``, most matched pixels) is
    ``global`` (STEGO / PiCIE: every image's segments clustered across the data set into
    K = ``--classes`` clusters (default: the number of classes present) by
    :func:`anyseg.discover.spectral.cluster_segments` on ``Masks.data["feature"]``, then one
    matching of clusters to classes on the data-set confusion matrix) or ``per-image`` (one
    matching per image of its segments, grouped by their labels, to its classes, then the
    counts summed over the data set: how class-agnostic methods such as DiffSeg are reported,
    google/diffseg ``utils.hungarian_matching``). mIoU = the mean over the classes present of
    TP / (TP + FP + FN) and pixel accuracy = TP / counted pixels. Unmatched clusters (segments)
    and uncovered pixels count as wrong (misses of the true class, no class's false positive).
    Difference from DiffSeg: it matches over every class of the data set, so a surplus
    segment may be matched to a class absent from the image (a false positive there); here
    only the image's classes are matched.

Images whose ground truth has no object are skipped (recorded as such, and counted). Each
finished image is one row of the resumable store (a rerun skips it); segment features for the
global matching go to ``features/NAME.npz`` in the run folder. The summary also has the mean
seconds per image (discovery only) and ``maxrss_mb`` (``resource.getrusage``'s peak).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from anyseg.errors import InputError, ModelError

__all__ = ["PROTOCOLS", "MATCHINGS", "BETA2", "CORLOC_IOU", "MAX_CLASSES", "saliency_scores", "fbeta", "max_fbeta",
           "box_iou", "corloc_hit", "component_boxes", "read_voc_boxes", "hungarian_counts", "class_scores",
           "partition_counts", "read_discover_data", "add_arguments", "run_discover_eval"]

PROTOCOLS = ("saliency", "corloc", "unsupervised-semantic")
MATCHINGS = ("global", "per-image")
BETA2 = 0.3
CORLOC_IOU = 0.5
#: most clusters ``--classes`` may ask for; largest ``--stride``; VOC XML files are at most this big
MAX_CLASSES = 1000
MAX_STRIDE = 10_000
MAX_XML_BYTES = 1 << 20
#: a ground-truth component smaller than this share of the mask's foreground is no object
MIN_COMPONENT = 0.01
_NO_OBJECT = "no ground-truth object"


# -- saliency -----------------------------------------------------------------------------------
def saliency_scores(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> dict[str, float]:
    """IoU, pixel accuracy, precision, recall and F-beta of one binary prediction (TokenCut's
    ``metric.py``: precision 1 when nothing is predicted, recall 1 when the gt is empty; an empty
    union gives IoU 1); ``ignore``d pixels are left out of every count."""
    keep = np.ones(gt.shape, bool) if ignore is None else ~np.asarray(ignore, bool)
    p, g = np.asarray(pred, bool) & keep, np.asarray(gt, bool) & keep
    tp, n_p, n_g, union = int((p & g).sum()), int(p.sum()), int(g.sum()), int((p | g).sum())
    counted = int(keep.sum())
    precision = tp / n_p if n_p else 1.0
    recall = tp / n_g if n_g else 1.0
    return {"iou": tp / union if union else 1.0,
            "accuracy": (counted - int((p ^ g).sum())) / counted if counted else 1.0,
            "precision": precision, "recall": recall, "fbeta": fbeta(precision, recall)}


def fbeta(precision: Any, recall: Any, beta2: float = BETA2) -> Any:
    """``(1 + b2) P R / (b2 P + R)``, 0 where that is undefined (TokenCut's NaN -> 0)."""
    p, r = np.asarray(precision, np.float64), np.asarray(recall, np.float64)
    den = beta2 * p + r
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(den > 0, (1 + beta2) * p * r / np.where(den > 0, den, 1), 0.0)
    return float(f) if f.ndim == 0 else f


def max_fbeta(precisions: Any, recalls: Any, beta2: float = BETA2) -> tuple[float, float]:
    """``(maxFbeta, maxFbeta_meanPR)`` of ``(N images, T thresholds)`` precisions and recalls:
    the best threshold's mean per-image F-beta (TokenCut's ``F_max``), and the best threshold's
    F-beta of the mean precision and mean recall (the SOD toolboxes')."""
    p, r = np.atleast_2d(np.asarray(precisions, np.float64)), np.atleast_2d(np.asarray(recalls, np.float64))
    if p.shape != r.shape or p.size == 0:
        raise InputError(f"precisions and recalls must be non-empty (N, T) arrays of one shape; got {p.shape} "
                         f"and {r.shape}")
    return float(fbeta(p, r, beta2).mean(axis=0).max()), float(np.max(fbeta(p.mean(axis=0), r.mean(axis=0), beta2)))


# -- corloc ----------------------------------------------------------------------------------------
def box_iou(box: Any, boxes: Any) -> np.ndarray:
    """IoU of one XYXY box with each of ``(M, 4)`` boxes (continuous coordinates, as TokenCut's
    ``bbox_iou``); an empty union gives 0."""
    b, bs = np.asarray(box, np.float64).reshape(4), np.asarray(boxes, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(b[2], bs[:, 2]) - np.maximum(b[0], bs[:, 0]), 0, None)
    ih = np.clip(np.minimum(b[3], bs[:, 3]) - np.maximum(b[1], bs[:, 1]), 0, None)
    inter = iw * ih
    union = (b[2] - b[0]) * (b[3] - b[1]) + (bs[:, 2] - bs[:, 0]) * (bs[:, 3] - bs[:, 1]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def corloc_hit(pred_boxes: Any, gt_boxes: Any, threshold: float = CORLOC_IOU) -> tuple[int, float]:
    """``(1 if any predicted box has IoU >= threshold with any gt box else 0, the best IoU)``."""
    pred, gt = np.asarray(pred_boxes, np.float64).reshape(-1, 4), np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    best = max((float(box_iou(b, gt).max()) for b in pred), default=0.0) if len(gt) else 0.0
    return int(best >= threshold), best


def component_boxes(mask: np.ndarray, min_fraction: float = MIN_COMPONENT) -> np.ndarray:
    """``(M, 4)`` XYXY boxes of the 8-connected components of ``mask`` with at least
    ``min_fraction`` of its foreground, largest first."""
    import cv2

    n, _, stats, _ = cv2.connectedComponentsWithStats(np.asarray(mask, np.uint8), connectivity=8)
    total = int(stats[1:, cv2.CC_STAT_AREA].sum())
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= max(1.0, min_fraction * total)]
    keep.sort(key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    x, y, w, h = (stats[keep, k].astype(np.float64) for k in (0, 1, 2, 3))
    return np.stack([x, y, x + w, y + h], axis=1) if keep else np.zeros((0, 4))


def read_voc_boxes(path: Path) -> np.ndarray:
    """``(M, 4)`` boxes of a VOC XML annotation, in pixel edges (``xmin - 1, ymin - 1, xmax, ymax``)."""
    import xml.etree.ElementTree as ET

    if path.stat().st_size > MAX_XML_BYTES:
        raise InputError(f"annotation {path} is over {MAX_XML_BYTES >> 20} MB: not a VOC annotation")
    data = path.read_bytes()
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise InputError(f"annotation {path} declares a DOCTYPE or entities; VOC annotations have none")
    try:
        boxes = []
        for obj in ET.fromstring(data).iter("object"):
            bb = obj.find("bndbox")
            x1, y1, x2, y2 = (float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append([x1 - 1, y1 - 1, x2, y2])
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        raise InputError(f"annotation {path} is not a VOC annotation with numeric bndbox corners ({e})") from None
    return np.asarray(boxes, np.float64).reshape(-1, 4)


# -- unsupervised semantic ------------------------------------------------------------------------
def hungarian_counts(hist: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tp, fp, fn)`` per class (column) of a ``(predicted segments or clusters, classes)`` pixel
    count matrix after the one-to-one matching with most matched pixels; rows left unmatched
    count as misses of their pixels' classes (no class's false positives)."""
    from scipy.optimize import linear_sum_assignment

    h = np.asarray(hist, np.int64)
    if h.ndim != 2:
        raise InputError(f"hist must be a (segments, classes) count matrix; got shape {h.shape}")
    tp, fp = np.zeros(h.shape[1], np.int64), np.zeros(h.shape[1], np.int64)
    if h.size:
        rows, cols = linear_sum_assignment(h, maximize=True)
        tp[cols] = h[rows, cols]
        fp[cols] = h[rows].sum(axis=1) - h[rows, cols]
    return tp, fp, h.sum(axis=0) - tp


def class_scores(tp: Any, fp: Any, fn: Any, names: Sequence[Any] | None = None) -> dict[str, Any]:
    """``mIoU`` (mean over classes with pixels of TP / (TP + FP + FN)), ``pixel_accuracy``
    (TP / (TP + FN) summed) and ``per_class`` ``{name: {"IoU", "Acc"}}``."""
    tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
    names = list(range(len(tp))) if names is None else list(names)
    den, gt = tp + fp + fn, tp + fn
    iou = [float(t / d) if d else None for t, d in zip(tp, den)]
    acc = [float(t / g) if g else None for t, g in zip(tp, gt)]
    kept = [v for v in iou if v is not None]
    return {"mIoU": round(float(np.mean(kept)), 6) if kept else None,
            "pixel_accuracy": round(float(tp.sum() / gt.sum()), 6) if gt.sum() else None,
            "per_class": {str(n): {"IoU": None if i is None else round(i, 6), "Acc": None if a is None else round(a, 6)}
                          for n, i, a in zip(names, iou, acc)}}


def partition_counts(masks: np.ndarray, labels: np.ndarray, void_id: int | None) -> dict[str, Any]:
    """One image's ``classes`` (ids present), ``hist`` (segment x class pixels; a pixel of two
    segments goes to the first) and ``uncovered`` (each class's pixels in no segment)."""
    masks = np.asarray(masks, bool)
    seg = np.full(labels.shape, -1, np.int32)
    for i in range(masks.shape[0]):
        seg[masks[i] & (seg < 0)] = i
    keep = labels != void_id if void_id is not None else np.ones(labels.shape, bool)
    classes, index = np.unique(labels[keep], return_inverse=True)
    c = len(classes)
    counts = np.bincount((seg[keep].astype(np.int64) + 1) * c + index.ravel(),
                         minlength=(masks.shape[0] + 1) * c).reshape(-1, c) if c else np.zeros((masks.shape[0] + 1, 0))
    return {"classes": classes.astype(int).tolist(), "hist": counts[1:].astype(int).tolist(),
            "uncovered": counts[0].astype(int).tolist()}


def _image_matching(r: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image matching: the image's segments grouped by their labels, matched to its classes."""
    hist = np.asarray(r["hist"], np.int64).reshape(-1, len(r["classes"]))
    groups = {}
    for row, label in zip(hist, r["segment_labels"]):
        groups[label] = groups.get(label, 0) + row
    tp, fp, fn = hungarian_counts(np.stack(list(groups.values())) if groups else hist)
    return tp, fp, fn + np.asarray(r["uncovered"], np.int64)


def _scatter(values: np.ndarray, classes: Sequence[int], index: dict[int, int], size: int) -> np.ndarray:
    out = np.zeros(size, np.int64)
    np.add.at(out, [index[c] for c in classes], values)
    return out


# -- data -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiscoverItem:
    """One image to score: its ``name``, ``image_path`` and a ground-truth ``reader``:
    ``reader() -> (foreground, ignore, boxes)`` (``labels`` for the semantic layout)."""

    name: str
    image_path: Path
    reader: Callable[[], Any]

    def load_image(self) -> np.ndarray:
        from anyseg.io.images import load_image

        return load_image(self.image_path)


def _mask_item(sample: Any) -> DiscoverItem:
    def read() -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        fg, ignore = sample.load_gt()
        return fg, ignore, component_boxes(fg)

    return DiscoverItem(sample.name, sample.image_path, read)


def _davis_item(seq: Any, index: int) -> DiscoverItem:
    def read() -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        from anyseg.types import masks_to_boxes

        ids = seq.load_annotation(index)
        objects = [k for k in np.unique(ids).tolist() if k not in (0, 255)]
        ignore = ids == 255
        boxes = masks_to_boxes(np.stack([ids == k for k in objects])) if objects else np.zeros((0, 4))
        return (ids > 0) & ~ignore, ignore if ignore.any() else None, boxes.astype(np.float64)

    return DiscoverItem(f"{seq.name}/{seq.frames[index].stem}", seq.frames[index], read)


def _voc_items(root: Path) -> list[DiscoverItem]:
    from anyseg.eval.datasets import files_by_stem

    images = files_by_stem(root / "JPEGImages", "image")
    items = []
    for xml in sorted((root / "Annotations").glob("*.xml")):
        if xml.stem not in images:
            raise InputError(f"no image for annotation {xml.name} in {root / 'JPEGImages'} (paired by file stem)")
        items.append(DiscoverItem(xml.stem, images[xml.stem], lambda xml=xml: (None, None, read_voc_boxes(xml))))
    return items


def _davis_items(root: Path, resolution: str, stride: int | None) -> list[DiscoverItem]:
    from anyseg.eval.datasets import read_davis

    items = []
    for seq in read_davis(root, resolution=resolution, require_all_annotations=False):
        picked = range(0, len(seq), stride) if stride else [0]
        items += [_davis_item(seq, i) for i in picked if seq.annotations[i] is not None]
    return items


def read_discover_data(root: str | Path, protocol: str, *, stride: int | None = None, resolution: str = "480p",
                       void_id: int = 255, limit: int | None = None) -> tuple[str, list[DiscoverItem]]:
    """``(layout, items)`` of ``root`` for ``protocol``: ``masks`` (images/ + masks/: GrabCut,
    Kvasir), ``davis`` (the first frame of each sequence, or every ``stride``-th), ``voc``
    (JPEGImages/ + Annotations/*.xml, corloc only) or ``semantic`` (images/ + labels/)."""
    from anyseg.eval import datasets

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder not found: {root}")
    if protocol == "unsupervised-semantic":
        if not (root / "images").is_dir() or not (root / "labels").is_dir():
            raise InputError(f"not a semantic data folder: {root} has no images/ and labels/ (class-id label maps)")
        samples = datasets.read_semantic(root, 256, void_id=void_id, limit=limit)
        return "semantic", [DiscoverItem(s.name, s.image_path, s.load_labels) for s in samples]
    if (root / "images").is_dir() and (root / "masks").is_dir():
        layout, items = "masks", [_mask_item(s) for s in datasets.read_mask_folder(root)]
    elif (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir():
        layout = "voc" if any((root / "Annotations").glob("*.xml")) else "davis"
        if layout == "voc" and protocol == "saliency":
            raise InputError(f"{root} holds VOC box annotations (Annotations/*.xml): saliency needs masks "
                             "(images/ + masks/, or DAVIS); use --protocol corloc")
        items = _voc_items(root) if layout == "voc" else _davis_items(root, resolution, stride)
    else:
        raise InputError(f"not a discovery data folder: {root} has neither images/ + masks/, DAVIS JPEGImages/ + "
                         "Annotations/, nor VOC JPEGImages/ + Annotations/*.xml")
    if stride is not None and layout != "davis":
        raise InputError(f"--stride applies to DAVIS folders; {root} is a {layout} folder")
    if not items:
        raise InputError(f"no annotated images in {root}")
    return layout, items[: limit or None]


# -- the command --------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``anyseg eval discover`` (``--limit``, ``--out``, ``--fresh`` are the eval CLI's)."""
    p.add_argument("--data", required=True, help="images/ + masks/ (GrabCut, Kvasir), DAVIS, VOC (corloc) or "
                   "images/ + labels/ (unsupervised-semantic)")
    p.add_argument("--protocol", required=True, choices=PROTOCOLS,
                   help="saliency (IoU, accuracy, max F-beta), corloc (box IoU >= 0.5), unsupervised-semantic (mIoU)")
    p.add_argument("--method", default="auto", help="discovery method: auto, tokencut, maskcut, spectral, diffseg, "
                   "classical (unsupervised-semantic: auto is spectral, else classical segments)")
    p.add_argument("--model", default=None, metavar="NAME|PATH", help="the method's model: a registry name (e.g. "
                   "dino-vits16) or a local model folder (default: the method's own)")
    p.add_argument("--objects", type=int, default=None, metavar="N", help="objects or segments per image")
    p.add_argument("--refine", default="none", choices=("none", "crf", "bilateral"), help="refinement (default none)")
    p.add_argument("--sam", default=None, metavar="MODEL", help="snap each discovered object to a SAM mask")
    p.add_argument("--classes", type=int, default=None, metavar="K",
                   help="global matching: clusters (default: the number of classes present)")
    p.add_argument("--matching", default="global", choices=MATCHINGS, help="unsupervised-semantic: global "
                   "(clusters across the data set, STEGO) or per-image (Hungarian per image, DiffSeg)")
    p.add_argument("--void-id", type=int, default=255, help="unsupervised-semantic: label id to ignore (CamVid: 11)")
    p.add_argument("--stride", type=int, default=None, metavar="S", help="DAVIS: every S-th frame (default: frame 0)")
    p.add_argument("--resolution", default="480p", help="DAVIS resolution folder (default 480p)")
    p.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout (the table to stderr)")


def _check_args(args: argparse.Namespace) -> None:
    from anyseg.discover.base import check_objects, method_factory

    if args.objects is not None:
        check_objects(args.objects, 1)
    if args.classes is not None and not 1 <= args.classes <= MAX_CLASSES:
        raise InputError(f"--classes must be in 1..{MAX_CLASSES}; got {args.classes}")
    if args.stride is not None and not 1 <= args.stride <= MAX_STRIDE:
        raise InputError(f"--stride must be in 1..{MAX_STRIDE}; got {args.stride}")
    semantic = args.protocol == "unsupervised-semantic"
    if not semantic and (args.classes is not None or args.matching != "global"):
        raise InputError("--classes and --matching apply to --protocol unsupervised-semantic")
    if args.method != "auto":
        method_factory(args.method)  # an unknown method: one line naming the known ones


def _discoverer(args: argparse.Namespace) -> Any:
    """The :class:`~anyseg.discover.Discoverer`, refused when its kind does not fit the protocol."""
    from anyseg.discover import Discoverer, auto_method

    method, options = args.method, {}
    if args.protocol == "unsupervised-semantic":
        if method == "auto":
            method = "spectral" if auto_method() == "tokencut" else "classical"
        if method == "classical":
            options["mode"] = "partition"
    d = Discoverer(method, model=args.model, refine=args.refine, sam=args.sam, device=args.device, **options)
    if args.protocol != "unsupervised-semantic" and d.kind == "partition":
        raise InputError(f"discovery method {d.name!r} returns a partition; use --protocol unsupervised-semantic")
    if args.protocol == "unsupervised-semantic" and d.kind != "partition":
        raise InputError(f"discovery method {d.name!r} returns objects, not a partition; use --protocol saliency or "
                         "corloc, or a partition method (spectral, diffseg, classical)")
    return d


def _discover(d: Any, image: np.ndarray, objects: int | None) -> tuple[Any, float]:
    t = time.perf_counter()
    masks = d.discover(image, objects=objects)
    seconds = time.perf_counter() - t
    if masks.masks.shape[1:] != image.shape[:2]:
        raise ModelError(f"discovery method {d.name!r} returned {masks.masks.shape[2]}x{masks.masks.shape[1]} masks "
                         f"for a {image.shape[1]}x{image.shape[0]} image")
    return masks, seconds


def _base_record(item: DiscoverItem, masks: Any, seconds: float) -> dict[str, Any]:
    score = float(np.max(masks.scores)) if masks.scores is not None and len(masks.scores) else 0.0
    return {"name": item.name, "masks": int(masks.masks.shape[0]), "score": round(score, 6),
            "seconds": round(seconds, 4)}


def _score_objects(d: Any, item: DiscoverItem, protocol: str, objects: int | None) -> dict[str, Any]:
    fg, ignore, boxes = item.reader()
    empty = len(boxes) == 0 if protocol == "corloc" else not fg.any()
    if empty:
        return {"name": item.name, "skipped": _NO_OBJECT}
    image = item.load_image()
    if fg is not None and fg.shape != image.shape[:2]:
        raise InputError(f"the ground truth of {item.image_path} is {fg.shape[1]}x{fg.shape[0]} but the image is "
                         f"{image.shape[1]}x{image.shape[0]}")
    masks, seconds = _discover(d, image, objects)
    rec = _base_record(item, masks, seconds)
    if protocol == "corloc":
        from anyseg.types import masks_to_boxes

        pred = masks_to_boxes(masks.masks[masks.masks.any(axis=(1, 2))])
        hit, best = corloc_hit(pred, boxes)
        return {**rec, "hit": hit, "best_iou": round(best, 6), "boxes": pred.round(2).tolist(),
                "gt_boxes": np.round(boxes, 2).tolist()}
    pred = masks.masks.any(axis=0) if len(masks.masks) else np.zeros(fg.shape, bool)
    s = saliency_scores(pred, fg, ignore)
    return {**rec, "iou": round(s["iou"], 6), "accuracy": round(s["accuracy"], 6), "fbeta": round(s["fbeta"], 6),
            "precision": [round(s["precision"], 6)], "recall": [round(s["recall"], 6)]}


def _feature_path(out_dir: Path, name: str) -> Path:
    return out_dir / "features" / f"{name}.npz"


def _score_partition(d: Any, item: DiscoverItem, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    from anyseg.io.atomic import atomic_open

    labels = item.reader()
    image = item.load_image()
    if labels.shape != image.shape[:2]:
        raise InputError(f"label map of {item.image_path} is {labels.shape[1]}x{labels.shape[0]} but the image is "
                         f"{image.shape[1]}x{image.shape[0]}")
    masks, seconds = _discover(d, image, args.objects)
    n = int(masks.masks.shape[0])
    feature = masks.data.get("feature") if masks.data else None
    if feature is None and args.matching == "global" and n:
        raise InputError(f"discovery method {d.name!r} gives no segment features (Masks.data['feature']): the global "
                         "matching clusters them; use --matching per-image")
    if feature is not None and n:
        path = _feature_path(out_dir, item.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as f:
            np.savez_compressed(f, feature=np.asarray(feature, np.float32).reshape(n, -1))
    own = masks.labels if masks.labels is not None else range(n)
    counts = partition_counts(masks.masks, labels, args.void_id)
    rec = {**_base_record(item, masks, seconds), **counts, "segment_labels": [str(v) for v in own],
           "features": feature is not None and n > 0}
    if counts["classes"]:
        s = class_scores(*_image_matching(rec))
        rec.update(image_mIoU=s["mIoU"], image_accuracy=s["pixel_accuracy"])
    return rec


def _cluster_ids(records: Sequence[dict], k: int, out_dir: Path) -> list[list[int]]:
    """Each image's segment -> global cluster id (-1: none) by ``cluster_segments`` (each segment
    stands in as a one-pixel mask of its own column, so that merged masks still name their segments)."""
    from anyseg.discover.spectral import cluster_segments
    from anyseg.types import Masks

    results, which = [], []
    for i, r in enumerate(records):
        n = len(r["hist"])
        if not n:
            continue
        path = _feature_path(out_dir, r["name"])
        if not r.get("features") or not path.is_file():
            raise InputError(f"no segment features for {r['name']} in {path.parent}: the global matching needs them; "
                             "rerun with --fresh, or use --matching per-image")
        with np.load(path) as z:
            feature = z["feature"]
        results.append(Masks(masks=np.eye(n, dtype=bool)[:, None, :], scores=np.ones(n, np.float32),
                             labels=np.arange(n), data={"feature": feature}))
        which.append(i)
    total = sum(len(m) for m in results)
    if k > total:
        raise InputError(f"--classes {k} is more than the {total} segments found: nothing to cluster into {k}")
    ids = [[-1] * len(r["hist"]) for r in records]
    for i, out in zip(which, cluster_segments(results, k, seed=0)):
        if out.masks.shape[1:] != (1, len(records[i]["hist"])) or out.labels is None:
            raise ModelError("cluster_segments returned masks unlike its input: cannot map clusters to segments")
        for mask, label in zip(out.masks, out.labels):
            for s in np.flatnonzero(mask[0]):
                ids[i][s] = int(label)
    return ids


def semantic_summary(records: Sequence[dict], matching: str, k: int | None, out_dir: Path) -> dict[str, Any]:
    """mIoU and pixel accuracy of the scored images under ``matching`` (module docstring)."""
    scored = [r for r in records if r["classes"]]
    classes = sorted({c for r in scored for c in r["classes"]})
    index, c = {cid: j for j, cid in enumerate(classes)}, len(classes)
    out: dict[str, Any] = {"matching": matching, "num_classes": c}
    if matching == "per-image":
        tp = fp = fn = np.zeros(c, np.int64)
        for r in scored:
            t, p, n = _image_matching(r)
            tp, fp, fn = (a + _scatter(b, r["classes"], index, c) for a, b in ((tp, t), (fp, p), (fn, n)))
    else:
        k = k or c
        hist, missed = np.zeros((k, c), np.int64), np.zeros(c, np.int64)
        for r, ids in zip(scored, _cluster_ids(scored, k, out_dir)):
            cols = [index[cid] for cid in r["classes"]]
            for row, cluster in zip(np.asarray(r["hist"], np.int64).reshape(-1, len(cols)), ids):
                if cluster < 0 or cluster >= k:
                    missed[cols] += row
                else:
                    hist[cluster, cols] += row
            missed[cols] += np.asarray(r["uncovered"], np.int64)
        tp, fp, fn = hungarian_counts(hist)
        fn = fn + missed
        out["clusters"] = k
    return {**class_scores(tp, fp, fn, classes), **out}


def objects_summary(records: Sequence[dict], protocol: str) -> dict[str, Any]:
    """Saliency's means and max F-beta, or CorLoc, over the scored images."""
    if protocol == "corloc":
        return {"CorLoc": round(float(np.mean([r["hit"] for r in records])), 6),
                "found": int(sum(r["hit"] for r in records)),
                "mean_best_box_iou": round(float(np.mean([r["best_iou"] for r in records])), 6)}
    f_max, f_mean_pr = max_fbeta([r["precision"] for r in records], [r["recall"] for r in records])
    return {"IoU": round(float(np.mean([r["iou"] for r in records])), 6),
            "accuracy": round(float(np.mean([r["accuracy"] for r in records])), 6),
            "maxFbeta": round(f_max, 6), "maxFbeta_meanPR": round(f_mean_pr, 6),
            "fbeta_thresholds": len(records[0]["precision"]), "beta2": BETA2}


def _summary(records: list[dict], args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    import resource

    scored = [r for r in records if not r.get("skipped")]
    out: dict[str, Any] = {"protocol": args.protocol, "num_images": len(scored)}
    if scored:
        if args.protocol == "unsupervised-semantic":
            out.update(semantic_summary(scored, args.matching, args.classes, out_dir))
        else:
            out.update(objects_summary(scored, args.protocol))
        out["seconds_per_image"] = round(float(np.mean([r["seconds"] for r in scored])), 4)
        out["masks_per_image"] = round(float(np.mean([r["masks"] for r in scored])), 4)
    out["skipped_no_object"] = len(records) - len(scored)
    out["maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def run_discover_eval(job: Any) -> int:
    """``anyseg eval discover``: check, read the data, build the method, score the images not yet
    in the run folder's store, summarise every image and write the report; the exit code."""
    from tqdm import tqdm

    args = job.args
    _check_args(args)
    layout, items = read_discover_data(args.data, args.protocol, stride=args.stride, resolution=args.resolution,
                                       void_id=args.void_id, limit=args.limit)
    d = _discoverer(args)  # errors before anything is written
    job.header = {"kind": "discover", "protocol": args.protocol, "method": d.name, "model": d.model_id,
                  "objects": args.objects, "refine": args.refine, "sam": args.sam,
                  "data": str(Path(args.data).resolve()), "layout": layout}
    if layout == "davis":
        job.header.update(stride=args.stride, resolution=args.resolution)
    if layout == "semantic":  # (the matching and --classes are not in it: they only change the summary)
        job.header["void_id"] = args.void_id
    job.model_name = f"{args.protocol}-{d.name}"
    st = job.store()
    for item in tqdm([i for i in items if i.name not in st], desc=f"discover {args.protocol}", unit="image",
                     dynamic_ncols=True, leave=False, disable=None):
        if layout == "semantic":
            st.add(_score_partition(d, item, args, st.out_dir))
        else:
            st.add(_score_objects(d, item, args.protocol, args.objects))
    by_name = {r["name"]: r for r in st.records()}
    records = [by_name[i.name] for i in items if i.name in by_name]
    summary = _summary(records, args, st.out_dir)
    return job.report_or_json(st, records, summary, "discover", args.json)

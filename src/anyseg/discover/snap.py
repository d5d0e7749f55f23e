"""Snap discovered objects to SAM masks (``anyseg discover --sam MODEL``).

Discovery methods find *where* an object is from coarse patch features (a 16- or 8-pixel grid);
a promptable model draws a sharper outline. Each discovered mask prompts the SAM-family model
with its bounding box and one positive point at its interior point (the pixel farthest from
its boundary, which lies inside even a concave mask), multimask, as CutLER-style pipelines and
Grounded-SAM prompt SAM from a coarse detection. The image is embedded once for all masks.

Of SAM's candidates the one that agrees best with the discovered mask (IoU) is kept, so the
snap refines the outline but cannot swap the object for another; when even the best candidate
agrees poorly (IoU below ``min_agreement``, 0.5) the discovered mask is kept unchanged, since
SAM then drew something else. The score is the discovered score times ``0.5 + 0.5 * IoU``
(agreement between two independent sources is evidence; disagreement lowers it), and
``data`` gains ``sam_iou`` (SAM's own predicted IoU), ``agreement`` (the IoU with the
discovered mask) and ``snapped`` (whether the SAM mask replaced it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anyseg.errors import InputError
from anyseg.types import Masks, Prompt

__all__ = ["load_sam", "snap_to_sam", "interior_point", "MIN_AGREEMENT"]

MIN_AGREEMENT = 0.5


def load_sam(sam: Any, device: str | None = None, allow_download: bool = True) -> Any:
    """A promptable predictor: ``sam`` itself when it is one, else loaded by name or folder."""
    from anyseg.models.base import Predictor

    if isinstance(sam, Predictor) or (hasattr(sam, "embed") and hasattr(sam, "predict")):
        return sam
    if not isinstance(sam, str) and not hasattr(sam, "__fspath__"):
        raise InputError(f"--sam must be a model name or folder; got {type(sam).__name__}")
    from anyseg.models import load_model

    return load_model(sam, device=device, allow_download=allow_download, quiet=True)


def interior_point(mask: np.ndarray) -> np.ndarray:
    """``(x, y)`` float: the pixel of ``mask`` farthest from its boundary (the image border counts as boundary)."""
    import cv2

    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([x, y], dtype=np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def snap_to_sam(predictor: Any, image: np.ndarray, masks: Masks, min_agreement: float = MIN_AGREEMENT) -> Masks:
    """Each mask of ``masks`` snapped to its best-agreeing SAM candidate (module docstring)."""
    if len(masks) == 0:
        return masks
    emb = predictor.embed(image)
    out, scores, sam_iou, agreement, snapped = [], [], [], [], []
    base = masks.scores if masks.scores is not None else np.ones(len(masks), np.float32)
    for i, m in enumerate(masks.masks):
        if not m.any():
            out.append(m), scores.append(0.0), sam_iou.append(0.0), agreement.append(0.0), snapped.append(False)
            continue
        box = np.asarray(masks.boxes[i], np.float32)  # pixel edges, within the image
        prompt = Prompt(points=interior_point(m)[None] + 0.5, labels=np.array([1]), box=box)
        cands = predictor.predict(emb, prompt, multimask=True)
        ious = [_iou(c, m) for c in cands.masks]
        j = int(np.argmax(ious))
        ok = ious[j] >= min_agreement
        out.append(cands.masks[j] if ok else m)
        scores.append(float(base[i]) * (0.5 + 0.5 * ious[j]))
        sam_iou.append(float(np.clip(cands.scores[j], 0.0, 1.0)))
        agreement.append(ious[j])
        snapped.append(ok)
    data = {k: v for k, v in masks.data.items()}
    data.update(sam_iou=np.asarray(sam_iou, np.float32), agreement=np.asarray(agreement, np.float32),
                snapped=np.asarray(snapped, bool))
    return Masks(masks=np.stack(out), scores=np.asarray(scores, np.float32), labels=masks.labels,
                 object_ids=masks.object_ids, data=data)

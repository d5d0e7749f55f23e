"""Core types: :class:`Masks` (the one result type), :class:`Prompt` and :class:`Embedding`.

``Masks`` is columnar and frozen, in the spirit of supervision's ``Detections``: every column
has one row per mask, selection (int, slice, boolean array, index array) returns a new
``Masks``, and validation errors name the expected and the received shape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from anyseg.errors import InputError, PromptError

__all__ = ["Masks", "Prompt", "Embedding", "masks_to_boxes"]


def _shape(a: Any) -> str:
    return "x".join(str(s) for s in np.shape(a)) or "scalar"


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight XYXY boxes (float32, pixel edges: x1 = last column + 1) of ``(N, H, W)`` masks.

    Empty masks get the box ``[0, 0, 0, 0]``.
    """
    masks = np.asarray(masks, dtype=bool)
    n = masks.shape[0]
    boxes = np.zeros((n, 4), dtype=np.float32)
    if n == 0:
        return boxes
    rows = masks.any(axis=2)  # (N, H)
    cols = masks.any(axis=1)  # (N, W)
    for i in range(n):
        ys = np.flatnonzero(rows[i])
        if ys.size == 0:
            continue
        xs = np.flatnonzero(cols[i])
        boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


@dataclass(frozen=True, eq=False)
class Masks:
    """A set of ``N`` binary masks over one ``H x W`` image, with per-mask columns.

    Attributes:
        masks: ``(N, H, W)`` bool.
        scores: ``(N,)`` float32, the model's quality estimate (predicted IoU for SAM).
        boxes: ``(N, 4)`` float32 absolute XYXY pixels; computed from ``masks`` when omitted.
        logits: optional ``(N, h, w)`` float32 low-resolution logits, the input of a
            refinement step (SAM's ``mask_input``).
        labels: optional ``(N,)`` class labels (strings or ints).
        object_ids: optional ``(N,)`` int64 object ids (tracking).
        data: extra columns, each with ``N`` rows.
    """

    masks: np.ndarray
    scores: np.ndarray | None = None
    boxes: np.ndarray | None = None
    logits: np.ndarray | None = None
    labels: np.ndarray | None = None
    object_ids: np.ndarray | None = None
    data: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        masks = np.asarray(self.masks)
        if masks.ndim == 2:
            masks = masks[None]
        if masks.ndim != 3:
            raise InputError(f"Masks.masks must have shape (N, H, W); got {_shape(masks)}")
        if masks.dtype != bool:
            masks = masks > 0 if masks.dtype.kind in "iuf" else masks.astype(bool)
        n = masks.shape[0]
        set_ = object.__setattr__
        set_(self, "masks", masks)

        def column(name: str, value: Any, dtype: Any, tail: tuple[int, ...] = ()) -> np.ndarray | None:
            if value is None:
                return None
            arr = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
            if arr.shape[:1] != (n,) or (tail and arr.shape[1:] != tail):
                want = "x".join(str(s) for s in (n, *tail)) if tail else f"{n}"
                raise InputError(f"Masks.{name} must have shape ({want}, ...) to match {n} masks; got {_shape(arr)}")
            return arr

        scores = column("scores", self.scores, np.float32)
        set_(self, "scores", scores if scores is not None else np.ones(n, dtype=np.float32))
        boxes = column("boxes", self.boxes, np.float32, (4,))
        set_(self, "boxes", boxes if boxes is not None else masks_to_boxes(masks))
        logits = column("logits", self.logits, np.float32)
        if logits is not None and logits.ndim != 3:
            raise InputError(f"Masks.logits must have shape (N, h, w); got {_shape(logits)}")
        set_(self, "logits", logits)
        set_(self, "labels", column("labels", self.labels, None))
        set_(self, "object_ids", column("object_ids", self.object_ids, np.int64))
        set_(self, "data", {k: column(f"data[{k!r}]", v, None) for k, v in dict(self.data).items()})
        for arr in (self.masks, self.scores, self.boxes, self.logits, self.labels, self.object_ids, *self.data.values()):
            if arr is not None:
                arr.flags.writeable = False

    # -- construction -------------------------------------------------------------------
    @classmethod
    def empty(cls, height: int, width: int) -> "Masks":
        return cls(np.zeros((0, height, width), dtype=bool))

    @classmethod
    def concatenate(cls, items: Sequence["Masks"]) -> "Masks":
        """Stack several ``Masks`` over the same image; optional columns must be present in all or none."""
        if not items:
            raise InputError("Masks.concatenate needs at least one Masks")
        sizes = {m.image_size for m in items}
        if len(sizes) != 1:
            raise InputError(f"cannot concatenate masks of different image sizes: {sorted(sizes)}")

        def cat(name: str) -> np.ndarray | None:
            cols = [getattr(m, name) for m in items]
            present = [c is not None for c in cols]
            if not any(present):
                return None
            if not all(present):
                raise InputError(f"cannot concatenate: column {name!r} is missing in some Masks")
            return np.concatenate(cols)

        keys = set(items[0].data)
        if any(set(m.data) != keys for m in items):
            raise InputError("cannot concatenate: the Masks have different data columns")
        return cls(
            masks=np.concatenate([m.masks for m in items]),
            scores=cat("scores"),
            boxes=cat("boxes"),
            logits=cat("logits"),
            labels=cat("labels"),
            object_ids=cat("object_ids"),
            data={k: np.concatenate([m.data[k] for m in items]) for k in keys},
        )

    # -- properties -----------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the image the masks cover."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    @property
    def areas(self) -> np.ndarray:
        return self.masks.sum(axis=(1, 2), dtype=np.int64)

    # -- selection ------------------------------------------------------------------------
    def __getitem__(self, index: Any) -> "Masks":
        if isinstance(index, (int, np.integer)):
            if not -len(self) <= index < len(self):
                raise IndexError(f"mask index {index} out of range for {len(self)} masks")
            index = [int(index)]
        if isinstance(index, np.ndarray) and index.dtype == bool and index.shape != (len(self),):
            raise InputError(f"boolean selection must have shape ({len(self)},); got {_shape(index)}")

        def pick(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else arr[index]

        return Masks(
            masks=self.masks[index],
            scores=pick(self.scores),
            boxes=pick(self.boxes),
            logits=pick(self.logits),
            labels=pick(self.labels),
            object_ids=pick(self.object_ids),
            data={k: v[index] for k, v in self.data.items()},
        )

    def __iter__(self) -> Iterator["Masks"]:
        for i in range(len(self)):
            yield self[i]

    def sort_by(self, key: str = "scores", descending: bool = True) -> "Masks":
        """A copy sorted by ``"scores"``, ``"areas"`` or a ``data`` column (stable)."""
        if key == "scores":
            values = self.scores
        elif key == "areas":
            values = self.areas
        elif key in self.data:
            values = self.data[key]
        else:
            raise InputError(f"cannot sort by {key!r}: expected 'scores', 'areas' or one of {sorted(self.data)}")
        order = np.argsort(-values if descending else values, kind="stable")
        return self[order]

    def with_columns(self, **columns: Any) -> "Masks":
        """A copy with some columns replaced (``scores=...``, ``labels=...``, ``data=...``)."""
        fields = dict(
            masks=self.masks, scores=self.scores, boxes=self.boxes, logits=self.logits,
            labels=self.labels, object_ids=self.object_ids, data=dict(self.data),
        )
        unknown = set(columns) - set(fields)
        if unknown:
            raise InputError(f"unknown Masks columns: {sorted(unknown)}")
        fields.update(columns)
        return Masks(**fields)

    # -- drawing and files ------------------------------------------------------------------
    def overlay(self, image: np.ndarray, alpha: float = 0.5, contours: bool = True, labels: Any = None,
                colors: np.ndarray | None = None, max_area_fraction: float | None = None) -> np.ndarray:
        """The masks drawn on a copy of ``image``: an ``(H, W, 3)`` uint8 RGB array.

        One drawing for one mask or hundreds (:func:`anyseg.masks.overlay.overlay`): each pixel
        takes the colour of the smallest mask covering it, blended once at ``alpha``, with thin
        white outlines (``contours``); pixels outside every mask are unchanged.

        Args:
            image: the ``(H, W, 3)`` uint8 RGB image the masks belong to (grey, RGBA accepted).
            alpha: opacity of the mask colours, in ``[0, 1]``.
            contours: draw each mask's outline.
            labels: ``None`` (no text), ``True`` (write :attr:`labels` at each mask's box) or a
                list of ``N`` texts.
            colors: ``(N, 3)`` or ``(3,)`` RGB colours; default the deterministic palette.
            max_area_fraction: leave out masks covering more than this fraction of the image
                (e.g. ``0.95`` for the whole-image masks of segment everything); ``None`` draws all.
        """
        from anyseg.masks.overlay import draw_labels, overlay

        vis = overlay(image, self, alpha=alpha, colors=colors, contours=contours, max_area_fraction=max_area_fraction)
        if labels is None or labels is False:
            return vis
        if labels is True:
            if self.labels is None:
                raise InputError("Masks.overlay(labels=True) needs Masks.labels, and these masks have none; "
                                 "expected labels=None or a list of texts")
            labels = self.labels.tolist()
        return draw_labels(vis, self, labels, colors=colors)

    def save(self, path: str | os.PathLike, image: np.ndarray | None = None, format: str | None = None,
             stem: str = "masks") -> list[Path]:
        """Write the masks to ``path``; returns the paths written (``pathlib.Path``).

        ``format`` (``None``: from ``path``):

        * ``"pngs"`` (a folder: an existing one, or a path without a suffix; created if
          needed): ``{stem}_mask{i}.png`` (0/255, one per mask), ``{stem}_ids.png`` (the
          indexed PNG below; only with 1 to 255 masks) and, when ``image`` is given,
          ``{stem}_overlay.png`` (:meth:`overlay`) -- the names of ``anyseg everything``.
        * ``"indexed"`` (``*.png``): one palette PNG, pixel value ``i + 1`` inside mask ``i``
          and 0 elsewhere; where masks overlap the smaller mask's value is kept. At most 255 masks.
        * ``"coco"`` (``*.json``): COCO instances JSON with compressed RLE (one image, id 1,
          ``file_name`` the JSON's stem; categories from :attr:`labels`, else ``object``).
        * ``"overlay"`` (``*.png``, with ``image``): :meth:`overlay` as an RGB PNG.

        ``image`` is used by ``"pngs"`` and ``"overlay"`` only. Every file is written atomically.
        """
        from anyseg.io import export

        fmt = _save_format(path, format, image is not None)
        out = Path(path)
        if fmt == "coco":
            return [export.save_coco(export.to_coco(self, image_id=1, file_name=out.stem or "image"), out)]
        if fmt == "overlay":
            return [export.save_image_png(self.overlay(image), out)]
        if fmt == "indexed":
            if not 1 <= len(self) <= 255:
                raise InputError(f"an indexed PNG holds 1 to 255 masks; got {len(self)}: save to a folder instead "
                                 "(one PNG per mask)")
            return [export.save_indexed_png(self._smallest_on_top(), out)]
        out.mkdir(parents=True, exist_ok=True)
        written = export.save_mask_pngs(self, out, stem)
        if 1 <= len(self) <= 255:
            written.append(export.save_indexed_png(self._smallest_on_top(), out / f"{stem}_ids.png"))
        if image is not None:
            written.append(export.save_image_png(self.overlay(image), out / f"{stem}_overlay.png"))
        return written

    def _smallest_on_top(self) -> "Masks":
        """A copy whose scores rank the masks by area (smallest highest), for :func:`save_indexed_png`."""
        ranks = np.empty(len(self), dtype=np.float32)
        ranks[np.argsort(-self.areas, kind="stable")] = np.arange(len(self), dtype=np.float32)
        return self.with_columns(scores=ranks)

    def __repr__(self) -> str:
        h, w = self.image_size
        extra = [c for c in ("logits", "labels", "object_ids") if getattr(self, c) is not None]
        extra += [f"data[{k}]" for k in self.data]
        return f"Masks(n={len(self)}, image={h}x{w}" + (f", columns={extra}" if extra else "") + ")"


_SAVE_FORMATS = ("pngs", "indexed", "coco", "overlay")


def _save_format(path: Any, format: str | None, has_image: bool) -> str:
    """The format of :meth:`Masks.save` for ``path``, checked."""
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"Masks.save needs a path (str or os.PathLike); got {type(path).__name__}")
    if format is not None and format not in _SAVE_FORMATS:
        raise InputError(f"Masks.save format must be one of {', '.join(_SAVE_FORMATS)}; got {format!r}")
    text = os.fspath(path)
    suffix = Path(text).suffix.lower()
    if format is None:
        if Path(text).is_dir() or suffix == "" or str(text).endswith(("/", os.sep)):
            format = "pngs"
        elif suffix in (".png", ".json"):
            format = "indexed" if suffix == ".png" else "coco"
        else:
            raise InputError(f"Masks.save needs a folder, a .png or a .json path; got {str(path)!r}")
    if format == "overlay" and not has_image:
        raise InputError("Masks.save(format='overlay') needs the image: save(path, image=img, format='overlay')")
    if has_image and format in ("indexed", "coco"):
        raise InputError(f"Masks.save uses image only for a folder or format='overlay'; got format {format!r} "
                         f"for {str(path)!r} (for the overlay PNG pass format='overlay')")
    return format


@dataclass(frozen=True, eq=False)
class Prompt:
    """A promptable-segmentation prompt in pixel coordinates of the original image.

    Attributes:
        points: ``(K, 2)`` float XY pixels (``x`` right, ``y`` down; pixel centres are at
            ``i + 0.5`` in the continuous frame used by SAM, but integer pixel indices are
            accepted as they are, as SAM's reference predictors do).
        labels: ``(K,)`` int, 1 = positive (foreground), 0 = negative (background).
            Defaults to all positive.
        box: ``(4,)`` float XYXY pixels.
        mask_logits: ``(h, w)`` low-resolution logits from a previous prediction
            (``Masks.logits[i]``), for iterative refinement.
        mask: ``(H, W)`` bool full-resolution mask to start from (e.g. ``--mask-input``);
            converted to the model's logit input.
        text: a phrase, for text-capable backends.
    """

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask_logits: np.ndarray | None = None
    mask: np.ndarray | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        points, labels = self.points, self.labels
        if points is not None:
            points = np.asarray(points, dtype=np.float64)
            if points.ndim == 1 and points.shape == (2,):
                points = points[None]
            if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
                raise PromptError(f"points must have shape (K, 2) with K >= 1; got {_shape(points)}")
            if not np.isfinite(points).all():
                raise PromptError("points must be finite numbers")
            if labels is None:
                labels = np.ones(len(points), dtype=np.int64)
            labels = np.asarray(labels)
            if labels.ndim == 0:
                labels = labels[None]
            if labels.shape != (len(points),):
                raise PromptError(f"labels must have shape ({len(points)},) to match the points; got {_shape(labels)}")
            if not np.isin(labels, (0, 1)).all():
                raise PromptError(f"point labels must be 1 (positive) or 0 (negative); got {sorted(set(labels.tolist()))}")
            labels = labels.astype(np.int64)
        elif labels is not None:
            raise PromptError("labels given without points")
        set_(self, "points", points)
        set_(self, "labels", labels)

        if self.box is not None:
            box = np.asarray(self.box, dtype=np.float64).reshape(-1)
            if box.shape != (4,):
                raise PromptError(f"box must have 4 numbers X0,Y0,X1,Y1; got shape {_shape(self.box)}")
            if not np.isfinite(box).all():
                raise PromptError("box must be finite numbers")
            if box[2] <= box[0] or box[3] <= box[1]:
                raise PromptError(f"box {box.tolist()} is empty: expected X1 > X0 and Y1 > Y0")
            set_(self, "box", box)
        if self.mask_logits is not None:
            logits = np.asarray(self.mask_logits, dtype=np.float32)
            if logits.ndim == 3 and logits.shape[0] == 1:
                logits = logits[0]
            if logits.ndim != 2:
                raise PromptError(f"mask_logits must have shape (h, w); got {_shape(self.mask_logits)}")
            set_(self, "mask_logits", logits)
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.ndim == 3 and mask.shape[0] == 1:
                mask = mask[0]
            if mask.ndim != 2:
                raise PromptError(f"mask must have shape (H, W); got {_shape(self.mask)}")
            set_(self, "mask", mask > 0 if mask.dtype != bool else mask)
        if self.text is not None and not str(self.text).strip():
            raise PromptError("text prompt is empty")
        if self.is_empty:
            raise PromptError("the prompt is empty: give at least one point, a box, a mask or text")

    @property
    def is_empty(self) -> bool:
        return all(v is None for v in (self.points, self.box, self.mask_logits, self.mask, self.text))

    def first_outside(self, image_size: tuple[int, int]) -> tuple[str, Any] | None:
        """The first part of the prompt that does not fit an ``(H, W)`` image: ``("point", (x, y))``,
        ``("box", box)`` or ``("mask", mask)``; ``None`` when all fit. The one geometric check
        behind :meth:`check_within` and the video prompts' own messages."""
        h, w = image_size
        if self.points is not None:
            bad = (self.points[:, 0] < 0) | (self.points[:, 0] > w) | (self.points[:, 1] < 0) | (self.points[:, 1] > h)
            if bad.any():
                x, y = self.points[np.flatnonzero(bad)[0]]
                return "point", (x, y)
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                return "box", self.box
        if self.mask is not None and self.mask.shape != (h, w):
            return "mask", self.mask
        return None

    def check_within(self, image_size: tuple[int, int]) -> None:
        """Raise :class:`PromptError` if a point or box lies outside an ``(H, W)`` image."""
        h, w = image_size
        kind, value = self.first_outside(image_size) or (None, None)
        if kind == "point":
            x, y = value
            raise PromptError(f"point ({x:g}, {y:g}) is outside the {w}x{h} image (expected 0 <= x <= {w}, 0 <= y <= {h})")
        if kind == "box":
            raise PromptError(f"box {[float(v) for v in value]} is outside the {w}x{h} image")
        if kind == "mask":
            raise PromptError(f"mask input must match the image size {h}x{w}; got {_shape(value)}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.points is not None:
            out["points"] = self.points.tolist()
            out["labels"] = self.labels.tolist()
        if self.box is not None:
            out["box"] = self.box.tolist()
        if self.mask is not None:
            out["mask"] = f"{self.mask.shape[0]}x{self.mask.shape[1]} binary mask"
        if self.mask_logits is not None:
            out["mask_logits"] = f"{self.mask_logits.shape[0]}x{self.mask_logits.shape[1]} logits"
        if self.text is not None:
            out["text"] = self.text
        return out


@dataclass(frozen=True, eq=False)
class Embedding:
    """What an image encoder returned, with the sizes needed to map prompts and masks.

    Attributes:
        model_id: the registry name (plus weights identity) of the model that made it.
        original_size: ``(H, W)`` of the original image.
        input_size: ``(h, w)`` of the resized image inside the model's input frame
            (before padding, for SAM; equal to the frame for SAM 2).
        features: model-specific payload (tensors, or the image itself for ``classical``).
        image_hash: content hash of the original image (the cache key, with ``model_id``).
    """

    model_id: str
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    features: Any
    image_hash: str = ""

    @property
    def nbytes(self) -> int:
        """Approximate memory held by the features (tensors and arrays, nested)."""
        return _nbytes(self.features)


def _nbytes(obj: Any) -> int:
    if obj is None:
        return 0
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if hasattr(obj, "element_size") and hasattr(obj, "nelement"):  # torch.Tensor
        return int(obj.element_size() * obj.nelement())
    if isinstance(obj, Mapping):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0

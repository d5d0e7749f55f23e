"""Exporting masks: PNGs, COCO JSON, YOLO segmentation text, and the registry of export formats.

The functions over the :class:`~anyseg.types.Masks` of one image (:func:`save_mask_pngs`,
:func:`to_coco`, ...) write the files of a run. :data:`EXPORTERS` holds the formats of a data set
(:class:`ExportData`: images and their objects): ``coco`` (RLE), ``yolo``, ``png`` (one PNG per
object), ``coco-polygons``, ``indexed`` (one palette PNG per image); the service offers every
registered format, so a new one is one :func:`exporter` here. Both levels share the codecs.

Files are written atomically (:mod:`anyseg.io.atomic`): a failed export never leaves a
half-written file and never destroys an earlier one. Names in the files are checked: COCO
category and YOLO class names are one-line labels (:func:`anyseg.labels.check_label`: a
newline would shift YOLO's class indices), a COCO ``file_name`` is the base name of the path
given (:func:`coco_file_name`: ``../../etc/passwd`` -> ``passwd``).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from anyseg.errors import InputError
from anyseg.io.atomic import write_bytes, write_json, write_text
from anyseg.labels import check_label
from anyseg.masks.overlay import WHOLE_IMAGE_FRACTION, draw_prompt, overlay, overlay_regions
from anyseg.masks.polygons import mask_to_polygons, polygons_to_mask
from anyseg.masks.rle import area as rle_area, decode, encode, to_bbox
from anyseg.types import Masks, Prompt

__all__ = [
    "save_mask_pngs", "save_indexed_png", "save_overlay_png", "save_region_overlay_png", "save_image_png",
    "davis_palette", "png_bytes",
    "to_coco", "save_coco", "to_yolo_seg", "save_yolo_seg", "yolo_classes", "save_yolo_classes", "coco_file_name",
    "EXPORTERS", "Exporter", "ExportData", "ExportImage", "ExportObject", "ExportSink", "MemorySink", "ZipSink",
    "exporter", "register_exporter", "get_exporter", "export_bytes", "save_export", "coco_dict",
    "base_name", "safe_name", "one_line_label", "finite", "paint_order",
]


def _check_masks(masks: Any) -> Masks:
    if not isinstance(masks, Masks):
        raise InputError(f"expected a Masks; got {type(masks).__name__}")
    return masks


def png_bytes(array: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """PNG file bytes of a uint8 ``(H, W)`` or ``(H, W, 3)`` array (with ``palette``: an indexed PNG)."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(array))
    if palette is not None:
        im.putpalette(palette.astype(np.uint8).ravel().tolist())  # 'L' -> 'P'
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def davis_palette(n: int = 256) -> np.ndarray:
    """``(n, 3)`` uint8 PASCAL VOC / DAVIS colormap: 0 black, 1 (128, 0, 0), 2 (0, 128, 0), ..."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for bit in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - bit)
            c >>= 3
        cmap[i] = rgb
    return cmap


def save_mask_pngs(masks: Masks, out_dir: str | os.PathLike, stem: str) -> list[Path]:
    """One single-channel ('L', 0/255) PNG per mask: ``out_dir/{stem}_mask{i}.png``."""
    masks = _check_masks(masks)
    if not stem or any(sep in stem for sep in ("/", "\\")) or stem in (".", ".."):
        raise InputError(f"stem must be a plain file name stem; got {stem!r}")
    out = Path(out_dir)
    paths = []
    for i, m in enumerate(masks.masks):
        path = out / f"{stem}_mask{i}.png"
        write_bytes(path, png_bytes(m.astype(np.uint8) * 255))
        paths.append(path)
    return paths


def paint_order(scores: Any) -> np.ndarray:
    """Indices in the order masks are painted onto an indexed PNG: best score last (it wins
    where masks overlap), equal scores the lower index last. Non-finite scores paint first."""
    values = np.asarray(scores, dtype=np.float64).reshape(-1)  # None -> NaN
    return np.argsort(-np.where(np.isfinite(values), values, -np.inf), kind="stable")[::-1]


def save_indexed_png(masks: Masks, path: str | os.PathLike, ids: Sequence[int] | None = None) -> Path:
    """One palette ('P') PNG whose pixel value is ``ids[i]`` inside mask ``i``, 0 elsewhere.

    ``ids`` defaults to ``1..N`` and must lie in ``1..255``. Where masks overlap the higher
    score wins (equal scores: the lower index wins). The palette is DAVIS' (VOC colormap).
    """
    masks = _check_masks(masks)
    n = len(masks)
    values = np.arange(1, n + 1) if ids is None else np.asarray(ids).reshape(-1)
    if values.shape != (n,):
        raise InputError(f"ids must have {n} values, one per mask; got {values.size}")
    if n and (values.dtype.kind not in "iu" or values.min() < 1 or values.max() > 255):
        raise InputError(f"ids must be integers in 1..255 for an indexed PNG; got {values.min()}..{values.max()}")
    canvas = np.zeros(masks.image_size, dtype=np.uint8)
    for i in paint_order(masks.scores):
        canvas[masks.masks[i]] = values[i]
    return write_bytes(path, png_bytes(canvas, davis_palette()))


def save_overlay_png(image: np.ndarray, masks: Masks, path: str | os.PathLike, prompt: Prompt | None = None) -> Path:
    """An RGB PNG of :func:`~anyseg.masks.overlay.overlay`, with the prompt drawn when given."""
    vis = overlay(image, _check_masks(masks))
    if prompt is not None:
        vis = draw_prompt(vis, prompt)
    return write_bytes(path, png_bytes(vis))


def save_image_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """An ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` grey) image, e.g. an overlay, as a PNG."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        shape = "x".join(map(str, arr.shape)) or "scalar"
        raise InputError(f"expected an (H, W, 3) uint8 image to save; got {arr.dtype} of shape {shape}")
    return write_bytes(path, png_bytes(arr))


def save_region_overlay_png(image: np.ndarray, masks: Masks, path: str | os.PathLike,
                            max_area_fraction: float = WHOLE_IMAGE_FRACTION) -> tuple[Path, dict[str, int]]:
    """An RGB PNG of :func:`~anyseg.masks.overlay.overlay_regions` (segment everything: smallest
    mask on top, one blend, thin outlines, whole-image masks left out); returns the path and
    ``{"drawn": D, "skipped_whole_image": K}``."""
    vis, info = overlay_regions(image, _check_masks(masks), max_area_fraction=max_area_fraction)
    return write_bytes(path, png_bytes(vis)), info


def _category_ids(masks: Masks, categories: list[dict] | None, category_ids: Any) -> tuple[list[dict], list[int]]:
    n = len(masks)
    if categories is None and category_ids is None and masks.labels is not None:
        names = list(dict.fromkeys(check_label(str(v), "mask label") for v in masks.labels.tolist()))
        categories = [{"id": k + 1, "name": name} for k, name in enumerate(names)]
    if categories is None:
        categories = [{"id": 1, "name": "object"}]
    if not categories or any(not isinstance(c, dict) or "id" not in c or "name" not in c for c in categories):
        raise InputError("categories must be a non-empty list of dicts with 'id' and 'name'")
    categories = [{**c, "name": check_label(c["name"], "COCO category name")} for c in categories]
    known = {int(c["id"]) for c in categories}
    by_name = {str(c["name"]): int(c["id"]) for c in categories}
    if category_ids is not None:
        ids = [int(v) for v in np.asarray(category_ids).reshape(-1)]
        if len(ids) != n:
            raise InputError(f"category_ids must have {n} values, one per mask; got {len(ids)}")
    elif masks.labels is not None:
        ids = []
        for label in masks.labels.tolist():
            if str(label).strip() in by_name:  # names are compared as check_label gives them
                ids.append(by_name[str(label).strip()])
            elif isinstance(label, (int, np.integer)) and int(label) in known:
                ids.append(int(label))
            else:
                raise InputError(f"label {label!r} matches no category name or id in {sorted(by_name)}")
    else:
        ids = [int(categories[0]["id"])] * n
    unknown = sorted(set(ids) - known)
    if unknown:
        raise InputError(f"category ids {unknown} are not among the categories {sorted(known)}")
    return categories, ids


def _polygons(mask: np.ndarray, rle: dict) -> tuple[Any, dict]:
    """COCO polygons of a mask and the RLE of what they cover (for ``area``/``bbox``); a mask
    too small for a polygon keeps ``rle`` (its own RLE) for both."""
    polys = mask_to_polygons(mask)
    if not polys:
        return rle, rle
    h, w = mask.shape
    return polys, encode(polygons_to_mask(polys, h, w, max_pixels=max(1, h * w)))


def coco_file_name(name: str | os.PathLike) -> str:
    """The base name of an image path, for COCO's ``file_name``: its last component (``/`` and
    ``\\`` both separate, a drive prefix is dropped), one line of printable text. A path with
    no file name in it (empty, ``.``, ``..``) is an :class:`InputError`."""
    if not isinstance(name, (str, os.PathLike)):
        raise InputError(f"COCO file_name must be a file name or path; got {type(name).__name__}")
    text = os.fspath(name)
    if not isinstance(text, str):
        raise InputError(f"COCO file_name must be text; got {type(text).__name__}")
    last = PureWindowsPath(PurePosixPath(text.replace("\\", "/")).name).name.strip()
    if last in ("", ".", ".."):
        raise InputError(f"COCO file_name {text[:80]!r} names no file; expected an image file name such as photo.jpg")
    return check_label(last, "COCO file_name")


def to_coco(
    masks: Masks,
    image_id: int,
    file_name: str,
    categories: list[dict] | None = None,
    polygons: bool = False,
    category_ids: Sequence[int] | None = None,
    start_ann_id: int = 1,
) -> dict:
    """A COCO dict (``images``, ``annotations``, ``categories``) for the masks of one image.

    Segmentations are compressed RLE with ``str`` counts (``annToMask`` gives the masks back
    exactly), or polygons when ``polygons`` (holes are lost, see
    :func:`~anyseg.masks.polygons.mask_to_polygons`; a mask too small for a polygon keeps
    its RLE). ``area`` and ``bbox`` (XYWH) are those of the stored segmentation. Category
    ids come from ``category_ids``, else from ``masks.labels`` (matched to category names or
    ids; without ``categories`` one category per distinct label is made), else the first
    category (default ``[{"id": 1, "name": "object"}]``). Category names must be one-line
    labels; ``file_name`` is written as its base name (:func:`coco_file_name`).
    """
    masks = _check_masks(masks)
    file_name = coco_file_name(file_name)
    categories, cat_ids = _category_ids(masks, categories, category_ids)
    h, w = masks.image_size
    annotations = []
    for i, m in enumerate(masks.masks):
        rle = encode(m)
        segmentation: Any = rle
        if polygons:
            segmentation, rle = _polygons(m, rle)
        annotations.append({
            "id": int(start_ann_id) + i,
            "image_id": int(image_id),
            "category_id": cat_ids[i],
            "segmentation": segmentation,
            "area": rle_area(rle, max_pixels=max(1, h * w)),
            "bbox": to_bbox(rle, max_pixels=max(1, h * w)),
            "iscrowd": 0,
            "score": float(masks.scores[i]),
        })
    return {
        "info": {"description": "exported by anyseg"},
        "images": [{"id": int(image_id), "file_name": file_name, "height": h, "width": w}],
        "annotations": annotations,
        "categories": [dict(c) for c in categories],
    }


def save_coco(coco_dict: dict, path: str | os.PathLike) -> Path:
    """Write a COCO dict as compact JSON."""
    if not isinstance(coco_dict, dict) or not {"images", "annotations", "categories"} <= set(coco_dict):
        raise InputError("expected a COCO dict with 'images', 'annotations' and 'categories'")
    return write_json(path, coco_dict, indent=None)


def to_yolo_seg(masks: Masks, class_ids: Sequence[int] | None = None) -> str:
    """YOLO segmentation text: ``"cls x1 y1 x2 y2 ..."`` per mask, coordinates in ``[0, 1]``.

    One line per instance, as Ultralytics expects: a mask with several parts contributes
    its **largest** part only (other parts and holes are dropped); a mask too small for a
    polygon (empty) gives no line. Class ids default to 0. Coordinates are the pixel-edge
    outline divided by the image width/height, with 6 decimals.
    """
    masks = _check_masks(masks)
    n = len(masks)
    ids = np.zeros(n, dtype=np.int64) if class_ids is None else np.asarray(class_ids).reshape(-1)
    if ids.shape != (n,):
        raise InputError(f"class_ids must have {n} values, one per mask; got {ids.size}")
    if n and (ids.dtype.kind not in "iu" or ids.min() < 0):
        raise InputError("class_ids must be non-negative integers")
    h, w = masks.image_size
    lines = []
    for i, m in enumerate(masks.masks):
        polys = mask_to_polygons(m)
        if not polys:
            continue
        pts = np.asarray(polys[0], dtype=np.float64).reshape(-1, 2) / (w, h)
        coords = " ".join(f"{v:.6f}" for v in np.clip(pts, 0.0, 1.0).ravel())
        lines.append(f"{int(ids[i])} {coords}")
    return "".join(line + "\n" for line in lines)


def save_yolo_seg(masks: Masks, path: str | os.PathLike, class_ids: Sequence[int] | None = None) -> Path:
    """Write :func:`to_yolo_seg` to ``path`` (an empty file when there is no polygon)."""
    return write_text(path, to_yolo_seg(masks, class_ids))


def yolo_classes(names: Sequence[str]) -> str:
    """YOLO's ``classes.txt``: class ``i``'s name on line ``i``. Each name must be a one-line
    label (:func:`anyseg.labels.check_label`) and names must differ, so the line numbers are
    the class indices."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise InputError(f"YOLO class names must be a list of strings; got {type(names).__name__}")
    checked = [check_label(n, f"YOLO class name {i}") for i, n in enumerate(names)]
    seen: dict[str, int] = {}
    for i, n in enumerate(checked):
        if n in seen:
            raise InputError(f"YOLO class names {seen[n]} and {i} are both {n!r}; expected distinct names")
        seen[n] = i
    return "".join(n + "\n" for n in checked)


def save_yolo_classes(names: Sequence[str], path: str | os.PathLike) -> Path:
    """Write :func:`yolo_classes` to ``path``."""
    return write_text(path, yolo_classes(names))


# == data-set exports: the common input, the sinks and the registry =================================
_FORMAT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")  # in URLs (?format=) and file names


def _printable(text: str) -> str:
    return "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)


def base_name(name: object, default: str = "image") -> str:
    """The last component of a stored file name (POSIX or Windows), one printable line, never ``..``."""
    text = _printable(str(name or ""))
    last = PureWindowsPath(PurePosixPath(text.replace("\\", "/")).name).name.strip()
    if last in ("", ".", ".."):
        return default
    return last[-255:]


def safe_name(name: str) -> str:
    """``name`` reduced to ``[A-Za-z0-9._-]``, for names inside exported archives and headers."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"


def one_line_label(label: str) -> str:
    """A stored label as one line of printable text (rows saved before labels were validated)."""
    return " ".join(_printable(str(label)).split()) or "object"


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


@dataclass(frozen=True)
class ExportImage:
    """An image of an export: its key (unique in the export), stored file name and size."""
    key: str
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class ExportObject:
    """One object of an export: its image's key, label, mask (compressed RLE), score and metadata."""
    id: int
    image: str
    label: str
    rle: dict
    score: float | None = None
    meta: dict | None = None


@dataclass(frozen=True)
class ExportData:
    """What every exporter writes: a named data set of images and their objects, in export order.

    Masks stay RLE until a format needs them (:meth:`mask`, one at a time: memory does not grow
    with the number of objects). Stored values are made safe on the way out, not refused: file
    names become base names, names in archives :func:`safe_name`, labels in line files one line,
    a non-finite score is left out and non-finite metadata values become ``null`` (:func:`finite`).
    """
    name: str
    images: Mapping[str, ExportImage]
    objects: Sequence[ExportObject]

    def __post_init__(self) -> None:
        if missing := sorted({o.image for o in self.objects} - set(self.images)):
            raise InputError(f"export objects refer to images {missing[:5]} that are not in the export")

    @classmethod
    def from_masks(cls, masks: Masks, file_name: str, name: str | None = None) -> ExportData:
        """One image's masks (ids ``1..N``, labels from ``masks.labels`` or ``object``, scores)."""
        h, w = _check_masks(masks).image_size
        labels = (["object"] * len(masks) if masks.labels is None
                  else [check_label(str(v), "mask label") for v in masks.labels.tolist()])
        image = ExportImage("1", str(file_name), w, h)
        objects = [ExportObject(i + 1, "1", labels[i], encode(m), float(masks.scores[i]))
                   for i, m in enumerate(masks.masks)]
        return cls(name or PurePosixPath(base_name(file_name)).stem, {"1": image}, objects)

    def by_image(self) -> dict[str, list[ExportObject]]:
        """The objects of each image, in export order; images in the order of their first object."""
        out: dict[str, list[ExportObject]] = {}
        for o in self.objects:
            out.setdefault(o.image, []).append(o)
        return out

    def categories(self) -> dict[str, int]:
        """``{label: class index}``: the distinct labels, sorted, numbered from 0."""
        return {lab: k for k, lab in enumerate(sorted({o.label for o in self.objects}))}

    def stems(self) -> dict[str, str]:
        """A distinct safe file stem per image (its file name's, then ``_KEY`` on a clash)."""
        stems: dict[str, str] = {}
        for key in self.by_image():
            stem = safe_name(PurePosixPath(base_name(self.images[key].file_name)).stem)
            stems[key] = stem if stem not in stems.values() else f"{stem}_{key}"
        return stems

    def mask(self, obj: ExportObject) -> np.ndarray:
        """The ``(H, W)`` bool mask of an object (decoded now; the RLE's size must be its image's)."""
        im = self.images[obj.image]
        return decode(obj.rle, size=(im.height, im.width), max_pixels=max(1, im.height * im.width))


class ExportSink(Protocol):
    """Where an exporter puts its files: ``add(relative name, bytes)``."""
    def add(self, name: str, data: bytes) -> None: ...


class MemorySink(dict):
    """Files kept in memory, ``{name: bytes}`` (the one file of a single-file format)."""
    def add(self, name: str, data: bytes) -> None:
        self[name] = data


class ZipSink:
    """Files into a deflated zip in memory; :meth:`getvalue` closes it and gives its bytes."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._zip = zipfile.ZipFile(self._buf, "w", zipfile.ZIP_DEFLATED)

    def add(self, name: str, data: bytes) -> None:
        self._zip.writestr(name, data)

    def getvalue(self) -> bytes:
        self._zip.close()
        return self._buf.getvalue()


@dataclass(frozen=True)
class Exporter:
    """An export format: ``name`` (``?format=``), one-line ``description``, the ``suffix`` of its
    files, ``write(data, sink)``; a ``single_file`` one writes one file (else served as a zip)."""
    name: str
    description: str
    suffix: str
    write: Callable[[ExportData, ExportSink], None]
    single_file: bool = False
    media_type: str = "application/octet-stream"


#: the export formats, by name, in the order they are offered
EXPORTERS: dict[str, Exporter] = {}


def register_exporter(exp: Exporter, replace: bool = False) -> Exporter:
    """Add an export format to :data:`EXPORTERS` (a name taken is an error unless ``replace``)."""
    if not isinstance(exp, Exporter) or not _FORMAT_NAME.fullmatch(exp.name):
        raise InputError(f"an exporter needs a name of 1-32 characters a-z, 0-9 and '-'; got {exp!r:.80}")
    if exp.name in EXPORTERS and not replace:
        raise InputError(f"an exporter named {exp.name!r} is already registered")
    EXPORTERS[exp.name] = exp
    return exp


def exporter(name: str, description: str, suffix: str, *, single_file: bool = False,
             media_type: str = "application/octet-stream") -> Callable[[Callable], Callable]:
    """Decorator: register ``write(data, sink)`` as the export format ``name``."""
    return lambda write: register_exporter(Exporter(name, description, suffix, write, single_file, media_type)).write


def get_exporter(name: str) -> Exporter:
    """The registered exporter ``name``, or :class:`InputError` naming the formats there are."""
    if not isinstance(name, str) or name not in EXPORTERS:
        raise InputError(f"unknown export format {str(name)[:40]!r}; expected one of {', '.join(EXPORTERS)}")
    return EXPORTERS[name]


def export_bytes(fmt: str, data: ExportData) -> tuple[bytes, str, str]:
    """``data`` in format ``fmt`` as one download, ``(bytes, media type, suffix)``: a file or a zip."""
    exp = get_exporter(fmt)
    sink = MemorySink() if exp.single_file else ZipSink()
    exp.write(data, sink)
    if isinstance(sink, ZipSink):
        return sink.getvalue(), "application/zip", ".zip"
    if len(sink) != 1:
        raise InputError(f"the {exp.name} exporter wrote {len(sink)} files; a single-file format writes one")
    return next(iter(sink.values())), exp.media_type, exp.suffix


def save_export(fmt: str, data: ExportData, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``data`` in format ``fmt`` into ``out_dir``, each file atomically; the paths written."""
    files = MemorySink()
    get_exporter(fmt).write(data, files)  # all files made before any is written
    bad = [n for n in files if n.startswith("/") or "\\" in n or ".." in PurePosixPath(n).parts]
    if bad:
        raise InputError(f"export file name {bad[0][:80]!r} is not a relative path inside the output folder")
    return [write_bytes(Path(out_dir, *PurePosixPath(n).parts), data) for n, data in files.items()]


def _json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON, never ``NaN`` (what the service has always sent for COCO)."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


def coco_dict(data: ExportData, polygons: bool = False) -> dict:
    """The COCO instances dict of ``data`` (pycocotools loads it; ``annToMask`` gives RLE masks back).

    Images are numbered ``1..`` (``anyseg_id``: their key), categories are the sorted labels;
    ``area`` and ``bbox`` are the segmentation's: the RLE or, with ``polygons``, the outline
    (holes are lost; a mask too small for a polygon keeps its RLE)."""
    ids = list(data.by_image())
    num = {key: k + 1 for k, key in enumerate(ids)}
    cat = data.categories()
    annotations = []
    for o in data.objects:
        im = data.images[o.image]
        size, limit = (im.height, im.width), max(1, im.height * im.width)
        segmentation, rle = _polygons(data.mask(o), o.rle) if polygons else (o.rle, o.rle)
        item = {"id": o.id, "image_id": num[o.image], "category_id": cat[o.label] + 1, "segmentation": segmentation,
                "area": rle_area(rle, size=size, max_pixels=limit), "bbox": to_bbox(rle, size=size, max_pixels=limit),
                "iscrowd": 0}
        score = finite(o.score)
        if score is not None:
            item["score"] = score
        if o.meta:
            item["metadata"] = finite(o.meta)
        annotations.append(item)
    return {
        "info": {"description": f"anyseg project {safe_name(data.name)}"},
        "images": [{"id": num[k], "file_name": base_name(data.images[k].file_name), "height": data.images[k].height,
                    "width": data.images[k].width, "anyseg_id": k} for k in ids],
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": lab} for lab, k in cat.items()],
    }


@exporter("coco", "COCO instances JSON, masks as compressed RLE (exact)", ".json", single_file=True,
          media_type="application/json")
def _write_coco(data: ExportData, sink: ExportSink, polygons: bool = False) -> None:
    sink.add("coco-polygons.json" if polygons else "coco.json", _json_bytes(coco_dict(data, polygons)))


@exporter("yolo", "YOLO segmentation: classes.txt and labels/STEM.txt (largest part of each mask)", ".txt")
def _write_yolo(data: ExportData, sink: ExportSink) -> None:
    cat = data.categories()
    sink.add("classes.txt", "".join(f"{one_line_label(lab)}\n" for lab in cat).encode("utf-8"))
    stems = data.stems()
    for key, objects in data.by_image().items():
        lines = [to_yolo_seg(Masks(data.mask(o)[None]), [cat[o.label]]) for o in objects]
        sink.add(f"labels/{stems[key]}.txt", "".join(lines).encode("utf-8"))


def _index_entry(data: ExportData, o: ExportObject, fname: str, **extra: Any) -> dict:
    return {"file": fname, **extra, "annotation_id": o.id, "image_id": o.image,
            "file_name": base_name(data.images[o.image].file_name), "label": o.label, "score": finite(o.score)}


@exporter("png", "one binary PNG (0/255) per object: masks/STEM_ID_LABEL.png and annotations.json", ".png")
def _write_pngs(data: ExportData, sink: ExportSink) -> None:
    stems = data.stems()
    index = []
    for o in data.objects:
        fname = f"masks/{stems[o.image]}_{o.id}_{safe_name(o.label)}.png"
        sink.add(fname, png_bytes(data.mask(o).astype(np.uint8) * 255))
        index.append(_index_entry(data, o, fname))
    sink.add("annotations.json", json.dumps(index, indent=1, allow_nan=False).encode("utf-8"))


exporter("coco-polygons", "COCO instances JSON, masks as polygons (holes are lost)", ".json", single_file=True,
         media_type="application/json")(lambda data, sink: _write_coco(data, sink, polygons=True))


@exporter("indexed", "one palette PNG per image (value k = its k-th object) and annotations.json", ".png")
def _write_indexed(data: ExportData, sink: ExportSink) -> None:
    stems = data.stems()
    index = []
    for key, objects in data.by_image().items():
        if len(objects) > 255:
            raise InputError(f"image {base_name(data.images[key].file_name)!r} has {len(objects)} objects; an indexed "
                             "PNG holds at most 255: export as png instead")
        im = data.images[key]
        canvas = np.zeros((im.height, im.width), dtype=np.uint8)
        for i in paint_order([o.score for o in objects]):
            canvas[data.mask(objects[i])] = i + 1
        fname = f"indexed/{stems[key]}.png"
        sink.add(fname, png_bytes(canvas, davis_palette()))
        index.extend(_index_entry(data, o, fname, value=i + 1) for i, o in enumerate(objects))
    sink.add("annotations.json", json.dumps(index, indent=1, allow_nan=False).encode("utf-8"))

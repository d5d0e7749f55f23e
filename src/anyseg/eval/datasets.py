"""Readers for evaluation data: image+mask folders, the DAVIS layout, semantic label maps, COCO JSON.

Every reader checks its layout up front and reports problems in one line naming the file or
folder (missing masks, missing frames, empty folders, size mismatches, unknown label values).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anyseg.errors import InputError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


def _files_by_stem(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{what} folder not found: {folder}")
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."):
            if p.stem in files:
                raise InputError(f"two {what} files share the stem {p.stem!r}: {files[p.stem].name} and {p.name}")
            files[p.stem] = p
    if not files:
        raise InputError(f"no {what} files in {folder}")
    return files


def _read_array(path: Path) -> tuple[np.ndarray, str]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im), im.mode
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read {path}: {e}") from None


def _pair(images: dict[str, Path], masks: dict[str, Path], mask_dir: Path) -> list[tuple[str, Path, Path]]:
    missing = sorted(set(images) - set(masks))
    if missing:
        raise InputError(f"no mask for image {images[missing[0]].name} in {mask_dir} (pairs are matched by file stem)"
                         + (f"; {len(missing) - 1} more missing" if len(missing) > 1 else ""))
    return [(stem, images[stem], masks[stem]) for stem in images]


# -- binary image + mask folders ---------------------------------------------------------------


@dataclass(frozen=True)
class MaskSample:
    """One image with a binary ground-truth mask and optional ignored pixels."""

    name: str
    image_path: Path
    mask_path: Path
    ignore_value: int | None = None

    def load_image(self) -> np.ndarray:
        from anyseg.io.images import load_image

        return load_image(self.image_path)

    def load_gt(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(gt, ignore)``: foreground = any channel > 127 outside the ignored value."""
        arr, _ = _read_array(self.mask_path)
        if arr.ndim == 3:
            ignore = np.all(arr[..., :3] == self.ignore_value, axis=-1) if self.ignore_value is not None else None
            fg = (arr[..., :3] > 127).any(axis=-1)
        else:
            ignore = arr == self.ignore_value if self.ignore_value is not None else None
            fg = arr > 127
        if ignore is not None:
            fg &= ~ignore
            if not ignore.any():
                ignore = None
        return fg, ignore


def read_mask_folder(root: str | os.PathLike, images: str = "images", masks: str = "masks",
                     ignore_value: int | None | str = "auto", limit: int | None = None) -> list[MaskSample]:
    """Pairs ``root/images/NAME.*`` with ``root/masks/NAME.*`` by file stem.

    ``ignore_value="auto"`` ignores pixels equal to 128 in lossless masks (the GrabCut
    benchmark's unlabeled band) and nothing in JPEG masks, whose compression noise makes exact
    values meaningless (Kvasir-SEG). Pass an int or ``None`` to choose explicitly.
    """
    root = Path(root)
    image_dir, mask_dir = root / images, root / masks
    pairs = _pair(_files_by_stem(image_dir, "image"), _files_by_stem(mask_dir, "mask"), mask_dir)
    out = []
    for stem, ip, mp in pairs[: limit or None]:
        if ignore_value == "auto":
            iv = None if mp.suffix.lower() in (".jpg", ".jpeg") else 128
        else:
            iv = ignore_value  # type: ignore[assignment]
        out.append(MaskSample(stem, ip, mp, iv))
    return out


# -- DAVIS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoSample:
    """One DAVIS sequence: frame paths and annotation paths (``None`` where unannotated)."""

    name: str
    frames: tuple[Path, ...]
    annotations: tuple[Path | None, ...]

    def __len__(self) -> int:
        return len(self.frames)

    def load_annotation(self, index: int) -> np.ndarray:
        """``(H, W)`` int object ids (0 background, 255 void) of frame ``index``.

        Indexed ('P') PNGs hold object ids (DAVIS 2017); grey 0/255 masks (DAVIS 2016) are one
        object with id 1.
        """
        path = self.annotations[index]
        if path is None:
            raise InputError(f"frame {index} of sequence {self.name} has no annotation")
        return read_object_ids(path)

    def load_annotations(self) -> np.ndarray:
        return np.stack([self.load_annotation(i) for i in range(len(self))])


def read_object_ids(path: Path) -> np.ndarray:
    arr, mode = _read_array(path)
    if mode == "P":
        return arr.astype(np.int32)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1)
    return (arr > 127).astype(np.int32)


def read_davis(root: str | os.PathLike, resolution: str = "480p", sequences: list[str] | None = None,
               require_all_annotations: bool = True, limit: int | None = None) -> list[VideoSample]:
    """``root/JPEGImages/<res>/SEQ/NNNNN.jpg`` with ``root/Annotations/<res>/SEQ/NNNNN.png``."""
    root = Path(root)
    frames_root = root / "JPEGImages" / resolution
    ann_root = root / "Annotations" / resolution
    if not frames_root.is_dir():
        frames_root, ann_root = root / "JPEGImages", root / "Annotations"
    if not frames_root.is_dir():
        raise InputError(f"not a DAVIS folder: {root} has no JPEGImages/{resolution} (or JPEGImages)")
    names = sequences or sorted(p.name for p in frames_root.iterdir() if p.is_dir())
    if not names:
        raise InputError(f"no sequences in {frames_root}")
    out = []
    for name in names[: limit or None]:
        frames = _files_by_stem(frames_root / name, "frame")
        anns = _files_by_stem(ann_root / name, "annotation") if (ann_root / name).is_dir() else {}
        if not anns:
            raise InputError(f"no annotations for sequence {name} in {ann_root / name}")
        if require_all_annotations:
            missing = sorted(set(frames) - set(anns))
            if missing:
                raise InputError(f"sequence {name}: no annotation for frame {frames[missing[0]].name} in {ann_root / name}")
        stems = list(frames)
        out.append(VideoSample(name, tuple(frames[s] for s in stems), tuple(anns.get(s) for s in stems)))
    return out


# -- semantic label maps -------------------------------------------------------------------------


CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist")


@dataclass(frozen=True)
class SemanticSample:
    name: str
    image_path: Path
    label_path: Path
    num_classes: int
    void_id: int

    def load_image(self) -> np.ndarray:
        from anyseg.io.images import load_image

        return load_image(self.image_path)

    def load_labels(self) -> np.ndarray:
        """``(H, W)`` int class ids; ``void_id`` marks ignored pixels. Unknown values are an error."""
        arr, _ = _read_array(self.label_path)
        if arr.ndim == 3:
            raise InputError(f"label map {self.label_path} has {arr.shape[2]} channels; expected one channel of class ids")
        arr = arr.astype(np.int64)
        bad = np.setdiff1d(np.unique(arr), [*range(self.num_classes), self.void_id])
        if bad.size:
            raise InputError(f"label map {self.label_path} has unknown label values {bad[:5].tolist()} "
                             f"(expected 0..{self.num_classes - 1} or void {self.void_id})")
        return arr


def read_semantic(root: str | os.PathLike, num_classes: int, void_id: int = 255, images: str = "images",
                  labels: str = "labels", limit: int | None = None) -> list[SemanticSample]:
    root = Path(root)
    pairs = _pair(_files_by_stem(root / images, "image"), _files_by_stem(root / labels, "label"), root / labels)
    return [SemanticSample(s, ip, lp, num_classes, void_id) for s, ip, lp in pairs[: limit or None]]


# -- COCO ----------------------------------------------------------------------------------------


@dataclass
class CocoData:
    """A COCO instance-segmentation file, with masks decoded per image on demand."""

    path: Path
    data: dict
    image_root: Path | None = None
    _by_image: dict[int, list[dict]] = field(default_factory=dict, repr=False)

    @property
    def image_ids(self) -> list[int]:
        return [int(im["id"]) for im in self.data["images"]]

    def image_info(self, image_id: int) -> dict:
        for im in self.data["images"]:
            if int(im["id"]) == image_id:
                return im
        raise InputError(f"image id {image_id} not in {self.path}")

    def instances(self, image_id: int):
        """The image's ground truth as :class:`~anyseg.types.Masks` (labels = category ids)."""
        from pycocotools import mask as mask_utils

        from anyseg.types import Masks

        info = self.image_info(image_id)
        h, w = int(info["height"]), int(info["width"])
        anns = self._by_image.get(image_id, [])
        out = np.zeros((len(anns), h, w), bool)
        for i, a in enumerate(anns):
            seg = a["segmentation"]
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg.get("counts"), list):
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = dict(seg, counts=seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"])
            out[i] = mask_utils.decode(rle).astype(bool)
        return Masks(out, labels=np.array([int(a["category_id"]) for a in anns], dtype=np.int64))


def read_coco(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> CocoData:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"COCO file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read COCO JSON {path}: {e}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f"{path} is not COCO instance JSON: missing the {key!r} list")
    known = {int(im["id"]) for im in data["images"]}
    coco = CocoData(path, data, Path(image_root) if image_root else None)
    for a in data["annotations"]:
        if int(a["image_id"]) not in known:
            raise InputError(f"{path}: annotation {a.get('id')} refers to unknown image id {a['image_id']}")
        coco._by_image.setdefault(int(a["image_id"]), []).append(a)
    return coco

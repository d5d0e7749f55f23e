"""Readers for evaluation data: image+mask folders, the DAVIS layout, semantic label maps, COCO JSON.

Every reader checks its layout up front and reports problems in one line naming the file or
folder (missing masks, missing frames, empty folders, size mismatches, unknown label values).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anyseg.errors import InputError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


def files_by_stem(folder: Path, what: str) -> dict[str, Path]:
    """``{stem: path}`` of the image files in ``folder``; a missing or empty folder, or two files
    with one stem, is a one-line :class:`InputError` (``what`` names the files).
    """
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


#: Largest JSON file the readers load into memory (LVIS' 1.1 GB training set fits).
MAX_JSON_BYTES = 2 * 1024**3


def read_json(path: str | os.PathLike, what: str = "JSON file", max_bytes: int | None = None) -> Any:
    """The parsed content of a JSON file of at most ``max_bytes`` (default :data:`MAX_JSON_BYTES`).

    A missing file, a folder or device, a file over the limit, or one that is not UTF-8 JSON
    is a one-line :class:`InputError` naming the file (``what`` says what it should be).
    """
    path = Path(path)
    limit = MAX_JSON_BYTES if max_bytes is None else int(max_bytes)
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a regular file")
    too_big = f"{what} {path} is larger than the {limit / 1e6:g} MB a JSON file may have"
    try:
        if path.stat().st_size > limit:
            raise InputError(too_big)
        with path.open("rb") as f:
            raw = f.read(path.stat().st_size + 1)  # (read(n) allocates n bytes up front)
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(raw) > limit:
        raise InputError(too_big)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InputError(f"cannot read {what} {path}: not valid UTF-8 JSON ({str(e)[:120]})") from None


def open_mask(path: Path, size: tuple[int, int] | None = None, reference: str = "", max_pixels: int | None = None):
    """The opened (not yet decoded) image at ``path``, its declared size checked first."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    from anyseg.io.images import max_pixels_default

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except FileNotFoundError:
        raise InputError(f"mask file not found: {path}") from None
    except UnidentifiedImageError:
        raise InputError(f"cannot read {path}: not an image (or an unsupported format)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InputError(f"mask {path} is too large (decompression bomb check)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    w, h = im.size
    limit = max_pixels_default() if max_pixels is None else int(max_pixels)
    if w * h > limit:
        im.close()
        raise InputError(f"mask {path} has {w}x{h} = {w * h / 1e6:.1f} megapixels, over the limit of "
                         f"{limit / 1e6:g} megapixels (raise it with ANYSEG_MAX_PIXELS)")
    if size is not None and (h, w) != tuple(size):
        im.close()
        raise InputError(f"mask {path} is {w}x{h} but {reference} is {size[1]}x{size[0]}")
    return im


def _mask_pixels(im) -> tuple[np.ndarray, str]:
    """Pixels of a decoded mask image, the alpha channel dropped and 1-bit masks as 0/255."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im.convert("L")), "L"
    if mode in ("LA", "La", "PA"):
        return np.asarray(im)[..., 0], mode[0]
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(im.convert("RGB")), "RGB"
    return np.asarray(im), mode


def _read_array(path: Path, size: tuple[int, int] | None = None, reference: str = "the expected size",
                max_pixels: int | None = None) -> tuple[np.ndarray, str]:
    """``(pixels, mode)`` of a mask, label map or annotation image, checked before decoding.

    The declared size must be within ``max_pixels`` (default ``ANYSEG_MAX_PIXELS`` or 40 MP)
    and equal ``size=(H, W)`` when given; a ``(H, W, C)`` result has colour channels only.
    """
    import warnings

    from PIL import Image

    im = open_mask(Path(path), size, reference, max_pixels)
    try:
        with im, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
            return _mask_pixels(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"cannot read {path}: {e}") from None


# -- binary masks: the one rule every ground-truth reader applies -------------------------------

#: lossless masks with more than two values are thresholded at ``> THRESHOLD`` only when every
#: pixel farther than ``NEAR`` from 0 and 255 lies within ``EDGE_RADIUS`` pixels of both a
#: near-0 and a near-255 pixel (a resampled or anti-aliased 0/255 mask: grey only on edges);
#: lossy (JPEG) masks always are, as their noise makes exact values meaningless
THRESHOLD = 127
NEAR = 32
EDGE_RADIUS = 2
LOSSY_SUFFIXES = (".jpg", ".jpeg")
#: what an ambiguous mask's error suggests, per reader
OBJECT_ID_HINT = "give --object-id K to pick one object (or --ignore-value V if one value marks void pixels)"
PALETTE_HINT = "save several objects as an indexed (palette) PNG of object ids, or one object as 0/255"


def _ambiguous(name: Any, values: np.ndarray, hint: str, what: str = "mask", void: int | None = None) -> InputError:
    shown = ", ".join(str(v) for v in values[:6].tolist()) + (", ..." if len(values) > 6 else "")
    besides = f" besides the void value {void}" if void is not None else ""
    return InputError(f"{what} {name} has {len(values)} distinct values{besides} ({shown}): it looks like a "
                      f"label/instance map, not a binary mask; {hint}")


def _distinct(gray: np.ndarray) -> np.ndarray:
    """The distinct values of ``gray``, ascending (a histogram for 8-bit masks)."""
    if gray.dtype == np.uint8:
        return np.flatnonzero(np.bincount(gray.ravel(), minlength=256))
    return np.unique(gray)


def _single_channel(values: np.ndarray, name: Any, lossy: bool) -> np.ndarray:
    """One channel of a mask: grey as is; RGB with equal channels, or lossy, by its largest channel;
    a lossless colour mask only as black + one colour (read as 0/255)."""
    if values.ndim == 2:
        return values
    rgb = values[..., :3]
    if rgb.shape[-1] == 1 or (rgb == rgb[..., :1]).all():
        return rgb[..., 0]
    if lossy:
        return rgb.max(axis=-1)
    key = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colours = np.unique(key)
    if len(colours) == 2 and colours[0] == 0:
        return (key != 0).astype(np.uint8) * 255
    shown = ", ".join(f"#{int(c):06x}" for c in colours[:6]) + (", ..." if len(colours) > 6 else "")
    raise InputError(f"colour mask {name} has {len(colours)} colours ({shown}): expected a grey or palette mask, "
                     "or black and one colour")


def _auto_void(values: np.ndarray, void: int | None | str, lossy: bool, palette: bool,
               object_id: int | None) -> int | None:
    """The void value: ``void`` itself, or for ``"auto"`` none in lossy masks; 255 in label maps
    (with ``object_id``, or palette masks that hold another non-zero index: the DAVIS / Pascal
    VOC void); 128 in grey masks of exactly 0/128/255 with 128 and 255 (GrabCut's unlabeled band)."""
    if void != "auto":
        return void  # type: ignore[return-value]
    if lossy:
        return None
    if object_id is not None:
        return 255 if object_id != 255 else None
    present = set(values.tolist())
    if palette:
        return 255 if 255 in present and present - {0, 255} else None
    return 128 if {128, 255} <= present <= {0, 128, 255} else None


def _foreground(gray: np.ndarray, values: np.ndarray, void_value: int | None, name: Any, lossy: bool,
                palette: bool, hint: str) -> np.ndarray:
    """Foreground of a mask whose non-void ``values`` are known (pixels equal to ``void_value`` are ignored)."""
    nonzero = values[values != 0]
    if not nonzero.size:
        return np.zeros(gray.shape, bool)
    keep = gray != void_value if void_value is not None else None
    if palette:
        if len(nonzero) > 1:
            raise _ambiguous(name, values, hint, "palette mask", void_value)
        return gray == nonzero[0]
    if lossy:
        if nonzero.max() > THRESHOLD:
            return gray > THRESHOLD
        raise InputError(f"lossy (JPEG) mask {name} has values only up to {nonzero.max()}: foreground must be > "
                         f"{THRESHOLD} in a lossy mask (a 0/1 mask needs a lossless format such as PNG)")
    if len(values) <= 2:
        return gray == values[-1]
    if _grey_only_on_edges(gray, keep):
        return gray > THRESHOLD
    raise _ambiguous(name, values, hint, void=void_value)


def _grey_only_on_edges(gray: np.ndarray, keep: np.ndarray | None) -> bool:
    """Whether ``gray`` (where ``keep``) is a 0/255 mask with grey values only along its edges."""
    import cv2

    low, high = gray < NEAR, (gray > 255 - NEAR) & (gray <= 255)
    mid = ~(low | high) if keep is None else ~(low | high) & keep
    if not high.any():
        return False
    if not mid.any():
        return True
    kernel = np.ones((2 * EDGE_RADIUS + 1, 2 * EDGE_RADIUS + 1), np.uint8)
    near_low = cv2.dilate(low.view(np.uint8), kernel).view(bool)
    near_high = cv2.dilate(high.view(np.uint8), kernel).view(bool)
    return not (mid & ~(near_low & near_high)).any()


def _object_pixels(gray: np.ndarray, values: np.ndarray, name: Any, object_id: int) -> np.ndarray:
    if object_id not in values:
        shown = ", ".join(str(v) for v in values[:8].tolist()) + (", ..." if len(values) > 8 else "")
        raise InputError(f"mask {name} has no object id {object_id} (its values: {shown})")
    return gray == object_id


def binary_mask(values: np.ndarray, name: Any, void: int | None | str = "auto", *, lossy: bool = False,
                palette: bool = False, object_id: int | None = None,
                hint: str = OBJECT_ID_HINT) -> tuple[np.ndarray, np.ndarray | None]:
    """``(foreground, void)`` boolean ``(H, W)`` masks of a mask image's pixel ``values``.

    The rule (docs/EVALUATION.md, "Binary masks"): pixels equal to the void value are ignored
    (``void="auto"``: none in lossy masks, else 255 in label maps - palette masks, or with
    ``object_id`` - and 128 in grey 0/128/255 masks); of the other values, with ``object_id`` the
    pixels equal to it are the foreground; else a palette mask's one non-zero index; a lossy
    mask's pixels > 127; a lossless mask with at most two values, its larger (0/1, 0/255, 0/v);
    a lossless mask with more, pixels > 127 if its grey values (32..223) lie only along edges
    between near-0 and near-255 pixels (within :data:`EDGE_RADIUS`).
    Anything else (several objects, a label map, a soft mask) is a one-line :class:`InputError`
    naming ``name`` and the values, ending with ``hint``. ``void`` is ``None`` when nothing is
    ignored.
    """
    if object_id is not None and values.ndim == 3 and not (values[..., :3] == values[..., :1]).all():
        raise InputError(f"--object-id needs a palette or grey mask of object ids; {name} is a colour image")
    gray = _single_channel(values, name, lossy)
    all_values = _distinct(gray)
    void_value = _auto_void(all_values, void, lossy, palette, object_id)
    keep = all_values != void_value if void_value is not None else np.ones(len(all_values), bool)
    ignore = gray == void_value if void_value is not None and not keep.all() else None
    if object_id is not None:
        fg = _object_pixels(gray, all_values, name, object_id)
    else:
        fg = _foreground(gray, all_values[keep], void_value if ignore is not None else None, name, lossy, palette,
                         hint)
    if ignore is not None:
        fg &= ~ignore
    return fg, ignore


def read_binary_mask(path: str | os.PathLike, void: int | None | str = "auto", object_id: int | None = None,
                     size: tuple[int, int] | None = None, reference: str = "the expected size",
                     max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(foreground, void)`` of the ground-truth mask at ``path`` by :func:`binary_mask`'s rule.

    ``size``, ``reference`` and ``max_pixels`` are checked before decoding, as in :func:`read_object_ids`.
    """
    path = Path(path)
    arr, mode = _read_array(path, size, reference, max_pixels)
    return binary_mask(arr, path, void, lossy=path.suffix.lower() in LOSSY_SUFFIXES, palette=mode == "P",
                       object_id=object_id)


def read_prediction_mask(path: str | os.PathLike, object_id: int | None = None, size: tuple[int, int] | None = None,
                         reference: str = "the ground truth") -> np.ndarray:
    """``(H, W)`` bool foreground of a predicted mask by :func:`binary_mask`'s rule, with no void
    value; a prediction that is not binary by that rule (several objects) takes ``object_id``,
    when given and present in a lossless mask."""
    path = Path(path)
    arr, mode = _read_array(path, size, reference)
    lossy = path.suffix.lower() in LOSSY_SUFFIXES
    try:
        return binary_mask(arr, path, None, lossy=lossy, palette=mode == "P")[0]
    except InputError:
        if object_id is None or lossy or arr.ndim != 2 or object_id not in _distinct(arr):
            raise
    return binary_mask(arr, path, None, object_id=object_id)[0]


def _pair(images: dict[str, Path], masks: dict[str, Path], mask_dir: Path) -> list[tuple[str, Path, Path]]:
    missing = sorted(set(images) - set(masks))
    if missing:
        raise InputError(f"no mask for image {images[missing[0]].name} in {mask_dir} (pairs are matched by file stem)"
                         + (f"; {len(missing) - 1} more missing" if len(missing) > 1 else ""))
    return [(stem, images[stem], masks[stem]) for stem in images]


# -- binary image + mask folders ---------------------------------------------------------------


@dataclass(frozen=True)
class MaskSample:
    """One image with a binary ground-truth mask and optional ignored pixels.

    ``ignore_value`` is the void value (``"auto"``, an int, or ``None``) and ``object_id`` the
    object of a label-map mask, as :func:`binary_mask` takes them.
    """

    name: str
    image_path: Path
    mask_path: Path
    ignore_value: int | None | str = "auto"
    object_id: int | None = None

    def load_image(self) -> np.ndarray:
        from anyseg.io.images import load_image

        return load_image(self.image_path)

    def load_gt(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(gt, ignore)`` by :func:`binary_mask`'s rule; ``ignore`` is ``None`` when nothing is ignored."""
        return read_binary_mask(self.mask_path, self.ignore_value, self.object_id)


def read_mask_folder(root: str | os.PathLike, images: str = "images", masks: str = "masks",
                     ignore_value: int | None | str = "auto", limit: int | None = None,
                     object_id: int | None = None) -> list[MaskSample]:
    """Pairs ``root/images/NAME.*`` with ``root/masks/NAME.*`` by file stem.

    Masks are read by :func:`binary_mask`'s rule: ``ignore_value="auto"`` ignores GrabCut's
    128 band in grey 0/128/255 masks (255 in label maps) and nothing in JPEG masks, whose
    compression noise makes exact values meaningless (Kvasir-SEG); pass an int or ``None`` to
    choose explicitly. ``object_id`` picks one object of palette or grey label-map masks.
    """
    root = Path(root)
    image_dir, mask_dir = root / images, root / masks
    pairs = _pair(files_by_stem(image_dir, "image"), files_by_stem(mask_dir, "mask"), mask_dir)
    return [MaskSample(stem, ip, mp, ignore_value, object_id) for stem, ip, mp in pairs[: limit or None]]


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
        """``(T, H, W)`` object ids of every frame; every annotation must have the first one's size."""
        first = self.load_annotation(0)
        out = np.empty((len(self), *first.shape), dtype=np.int32)
        out[0] = first
        for i in range(1, len(self)):
            path = self.annotations[i]
            if path is None:
                raise InputError(f"frame {i} of sequence {self.name} has no annotation")
            out[i] = read_object_ids(path, size=first.shape, reference=f"frame 0 of sequence {self.name}")
        return out


def read_object_ids(path: Path, size: tuple[int, int] | None = None, reference: str = "the expected size",
                    max_pixels: int | None = None) -> np.ndarray:
    """``(H, W)`` int32 object ids of a mask image: palette indices of 'P' images, else object 1
    where :func:`binary_mask`'s rule finds foreground (0/1, 0/255, ...; no void value).

    With ``size=(H, W)`` a mask of another size is refused before its pixels are decoded
    (``reference`` names what the size is, in the message); so is one over ``max_pixels``
    (default ``ANYSEG_MAX_PIXELS`` or 40 MP).
    """
    path = Path(path)
    arr, mode = _read_array(path, size, reference, max_pixels)
    if mode == "P":
        return arr.astype(np.int32)
    fg, _ = binary_mask(arr, path, None, lossy=path.suffix.lower() in LOSSY_SUFFIXES, hint=PALETTE_HINT)
    return fg.astype(np.int32)


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
        frames = files_by_stem(frames_root / name, "frame")
        anns = files_by_stem(ann_root / name, "annotation") if (ann_root / name).is_dir() else {}
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
    pairs = _pair(files_by_stem(root / images, "image"), files_by_stem(root / labels, "label"), root / labels)
    return [SemanticSample(s, ip, lp, num_classes, void_id) for s, ip, lp in pairs[: limit or None]]


# -- COCO ----------------------------------------------------------------------------------------


def coco_id(value: Any, what: str, strings: bool = False) -> int | str:
    """A COCO id: an int (or, with ``strings``, a str), never a bool, float or container.

    Anything else is a one-line :class:`InputError` that starts with ``what``.
    """
    if isinstance(value, str) and strings:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{what} must be an integer id{' or a string' if strings else ''}; got {value!r:.40}")
    return int(value)


@dataclass
class CocoData:
    """A COCO instance-segmentation file, with masks decoded per image on demand."""

    path: Path
    data: dict
    image_root: Path | None = None
    _by_image: dict[int, list[tuple[int, dict]]] = field(default_factory=dict, repr=False)
    _images: dict[int, dict] = field(default_factory=dict, repr=False)

    @property
    def image_ids(self) -> list[int]:
        return list(self._images)

    def image_info(self, image_id: int) -> dict:
        info = self._images.get(image_id)
        if info is None:
            raise InputError(f"image id {image_id!r:.40} not in {self.path}")
        return info

    def instances(self, image_id: int):
        """The image's ground truth as :class:`~anyseg.types.Masks` (labels = category ids).

        Every segmentation goes through :func:`anyseg.masks.polygons.segmentation_to_rle` with
        the image's size; a malformed one is an :class:`InputError` naming the file and the entry.
        """
        from anyseg.masks.polygons import segmentation_to_rle
        from anyseg.masks.rle import decode
        from anyseg.types import Masks

        info = self.image_info(image_id)
        h, w = int(info["height"]), int(info["width"])
        anns = self._by_image.get(image_id, [])
        rles = []
        for index, a in anns:
            try:
                rles.append(segmentation_to_rle(a["segmentation"], h, w))
            except InputError as e:
                raise InputError(f"{self.path}: annotation #{index} (id {a.get('id')!r:.40}): {e}") from None
        out = np.zeros((len(anns), h, w), bool)
        for i, rle in enumerate(rles):
            out[i] = decode(rle)
        return Masks(out, labels=np.array([int(a["category_id"]) for _, a in anns], dtype=np.int64))


def _coco_images(data: dict, path: Path) -> dict[int, dict]:
    from anyseg.masks.rle import check_size

    images: dict[int, dict] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or any(k not in im for k in ("id", "height", "width")):
            raise InputError(f"{path}: image #{i} needs 'id', 'height' and 'width'; got {im!r:.80}")
        image_id = coco_id(im["id"], f"{path}: image #{i} 'id'")
        check_size((im["height"], im["width"]), f"{path}: image #{i} [height, width]")
        if image_id in images:
            raise InputError(f"{path}: image #{i} repeats the image id {image_id!r}")
        images[image_id] = im
    return images


def read_coco(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> CocoData:
    """A COCO instance JSON file (at most :data:`MAX_JSON_BYTES`), its images and annotations checked.

    Segmentations are checked when :meth:`CocoData.instances` decodes them.
    """
    path = Path(path)
    data = read_json(path, "COCO file")
    if not isinstance(data, dict):
        raise InputError(f"{path} is not COCO instance JSON: expected an object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f"{path} is not COCO instance JSON: missing the {key!r} list")
    coco = CocoData(path, data, Path(image_root) if image_root else None)
    coco._images = _coco_images(data, path)
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or any(k not in a for k in ("image_id", "category_id", "segmentation")):
            raise InputError(f"{path}: annotation #{i} needs 'image_id', 'category_id' and 'segmentation'")
        image_id = coco_id(a["image_id"], f"{path}: annotation #{i} 'image_id'")
        coco_id(a["category_id"], f"{path}: annotation #{i} 'category_id'")
        if image_id not in coco._images:
            raise InputError(f"{path}: annotation {a.get('id')!r:.40} refers to unknown image id {image_id!r:.40}")
        coco._by_image.setdefault(image_id, []).append((i, a))
    return coco

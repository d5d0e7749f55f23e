"""Image reading with content checks and a pixel limit (decompression bombs)."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from anyseg.errors import InputError

#: Default pixel limit (40 megapixels); ``ANYSEG_MAX_PIXELS`` or ``--max-pixels`` change it.
DEFAULT_MAX_PIXELS = 40_000_000


def max_pixels_default() -> int:
    value = os.environ.get("ANYSEG_MAX_PIXELS")
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(float(value))
    except ValueError:
        raise InputError(f"ANYSEG_MAX_PIXELS must be a number of pixels; got {value!r}") from None
    if limit <= 0:
        raise InputError(f"ANYSEG_MAX_PIXELS must be positive; got {value!r}")
    return limit


def _open_checked(path: str | os.PathLike, max_pixels: int | None):
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise InputError(f"image not found: {path}")
    if path.is_dir():
        raise InputError(f"expected an image file, got a folder: {path}")
    limit = max_pixels_default() if max_pixels is None else int(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except UnidentifiedImageError:
        raise InputError(f"not an image (or an unsupported format): {path}") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InputError(f"image is too large (decompression bomb check): {path}") from None
    except OSError as e:
        raise InputError(f"corrupt or truncated image {path}: {e.strerror or e}") from None
    w, h = im.size
    if w * h > limit:
        im.close()
        raise InputError(
            f"image {path} has {w}x{h} = {w * h / 1e6:.1f} megapixels, over the limit of {limit / 1e6:g} "
            "megapixels (raise it with --max-pixels or ANYSEG_MAX_PIXELS)"
        )
    return im


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB, applying its EXIF orientation.

    Raises :class:`InputError` (one line) for a missing file, a folder, a non-image, a
    truncated or corrupt file, or an image over ``max_pixels`` (default 40 MP).
    """
    from PIL import Image, ImageOps

    im = _open_checked(path, max_pixels)
    try:
        with im, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # our own limit was checked above
            try:
                im.load()
                im = ImageOps.exif_transpose(im) or im
                rgb = im.convert("RGB")
            finally:
                Image.MAX_IMAGE_PIXELS = old
            arr = np.asarray(rgb, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"corrupt or truncated image {path}: {e}") from None
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"image {path} is empty")
    return np.ascontiguousarray(arr)


def load_mask(path: str | os.PathLike, size: tuple[int, int] | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Read a mask image as ``(H, W)`` bool: foreground is any channel > 127.

    With ``size=(H, W)`` the mask must have exactly that size.
    """
    im = _open_checked(path, max_pixels)
    try:
        with im:
            im.load()
            arr = np.asarray(im.convert("L") if im.mode not in ("1", "L", "P") else im)
            if im.mode == "P":  # palette/indexed PNG: any non-zero index is foreground
                mask = arr > 0
            elif im.mode == "1":
                mask = arr.astype(bool)
            else:
                mask = arr > 127
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"corrupt or truncated mask image {path}: {e}") from None
    if size is not None and mask.shape != tuple(size):
        raise InputError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but the image is {size[1]}x{size[0]}")
    return mask


def image_hash(image: np.ndarray) -> str:
    """Content hash of an image array (shape and pixels), the embedding cache key."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((image.shape, str(image.dtype))).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()

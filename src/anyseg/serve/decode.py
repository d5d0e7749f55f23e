"""What the service decodes from clients: uploaded images, RLE masks, file names.

The file-name and label sanitizers (:func:`base_name`, :func:`safe_name`, :func:`one_line_label`)
live in :mod:`anyseg.io.export`, whose exporters apply them on the way out; they are re-exported here.

Each function maps the project's one-line errors to the right HTTP status
(:class:`~anyseg.serve.errors.ApiError`): a non-image 415, an image or mask over the pixel
limit 413, anything corrupt, truncated or of the wrong size 400.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from anyseg.errors import InputError
from anyseg.io.export import base_name, one_line_label, safe_name  # the exporters' sanitizers, used here too
from anyseg.serve.errors import ApiError

__all__ = ["FORMATS", "ID_RE", "MIME", "base_name", "check_id", "decode_upload", "normalise_rle", "one_line_label",
           "safe_name"]

#: image ids: the first 16 hex digits of the pixel hash
ID_RE = re.compile(r"[0-9a-f]{16}")
#: formats accepted by upload (decoded by Pillow); others (EPS, PDF, ...) are refused with 415
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "BMP": "image/bmp",
        "TIFF": "image/tiff", "GIF": "image/gif"}


def check_id(image_id: str) -> str:
    """``image_id`` if it is 16 lowercase hex digits, else :class:`ApiError` 404 (ids are never paths)."""
    if not ID_RE.fullmatch(image_id):
        raise ApiError(404, f"no image with id {image_id[:40]!r} (ids are 16 lowercase hex digits)")
    return image_id


def decode_upload(data: bytes, max_pixels: int, name: str = "upload") -> tuple[np.ndarray, str]:
    """``(H, W, 3)`` uint8 RGB and the format of uploaded bytes; :class:`ApiError` 415/413/400."""
    from anyseg.io.images import ImageTooLarge, UnsupportedImage, decode_image_bytes

    try:
        return decode_image_bytes(data, max_pixels=max_pixels, formats=FORMATS, name=name)
    except UnsupportedImage as e:
        raise ApiError(415, f"{e} (expected one of {', '.join(FORMATS)})") from None
    except ImageTooLarge as e:
        raise ApiError(413, str(e)) from None
    except InputError as e:
        raise ApiError(400, str(e)) from None


def normalise_rle(rle: Any, size: tuple[int, int], max_pixels: int) -> tuple[dict, np.ndarray]:
    """The canonical compressed RLE of a client's mask, checked against the image ``size`` = (H, W), and the mask.

    The size is checked before anything proportional to the mask is allocated (a small RLE
    string can describe a huge mask).
    """
    from anyseg.masks import rle as rle_mod

    d = rle.model_dump() if hasattr(rle, "model_dump") else rle
    limit = max(int(max_pixels), size[0] * size[1], 1)
    try:
        canonical = rle_mod.validate(d, size=size, max_pixels=limit)
        return canonical, rle_mod.decode(canonical, size=size, max_pixels=limit)
    except InputError as e:
        raise ApiError(400, f"bad RLE: {e}") from None

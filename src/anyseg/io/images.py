"""Image reading with content checks, a pixel limit (decompression bombs) and faithful 8-bit RGB.

Every reader (:func:`load_image`, :func:`decode_image_bytes`, :func:`load_mask`) goes through
one decoding core that

* refuses a file whose header declares more than ``max_pixels`` pixels before any pixel is
  decoded, and again after decoding (formats whose size is only known from their frames);
* maps every error Pillow raises on hostile input to a one-line :class:`InputError`
  (:class:`UnsupportedImage` for a non-image, :class:`ImageTooLarge` for bombs, including
  metadata bombs such as oversized zTXt/iCCP chunks);
* keeps native decoders (libtiff, libjpeg, ...) from writing to stderr: file descriptor 2 is
  redirected while decoding, and what they said is folded into the error message when
  decoding fails;
* converts every pixel mode Pillow can open to 8-bit RGB with :func:`to_rgb8` (scaled, never
  clipped), or says which mode it cannot convert.

Decoding holds a module lock: Pillow's limits, Python's warning filters and file descriptor 2
are process-wide, so images are decoded one at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import struct
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator

import numpy as np

from anyseg.errors import AnysegError, InputError

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "DEFAULT_MAX_PIXELS", "SUPPORTED_MODES", "UNSAFE_FORMATS", "ImageTooLarge", "UnsupportedImage",
    "decode_image_bytes", "image_hash", "load_image", "load_mask", "max_pixels_default", "to_rgb8",
]

#: Default pixel limit (40 megapixels); ``ANYSEG_MAX_PIXELS`` or ``--max-pixels`` change it.
DEFAULT_MAX_PIXELS = 40_000_000

#: Formats never decoded unless asked for by name: EPS runs Ghostscript on the file.
UNSAFE_FORMATS = ("EPS",)

_CLI_HINT = " (raise it with --max-pixels or ANYSEG_MAX_PIXELS)"
_MAX_REASON = 200
_DECODE_LOCK = threading.RLock()


class UnsupportedImage(InputError):
    """The data is not an image, or not in one of the accepted formats (HTTP 415)."""


class ImageTooLarge(InputError):
    """The image (or its metadata) is over the pixel limit or a decompression-bomb check (HTTP 413)."""


def max_pixels_default() -> int:
    """The pixel limit from ``ANYSEG_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`."""
    value = os.environ.get("ANYSEG_MAX_PIXELS")
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(float(value))
    except (ValueError, OverflowError):
        raise InputError(f"ANYSEG_MAX_PIXELS must be a number of pixels; got {value!r}") from None
    if limit <= 0:
        raise InputError(f"ANYSEG_MAX_PIXELS must be positive; got {value!r}")
    return limit


def _pixel_limit(max_pixels: int | None) -> int:
    if max_pixels is None:
        return max_pixels_default()
    try:
        limit = int(max_pixels)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"max_pixels must be a positive number of pixels; got {max_pixels!r}") from None
    if limit <= 0:
        raise InputError(f"max_pixels must be a positive number of pixels; got {max_pixels!r}")
    return limit


# -- native stderr -----------------------------------------------------------------------------------
_log = logging.getLogger(__name__)


def _flush_stderr() -> None:
    with contextlib.suppress(Exception):
        sys.stderr.flush()


@contextlib.contextmanager
def _captured_stderr(lines: list[str]) -> Iterator[None]:
    """Redirect file descriptor 2 to a temporary file; what was written is appended to ``lines``.

    Native decoders print warnings there (libtiff: "tempfile.tif: Using code not yet in table.").
    The text is also logged at DEBUG level (logger ``anyseg.io.images``), so that output another
    thread wrote to stderr during the redirect is not lost either.
    """
    _flush_stderr()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to protect
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read(1 << 16).decode("utf-8", "replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())
            if text.strip():
                _log.debug("stderr while decoding an image: %s", text.strip())


@contextlib.contextmanager
def _pillow_guarded() -> Iterator[None]:
    """Warnings silenced (bomb warnings raised), truncated images refused; restored after."""
    from PIL import Image, ImageFile

    old_pixels, old_truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old_pixels, old_truncated


# -- errors --------------------------------------------------------------------------------------------
#: What Pillow and its plugins raise on corrupt input (found by tests/test_fuzz_images.py).
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, SyntaxError, struct.error, IndexError, TypeError, ZeroDivisionError, EOFError,
    KeyError, MemoryError, OverflowError, RuntimeError, AttributeError, UnicodeError,
)


def _is_decode_error(e: BaseException) -> bool:
    from PIL import Image

    return isinstance(e, (*_DECODE_ERRORS, Warning, Image.DecompressionBombError))


def _reason(e: BaseException, chatter: list[str]) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) > _MAX_REASON:
        text = text[:_MAX_REASON] + "..."
    if chatter:
        text += f" (decoder said: {chatter[0][:_MAX_REASON]})"
    return text


def _decode_error(e: BaseException, name: str, limit: int, chatter: list[str]) -> InputError:
    """The one-line error for an exception raised while decoding ``name``."""
    from PIL import Image, PngImagePlugin, UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        return UnsupportedImage(f"not an image (or an unsupported format): {name}")
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageTooLarge(
            f"image {name} is too large (decompression bomb check: over {limit / 1e6:g} megapixels)")
    if isinstance(e, MemoryError):
        return ImageTooLarge(f"image {name} is too large: decoding it needs more memory than is available")
    text = str(e)
    if isinstance(e, ValueError) and ("Decompressed data too large" in text or "Too much memory used in text" in text):
        return ImageTooLarge(
            f"image {name} has a metadata chunk (text or ICC profile) that is too large: it decompresses to more "
            f"than Pillow's limit of {PngImagePlugin.MAX_TEXT_CHUNK // 1024} KiB per chunk "
            f"({PngImagePlugin.MAX_TEXT_MEMORY // 1024} KiB in all); a metadata bomb"
        )
    return InputError(f"corrupt or truncated image {name}: {_reason(e, chatter)}")


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f}" if pixels >= 1e6 else f"{pixels / 1e6:.2g}"


def _check_size(size: tuple[int, int], name: str, limit: int, hint: str) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise InputError(f"image {name} is empty ({w}x{h} pixels)")
    if w * h > limit:
        raise ImageTooLarge(
            f"image {name} is too large: {w}x{h} = {_megapixels(w * h)} megapixels, over the limit of "
            f"{limit / 1e6:g} megapixels{hint}"
        )


# -- the decoding core ---------------------------------------------------------------------------------
def _allowed_formats(formats: tuple[str, ...] | None) -> list[str]:
    from PIL import Image

    Image.init()
    if formats is None:
        return [f for f in Image.OPEN if f not in UNSAFE_FORMATS]
    if isinstance(formats, str):
        formats = (formats,)
    wanted = [str(f).upper() for f in formats]
    unknown = [f for f in wanted if f not in Image.OPEN]
    if unknown or not wanted:
        raise InputError(f"formats must name image formats Pillow can read (e.g. PNG, JPEG); got {formats!r}")
    return wanted


def _orientation(im: PILImage.Image) -> int:
    """The EXIF (or XMP) orientation 1..8; 1 when there is none or the EXIF is malformed.

    Malformed EXIF is metadata, not pixels: like web browsers, it is ignored.
    """
    try:
        value = im.getexif().get(0x0112, 1)
    except _DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _oriented(arr: np.ndarray, orientation: int) -> np.ndarray:
    """``arr`` (H, W, ...) transposed as ``ImageOps.exif_transpose`` does for ``orientation``."""
    swap = (1, 0) + tuple(range(2, arr.ndim))
    ops: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(swap),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(swap),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return arr if op is None else op(arr)


def _decode(
    fp: BinaryIO,
    name: str,
    limit: int,
    formats: list[str],
    hint: str,
    convert: Callable[[PILImage.Image, str], np.ndarray],
    expect_size: Callable[[tuple[int, int]], None] | None,
    orient: bool,
) -> tuple[np.ndarray, str]:
    """Open, check the header, decode, convert; the caller holds the lock and the guards."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # the header's size is checked below, with a clearer message
    im = Image.open(fp, formats=formats)
    _check_size(im.size, name, limit, hint)
    if expect_size is not None:
        expect_size(im.size)
    if im.format == "PNG":  # check every chunk's CRC: Pillow's load() skips the image data's
        im.verify()
        fp.seek(0)
        im = Image.open(fp, formats=["PNG"])
    with im:
        fmt = "JPEG" if im.format == "MPO" and "MPO" not in formats else (im.format or formats[0])
        Image.MAX_IMAGE_PIXELS = limit  # images nested in the file (ICO, ...) are checked by Pillow
        im.load()
        _check_size(im.size, name, limit, hint)  # some formats only know their size after decoding
        arr = convert(im, name)
        if orient:
            arr = _oriented(arr, _orientation(im))
    return np.ascontiguousarray(arr), fmt


def _read(
    opener: Callable[[], BinaryIO],
    name: str,
    *,
    max_pixels: int | None,
    formats: tuple[str, ...] | None,
    hint: str,
    convert: Callable[[PILImage.Image, str], np.ndarray],
    expect_size: Callable[[tuple[int, int]], None] | None = None,
    orient: bool = True,
) -> tuple[np.ndarray, str]:
    """The one decoding path of every reader: ``(convert(image), format)`` or a one-line InputError."""
    limit = _pixel_limit(max_pixels)
    allowed = _allowed_formats(formats)
    chatter: list[str] = []
    try:
        with _DECODE_LOCK, opener() as fp, _captured_stderr(chatter), _pillow_guarded():
            return _decode(fp, name, limit, allowed, hint, convert, expect_size, orient)
    except AnysegError:
        raise
    except Exception as e:
        if not _is_decode_error(e):
            raise
        raise _decode_error(e, name, limit, chatter) from None


# -- pixel modes -> 8-bit RGB --------------------------------------------------------------------------
def _gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _scale16(a: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded (v / 257): the full range of the 16-bit type."""
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _stretch(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if not hi > lo:
        return np.zeros(a.shape, np.uint8)
    out = (a.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _int32_to_8(a: np.ndarray) -> np.ndarray:
    lo, hi = int(a.min()), int(a.max())
    if lo >= 0 and hi <= 65535:
        return _scale16(a)
    return _stretch(a, lo, hi)


def _float_to_8(a: np.ndarray) -> np.ndarray:
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, np.uint8)
    lo = float(np.min(a, where=finite, initial=np.inf))
    hi = float(np.max(a, where=finite, initial=-np.inf))
    b = np.where(finite, a, np.float32(lo)).astype(np.float32)  # non-finite pixels are zeroed below
    if lo >= 0 and hi <= 1:
        out = np.clip(np.rint(b * np.float32(255)), 0, 255).astype(np.uint8)
    else:
        out = _stretch(b, lo, hi)
    out[~finite] = 0
    return out


def _on_black(rgba: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA composited on black: round(rgb * alpha / 255)."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    return ((rgba[..., :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)


_DIRECT = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV", "LAB")
_ALPHA = ("RGBA", "LA", "PA")
_SIXTEEN = ("I;16", "I;16L", "I;16B", "I;16N")
_KEYED = ("L", "RGB", "P")  # modes whose "transparency" info (a colour key or tRNS) is honoured
SUPPORTED_MODES = _DIRECT + _ALPHA + _SIXTEEN + ("RGBa", "La", "I", "F")


def to_rgb8(im: PILImage.Image, name: str = "image") -> np.ndarray:
    """A decoded Pillow image as a faithful ``(H, W, 3)`` uint8 RGB array (scaled, never clipped).

    Rules, by pixel mode:

    * ``1``, ``L``, ``P``, ``RGB``, ``RGBX``, ``CMYK``, ``YCbCr``, ``HSV``, ``LAB``: Pillow's
      conversion to RGB (CMYK without a colour profile, as Pillow does).
    * Transparency (``RGBA``, ``LA``, ``PA``, and ``L``/``RGB``/``P`` with a transparent colour or
      palette alpha): composited on **black**, ``round(rgb * alpha / 255)``; fully opaque pixels
      are unchanged. The premultiplied modes ``RGBa`` and ``La`` are already composited on black.
    * 16-bit ``I;16``/``I;16L``/``I;16B``/``I;16N``: scaled by the full 16-bit range,
      ``round(v / 257)`` (what image viewers show), so 65535 is 255, not a clipped white.
    * 32-bit ``I``: values within 0..65535 are treated as 16-bit data (as above); any other range
      is stretched min..max to 0..255.
    * 32-bit float ``F``: finite values within [0, 1] are scaled by 255; any other range is stretched
      min..max (over finite values) to 0..255; NaN and infinities become 0.
    * A constant image whose range cannot be stretched becomes 0.

    Raises :class:`InputError` naming the mode for any other mode. ``name`` names the image in
    messages.
    """
    mode = im.mode
    if mode in _KEYED and "transparency" in im.info:
        return _on_black(np.asarray(im.convert("RGBA")))
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode in _DIRECT:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    if mode in _ALPHA:
        return _on_black(np.asarray(im.convert("RGBA")))
    if mode == "RGBa":
        return np.asarray(im)[..., :3]
    if mode == "La":
        return _gray3(np.asarray(im)[..., 0])
    if mode in _SIXTEEN:
        return _gray3(_scale16(np.asarray(im)))
    if mode == "I":
        return _gray3(_int32_to_8(np.asarray(im)))
    if mode == "F":
        return _gray3(_float_to_8(np.asarray(im)))
    raise InputError(
        f"image {name} has pixel mode {mode!r}, which anyseg cannot convert to RGB; "
        f"expected one of {', '.join(SUPPORTED_MODES)}"
    )


# -- public readers ------------------------------------------------------------------------------------
class _CappedReader(io.BufferedReader):
    """A file whose ``read(n)`` never asks for more than what is left of the file.

    Some Pillow plugins read a length taken from the header in one call (a GIMP brush comment,
    a PNG chunk after the image data, ...); on a real file that allocates the declared size
    (up to 4 GB) before reading. Like ``io.BytesIO``, this reader allocates what is there.
    """

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
            size = min(size, max(os.fstat(self.fileno()).st_size - self.tell(), 0))
            if size == 0:
                return b""
        return super().read(size)


def _file_opener(path: Path) -> Callable[[], BinaryIO]:
    if not path.exists():
        raise InputError(f"image not found: {path}")
    if path.is_dir():
        raise InputError(f"expected an image file, got a folder: {path}")

    def opener() -> BinaryIO:
        try:
            return _CappedReader(io.FileIO(path, "rb"))
        except OSError as e:
            raise InputError(f"cannot read image {path}: {e.strerror or e}") from None

    return opener


def decode_image_bytes(
    data: bytes,
    *,
    max_pixels: int | None = None,
    formats: tuple[str, ...] | None = None,
    name: str = "upload",
) -> tuple[np.ndarray, str]:
    """Decode image bytes (an upload) as ``(H, W, 3)`` uint8 RGB and Pillow's format name.

    The EXIF orientation is applied and pixels are converted by :func:`to_rgb8`. ``formats``
    restricts the accepted Pillow formats (default: all but :data:`UNSAFE_FORMATS`);
    ``max_pixels`` defaults to :func:`max_pixels_default`; ``name`` names the data in messages.
    Raises :class:`UnsupportedImage` for a non-image or a format not in ``formats``,
    :class:`ImageTooLarge` for an image or metadata over the limits, and :class:`InputError` for
    corrupt or truncated data — always with a one-line message.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"expected image bytes for {name}; got {type(data).__name__}")
    if len(data) == 0:
        raise UnsupportedImage(f"not an image: {name} is empty (0 bytes)")
    return _read(lambda: io.BytesIO(bytes(data)), name, max_pixels=max_pixels, formats=formats, hint="",
                 convert=to_rgb8)


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB, applying its EXIF orientation.

    Pixels are converted by :func:`to_rgb8` (16-bit and float images are scaled, transparency is
    composited on black; the first frame of an animation or multi-page file). Raises
    :class:`InputError` (one line) for a missing file, a folder, a non-image, a truncated or
    corrupt file, or an image (or metadata) over ``max_pixels`` (default 40 MP).
    """
    path = Path(path)
    arr, _ = _read(_file_opener(path), str(path), max_pixels=max_pixels, formats=None, hint=_CLI_HINT,
                   convert=to_rgb8)
    return arr


def _mask_values(im: PILImage.Image, name: str) -> tuple[np.ndarray, Any]:
    """The channels that decide the foreground, and the threshold they must exceed."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im), 0
    if mode in ("P", "PA", "L", "LA", "La"):  # P/PA: any non-zero palette index is foreground
        a = np.asarray(im)
        return (a if a.ndim == 2 else a[..., 0]), (0 if mode[0] == "P" else 127)
    if mode in _SIXTEEN or mode == "I":
        return np.asarray(im), 32767
    if mode == "F":
        return np.nan_to_num(np.asarray(im), nan=0.0, posinf=1.0, neginf=0.0), 0.5
    if mode in ("RGB", "RGBA", "RGBX", "RGBa"):
        return np.asarray(im)[..., :3], 127
    return to_rgb8(im, name), 127


def _mask_of(im: PILImage.Image, name: str) -> np.ndarray:
    values, threshold = _mask_values(im, name)
    mask = values > threshold
    if mask.ndim == 3:
        mask = mask.any(axis=2)
    if not mask.any() and values.any():
        raise InputError(
            f"mask {name} (mode {im.mode}) has non-zero pixels but none above {threshold}, the foreground "
            "threshold; expected the foreground at 255 (or the maximum of its type) and the background at 0"
        )
    return mask


def load_mask(
    path: str | os.PathLike, size: tuple[int, int] | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Read a mask image as ``(H, W)`` bool.

    Foreground: a non-zero index in a palette image; a value over half the range otherwise —
    > 127 in any colour channel of an 8-bit image (alpha is ignored), > 32767 for 16-bit (and
    32-bit integer) masks, > 0.5 for float masks. A mask whose non-zero pixels are all at or below
    the threshold (a 0/1 label image) is refused rather than read as empty. With ``size=(H, W)``
    the mask must have exactly that size, which is checked from the header before any pixel is
    decoded; ``max_pixels`` is the pixel limit (default :func:`max_pixels_default`).
    """
    path = Path(path)

    def expect(wh: tuple[int, int]) -> None:
        if size is not None and (wh[1], wh[0]) != tuple(size):
            raise InputError(f"mask {path} is {wh[0]}x{wh[1]} but the image is {size[1]}x{size[0]}")

    mask, _ = _read(_file_opener(path), str(path), max_pixels=max_pixels, formats=None, hint=_CLI_HINT,
                    convert=_mask_of, expect_size=expect, orient=False)
    expect((mask.shape[1], mask.shape[0]))  # again after decoding, for formats that only then know their size
    return mask


def image_hash(image: np.ndarray) -> str:
    """Content hash of an image array (shape and pixels), the embedding cache key."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((image.shape, str(image.dtype))).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()

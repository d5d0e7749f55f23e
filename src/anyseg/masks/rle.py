"""COCO run-length encoding (RLE), byte-compatible with ``pycocotools.mask``.

COCO RLE runs over the mask in column-major (Fortran) order and starts with the length of
the first run of zeros (``0`` when the first pixel is set). The *compressed* form stores the
run lengths as a string (pycocotools' LEB128-like code: 5 bits per character in ASCII
48..111, the 6th bit says "more characters follow", runs after the third are stored as the
difference to the run two before); the *uncompressed* form, used by COCO for ``iscrowd``
annotations, stores them as a list of ints. Encoding is done by pycocotools.

Foreign RLEs never reach pycocotools' C decoder: :func:`validate` (which every decoding
function goes through) checks, before anything proportional to the mask is allocated, that

* ``size`` is two non-negative integers, equal to the expected ``size=(H, W)`` when one is
  given, with ``H*W`` within the pixel limit (``max_pixels``, default
  :func:`anyseg.io.images.max_pixels_default`, and never more than :data:`MAX_RLE_PIXELS`);
* the counts are not longer than any valid RLE of that size could be (checked on the length
  alone, before parsing);
* a counts string uses only the 64 code characters, ends on a complete number and encodes
  each number in at most 6 characters; a counts list holds integers only (no bools, floats
  or NaN);
* no run is negative, there are at most ``H*W + 1`` runs, and they sum to exactly ``H*W``.

The string is parsed with numpy, chunk by chunk; decoding, :func:`area` and :func:`to_bbox`
then work on the validated run lengths (``area``/``to_bbox`` without the dense mask).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from anyseg.errors import InputError
from anyseg.types import Masks

__all__ = [
    "MAX_RLE_PIXELS", "encode", "encode_many", "decode", "decode_many", "area", "to_bbox", "to_uncompressed",
    "validate", "check_size", "pixel_limit", "brief",
]

#: Hard ceiling on ``H*W`` whatever ``max_pixels`` says: pycocotools keeps runs in 32-bit
#: ints and its parser shifts C ``int``s, which is only defined for numbers of up to 6
#: characters (30 bits, two's complement), so every run and run difference must be below 2**29.
MAX_RLE_PIXELS = 2**29 - 1

_MAX_NUMBER_CHARS = 6  # 6 characters x 5 bits: any run or run difference of a valid RLE
_CHUNK = 1 << 20  # characters parsed per numpy pass (bounds the temporary arrays)


def _shape(a: Any) -> str:
    return "x".join(str(s) for s in np.shape(a)) or "scalar"


def _as_mask(mask: Any) -> np.ndarray:
    """``mask`` as a 2-D bool array (non-zero = set), or :class:`InputError`."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise InputError(f"expected a 2-D (H, W) mask; got shape {_shape(arr)}")
    return arr if arr.dtype == bool else arr != 0


def _as_stack(masks: np.ndarray | Masks) -> np.ndarray:
    arr = masks.masks if isinstance(masks, Masks) else np.asarray(masks)
    if arr.ndim != 3:
        raise InputError(f"expected (N, H, W) masks; got shape {_shape(arr)}")
    return arr if arr.dtype == bool else arr != 0


# -- size and pixel limit ------------------------------------------------------------------------


def _dimension(v: Any) -> int | None:
    """``v`` as a non-negative int (ints, or floats without a fraction), else ``None``."""
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, Integral):
        n = int(v)
    elif isinstance(v, Real) and math.isfinite(float(v)) and float(v).is_integer():
        n = int(v)
    else:
        return None
    return n if 0 <= n <= MAX_RLE_PIXELS else None


def brief(value: Any) -> str:
    """A short description of a foreign value for a message (never the repr of a huge list)."""
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) > 8:
        return f"a {type(value).__name__} of {len(value)} values"
    return repr(value)[:80]


def check_size(size: Any, what: str = "RLE 'size'") -> tuple[int, int]:
    """``size`` as ``(H, W)``: two non-negative integers (no bools, fractions, NaN or huge values).

    ``what`` starts the one-line :class:`InputError` raised for anything else.
    """
    if isinstance(size, (str, bytes)) or not isinstance(size, (Sequence, np.ndarray)) or len(size) != 2:
        raise InputError(f"{what} must be [height, width] (two non-negative integers); got {brief(size)}")
    h, w = (_dimension(v) for v in size)
    if h is None or w is None:
        raise InputError(f"{what} must be [height, width] (two non-negative integers up to {MAX_RLE_PIXELS}); "
                         f"got {brief(list(size))}")
    return h, w


def pixel_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels`` (default ``ANYSEG_MAX_PIXELS`` or 40 MP).

    Never more than :data:`MAX_RLE_PIXELS`; a limit that is not a positive number is an :class:`InputError`.
    """
    if max_pixels is None:
        from anyseg.io.images import max_pixels_default

        max_pixels = max_pixels_default()
    number = isinstance(max_pixels, Real) and not isinstance(max_pixels, (bool, np.bool_))
    limit = float(max_pixels) if number else None
    if limit is None or not math.isfinite(limit) or limit < 1:
        raise InputError(f"max_pixels must be a positive number of pixels; got {max_pixels!r}")
    return int(min(limit, MAX_RLE_PIXELS))


def _check_pixels(h: int, w: int, limit: int, what: str) -> None:
    hint = ("the most a COCO RLE can describe safely" if limit == MAX_RLE_PIXELS
            else "raise it with --max-pixels or ANYSEG_MAX_PIXELS")
    if h * w > limit:
        raise InputError(f"{what} [{h}, {w}] is {h * w / 1e6:.1f} megapixels, over the limit of "
                         f"{limit / 1e6:g} megapixels ({hint})")
    if max(h, w) > limit:
        raise InputError(f"{what} [{h}, {w}] has a side longer than the limit of {limit} pixels ({hint})")


def _header(rle: Any, size: Any, max_pixels: int | None) -> tuple[int, int]:
    """``(H, W)`` of an RLE dict, checked against the expected ``size`` and the pixel limit."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        got = [str(k)[:20] for k in list(rle)[:8]] if isinstance(rle, Mapping) else type(rle).__name__
        raise InputError(f"expected an RLE dict with 'size' and 'counts'; got {got}")
    h, w = check_size(rle["size"])
    if size is not None:
        want = check_size(size, "the expected size")
        if (h, w) != want:
            raise InputError(f"RLE size [{h}, {w}] does not match the image size [{want[0]}, {want[1]}] "
                             "(expected [height, width])")
    _check_pixels(h, w, pixel_limit(max_pixels), "RLE size")
    return h, w


# -- counts --------------------------------------------------------------------------------------


def _max_chars(pixels: int) -> int:
    """The longest counts string of a valid RLE: ``pixels + 1`` runs of at most 6 characters."""
    return _MAX_NUMBER_CHARS * (pixels + 1)


def _chunk_numbers(c: np.ndarray, ends: np.ndarray, first_run: int) -> np.ndarray:
    """Signed values (before the run-difference decoding) of the complete numbers in ``c``."""
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    longest = int(lengths.max())
    if longest > _MAX_NUMBER_CHARS:
        j = int(np.argmax(lengths))
        raise InputError(f"malformed RLE counts: run {first_run + j} is encoded in {longest} characters; "
                         f"a valid run takes at most {_MAX_NUMBER_CHARS}")
    x = np.zeros(ends.size, dtype=np.int64)
    for p in range(longest):
        sel = np.flatnonzero(lengths > p)
        x[sel] |= (c[starts[sel] + p] & 0x1F).astype(np.int64) << (5 * p)
    negative = np.flatnonzero(c[ends] & 0x10)
    x[negative] -= np.left_shift(np.int64(1), 5 * lengths[negative].astype(np.int64))
    return x


def _check_chars(window: np.ndarray, offset: int) -> None:
    bad = (window < 48) | (window > 111)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"malformed RLE counts: character {chr(window[i])!r} at position {offset + i} is not "
                         "an RLE code character (expected ASCII '0'..'o', 48..111)")


def _undelta(x: np.ndarray, first_run: int, carry: list[int]) -> np.ndarray:
    """Runs from pycocotools' differences (run ``i > 2`` is stored minus run ``i - 2``), in place.

    ``x`` holds runs ``first_run, first_run + 1, ...``; ``carry`` the last even and odd run before them.
    """
    for parity in (0, 1):
        j = (parity - first_run) % 2
        if first_run == 0 and parity == 0:
            j = 2  # runs 0, 1 and 2 are stored as they are
        chain = x[j::2]
        if chain.size:
            np.cumsum(chain, out=chain)
            chain += carry[parity]
            carry[parity] = int(chain[-1])
    return x


def _count_numbers(buf: np.ndarray, pixels: int) -> int:
    """Numbers (runs) in a counts string, every character checked first; at most ``pixels + 1``."""
    count = 0
    for pos in range(0, buf.size, _CHUNK):
        window = buf[pos:pos + _CHUNK]
        _check_chars(window, pos)
        count += int(np.count_nonzero(((window - np.uint8(48)) & 0x20) == 0))
    if count > pixels + 1:
        raise InputError(f"RLE counts have {count} runs, more than the {pixels + 1} a {pixels}-pixel mask can have")
    return count


def _string_runs(counts: bytes, pixels: int) -> np.ndarray:
    """Validated run lengths of a compressed counts string (see the module docstring)."""
    if len(counts) > _max_chars(pixels):
        raise InputError(f"RLE counts of {len(counts)} characters are too long for a {pixels}-pixel mask "
                         f"(at most {_max_chars(pixels)})")
    buf = np.frombuffer(counts, dtype=np.uint8)
    out = np.empty(_count_numbers(buf, pixels), dtype=np.int32)
    carry = [0, 0]
    pos = runs = total = 0
    while pos < buf.size:
        c = buf[pos:pos + _CHUNK] - np.uint8(48)
        ends = np.flatnonzero((c & 0x20) == 0)
        last = pos + c.size >= buf.size
        if ends.size == 0 or (last and ends[-1] != c.size - 1):
            if last:
                raise InputError("malformed RLE counts: the string ends in the middle of a number")
            raise InputError(f"malformed RLE counts: run {runs} is encoded in more than "
                             f"{_MAX_NUMBER_CHARS} characters")
        x = _undelta(_chunk_numbers(c, ends, runs), runs, carry)
        _check_runs(x, runs, pixels, total)
        out[runs:runs + x.size] = x
        runs += x.size
        total += int(x.sum())
        pos += int(ends[-1]) + 1
    return _check_total(out, pixels, total)


def _check_runs(x: np.ndarray, first_run: int, pixels: int, total_before: int) -> None:
    if first_run + x.size > pixels + 1:
        raise InputError(f"RLE counts have more than {pixels + 1} runs, more than a {pixels}-pixel mask can have")
    if x.size and int(x.min()) < 0:
        j = int(np.argmax(x < 0))
        raise InputError(f"malformed RLE counts: run {first_run + j} is negative ({int(x[j])})")
    if x.size and int(x.max()) > pixels:
        j = int(np.argmax(x > pixels))
        raise InputError(f"malformed RLE counts: run {first_run + j} is {int(x[j])}, "
                         f"longer than the {pixels}-pixel mask")
    if x.size and total_before + int(x.sum()) > pixels:
        raise InputError(f"RLE counts do not cover the mask: they sum to more than its {pixels} pixels")


def _check_total(runs: np.ndarray, pixels: int, total: int) -> np.ndarray:
    if total != pixels:
        raise InputError(f"RLE counts do not cover the mask: they sum to {total}, expected {pixels} (height x width)")
    return runs


def _first_non_int(counts: Any) -> str:
    for i, c in enumerate(counts):
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, Integral):
            return f"run {i} is {c!r:.40}"
    return "every run must be an integer between 0 and the number of pixels"


def _list_runs(counts: Any, pixels: int) -> np.ndarray:
    """Validated run lengths of uncompressed counts (a list or 1-D array of ints)."""
    if len(counts) > pixels + 1:
        raise InputError(f"uncompressed RLE counts have {len(counts)} runs; "
                         f"a {pixels}-pixel mask has at most {pixels + 1}")
    try:
        arr = np.asarray(counts)
    except (TypeError, ValueError, OverflowError):
        arr = np.asarray(counts, dtype=object)
    ints = arr.ndim == 1 and (arr.dtype.kind in "iu" or arr.size == 0)
    if ints and not isinstance(counts, np.ndarray):  # numpy reads [1, True] as ints
        ints = not any(isinstance(c, (bool, np.bool_)) for c in counts)
    if not ints:
        raise InputError(f"uncompressed RLE counts must be a flat list of integers; {_first_non_int(counts)}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > pixels:
        arr = np.minimum(arr, pixels + 1)  # avoid the wrap to negative of huge unsigned values
    arr = arr.astype(np.int64)
    _check_runs(arr, 0, pixels, 0)
    return _check_total(arr.astype(np.int32), pixels, int(arr.sum()))


def _counts_runs(counts: Any, pixels: int) -> np.ndarray:
    if isinstance(counts, str):
        if len(counts) > _max_chars(pixels):
            raise InputError(f"RLE counts of {len(counts)} characters are too long for a {pixels}-pixel mask "
                             f"(at most {_max_chars(pixels)})")
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            raise InputError("malformed RLE counts: the string must be ASCII ('0'..'o')") from None
    if isinstance(counts, (bytes, bytearray, memoryview)):
        return _string_runs(bytes(counts), pixels)
    if isinstance(counts, (list, tuple, np.ndarray)):
        return _list_runs(counts, pixels)
    raise InputError(f"RLE 'counts' must be a string or a list of ints; got {type(counts).__name__}")


def _canonical(runs: np.ndarray) -> np.ndarray:
    """The runs pycocotools' encoder writes for the same mask: no empty run after the first."""
    if runs.size == 0:
        return np.zeros(1, np.int32)
    if runs.size == 1 or int(runs[1:].min()) > 0:
        return runs
    keep = runs > 0
    keep[0] = True
    value = np.flatnonzero(keep) % 2
    starts = np.flatnonzero(np.concatenate(([True], value[1:] != value[:-1])))
    return np.add.reduceat(runs[keep], starts).astype(np.int32)


def _runs(rle: Any, size: Any = None, max_pixels: int | None = None) -> tuple[int, int, np.ndarray]:
    """``(H, W, canonical runs)`` of an RLE, every check of the module docstring passed."""
    h, w = _header(rle, size, max_pixels)
    return h, w, _canonical(_counts_runs(rle["counts"], h * w))


def _string_of(runs: np.ndarray, h: int, w: int) -> str:
    """pycocotools' counts string of validated runs."""
    coco = mask_utils.frPyObjects({"size": [h, w], "counts": runs.astype(np.uint32)}, h, w)
    return coco["counts"].decode("ascii")


# -- public API ----------------------------------------------------------------------------------


def _jsonable(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def encode(mask: np.ndarray) -> dict:
    """Compressed COCO RLE ``{"size": [H, W], "counts": str}`` of one ``(H, W)`` mask."""
    m = _as_mask(mask)
    return _jsonable(mask_utils.encode(np.asfortranarray(m.astype(np.uint8))))


def encode_many(masks: np.ndarray | Masks) -> list[dict]:
    """Compressed COCO RLEs of ``(N, H, W)`` masks (or a :class:`Masks`)."""
    stack = _as_stack(masks)
    if stack.shape[0] == 0:
        return []
    fortran = np.asfortranarray(stack.transpose(1, 2, 0).astype(np.uint8))
    return [_jsonable(r) for r in mask_utils.encode(fortran)]


def validate(rle: dict, size: tuple[int, int] | None = None, max_pixels: int | None = None) -> dict:
    """The canonical compressed RLE ``{"size": [H, W], "counts": str}`` of a foreign RLE, without decoding it.

    Args:
        rle: compressed (``str``/``bytes`` counts) or uncompressed (list of ints) COCO RLE.
        size: the expected ``(H, W)``; a different size is an :class:`InputError`.
        max_pixels: pixel limit (default ``ANYSEG_MAX_PIXELS`` or 40 MP; never above
            :data:`MAX_RLE_PIXELS`).

    Returns:
        What :func:`encode` gives for the same mask (so that it can be handed to pycocotools).

    Raises:
        InputError: (one line) for anything but a well-formed RLE within the limits.
    """
    h, w, runs = _runs(rle, size, max_pixels)
    return {"size": [h, w], "counts": _string_of(runs, h, w)}


def decode(rle: dict, size: tuple[int, int] | None = None, max_pixels: int | None = None) -> np.ndarray:
    """``(H, W)`` bool mask of a compressed (``str``/``bytes`` counts) or uncompressed RLE.

    ``size`` and ``max_pixels`` are checked as in :func:`validate`, before the mask is allocated.
    """
    h, w, runs = _runs(rle, size, max_pixels)
    return _dense(runs, h, w)


def _dense(runs: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(H, W)`` bool mask of canonical runs: the value flips where each run but the last ends."""
    flips = np.zeros(h * w, dtype=np.uint8)
    flips[np.cumsum(runs[:-1], dtype=np.int32)] = 1  # (H*W < 2**29)
    return np.bitwise_xor.accumulate(flips).view(bool).reshape(w, h).T


def decode_many(rles: list[dict], size: tuple[int, int] | None = None, max_pixels: int | None = None) -> np.ndarray:
    """``(N, H, W)`` bool masks of RLEs that share one size; ``(0, 0, 0)`` for an empty list.

    Every RLE is validated (see :func:`validate`) before any mask is allocated.
    """
    if len(rles) == 0:
        return np.zeros((0, 0, 0), dtype=bool) if size is None else np.zeros((0, *check_size(size, "size")), bool)
    decoded = [_runs(r, size, max_pixels) for r in rles]
    sizes = {(h, w) for h, w, _ in decoded}
    if len(sizes) != 1:
        raise InputError(f"decode_many needs RLEs of one size; got sizes {sorted(sizes)[:4]}")
    h, w = sizes.pop()
    out = np.empty((len(decoded), h, w), dtype=bool)
    for i, (_, _, runs) in enumerate(decoded):
        out[i] = _dense(runs, h, w)
    return out


def area(rle: dict, size: tuple[int, int] | None = None, max_pixels: int | None = None) -> int:
    """Number of set pixels of an RLE (validated as in :func:`validate`; no mask is decoded)."""
    _, _, runs = _runs(rle, size, max_pixels)
    return int(runs[1::2].sum(dtype=np.int64))


def to_bbox(rle: dict, size: tuple[int, int] | None = None, max_pixels: int | None = None) -> list[float]:
    """COCO ``[x, y, width, height]`` box of an RLE (all zeros for an empty mask), as pycocotools' ``toBbox``.

    The RLE is validated as in :func:`validate`; no mask is decoded.
    """
    h, _, runs = _runs(rle, size, max_pixels)
    lengths = runs[1::2]  # set runs (none empty: the runs are canonical)
    if lengths.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    first = np.cumsum(runs, dtype=np.int32)[0:-1:2][: lengths.size]  # first pixel of each set run
    top = first % h
    x_min, x_max = int(first[0]) // h, (int(first[-1]) + int(lengths[-1]) - 1) // h
    if (top + lengths > h).any():  # a run that wraps to the next column covers the last and the first row
        y_min, y_max = 0, h - 1
    else:
        y_min, y_max = int(top.min()), int((top + lengths).max()) - 1
    return [float(x_min), float(y_min), float(x_max - x_min + 1), float(y_max - y_min + 1)]


def to_uncompressed(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE ``{"size": [H, W], "counts": [int, ...]}`` of one mask.

    The run lengths are exactly pycocotools': column-major, starting with the run of zeros
    (``0`` if the first pixel is set); an empty mask gives ``[H*W]``, a 0-pixel one ``[0]``.
    """
    m = _as_mask(mask)
    h, w = m.shape
    flat = m.ravel(order="F")
    if flat.size == 0:
        return {"size": [h, w], "counts": [0]}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return {"size": [h, w], "counts": [int(r) for r in runs]}

"""COCO run-length encoding (RLE), byte-compatible with ``pycocotools.mask``.

COCO RLE runs over the mask in column-major (Fortran) order and starts with the length of
the first run of zeros (``0`` when the first pixel is set). The *compressed* form stores the
run lengths as a string (pycocotools' LEB128-like code); the *uncompressed* form, used by
COCO for ``iscrowd`` annotations, stores them as a list of ints. All encoding and decoding
is done by pycocotools; this module only adds validation and JSON-friendly ``str`` counts.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from anyseg.errors import InputError
from anyseg.types import Masks

__all__ = ["encode", "encode_many", "decode", "decode_many", "area", "to_bbox", "to_uncompressed"]


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


def _string_counts(counts: bytes) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``).

    Used to validate a string before it reaches pycocotools' C decoder, which does not
    bounds-check and would write past the mask for a malformed string.
    """
    out: list[int] = []
    p = 0
    n = len(counts)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                raise InputError("malformed RLE counts: the string ends in the middle of a number")
            c = counts[p] - 48
            if not 0 <= c < 64:
                raise InputError(f"malformed RLE counts: unexpected character {chr(counts[p])!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def _size(rle: Any) -> tuple[int, int]:
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        got = sorted(rle) if isinstance(rle, Mapping) else type(rle).__name__
        raise InputError(f"expected an RLE dict with 'size' and 'counts'; got {got}")
    size = rle["size"]
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"RLE 'size' must be [height, width]; got {size!r}") from None
    if h < 0 or w < 0:
        raise InputError(f"RLE 'size' must be non-negative; got {[h, w]}")
    return h, w


def _to_coco(rle: Any) -> dict:
    """A validated pycocotools RLE (``bytes`` counts) from compressed or uncompressed RLE."""
    h, w = _size(rle)
    counts = rle["counts"]
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            raise InputError("malformed RLE counts: the string must be ASCII") from None
    if isinstance(counts, (bytes, bytearray)):
        runs = _string_counts(bytes(counts))
    elif isinstance(counts, (Sequence, np.ndarray)):
        arr = np.asarray(counts)
        if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.ndim == 1):
            raise InputError(f"uncompressed RLE counts must be integers; got {arr.dtype} values")
        runs = [int(c) for c in arr.reshape(-1)]
    else:
        raise InputError(f"RLE 'counts' must be a string or a list of ints; got {type(counts).__name__}")
    if any(c < 0 for c in runs) or sum(runs) != h * w:
        raise InputError(f"RLE counts do not cover the {h}x{w} mask: they sum to {sum(runs)}, expected {h * w}")
    if isinstance(counts, (bytes, bytearray)):
        return {"size": [h, w], "counts": bytes(counts)}
    return mask_utils.frPyObjects({"size": [h, w], "counts": runs}, h, w)


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


def decode(rle: dict) -> np.ndarray:
    """``(H, W)`` bool mask of a compressed (``str``/``bytes`` counts) or uncompressed RLE."""
    coco = _to_coco(rle)
    h, w = coco["size"]
    if h * w == 0:
        return np.zeros((h, w), dtype=bool)
    return mask_utils.decode(coco).astype(bool)


def decode_many(rles: list[dict]) -> np.ndarray:
    """``(N, H, W)`` bool masks of RLEs that share one size; ``(0, 0, 0)`` for an empty list."""
    if len(rles) == 0:
        return np.zeros((0, 0, 0), dtype=bool)
    cocos = [_to_coco(r) for r in rles]
    sizes = {tuple(c["size"]) for c in cocos}
    if len(sizes) != 1:
        raise InputError(f"decode_many needs RLEs of one size; got sizes {sorted(sizes)}")
    h, w = cocos[0]["size"]
    if h * w == 0:
        return np.zeros((len(cocos), h, w), dtype=bool)
    return mask_utils.decode(cocos).transpose(2, 0, 1).astype(bool)


def area(rle: dict) -> int:
    """Number of set pixels of an RLE."""
    return int(mask_utils.area(_to_coco(rle)))


def to_bbox(rle: dict) -> list[float]:
    """COCO ``[x, y, width, height]`` box of an RLE (all zeros for an empty mask)."""
    return [float(v) for v in mask_utils.toBbox(_to_coco(rle))]


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

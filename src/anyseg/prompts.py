"""Prompt strings (command line, JSON fields) -> the fields of :class:`anyseg.types.Prompt`.

One parser per syntax, shared by every entry point (``anyseg segment --point/--box``,
``anyseg track --prompt``); each malformed string is a one-line :class:`~anyseg.errors.PromptError`
that quotes it and shows the expected form. The values are not range-checked here: the
:class:`~anyseg.types.Prompt` they build checks them against the image.

>>> parse_point("120,80:0")
(120.0, 80.0, 0)
>>> parse_box("10,20,200,180")
[10.0, 20.0, 200.0, 180.0]
>>> parse_frame_prompt("3:point=120,80", obj_id=2)
{'frame': 3, 'obj_id': 2, 'points': [[120.0, 80.0]], 'labels': [1]}
"""

from __future__ import annotations

from typing import Any

from anyseg.errors import PromptError

__all__ = ["parse_point", "parse_box", "parse_frame_prompt"]

POINT_FORM = "X,Y or X,Y:LABEL with LABEL 1 or 0, e.g. 120,80:1"
BOX_FORM = "X0,Y0,X1,Y1 in pixels, e.g. 10,20,200,180"
FRAME_PROMPT_FORM = "FRAME:point=X,Y[:LABEL], FRAME:box=X0,Y0,X1,Y1 or FRAME:mask=PNG"


def _numbers(text: str, count: int, what: str, example: str) -> list[float]:
    """``count`` comma-separated numbers from ``text``; a :class:`PromptError` naming ``what`` otherwise."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count:
        raise PromptError(f"malformed {what} {text!r}: expected {example}")
    return values


def parse_point(text: str) -> tuple[float, float, int]:
    """``X,Y`` or ``X,Y:LABEL`` (LABEL 1 = positive, default; 0 = negative) -> ``(x, y, label)``."""
    coords, _, label = text.partition(":")
    x, y = _numbers(coords, 2, "point", POINT_FORM)
    if label not in ("", "0", "1"):
        raise PromptError(f"malformed point {text!r}: LABEL must be 1 (positive) or 0 (negative)")
    return x, y, int(label or 1)


def parse_box(text: str) -> list[float]:
    """``X0,Y0,X1,Y1`` in pixels -> ``[x0, y0, x1, y1]``."""
    return _numbers(text, 4, "box", BOX_FORM)


def parse_frame_prompt(text: str, obj_id: int) -> dict[str, Any]:
    """``FRAME:point=X,Y[:LABEL]``, ``FRAME:box=X0,Y0,X1,Y1`` or ``FRAME:mask=PNG`` -> a prompt dict.

    The dict has ``frame`` and ``obj_id``, plus ``points`` and ``labels``, ``box`` or ``mask_path``
    (the PNG is not read here).
    """
    frame_text, sep, rest = text.partition(":")
    kind, eq, value = rest.partition("=")
    if not sep or not eq:
        raise PromptError(f"malformed --prompt {text!r}: expected {FRAME_PROMPT_FORM}")
    try:
        frame = int(frame_text)
    except ValueError:
        raise PromptError(f"malformed --prompt {text!r}: FRAME must be a frame index, e.g. 0:point=120,80") from None
    if frame < 0:
        raise PromptError(f"malformed --prompt {text!r}: FRAME must be >= 0")
    if kind == "point":
        x, y, label = parse_point(value)
        return {"frame": frame, "obj_id": obj_id, "points": [[x, y]], "labels": [label]}
    if kind == "box":
        return {"frame": frame, "obj_id": obj_id, "box": parse_box(value)}
    if kind == "mask":
        return {"frame": frame, "obj_id": obj_id, "mask_path": value}
    raise PromptError(f"malformed --prompt {text!r}: the kind must be point, box or mask, not {kind!r}")

"""Validation of user-given label names (annotation labels, class names in exports).

A label ends up in line-oriented files (YOLO's ``classes.txt``, one name a line), in file
names and in JSON: a newline or another control character in it would shift class indices
or break the file silently. :func:`check_label` is the one check every boundary applies.
"""

from __future__ import annotations

import unicodedata

from anyseg.errors import InputError

__all__ = ["MAX_LABEL_LENGTH", "check_label"]

_REFUSED = frozenset({"Cc", "Cs", "Co", "Cn"})
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

#: longest label accepted (characters)
MAX_LABEL_LENGTH = 256


def check_label(label: object, what: str = "label") -> str:
    """``label`` stripped of surrounding spaces, or :class:`InputError` (one line).

    A label is a non-empty string of at most :data:`MAX_LABEL_LENGTH` characters with no
    control characters: none of Unicode categories Cc (newlines, tabs, NUL ...), Cs, Co, Cn,
    and no bidirectional overrides or isolates (format characters such as the zero-width
    joiner of emoji sequences are allowed).
    """
    if not isinstance(label, str):
        raise InputError(f"{what} must be a string; got {type(label).__name__}")
    text = label.strip()
    if not text:
        raise InputError(f"{what} is empty")
    if len(text) > MAX_LABEL_LENGTH:
        raise InputError(f"{what} has {len(text)} characters, over the limit of {MAX_LABEL_LENGTH}")
    for i, ch in enumerate(text):
        if unicodedata.category(ch) in _REFUSED or ch in _BIDI:
            raise InputError(f"{what} {text[:40]!r} contains a control character ({ch!r} at {i}); "
                             "labels are one line of printable text")
    return text

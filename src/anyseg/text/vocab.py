"""Class names with synonyms, and CLIP prompt templates.

A class list is written ``"sky,road,person|pedestrian"``: commas separate classes, ``|``
separates a class's synonyms (the first name is the class's label; every synonym is a text
query). Detectors and SAM 3 give a class the best of its synonyms' scores (each synonym is
its own query); CLIP averages the synonyms' embeddings with the prompt templates (one
embedding per class). Names are matched case-insensitively
for duplicates, after collapsing whitespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from anyseg.errors import InputError
from anyseg.labels import check_label

#: value of unlabeled pixels in class maps (``anyseg semantic``); class ``i`` has value ``i``
UNLABELED = 255
#: most classes a class map can hold (ids 0..254; 255 is unlabeled)
MAX_CLASSES = 255

#: the prompt-template ensemble used for CLIP text embeddings (a subset of CLIP's ImageNet
#: templates, as used by MaskCLIP / SCLIP style methods): each class embedding is the
#: normalised mean over templates and synonyms' normalised embeddings
TEMPLATES = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of a {}.",
    "itap of a {}.",
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
)


@dataclass(frozen=True)
class ClassName:
    """One class: its label (the first name) and every name that stands for it."""

    label: str
    synonyms: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return (self.label, *self.synonyms)


def _clean(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip()


def parse_classes(spec: str | Sequence[str] | None, what: str = "class list") -> list[ClassName]:
    """``"sky,road,person|pedestrian"`` (or a sequence of such items) -> classes.

    Empty lists, empty names, duplicates (across classes and synonyms, case-insensitive) and
    more than :data:`MAX_CLASSES` classes are one-line :class:`InputError`.
    """
    if spec is None:
        raise InputError(f"the {what} is empty: give at least one class name")
    items: Iterable[str] = [spec] if isinstance(spec, str) else spec
    classes: list[ClassName] = []
    seen: dict[str, str] = {}
    for item in items:
        for raw in str(item).split(","):
            if not raw.strip():
                if str(item).strip():
                    raise InputError(f"the {what} {str(item)!r} has an empty class name (two commas in a row?)")
                continue
            names = [_clean(n) for n in raw.split("|")]
            if any(not n for n in names):
                raise InputError(f"class {raw.strip()!r} in the {what} has an empty synonym")
            for n in names:
                check_label(n.replace("\x00", ","), f"class name in the {what}")
                key = n.lower()
                if key in seen:
                    raise InputError(f"duplicate class name {n!r} in the {what} (also in {seen[key]!r})")
                seen[key] = names[0]
            classes.append(ClassName(names[0], tuple(names[1:])))
    if not classes:
        raise InputError(f"the {what} is empty: give at least one class name")
    if len(classes) > MAX_CLASSES:
        raise InputError(f"the {what} has {len(classes)} classes; at most {MAX_CLASSES} fit in a class map")
    return classes


def parse_phrases(items: Sequence[str]) -> list[ClassName]:
    """Free-text phrases (``anyseg text``): each item is one class, commas included; ``|``
    separates synonyms. Same checks as :func:`parse_classes`."""
    escaped = [str(p).replace(",", "\x00") for p in items]
    parsed = parse_classes(escaped, "phrases") if escaped else parse_classes(None, "phrases")
    return [ClassName(c.label.replace("\x00", ","), tuple(s.replace("\x00", ",") for s in c.synonyms)) for c in parsed]


def labels(classes: Sequence[ClassName]) -> list[str]:
    return [c.label for c in classes]


def flatten(classes: Sequence[ClassName]) -> tuple[list[str], list[int]]:
    """Every name of every class, and the class index of each name (for max-over-synonyms)."""
    names, owner = [], []
    for i, c in enumerate(classes):
        for n in c.names:
            names.append(n)
            owner.append(i)
    return names, owner


def disjoint(things: Sequence[ClassName], stuff: Sequence[ClassName]) -> None:
    """Things and stuff must not share a name."""
    a = {n.lower() for c in things for n in c.names}
    both = sorted(n for c in stuff for n in c.names if n.lower() in a)
    if both:
        raise InputError(f"{both[0]!r} is both a thing and a stuff class")


class TextTruncatedWarning(UserWarning):
    """A text query was longer than the model's tokenizer allows and was cut."""


def warn_truncated(model: str, text: str, n_tokens: int, limit: int) -> None:
    """Warn (once per text) that ``text`` was cut to the tokenizer's ``limit`` tokens."""
    import warnings

    warnings.warn(f"{model}: text {text[:60]!r}{'...' if len(text) > 60 else ''} has {n_tokens} tokens; "
                  f"truncated to the model's {limit}", TextTruncatedWarning, stacklevel=3)

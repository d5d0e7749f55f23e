"""Edit Everything's instructions: a compound sentence (or a JSON file) -> ordered edit steps.

Edit Everything (Xie et al. 2023) decomposes a compound text instruction into (source phrase,
target content) pairs, segments each source with a text-prompted segmenter and inpaints the
segment with Stable Diffusion guided by the target text, one pair after the other. Its
decomposition is free-form (a language model); this module is a small documented rule-based
parser instead, so the result is predictable and testable offline.

Grammar (case-insensitive; surrounding quotes, a leading "please" and a final "." are dropped)::

    instruction := clause (SEP clause)*
    SEP         := "," | ";" | "and" | "then" | ", and" | "and then" | ", then" | newline
    clause      := "replace" X ("with" | "by") Y
                 | ("turn" | "change" | "transform" | "convert" | "make") X ("into" | "to") Y
                 | "make" X Y          (Y: from X's second article a/an/the/some on, else the last word)
                 | X ("->" | "=>") Y
                 | ("remove" | "erase" | "delete" | "get rid of") X

";", a newline and "then" always end a clause; "and" and "," only where the next piece is a
clause of its own (starts with one of the verbs, or has an arrow), so "replace the salt and
pepper with a vase" stays one clause (and "remove the dog and the cat" is one target).
``X`` is the target phrase (segmented by text), ``Y`` the new content (the fill's prompt);
"remove X" is a removal step. Anything else is a one-line :class:`InputError` quoting the part
that could not be read.

The JSON instruction file is a list of ``{"target": X, "prompt": Y}`` or ``{"target": X, "op":
"remove"}`` objects (``"op": "fill"`` may be given with a prompt), validated with one-line
errors naming the item.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

from anyseg.errors import InputError

__all__ = ["EditStep", "MAX_STEPS", "MAX_INSTRUCTION_BYTES", "parse_instruction", "load_instructions",
           "steps_of", "describe_steps"]

#: most steps one instruction (or file) may hold
MAX_STEPS = 32
#: largest instruction file read
MAX_INSTRUCTION_BYTES = 1 << 20
_MAX_PHRASE = 300

_FORMS = ('"replace X with Y", "turn X into Y", "make X Y", "X -> Y" or "remove X"')
_VERBS = ("replace", "turn", "change", "transform", "convert", "make", "remove", "erase", "delete", "get rid of")
_ARTICLES = ("a", "an", "the", "some")
#: separators that always end a clause, and those ("and", ",") that do only before a new clause
_HARD = re.compile(r"\s*(?:;|\n|,?\s*\band\s+then\s+|,?\s*\bthen\s+)\s*", re.IGNORECASE)
_SOFT = re.compile(r"\s*(?:,\s*and\s+|,|\s+and\s+)\s*", re.IGNORECASE)
_ARROW = re.compile(r"\s*(?:->|=>)\s*")
_REPLACE = re.compile(r"^replace\s+(?P<x>.+?)\s+(?:with|by)\s+(?P<y>.+)$", re.IGNORECASE)
_INTO = re.compile(r"^(?:turn|change|transform|convert|make)\s+(?P<x>.+?)\s+(?:into|to)\s+(?P<y>.+)$", re.IGNORECASE)
_MAKE = re.compile(r"^make\s+(?P<rest>.+)$", re.IGNORECASE)
_REMOVE = re.compile(r"^(?:remove|erase|delete|get\s+rid\s+of)\s+(?P<x>.+)$", re.IGNORECASE)


class EditStep(NamedTuple):
    """One step: segment ``target`` by text, then fill it with ``prompt`` (``None``: remove it).
    Compares equal to the plain pair ``(target, prompt)``."""

    target: str
    prompt: str | None

    @property
    def op(self) -> str:
        return "remove" if self.prompt is None else "fill"


def _clean(text: str) -> str:
    text = " ".join(str(text).split())
    text = text.strip().rstrip(".!").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _starts_clause(piece: str) -> bool:
    low = piece.lower()
    low = low[7:] if low.startswith("please ") else low
    return bool(_ARROW.search(piece)) or any(low == v or low.startswith(v + " ") for v in _VERBS)


def _soft_pieces(text: str) -> list[str]:
    parts: list[str] = []
    pos = 0
    for m in _SOFT.finditer(text):
        if text[pos:m.start()].strip() and _starts_clause(text[m.end():]):
            parts.append(text[pos:m.start()])
            pos = m.end()
    parts.append(text[pos:])
    return parts


def _pieces(text: str) -> list[str]:
    """``text`` cut at every ";", newline and "then", and at "and" / "," where a new clause starts."""
    parts = [soft for hard in _HARD.split(text) for soft in _soft_pieces(hard)]
    return [p.strip() for p in parts if p.strip()]


def _split_make(rest: str) -> tuple[str, str] | None:
    """``make X Y``: Y starts at X's second article, else it is the last word."""
    words = rest.split()
    if len(words) < 2:
        return None
    start = 1 if words[0].lower() in _ARTICLES else 0
    for i in range(start + 1, len(words)):
        if words[i].lower() in _ARTICLES:
            return " ".join(words[:i]), " ".join(words[i:])
    return " ".join(words[:-1]), words[-1]


def _clause(piece: str) -> EditStep:
    text = _clean(piece)
    if text.lower().startswith("please "):
        text = text[7:].strip()
    found: tuple[str, str | None] | None = None
    arrow = _ARROW.split(text)
    if len(arrow) == 2:
        found = (arrow[0], arrow[1])
    elif (m := _REPLACE.match(text)) or (m := _INTO.match(text)):
        found = (m["x"], m["y"])
    elif m := _REMOVE.match(text):
        found = (m["x"], None)
    elif m := _MAKE.match(text):
        found = _split_make(m["rest"])
    if found is None:
        raise InputError(f"cannot read {piece.strip()!r} in the instruction: expected {_FORMS}, joined by "
                         "'and', ',', ';' or 'then'")
    target, prompt = _clean(found[0]), None if found[1] is None else _clean(found[1])
    if not target or (prompt is not None and not prompt):
        raise InputError(f"cannot read {piece.strip()!r} in the instruction: the target or the new content is empty")
    return _step(target, prompt, f"{piece.strip()!r}")


def _step(target: Any, prompt: Any, where: str) -> EditStep:
    for what, value in (("target", target), ("prompt", prompt)):
        if value is None and what == "prompt":
            continue
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{where}: the {what} must be a non-empty string; got {value!r}")
        if len(value) > _MAX_PHRASE:
            raise InputError(f"{where}: the {what} is longer than {_MAX_PHRASE} characters")
    return EditStep(" ".join(target.split()), None if prompt is None else " ".join(prompt.split()))


def _bounded(steps: list[EditStep], where: str) -> list[EditStep]:
    if not steps:
        raise InputError(f"{where} has no edit steps: expected {_FORMS}")
    if len(steps) > MAX_STEPS:
        raise InputError(f"{where} has {len(steps)} edit steps; at most {MAX_STEPS} are allowed")
    return steps


def parse_instruction(text: str) -> list[EditStep]:
    """A compound instruction -> its steps, in order (module docstring: the grammar).

    >>> parse_instruction("replace the dog with a cat and make the sky a sunset")
    [EditStep(target='the dog', prompt='a cat'), EditStep(target='the sky', prompt='a sunset')]
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"the instruction is empty: expected {_FORMS}")
    if len(text) > MAX_INSTRUCTION_BYTES:
        raise InputError(f"the instruction is longer than {MAX_INSTRUCTION_BYTES} characters")
    return _bounded([_clause(p) for p in _pieces(text.strip())], "the instruction")


def _item(i: int, item: Any) -> EditStep:
    where = f"instruction {i + 1}"
    if not isinstance(item, dict):
        raise InputError(f"{where}: expected an object like {{\"target\": ..., \"prompt\": ...}}; got {item!r:.60}")
    unknown = sorted(set(item) - {"target", "prompt", "op"})
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; expected target, prompt, op")
    op = item.get("op", "fill" if "prompt" in item else None)
    if op not in ("fill", "remove"):
        raise InputError(f"{where}: give a \"prompt\" (the new content) or \"op\": \"remove\"; got op {op!r}")
    if op == "remove" and item.get("prompt") is not None:
        raise InputError(f"{where}: \"op\": \"remove\" takes no prompt")
    if op == "fill" and "prompt" not in item:
        raise InputError(f"{where}: \"op\": \"fill\" needs a \"prompt\"")
    return _step(item.get("target"), item.get("prompt") if op == "fill" else None, where)


def load_instructions(path: str | os.PathLike) -> list[EditStep]:
    """The steps of a JSON instruction file (module docstring); one-line errors for an unreadable
    file, bad JSON, or an item that is not a valid step."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_INSTRUCTION_BYTES:
            raise InputError(f"instruction file {p} is larger than {MAX_INSTRUCTION_BYTES} bytes")
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"instruction file not found: {p}") from None
    except IsADirectoryError:
        raise InputError(f"instruction file {p} is a folder") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"instruction file {p} is not valid JSON: {' '.join(str(e).split())}") from None
    if not isinstance(data, list):
        raise InputError(f"instruction file {p}: expected a JSON list of {{\"target\", \"prompt\"}} objects")
    return _bounded([_item(i, x) for i, x in enumerate(data)], f"instruction file {p}")


def steps_of(instruction: str | Iterable[Any]) -> list[EditStep]:
    """Steps from an instruction string, or from pairs ``(target, prompt_or_None)`` / step objects /
    dicts as in the instruction file."""
    if isinstance(instruction, str):
        return parse_instruction(instruction)
    steps = []
    for i, item in enumerate(instruction):
        if isinstance(item, dict):
            steps.append(_item(i, item))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            steps.append(_step(item[0], item[1], f"instruction {i + 1}"))
        else:
            raise InputError(f"instruction {i + 1}: expected a (target, prompt) pair; got {item!r:.60}")
    return _bounded(steps, "the instructions")


def describe_steps(steps: Sequence[EditStep]) -> list[str]:
    """One line per step, as the CLI prints them before editing."""
    return [f"{i + 1}. remove {s.target!r}" if s.prompt is None else f"{i + 1}. {s.target!r} -> {s.prompt!r}"
            for i, s in enumerate(steps)]

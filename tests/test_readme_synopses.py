"""The README's command synopses and the argparse parsers name the same options.

Every ``anyseg ...`` line in the README's code blocks (with its indented continuation lines)
is read as belonging to the longest sub-command path it starts with. Each option it shows
must exist in that command's parser, and each option of every parser must appear in at
least one README line of its command: documentation drift fails CI.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from anyseg.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], set[str]]:
    """Sub-command path -> the long option strings of its parser (``--help`` left out)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subs:
        out: dict[tuple[str, ...], set[str]] = {}
        for name, sub in subs[0].choices.items():
            out.update(_commands(sub, (*prefix, name)))
        return out
    return {prefix: {o for a in parser._actions if not isinstance(a, argparse._HelpAction)
                     for o in a.option_strings if o.startswith("--")}}


def _readme_lines() -> list[str]:
    """The README's ``anyseg`` command lines, continuation lines joined, comments dropped."""
    lines: list[str] = []
    in_code = False
    for raw in README.read_text().splitlines():
        if raw.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            continue
        text = raw.split("  #")[0].rstrip()
        if text.startswith("anyseg "):
            lines.append(text)
        elif lines and raw[:1].isspace() and text.strip().startswith(("[", "--")):
            lines[-1] += " " + text.strip()
    return lines


def _owner(line: str, commands: dict[tuple[str, ...], set[str]]) -> tuple[str, ...] | None:
    words = line.split()[1:]
    best = None
    for path in commands:
        if tuple(words[:len(path)]) == path and (best is None or len(path) > len(best)):
            best = path
    return best


COMMANDS = _commands(build_parser())
LINES = _readme_lines()


def test_the_readme_has_command_lines():
    assert len(LINES) > 20, "no anyseg command lines found in README.md code blocks"


@pytest.mark.parametrize("line", LINES, ids=[" ".join(x.split()[:3]) for x in LINES])
def test_every_readme_option_exists(line):
    path = _owner(line, COMMANDS)
    assert path is not None, f"README line names no anyseg command: {line}"
    unknown = sorted(set(FLAG.findall(line)) - COMMANDS[path])
    assert not unknown, f"README shows {unknown} for `anyseg {' '.join(path)}`, which has no such option"


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=[" ".join(p) for p in sorted(COMMANDS)])
def test_every_option_is_in_the_readme(path):
    shown: set[str] = set()
    for line in LINES:
        if _owner(line, COMMANDS) == path:
            shown |= set(FLAG.findall(line))
    aliases = {o for o in COMMANDS[path] if o in shown}
    missing = sorted(o for o in COMMANDS[path] - shown if not _alias_shown(o, path, aliases))
    assert shown or not COMMANDS[path], f"`anyseg {' '.join(path)}` has no synopsis in README.md"
    assert not missing, f"README.md's synopsis of `anyseg {' '.join(path)}` leaves out {missing}"


def _alias_shown(option: str, path: tuple[str, ...], shown: set[str]) -> bool:
    """Another spelling of the same option (e.g. --cors / --cors-origin) is in the README."""
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    for action in parser._actions:
        if option in action.option_strings:
            return any(o in shown for o in action.option_strings)
    return False


def _parsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _parsers(sub, (*prefix, name))


def test_every_option_has_help_text():
    bare = [f"anyseg {' '.join(path)} {a.option_strings[-1] if a.option_strings else a.dest}"
            for path, parser in _parsers(build_parser()) for a in parser._actions
            if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not bare, f"options without help text: {bare}"

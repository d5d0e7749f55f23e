"""The ``anyseg`` command line: a table of sub-commands, one parser, one place for errors.

Each sub-command is a :class:`Command` of :data:`COMMANDS`: its ``add_parser(sub)`` adds it
(name, help, options) to the sub-command parsers and its ``run(args)`` does the work; the
implementations are in :mod:`anyseg.commands` (and :mod:`anyseg.eval.cli`,
:mod:`anyseg.serve.cli`). :func:`main` builds the parser from the table, dispatches by name, and
turns every error into one line.

Every user error (bad file, bad prompt, unknown model, missing weights) is one line on stderr,
``anyseg: error: ...``, and exit code 2; never a traceback (``ANYSEG_DEBUG=1`` shows one).
Options are checked before any file is read or written: ``--device``
(:func:`~anyseg.commands.options.device_option`), and the options that scale the work, against
the bounds the service also applies (:data:`anyseg.tasks.everything.MAX_POINTS_PER_SIDE` and
its neighbours; ``--top`` at most :data:`~anyseg.commands.text.MAX_TOP`).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from anyseg.commands import discover, edit, everything, fewshot, finetune, models, segment, text, track, volume
from anyseg.commands.everything import EVERYTHING_OPTIONS, everything_params
from anyseg.commands.options import (
    DEVICE_HELP, MAX_PIXELS_HELP, OUT_HELP, RUNTIME_HELP, check_max_pixels, device_option, model_label,
)
from anyseg.commands.text import MAX_TOP
from anyseg.errors import AnysegError
from anyseg.eval import cli as eval_cli
from anyseg.serve import cli as serve_cli

__all__ = ["Command", "COMMANDS", "build_parser", "main", "EXIT_USAGE", "RUNTIME_HELP", "DEVICE_HELP",
           "MAX_PIXELS_HELP", "OUT_HELP", "MAX_TOP", "EVERYTHING_OPTIONS", "device_option", "check_max_pixels",
           "everything_params", "model_label"]

EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    """One ``anyseg`` sub-command: ``add_parser(sub)`` adds ``name`` (with its help and options)
    to the sub-command parsers; ``run(args)`` does the work and returns the exit code."""

    name: str
    add_parser: Callable[[Any], Any]
    run: Callable[[argparse.Namespace], int]


def _track(args: argparse.Namespace) -> int:
    """``anyseg track``: the task reads, checks and runs its own options."""
    from anyseg.tasks.track import track_from_args

    return track_from_args(args)


#: every sub-command, in ``anyseg --help`` order
COMMANDS: tuple[Command, ...] = (
    Command("segment", segment.add_parser, segment.run),
    Command("everything", everything.add_parser, everything.run),
    Command("text", text.add_text_parser, text.run_text),
    Command("semantic", text.add_semantic_parser, text.run_semantic),
    Command("panoptic", text.add_panoptic_parser, text.run_panoptic),
    Command("track", track.add_parser, _track),
    Command("volume", volume.add_parser, volume.run),
    Command("fewshot", fewshot.add_parser, fewshot.run),
    Command("discover", discover.add_parser, discover.run),
    Command("edit", edit.add_parser, edit.run),
    Command("finetune", finetune.add_finetune_parser, finetune.run_finetune),
    Command("pseudolabel", finetune.add_pseudolabel_parser, finetune.run_pseudolabel),
    Command("models", models.add_parser, models.run),
    Command("eval", eval_cli.add_parsers, eval_cli.run),
    Command("serve", serve_cli.add_parser, serve_cli.run),
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``anyseg: error: ... (see --help)``) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SystemExit(_fail(f"{message} (see `{self.prog} --help`)"))


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"anyseg: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    """The ``anyseg`` argument parser, with every sub-command of :data:`COMMANDS`."""
    from anyseg.version import __version__

    parser = _Parser(prog="anyseg", description="Segmentation with foundation models (SAM family) and a classical engine.")
    parser.add_argument("--version", action="version", version=f"anyseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the sub-command it names, and return the exit code (errors: one line)."""
    parser = build_parser()
    runs = {command.name: command.run for command in COMMANDS}
    try:
        args = parser.parse_args(argv)
        return runs[args.command](args)
    except SystemExit as e:  # argparse: --help/--version (0) or our one-line usage errors (2)
        return int(e.code or 0) if not isinstance(e.code, str) else _fail(e.code)
    except AnysegError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except OSError as e:  # disk full, permissions: not a bug, still one line
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        return _fail(f"{e.strerror or e}{where}", 1)
    except MemoryError:
        return _fail("out of memory (try a smaller image, --max-pixels, or a smaller model)", 1)
    except Exception as e:  # a bug: still one line, unless debugging
        if os.environ.get("ANYSEG_DEBUG"):
            raise
        return _fail(f"internal error: {type(e).__name__}: {e} (rerun with ANYSEG_DEBUG=1 for a traceback)", 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

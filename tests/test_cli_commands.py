"""The ``anyseg`` sub-commands are one table (:data:`anyseg.cli.COMMANDS`): parser and dispatch follow it.

A command is a row ``Command(name, add_parser, run)``; :func:`anyseg.cli.main` builds its parser
from the rows and runs the row whose name was parsed, so adding a command touches no if/elif.
"""

from __future__ import annotations

import argparse
import dataclasses

import anyseg.cli as cli


def _sub_commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_the_parser_has_one_sub_command_per_row_in_table_order():
    names = [command.name for command in cli.COMMANDS]
    assert names == ["segment", "everything", "text", "semantic", "panoptic", "track", "volume", "fewshot", "discover", "edit", "finetune", "pseudolabel", "models", "eval", "serve"]
    assert list(_sub_commands(cli.build_parser())) == names
    assert all(callable(c.add_parser) and callable(c.run) for c in cli.COMMANDS)


def test_main_dispatches_by_the_table(monkeypatch, capsys):
    seen = []

    def add_parser(sub):
        p = sub.add_parser("probe", help="a test command")
        p.add_argument("--n", type=int, default=1, help="a number")
        return p

    def run(args):
        seen.append(args.n)
        return 7

    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, cli.Command("probe", add_parser, run)))
    assert cli.main(["probe", "--n", "3"]) == 7 and seen == [3]
    assert cli.main(["probe", "--n", "x"]) == 2  # argparse errors stay one line, exit code 2
    assert capsys.readouterr().err.count("anyseg: error: ") == 1
    assert dataclasses.is_dataclass(cli.Command)


def test_public_helpers_stay_importable_from_anyseg_cli():
    from anyseg.cli import (  # what other modules, tests and users import from here
        DEVICE_HELP, EVERYTHING_OPTIONS, EXIT_USAGE, MAX_PIXELS_HELP, MAX_TOP, OUT_HELP, RUNTIME_HELP, build_parser,
        check_max_pixels, device_option, everything_params, main, model_label,
    )

    assert all(isinstance(h, str) and h for h in (DEVICE_HELP, MAX_PIXELS_HELP, OUT_HELP, RUNTIME_HELP))
    assert all(callable(f) for f in (build_parser, everything_params, main, model_label))
    assert MAX_TOP == 10_000 and EXIT_USAGE == 2 and EVERYTHING_OPTIONS["points_per_side"] == "--points-per-side"
    assert device_option(None) is None and check_max_pixels(None) is None


def test_every_model_option_takes_a_name_or_a_local_folder():
    """``--model`` of every command (eval's and serve's included) says it takes a local model folder."""
    parser = cli.build_parser()
    missing = []
    for name, sub in _sub_commands(parser).items():
        parsers = _sub_commands(sub).items() if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions) \
            else [("", sub)]
        for kind, p in parsers:
            for action in p._actions:
                if "--model" in action.option_strings and "local model folder" not in action.help:
                    missing.append(f"anyseg {name} {kind}".strip())
    assert not missing, f"--model help without 'local model folder': {missing}"

"""``anyseg track``'s options: prompts on any frame, grouped by ``--obj``, or ``--text`` classes.

The command itself is a task (:func:`anyseg.tasks.track.track_from_args` reads these options,
checks them and streams the run folder), so this module only builds the parser.
"""

from __future__ import annotations

import argparse

from anyseg.commands.options import DEVICE_HELP
from anyseg.errors import PromptError

__all__ = ["add_parser", "ObjPrompt", "ObjId"]


class ObjPrompt(argparse.Action):
    """``--prompt`` values paired with the ``--obj`` id in force where they appear."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        items = list(getattr(namespace, "prompts", None) or [])
        items.append((getattr(namespace, "current_obj", 1), values))
        namespace.prompts = items


class ObjId(argparse.Action):
    """``--obj ID``: the object id (1..254) of the ``--prompt`` options that follow."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        try:
            obj = int(values)
        except ValueError:
            obj = 0
        if not 1 <= obj <= 254:
            raise PromptError(f"--obj must be an integer object id in 1..254; got {values!r}")
        namespace.current_obj = obj


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``track`` and its options to the ``anyseg`` sub-commands."""
    t = sub.add_parser("track", help="track objects through a video (file or frame folder) from prompts on any frame")
    t.add_argument("video", help="video file (mp4, avi, ...) or a folder of frames")
    t.add_argument("--obj", action=ObjId, metavar="ID",
                   help="object id (1..254) for the --prompt options that follow (default 1)")
    t.add_argument("--prompt", action=ObjPrompt, metavar="FRAME:KIND=VALUE", dest="prompt_args",
                   help="FRAME:point=X,Y[:LABEL], FRAME:box=X0,Y0,X1,Y1 or FRAME:mask=PNG; repeatable")
    t.add_argument("--text", metavar="CLASSES",
                   help="track every instance of these classes (a,b|synonym): found on the first prompted frame "
                        "(frame 0 without prompts) by --text-model")
    t.add_argument("--text-model", default="auto", metavar="NAME", help="SAM 3 or a detector name (default auto)")
    t.add_argument("--redetect", type=int, default=0, metavar="K",
                   help="with --text: look for new objects every K frames (0: only at the start)")
    t.add_argument("--threshold", type=float, default=None, metavar="T", help="with --text: least detection score")
    t.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help="classical (optical flow), a SAM 2 / EdgeTAM / SAM 3 name or a local model folder (a video "
                        "checkpoint), or auto (best present, else classical)")
    t.add_argument("--weights", metavar="PATH", help="transformers weights folder for --model")
    t.add_argument("--out", required=True, metavar="DIR", help="run folder (masks/, tracks.json, overlay.mp4, run.json)")
    t.add_argument("--restart", action="store_true", help="replace a different run in --out instead of refusing")
    t.add_argument("--no-overlay", action="store_true", help="skip the overlay mp4")
    t.add_argument("--fps", type=float, default=None, help="frame rate of a frame folder's overlay (default 24)")
    t.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="refuse videos longer than N frames (default 100000, or $ANYSEG_MAX_FRAMES)")
    t.add_argument("--json", action="store_true", help="print the run summary as JSON")
    t.add_argument("--device", default=None, help=DEVICE_HELP)
    return t

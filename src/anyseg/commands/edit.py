"""``anyseg edit remove|fill|replace|compose|style|cutout|remove-video``: edits driven by a mask.

The mask comes from one of ``--mask PNG``, ``--point`` / ``--box`` (a promptable model,
``--model``) or ``--text`` (a text model, ``--model``); ``compose`` finds its targets by text.
The work is a task (:func:`anyseg.tasks.edit.edit_from_args`: outputs, records, ``--in-place``);
this module builds the parsers and checks ``--device`` / ``--max-pixels`` before any file is read.
"""

from __future__ import annotations

import argparse

from anyseg.commands.options import DEVICE_HELP, MAX_PIXELS_HELP, check_max_pixels, device_option
from anyseg.commands.track import ObjId, ObjPrompt

__all__ = ["add_parser", "run"]

_ENGINES = "telea (default), ns, fsr, biharmonic, mean (no weights), lama (--weights big-lama.pt/.onnx) or sd"
_OUT_HELP = "output folder (default: the image's folder; the input image is never overwritten without --in-place)"


def _mask_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image file")
    p.add_argument("--mask", metavar="PNG", help="the mask to edit (the image's size, 255 = edit)")
    p.add_argument("--point", action="append", default=[], metavar="X,Y[:LABEL]",
                   help="a click on the object (LABEL 1 positive, 0 negative); repeatable; with --model")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box around the object, in pixels; with --model")
    p.add_argument("--text", metavar="PHRASE", help="the object by text, e.g. 'the dog' (every instance found)")
    p.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help="the model that makes the mask: with --point/--box a promptable model (default auto: best "
                        "SAM-family model present, else classical GrabCut), with --text a text model (default auto); "
                        "a registry name or a local model folder")


def _common(p: argparse.ArgumentParser, in_place: bool = True) -> None:
    p.add_argument("--out", default=None, metavar="DIR", help=_OUT_HELP)
    if in_place:
        p.add_argument("--in-place", action="store_true",
                       help="replace IMAGE itself with the edit (atomically); mask and JSON go to --out or beside it")
    p.add_argument("--json", action="store_true", help="also print the record to stdout")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N", help=MAX_PIXELS_HELP)
    p.add_argument("--device", default=None, help=DEVICE_HELP)


def _engine_options(p: argparse.ArgumentParser, default: str, dilate: int | None = 15, feather: bool = True) -> None:
    p.add_argument("--engine", default=default, metavar="NAME", help=f"edit engine: {_ENGINES} (default {default})")
    p.add_argument("--engine-model", default=None, metavar="NAME|PATH",
                   help="the engine's model: a registry name (sd: sd-inpainting, sd2-inpainting, sdxl-inpainting) "
                        "or a local folder")
    p.add_argument("--weights", metavar="PATH", help="the engine's weights file or folder (lama: big-lama .pt/.onnx)")
    p.add_argument("--seed", type=int, default=0, help="random seed of generative engines (default 0): same seed, "
                                                       "same result")
    p.add_argument("--dilate", type=int, default=dilate, metavar="PX",
                   help=f"grow the mask by PX pixels first (default {dilate}, as Inpaint Anything)")
    if feather:
        p.add_argument("--feather", type=int, default=4, metavar="PX", help="seam width inside the mask (default 4)")


def _generative(p: argparse.ArgumentParser, prompt_help: str) -> None:
    p.add_argument("--prompt", default=None, metavar="TEXT", help=prompt_help)
    p.add_argument("--negative-prompt", default=None, metavar="TEXT", help="sd: what the fill should not show")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="sd: denoising steps")
    p.add_argument("--guidance", type=float, default=None, metavar="G", help="sd: classifier-free guidance scale")
    p.add_argument("--strength", type=float, default=None, metavar="S", help="sd: denoising strength in (0, 1]")


def _video_parser(esub: argparse._SubParsersAction) -> None:
    v = esub.add_parser("remove-video", help="track an object through a video and remove it from every frame")
    v.add_argument("video", help="video file or folder of frames")
    v.add_argument("--obj", action=ObjId, metavar="ID", help="object id (1..254) of the --prompt options that follow")
    v.add_argument("--prompt", action=ObjPrompt, metavar="FRAME:KIND=VALUE", dest="prompt_args",
                   help="FRAME:point=X,Y[:LABEL], FRAME:box=X0,Y0,X1,Y1 or FRAME:mask=PNG, as anyseg track; repeatable")
    v.add_argument("--text", metavar="CLASSES", help="track and remove every instance of these classes")
    v.add_argument("--text-model", default="auto", metavar="NAME", help="with --text: SAM 3 or a detector name")
    v.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help="the tracker: classical, a SAM 2 / EdgeTAM / SAM 3 name or a local model folder (default auto)")
    _engine_options(v, "telea", feather=False)
    v.add_argument("--out", required=True, metavar="DIR", help="run folder: track/, frames/, STEM_edited.mp4, STEM.json")
    v.add_argument("--restart", action="store_true", help="replace a different tracking run in DIR/track")
    v.add_argument("--fps", type=float, default=None, help="frame rate of a frame folder (default 24)")
    v.add_argument("--max-frames", type=int, default=None, metavar="N", help="refuse videos longer than N frames")
    v.add_argument("--json", action="store_true", help="print the summary as JSON")
    v.add_argument("--device", default=None, help=DEVICE_HELP)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``edit`` and its operations to the ``anyseg`` sub-commands."""
    ed = sub.add_parser("edit", help="edit images by a mask: remove, fill, replace, compose, style, cutout; video removal")
    esub = ed.add_subparsers(dest="edit_command", metavar="OPERATION", parser_class=type(ed))
    esub.required = True
    r = esub.add_parser("remove", help="remove the object and fill its place from the surroundings")
    _mask_options(r)
    _engine_options(r, "telea")
    _generative(r, "generative engines only: what fills the hole, e.g. 'background'")
    _common(r)
    f = esub.add_parser("fill", help="fill the masked region with new content described by --prompt")
    _mask_options(f)
    _engine_options(f, "sd")
    _generative(f, "what to put in the masked region, e.g. 'a vase of flowers'")
    _common(f)
    rp = esub.add_parser("replace", help="keep the object, replace everything else (--prompt, --blur, --color, --background)")
    _mask_options(rp)
    _engine_options(rp, "sd", dilate=0)
    _generative(rp, "the new surroundings, e.g. 'a beach at sunset'")
    rp.add_argument("--blur", type=int, default=None, metavar="R", help="no model: blur the background, radius R px")
    rp.add_argument("--color", default=None, metavar="R,G,B", help="no model: a flat background colour")
    rp.add_argument("--background", default=None, metavar="IMG", help="no model: another image as the background")
    _common(rp)
    c = esub.add_parser("compose", help="Edit Everything: 'replace the dog with a cat and make the sky a sunset'")
    c.add_argument("image", help="image file")
    c.add_argument("--instructions", default=None, metavar="FILE.json",
                   help='a JSON list of {"target": ..., "prompt": ...} or {"target": ..., "op": "remove"}')
    c.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help="the text model that finds each target (default auto); a registry name or a local model folder")
    _engine_options(c, "sd")
    _generative(c, "the instruction: 'replace X with Y', 'turn X into Y', 'make X Y', 'X -> Y', 'remove X', "
                   "joined by and , ; then")
    _common(c)
    s = esub.add_parser("style", help="restyle the masked region after a style image")
    _mask_options(s)
    s.add_argument("--style", required=True, metavar="STYLE_IMAGE", help="the image whose look the region takes on")
    s.add_argument("--strength", type=float, default=1.0, metavar="S", help="how far to go, 0..1 (default 1)")
    s.add_argument("--engine", default="classical", choices=["classical", "sd"],
                   help="classical (colour statistics, histograms, guided-filter texture) or sd (masked img2img)")
    s.add_argument("--engine-model", default=None, metavar="NAME|PATH", help="sd: a registry name or a local folder")
    s.add_argument("--weights", metavar="PATH", help="sd: the weights folder")
    s.add_argument("--prompt", default=None, metavar="TEXT", help="sd: a text description of the style")
    s.add_argument("--seed", type=int, default=0, help="sd: random seed (default 0)")
    s.add_argument("--steps", type=int, default=None, metavar="N", help="sd: denoising steps")
    s.add_argument("--guidance", type=float, default=None, metavar="G", help="sd: classifier-free guidance scale")
    s.add_argument("--negative-prompt", default=None, metavar="TEXT", help="sd: what the region should not show")
    s.add_argument("--denoise", type=float, default=None, metavar="D",
                   help="sd: img2img denoising strength in (0, 1] (default 0.6: keeps the region's shapes)")
    s.add_argument("--feather", type=int, default=8, metavar="PX", help="seam width (default 8)")
    _common(s)
    ct = esub.add_parser("cutout", help="an RGBA cut-out with a matted alpha")
    _mask_options(ct)
    ct.add_argument("--method", default="matting", choices=["matting", "feather"],
                    help="matting (pymatting in a trimap band) or feather (a blurred edge)")
    ct.add_argument("--band", type=int, default=10, metavar="PX", help="the trimap's unknown band, PX each side (default 10)")
    ct.add_argument("--feather", type=int, default=0, metavar="PX", help="soften the alpha's edge by PX (default 0)")
    ct.add_argument("--out", default=None, metavar="DIR|FILE.png",
                    help="output folder (STEM_cutout.png) or the cut-out's file name (default: the image's folder)")
    ct.add_argument("--json", action="store_true", help="also print the record to stdout")
    ct.add_argument("--max-pixels", type=int, default=None, metavar="N", help=MAX_PIXELS_HELP)
    ct.add_argument("--device", default=None, help=DEVICE_HELP)
    _video_parser(esub)
    return ed


def run(args: argparse.Namespace) -> int:
    """Check ``--device`` and ``--max-pixels``, then run the edit (:func:`anyseg.tasks.edit.edit_from_args`)."""
    from anyseg.tasks.edit import edit_from_args

    args.device = device_option(args.device)
    check_max_pixels(getattr(args, "max_pixels", None))
    return edit_from_args(args)

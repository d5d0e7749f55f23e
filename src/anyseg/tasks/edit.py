"""``anyseg edit`` as a task: the mask from any prompt, the edit, its outputs and record.

The mask comes from exactly one source (:class:`MaskSource`): a mask file (``--mask``), clicks
and/or a box through a promptable model (``--point`` / ``--box``, :func:`anyseg.tasks.promptable.segment`
with ``--model``, default ``auto``: the best SAM-family model present, else the classical
GrabCut engine), or a phrase through anyseg's text backends (``--text``, every instance found,
merged; ``--model`` names the text model, default ``auto``). Then the operation of
:mod:`anyseg.edit` runs and :func:`write_edit` writes, staged and moved into place with the
JSON last (:func:`anyseg.io.atomic.staged_dir`)::

    DIR/STEM_edited.png   the edited image (cutout: STEM_cutout.png, RGBA; or the --out FILE.png itself)
    DIR/STEM_mask.png     the mask used (after dilation; replace: the region that changed), 0/255
    DIR/STEM.json         the record: anyseg_version, task "edit", operation, engine, model, seed,
                          prompt, mask (COCO RLE), image, image_size, seconds, mask_source, outputs

``--out`` defaults to the input image's folder. The input image is never overwritten unless
``--in-place``: then the edited image replaces it atomically (same format, by its suffix), no
``STEM_edited.png`` is written, and the mask and JSON go to ``--out`` (default: the image's
folder) with ``"in_place": true``. An ``--out`` that is the input file itself is refused.

``remove-video`` (:func:`run_remove_video`) tracks the object with ``anyseg track``'s
machinery into ``DIR/track/`` (resumable), then removes it from every frame with
:func:`anyseg.edit.video.remove_video` and writes ``DIR/frames/NNNNN.png``, ``DIR/STEM_edited.mp4``
(H.264, else MPEG-4 with a notice) and ``DIR/STEM.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from anyseg.errors import InputError, ModelError, PromptError
from anyseg.prompts import parse_box, parse_point

__all__ = ["MaskSource", "resolve_mask", "text_segmenter", "Destination", "destination", "write_edit",
           "run_edit", "run_remove_video", "edit_from_args"]

_SOURCES = "--mask PNG, --point X,Y (repeatable) and/or --box X0,Y0,X1,Y1, or --text PHRASE"


@dataclass(frozen=True)
class MaskSource:
    """Where the mask comes from: exactly one of a mask file, clicks/box, or a phrase."""

    mask_path: str | None = None
    points: tuple[tuple[float, float, int], ...] = ()
    box: tuple[float, ...] | None = None
    text: str | None = None

    @classmethod
    def from_strings(cls, mask: str | None = None, points: Sequence[str] = (), box: str | None = None,
                     text: str | None = None) -> "MaskSource":
        """From the command line's strings: parsed, and exactly one source checked (one-line errors)."""
        given = [name for name, v in (("--mask", mask), ("--point/--box", points or box), ("--text", text)) if v]
        if not given:
            raise PromptError(f"no mask: give {_SOURCES}")
        if len(given) > 1:
            raise PromptError(f"give one mask source, not {' and '.join(given)}: {_SOURCES}")
        if text is not None and not text.strip():
            raise PromptError("--text is empty: say what to edit, e.g. --text 'the dog'")
        return cls(mask, tuple(parse_point(p) for p in points), tuple(parse_box(box)) if box else None, text)

    def to_json(self) -> dict[str, Any]:
        if self.mask_path:
            return {"kind": "mask", "mask": str(self.mask_path)}
        if self.text:
            return {"kind": "text", "text": self.text}
        out: dict[str, Any] = {"kind": "prompt"}
        if self.points:
            out["points"] = [[p[0], p[1]] for p in self.points]
            out["labels"] = [p[2] for p in self.points]
        if self.box:
            out["box"] = list(self.box)
        return out


def text_segmenter(model: str = "auto", device: str | None = None, allow_download: bool = True,
                   backend: Any = None, params: Any = None) -> Callable[[np.ndarray, str], np.ndarray]:
    """``segment(image, phrase) -> (H, W) bool``: every instance of ``phrase`` found by the text
    backend ``model`` (loaded once, on the first call), merged. A machine without a text model
    gets one line saying what to pull."""
    from anyseg.tasks import text as text_task

    state = {"backend": backend}

    def segment(image: np.ndarray, phrase: str) -> np.ndarray:
        if state["backend"] is None:
            try:
                state["backend"] = text_task.load_instance_backend(model, device=device, allow_download=allow_download)
            except ModelError as e:
                if model != "auto":
                    raise
                raise ModelError(f"finding {phrase!r} by text needs a text model (e.g. `anyseg models pull "
                                 "grounding-dino-tiny`) and a SAM-family model for its masks (e.g. `anyseg models "
                                 f"pull sam-vit-base`): {str(e).split(':')[0]}") from None
        found = text_task.find_instances(image, phrase, state["backend"], params)
        return found.masks.any(axis=0) if len(found) else np.zeros(image.shape[:2], bool)

    return segment


def resolve_mask(image: np.ndarray, source: MaskSource, model: str = "auto", device: str | None = None,
                 max_pixels: int | None = None, predictor: Any = None,
                 segment: Callable[[np.ndarray, str], np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The mask ``source`` gives on ``image``, and its record part (``mask_source``, ``mask_model``)."""
    from anyseg.io.images import load_mask

    record = source.to_json()
    if source.mask_path:
        mask = load_mask(source.mask_path, size=image.shape[:2], max_pixels=max_pixels)
        return mask, {"mask_source": record, "mask_model": None}
    if source.text:
        mask = (segment or text_segmenter(model, device=device))(image, source.text)
        if not mask.any():
            raise InputError(f"nothing matching {source.text!r} was found in the image; try other words, or "
                             "--point / --box")
        return mask, {"mask_source": record, "mask_model": model}
    from anyseg.tasks.promptable import segment as promptable
    from anyseg.types import Prompt

    pts = source.points
    prompt = Prompt(points=np.array([p[:2] for p in pts]) if pts else None,
                    labels=np.array([p[2] for p in pts]) if pts else None,
                    box=np.array(source.box) if source.box else None)
    prompt.check_within(image.shape[:2])
    if pts and source.box is None and not any(p[2] == 1 for p in pts):
        raise PromptError("only negative clicks: give a positive --point X,Y or a --box")
    if predictor is None:
        from anyseg.models import load_model

        predictor = load_model(model, device=device)
    result = promptable(predictor, image, prompt)
    if not len(result.masks):
        raise InputError("the prompt gave no mask: click inside the object, or give a --box")
    mask = result.masks.masks[int(np.argmax(result.masks.scores))]
    return mask, {"mask_source": record, "mask_model": predictor.name}


@dataclass(frozen=True)
class Destination:
    """Where the outputs go: ``folder`` and the file names, and whether ``image`` is replaced."""

    folder: Path
    edited: str | None
    mask: str
    record: str
    image: Path
    in_place: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


def destination(image_path: str | Path, out: str | Path | None, operation: str, in_place: bool = False) -> Destination:
    """The output files of an edit of ``image_path`` (module docstring), checked before any work."""
    image = Path(image_path)
    stem = image.stem
    if out is not None and Path(out).resolve() == image.resolve():
        raise InputError(f"--out {out} is the input image: give a folder (or --in-place to replace the image)")
    if operation == "cutout" and out is not None and Path(out).suffix.lower() == ".png" and not Path(out).is_dir():
        target = Path(out)
        if in_place:
            raise InputError("--in-place does not apply to cutout (it writes an RGBA image)")
        return Destination(target.parent, target.name, f"{target.stem}_mask.png", f"{target.stem}.json", image)
    folder = Path(out) if out is not None else image.parent
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {folder} exists and is not a folder (cutout also takes a FILE.png)")
    edited = None if in_place else f"{stem}_{'cutout' if operation == 'cutout' else 'edited'}.png"
    return Destination(folder, edited, f"{stem}_mask.png", f"{stem}.json", image, in_place)


def _replace_image(path: Path, image: np.ndarray) -> None:
    """``image`` written over ``path`` atomically, in the format its suffix names."""
    import io

    from PIL import Image

    from anyseg.io.atomic import write_bytes

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"--in-place cannot write {path.suffix or 'suffix-less'} files: give --out DIR instead")
    buf = io.BytesIO()
    options = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(image).save(buf, format=fmt, **options)
    write_bytes(path, buf.getvalue())


def write_edit(result: Any, dest: Destination, extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], Path]:
    """The edited image, the mask used and the JSON record (JSON last); returns (record, JSON path)."""
    from anyseg.io.atomic import staged_dir, write_bytes, write_json
    from anyseg.io.export import png_bytes
    from anyseg.version import __version__

    h, w = result.image.shape[:2]
    record = {"anyseg_version": __version__, "task": "edit", "image": str(dest.image), "image_size": [h, w],
              **result.record, **(extra or {}), "in_place": dest.in_place,
              "outputs": {"edited_png": str(dest.image) if dest.in_place else dest.edited, "mask_png": dest.mask}}
    if dest.in_place:
        _replace_image(dest.image, result.image)
    with staged_dir(dest.folder) as stage:
        if dest.edited:
            write_bytes(stage / dest.edited, png_bytes(result.image))
        write_bytes(stage / dest.mask, png_bytes(result.mask.astype(np.uint8) * 255))
        write_json(stage / dest.record, record)
    return record, dest.folder / dest.record


def _engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The engine's construction options (``--weights``, ``--engine-model``, ``--device``)."""
    return {"weights": getattr(args, "weights", None), "model": getattr(args, "engine_model", None),
            "device": getattr(args, "device", None)}


def _generation_options(args: argparse.Namespace, engine: Any) -> dict[str, Any]:
    """``--steps`` / ``--guidance`` / ``--strength`` / ``--negative-prompt`` for a generative engine."""
    given = {k: getattr(args, k, None) for k in ("steps", "guidance", "strength", "negative_prompt")}
    given = {k: v for k, v in given.items() if v is not None}
    if given and not getattr(engine, "generative", False):
        names = ", ".join("--" + k.replace("_", "-") for k in given)
        raise InputError(f"{names} apply to generative engines (sd), not to {engine.name}")
    return given


def _operate(args: argparse.Namespace, image: np.ndarray, mask: Any, segment: Any) -> Any:
    """Run ``args.edit_command`` on ``image`` (the engine built once here)."""
    import anyseg.edit as edit

    op = args.edit_command
    if op == "cutout":
        return edit.cutout(image, mask, method=args.method, band=args.band, feather=args.feather)
    if op == "style":
        from anyseg.io.images import load_image

        try:
            style_image = load_image(args.style, max_pixels=args.max_pixels)
        except InputError as e:
            raise InputError(f"--style: cannot read the style image: {e}") from None
        options = {k: v for k, v in _engine_kwargs(args).items() if v is not None}
        sd = {k: getattr(args, k, None) for k in ("steps", "guidance", "negative_prompt", "denoise")}
        if args.engine != "sd" and any(v is not None for v in sd.values()):
            raise InputError("--steps, --guidance, --negative-prompt and --denoise apply to --engine sd")
        options.update({k: v for k, v in sd.items() if v is not None})
        return edit.style(image, mask, style_image, engine=args.engine, strength=args.strength, feather=args.feather,
                          seed=args.seed, prompt=args.prompt, **options)
    if op == "replace" and any(getattr(args, k) is not None for k in ("blur", "color", "background")):
        return edit.replace(image, mask, prompt=args.prompt, blur=args.blur, color=args.color,
                            background=args.background, dilate=args.dilate, feather=args.feather,
                            max_pixels=args.max_pixels)
    engine = edit.build_engine(args.engine, **_engine_kwargs(args))
    options = _generation_options(args, engine)
    common = {"engine": engine, "dilate": args.dilate, "feather": args.feather, "seed": args.seed, **options}
    if op == "remove":
        return edit.remove(image, mask, prompt=args.prompt, **common)
    if op == "fill":
        return edit.fill(image, mask, args.prompt, **common)
    if op == "replace":
        return edit.replace(image, mask, prompt=args.prompt, **common)
    steps = mask
    for line in _describe(steps):
        print(f"anyseg: edit {line}", file=sys.stderr)
    return edit.compose(image, steps, segment=segment, **common)


def _describe(steps: Any) -> list[str]:
    from anyseg.edit.compose import describe_steps

    return describe_steps(steps)


def run_edit(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """``anyseg edit remove|fill|replace|compose|style|cutout`` from parsed arguments (``--device``
    and ``--max-pixels`` already checked by the command): the other options checked before any file
    is read or written, then the mask, the edit and its outputs."""
    from anyseg.edit.base import ENGINES
    from anyseg.io.images import load_image

    t = time.perf_counter()
    op = args.edit_command
    if op not in ("style", "cutout") and args.engine not in ENGINES:
        raise InputError(f"unknown edit engine {args.engine!r}; expected one of {', '.join(ENGINES)}")
    if op == "replace" and args.color is not None:
        from anyseg.edit.replace import parse_color

        args.color = parse_color(args.color)
    alternatives = op == "replace" and any(getattr(args, k) is not None for k in ("blur", "color", "background"))
    if op in ("fill", "replace") and args.prompt is None and not alternatives and (args.engine == "sd" or op == "replace"):
        raise InputError(f"{op}: give --prompt TEXT for the {args.engine} engine"
                         f"{' (or --blur R, --color R,G,B or --background IMG)' if op == 'replace' else ''}")
    if op == "compose":
        steps = _compose_steps(args)
    else:
        source = MaskSource.from_strings(args.mask, args.point, args.box, args.text)
    dest = destination(args.image, args.out, op, getattr(args, "in_place", False))
    image = load_image(args.image, max_pixels=args.max_pixels)
    segment = text_segmenter(args.model, device=args.device) if op == "compose" or getattr(args, "text", None) else None
    if op == "compose":
        mask, extra = steps, {"mask_source": {"kind": "text", "steps": [list(s) for s in steps]},
                              "mask_model": args.model}
    else:
        mask, extra = resolve_mask(image, source, model=args.model, device=args.device, max_pixels=args.max_pixels,
                                   segment=segment)
    result = _operate(args, image, mask, segment)
    extra["seconds"] = round(time.perf_counter() - t, 3)
    extra["engine_seconds"] = result.record.get("seconds")
    return write_edit(result, dest, extra)


def _compose_steps(args: argparse.Namespace) -> list[Any]:
    from anyseg.edit.compose import load_instructions, parse_instruction

    if (args.prompt is None) == (args.instructions is None):
        raise InputError("compose: give the instruction as --prompt \"replace X with Y ...\" or --instructions FILE.json "
                         "(one of them)")
    return parse_instruction(args.prompt) if args.prompt is not None else load_instructions(args.instructions)


# -- video -------------------------------------------------------------------------------------------
class _TrackMasks:
    """The tracked objects' masks, frame by frame, read from the track run's PNGs when asked for."""

    def __init__(self, folder: Path, count: int, size: tuple[int, int]) -> None:
        self.folder, self.count, self.size = folder, count, size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        from anyseg.io.images import load_mask

        if not 0 <= index < self.count:
            raise IndexError(index)
        path = self.folder / f"{index:05d}.png"
        return load_mask(path, size=self.size) if path.exists() else np.zeros(self.size, bool)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (self[i] for i in range(self.count))


def _frame_output(item: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """One item of :func:`anyseg.edit.video.remove_video`: an EditResult, ``(frame, record)`` or
    ``(index, frame, record)``."""
    if hasattr(item, "image") and hasattr(item, "record"):
        return item.image, dict(item.record)
    if isinstance(item, tuple) and len(item) in (2, 3):
        return item[-2], dict(item[-1] or {})
    raise RuntimeError(f"remove_video yielded a {type(item).__name__}, expected (frame, record)")


def run_remove_video(video: str | Path, prompts: Sequence[tuple[int, str]], out: str | Path, *,
                     text: str | None = None, text_model: str = "auto", model: str = "auto",
                     engine: str | Any = "telea", weights: str | None = None, engine_model: str | None = None,
                     dilate: int | None = None, seed: int = 0, device: str | None = None,
                     max_frames: int | None = None, fps: float | None = None, restart: bool = False,
                     show_progress: bool = True) -> dict[str, Any]:
    """Track the object(s) (``anyseg track``'s prompts, into ``OUT/track``), remove them from every
    frame (:func:`anyseg.edit.video.remove_video`), write the frames, an mp4 and the record."""
    import importlib

    import anyseg.edit as edit
    from anyseg.edit.base import DEFAULT_DILATE, dilate_mask
    from anyseg.io.atomic import staged_dir, write_bytes, write_json
    from anyseg.io.export import png_bytes
    from anyseg.io.video import fallback_notice, open_video_writer
    from anyseg.tasks.track import run_track_command
    from anyseg.version import __version__
    from anyseg.video.frames import open_frames

    t = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    dilate = DEFAULT_DILATE if dilate is None else dilate
    dilate_mask(np.zeros((1, 1), bool), dilate)  # checks --dilate before any work
    eng = edit.build_engine(engine, weights=weights, model=engine_model, device=device)
    if getattr(eng, "generative", False):
        raise InputError(f"remove-video needs a non-generative engine (telea, ns, fsr, biharmonic, lama), not {eng.name}")
    summary = run_track_command(video, prompts, out / "track", model=model, device=device, text=text,
                                text_model=text_model, restart=restart, overlay=False, fps=fps,
                                max_frames=max_frames, show_progress=show_progress)
    frames = open_frames(video, fps=fps, max_frames=max_frames)
    try:
        masks = _TrackMasks(out / "track" / "masks", len(frames), frames.size)
        stem = Path(frames.name).stem or "video"
        mp4 = out / f"{stem}_edited.mp4"
        remove_video = importlib.import_module("anyseg.edit.video").remove_video
        records: list[dict[str, Any]] = []
        with staged_dir(out / "frames") as stage, open_video_writer(mp4, frames.size, frames.fps) as writer:
            for k, item in enumerate(remove_video(frames, masks, eng, dilate=dilate, seed=seed, progress=show_progress)):
                frame, rec = _frame_output(item)
                write_bytes(stage / f"{k:05d}.png", png_bytes(frame))
                writer.write(frame)
                records.append({"frame": k, **rec})
            info = writer.close().to_dict()
    finally:
        frames.close()
    if info.get("codec") == "mpeg4":
        print(f"anyseg: notice: {fallback_notice(mp4.name)}", file=sys.stderr)
    record = {"anyseg_version": __version__, "task": "edit", "operation": "remove-video", "video": str(video),
              "engine": eng.name, "model": eng.model_id, "seed": int(seed), "prompt": None, "dilate": int(dilate),
              "tracker": summary["model"], "object_ids": summary["object_ids"], "num_frames": len(records),
              "fps": frames.fps, "outputs": {"frames": "frames", "mp4": mp4.name, "track": "track", "video": info},
              "seconds": round(time.perf_counter() - t, 3), "frames": records}
    write_json(out / f"{stem}.json", record)
    return {"out": str(out), "frames": len(records), "engine": eng.name, "tracker": summary["model"],
            "json": str(out / f"{stem}.json"), "mp4": str(mp4)}


def edit_from_args(args: argparse.Namespace) -> int:
    """``anyseg edit ...`` from its parsed arguments; the record as JSON on stdout with ``--json``,
    else one status line on stderr. Returns the exit code 0."""
    if args.edit_command == "remove-video":
        summary = run_remove_video(
            args.video, getattr(args, "prompts", None) or [], args.out, text=args.text, text_model=args.text_model,
            model=args.model, engine=args.engine, weights=args.weights, engine_model=args.engine_model,
            dilate=args.dilate, seed=args.seed, device=args.device, max_frames=args.max_frames, fps=args.fps,
            restart=args.restart)
        if args.json:
            print(json.dumps(summary))
        else:
            print(f"removed the tracked object(s) from {summary['frames']} frames with {summary['engine']} -> "
                  f"{summary['mp4']}", file=sys.stderr)
        return 0
    record, json_path = run_edit(args)
    if args.json:
        print(json.dumps(record))
    else:
        print(f"{args.edit_command}: {record.get('engine')} edited {record.get('mask_area', 0)} px -> {json_path}",
              file=sys.stderr)
    return 0

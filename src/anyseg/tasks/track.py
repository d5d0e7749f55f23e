"""``anyseg track`` as a task: prompts checked, a tracker and a session, results streamed to a run folder.

:func:`run_track_command` checks every input before the folder is touched (prompts, mask
files, options, the frame bound), loads the tracker (:func:`anyseg.video.session.load_tracker`)
and, with ``--text``, the instance backend that finds objects (:class:`Redetector`), then
streams each pass into a :class:`~anyseg.tasks.track_output.TrackWriter` (the run folder's
layout and write order: :mod:`anyseg.tasks.track_output`).

Resuming: rerunning the same command (same video, model and prompts) skips the passes already
done and continues the interrupted one from its last recorded frame: the objects' masks there
(read back from its PNG) are added as mask prompts beside the original prompts. A tracker's
memory bank is rebuilt from those prompts, not restored, so a resumed run can differ slightly
from an uninterrupted one after the resume frame. A different command on the same folder is
refused (one line) unless ``--restart``. A run tracks at most ``max_frames`` frames (default
:data:`DEFAULT_MAX_FRAMES`, or ``$ANYSEG_MAX_FRAMES``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from anyseg.errors import InputError, PromptError
from anyseg.prompts import parse_frame_prompt
from anyseg.tasks.track_output import TrackWriter, frame_bar

DEFAULT_MAX_FRAMES = 100_000


def merge_prompts(prompts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Clicks of one object on one frame form one prompt (with a box, if one was given there)."""
    merged: dict[tuple[int, int], dict[str, Any]] = {}
    for p in prompts:
        key = (p["frame"], p["obj_id"])
        cur = merged.setdefault(key, {"frame": p["frame"], "obj_id": p["obj_id"]})
        if "points" in p:
            cur.setdefault("points", []).extend(p["points"])
            cur.setdefault("labels", []).extend(p["labels"])
        for k in ("box", "mask_path"):
            if k in p:
                if k in cur:
                    raise PromptError(f"two {k.split('_')[0]}es for object {p['obj_id']} on frame {p['frame']}")
                cur[k] = p[k]
    return list(merged.values())


def max_frames_default() -> int:
    """The frame bound of a track run: ``$ANYSEG_MAX_FRAMES``, else :data:`DEFAULT_MAX_FRAMES`."""
    value = os.environ.get("ANYSEG_MAX_FRAMES")
    return DEFAULT_MAX_FRAMES if not value else check_max_frames(value, "ANYSEG_MAX_FRAMES")


def check_max_frames(value: Any, what: str = "--max-frames") -> int:
    try:
        limit = int(value)
    except (TypeError, ValueError):
        limit = 0
    if isinstance(value, bool) or limit < 1:
        raise InputError(f"{what} must be a positive number of frames; got {value!r}")
    return limit


def check_prompts(prompts: Sequence[dict[str, Any]], frames: Any) -> None:
    """Raise a one-line error for any prompt the run would fail on, before anything is written.

    Checks, in the order :func:`run_track` adds them: the frame index, the object id (1..254),
    points and boxes finite and within the frame, mask files readable, of the frame's size and
    not empty, and that an object's first prompt can start it (a box, a mask or a positive click).
    """
    from anyseg.io.images import load_mask
    from anyseg.types import Prompt

    started: set[int] = set()
    for p in prompts:
        frame, obj = frames.check_index(p["frame"]), p["obj_id"]
        if isinstance(obj, bool) or not isinstance(obj, (int, np.integer)) or not 1 <= obj <= 254:
            raise PromptError(f"object ids must be integers in 1..254 (DAVIS palette PNGs); got {obj!r}")
        try:
            mask = load_mask(p["mask_path"], size=frames.size) if "mask_path" in p else None
            if mask is not None and not mask.any():
                raise PromptError(f"mask {p['mask_path']} is empty")
            prompt = Prompt(points=p.get("points"), labels=p.get("labels"), box=p.get("box"), mask=mask)
            prompt.check_within(frames.size)
        except InputError as e:
            raise PromptError(f"--prompt for object {obj} on frame {frame}: {e}") from None
        if obj not in started and prompt.box is None and mask is None and not (prompt.labels == 1).any():
            raise PromptError(f"object {obj}'s first prompt (frame {frame}) has only negative clicks: "
                              "expected a positive click, a box or a mask")
        started.add(int(obj))


def objects_to_ids(masks: Any, size: tuple[int, int]) -> np.ndarray:
    """Object masks -> one ``(H, W)`` uint8 id map (a later, higher id wins an overlap)."""
    ids = np.zeros(size, dtype=np.uint8)
    if masks.object_ids is None:
        return ids
    for obj, m in zip(masks.object_ids, masks.masks):
        if not 0 < obj < 255:
            raise InputError(f"object id {obj} does not fit a DAVIS palette PNG (ids 1..254)")
        ids[m] = obj
    return ids


def run_track(session: Any, prompts: Sequence[dict[str, Any]], writer: TrackWriter, progress: bool = True,
              redetect: "Redetector | None" = None) -> None:
    """Add ``prompts`` to ``session``, propagate every pass (resuming where ``writer`` left off).

    With ``redetect``, its objects found on the first prompted frame are added first, and the
    forward pass stops every ``redetect.every`` frames to look for new objects (which join
    with new ids and are tracked from there on, forward).
    """
    from anyseg.io.images import load_mask

    frames = session.frames
    for p in prompts:
        mask = load_mask(p["mask_path"], size=frames.size) if "mask_path" in p else None
        session.add_prompt(p["frame"], p["obj_id"], points=p.get("points"), labels=p.get("labels"),
                           box=p.get("box"), mask=mask)
    if redetect is not None:
        redetect.initial(session)
    passes = session.plan()
    done = set(writer.progress.get("done_passes", []))
    for k, (start, end, reverse) in enumerate(passes):
        if k in done:
            continue
        start = _reseed(session, writer, k, start)
        desc = f"pass {k + 1}/{len(passes)} {'backward' if reverse else 'forward'}"
        bar = frame_bar(None, desc, progress, total=abs(end - start) + 1)
        segments = [(start, end)]
        if redetect is not None and not reverse:
            cuts = list(range(start, end, redetect.every))[1:]
            segments = list(zip([start, *cuts], [*cuts, end]))  # consecutive segments share their boundary frame
        for seg_start, seg_end in segments:
            last = None
            for index, masks in session.propagate([(seg_start, seg_end, reverse)]):
                writer.write(index, objects_to_ids(masks, frames.size), k)
                bar.update(1 if index != seg_start or seg_start == start else 0)
                last = masks
            if redetect is not None and not reverse and seg_end != end and last is not None:
                redetect.step(session, seg_end, last)
        bar.close()
        writer.end_pass(k)


def _reseed(session: Any, writer: TrackWriter, pass_index: int, start: int) -> int:
    """Where pass ``pass_index`` (re)starts: its resume frame, with the masks written there as prompts."""
    resume = writer.resume_point(pass_index)
    if resume is None or resume == start:
        return start
    ids = writer.read_ids(resume, session.frames.size)
    for obj in np.unique(ids):
        if obj:
            session.add_prompt(resume, int(obj), mask=ids == obj)
    return resume


class Redetector:
    """Text-initialised tracking: objects of ``classes`` found by an instance backend get ids.

    :meth:`initial` detects on the first prompted frame (frame 0 without prompts); :meth:`step`
    detects every ``every`` frames, and a detection whose mask overlaps every tracked object's
    mask by IoU below ``new_iou`` on that frame becomes a new object with the next free id.
    Ids are never reused, so they stay stable through the video.
    """

    def __init__(self, backend: Any, classes: Sequence[Any], every: int = 0, new_iou: float = 0.3,
                 params: Any = None, max_objects: int = 254) -> None:
        if every < 0:
            raise InputError(f"--redetect must be >= 0 frames; got {every}")
        self.backend, self.classes, self.new_iou, self.params = backend, list(classes), new_iou, params
        self.every = int(every) if every else 1 << 62
        self.max_objects = max_objects
        self.labels: dict[int, str] = {}

    def _detect(self, image: np.ndarray) -> Any:
        from anyseg.tasks.text import find_instances

        return find_instances(image, self.classes, self.backend, self.params)

    def _add(self, session: Any, frame: int, found: Any, tracked: list[np.ndarray]) -> int:
        from anyseg.masks.boxes import mask_iou

        added = 0
        for i in range(len(found)):
            m = found.masks[i]
            if not m.any():
                continue
            if tracked and float(mask_iou(m[None], np.stack(tracked)).max()) >= self.new_iou:
                continue
            next_id = max([*session.object_ids, 0]) + 1
            if next_id > self.max_objects:
                break
            session.add_prompt(frame, next_id, mask=m)
            self.labels[next_id] = str(found.labels[i]) if found.labels is not None else ""
            tracked.append(m)
            added += 1
        return added

    def initial(self, session: Any) -> int:
        frame = min(session.prompted_frames) if session.prompted_frames else 0
        found = self._detect(session.frames[frame])
        added = self._add(session, frame, found, [])
        if not session.prompted_frames:
            raise PromptError(f"nothing matching {', '.join(c.label for c in self.classes)} was found on frame {frame}; "
                              "lower --threshold / --box-threshold or prompt an object yourself")
        return added

    def step(self, session: Any, frame: int, masks: Any) -> int:
        found = self._detect(session.frames[frame])
        return self._add(session, frame, found, [m for m in masks.masks])


def run_track_command(video: str | os.PathLike, prompts: Sequence[tuple[int, str]], out: str | os.PathLike, *,
                      model: str = "auto", weights: str | None = None, device: str | None = None,
                      text: str | None = None, text_model: str = "auto", redetect: int = 0,
                      threshold: float | None = None, restart: bool = False, overlay: bool = True,
                      fps: float | None = None, max_frames: int | None = None,
                      show_progress: bool = True) -> dict[str, Any]:
    """``anyseg track``: check everything, then track ``video`` into the run folder ``out``.

    ``prompts``: ``(obj_id, "FRAME:KIND=VALUE")`` pairs, as ``--obj`` / ``--prompt`` give them;
    ``text``: classes whose instances ``text_model`` finds (again every ``redetect`` frames).
    Prompts, mask files and ``max_frames`` are checked before the model loads and before ``out``
    is touched. Returns the summary: out, model, frames, object_ids (and labels with ``text``).
    """
    from anyseg.video.frames import open_frames
    from anyseg.video.session import VideoSession

    merged = merge_prompts(parse_frame_prompt(t, obj) for obj, t in prompts)
    classes, params = _check_options(merged, text, redetect, threshold, fps)
    limit = max_frames_default() if max_frames is None else check_max_frames(max_frames)
    if device is not None:
        from anyseg.models.sam import check_device

        device = check_device(device)
    if Path(out).exists() and not Path(out).is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    frames = open_frames(video, fps=fps, max_frames=limit)
    try:
        check_prompts(merged, frames)
        for p in merged:
            if "mask_path" in p:
                p["mask_path"] = str(Path(p["mask_path"]).resolve())
        tracker, redetector = _engines(model, weights, device, classes, text_model, redetect, params)
        run = {"video": str(Path(frames.name).resolve()), "num_frames": len(frames), "size": list(frames.size),
               "model": model, "tracker": tracker.name, "weights": weights, "prompts": merged, "text": text,
               "text_model": redetector.backend.name if redetector else None, "redetect": redetect,
               "threshold": threshold}
        writer = TrackWriter(Path(out), run, restart=restart)
        if not writer.finished:
            with VideoSession(tracker, frames) as session:
                run_track(session, merged, writer, progress=show_progress, redetect=redetector)
        record = writer.finish(frames, frames.fps, overlay=overlay, progress=show_progress)
    finally:
        frames.close()
    summary = {"out": str(out), "model": tracker.name, "frames": record["num_frames"],
               "object_ids": record["object_ids"]}
    if redetector is not None:
        summary["labels"] = {str(k): v for k, v in redetector.labels.items()}
    return summary


def _check_options(prompts: list[dict[str, Any]], text: str | None, redetect: Any, threshold: float | None,
                   fps: float | None) -> tuple[Any, Any]:
    """The text classes and detection parameters; one-line errors for options that cannot work together."""
    import math

    if not prompts and not text:
        raise PromptError("no prompt: give --prompt FRAME:point=X,Y (or box=, mask=) and/or --text CLASSES")
    if isinstance(redetect, bool) or not isinstance(redetect, int) or redetect < 0:
        raise InputError(f"--redetect must be a number of frames >= 0; got {redetect!r}")
    if redetect and not text:
        raise InputError("--redetect needs --text")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise InputError(f"--fps must be a positive frame rate; got {fps!r}")
    if not text:
        return None, None
    from anyseg.tasks.text import TextParams
    from anyseg.text.vocab import parse_classes

    classes = parse_classes(text, "--text")
    params = None if threshold is None else TextParams(threshold=threshold, box_threshold=threshold)
    return classes, params


def _engines(model: str, weights: str | None, device: str | None, classes: Any, text_model: str, redetect: int,
             params: Any) -> tuple[Any, "Redetector | None"]:
    """The tracker, and the :class:`Redetector` when there are text ``classes``."""
    from anyseg.video.session import load_tracker

    tracker = load_tracker(model, weights=weights, device=device)
    if classes is None:
        return tracker, None
    from anyseg.tasks.text import load_instance_backend

    backend = load_instance_backend(text_model, device=device)
    return tracker, Redetector(backend, classes, every=redetect, params=params)


def track_from_args(args: argparse.Namespace) -> int:
    """``anyseg track`` from its parsed arguments: :func:`run_track_command`, then the summary
    (JSON on stdout with ``--json``, else one line on stderr); returns the exit code 0."""
    import sys

    summary = run_track_command(
        args.video, getattr(args, "prompts", None) or [], args.out, model=args.model, weights=args.weights,
        device=args.device, text=args.text, text_model=args.text_model, redetect=args.redetect,
        threshold=args.threshold, restart=args.restart, overlay=not args.no_overlay, fps=args.fps,
        max_frames=getattr(args, "max_frames", None))
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"tracked {len(summary['object_ids'])} object(s) over {summary['frames']} frames with "
              f"{summary['model']} -> {Path(args.out) / 'tracks.json'}", file=sys.stderr)
    return 0

"""``anyseg track``: prompts parsed from the command line, results streamed to disk, resumable.

Output folder (a *run folder*)::

    DIR/masks/NNNNN.png   per frame, an indexed PNG in the DAVIS palette (value = object id)
    DIR/overlay.mp4       the video with coloured masks and outlines (written after tracking)
    DIR/tracks.json       per frame, per object: COCO RLE, area, box (XYXY); the run id
    DIR/run.json          the record: run id, status (running / done), the run's identity (video,
                          model, prompts, ...); progress.json (with the run id) while running

The record always describes exactly the files beside it. Every input is checked before the
folder is touched, and the folder changes only once the first frame's masks are ready, so a
run that fails to start leaves it as it was. A run starts by writing ``run.json`` (a new run
id, ``running``) and only then removes what an earlier run left (masks, tracks, overlay,
progress; other files stay); it ends with ``tracks.json`` (exactly the frames in ``masks/``),
then ``run.json`` ``done``. A rerun trusts the PNGs only under progress of the run id in
``run.json``; anything else starts the run afresh.

Resuming: ``progress.json`` (the pass and the last frame written) is written every few frames.
Rerunning the same command (same video, model and prompts) skips the passes already done and
continues the interrupted one from its last recorded frame: the objects' masks there (read back
from its PNG) are added as mask prompts beside the original prompts. A tracker's memory bank
is rebuilt from those prompts, not restored, so a resumed run can differ slightly from an
uninterrupted one after the resume frame. A different command on the same folder is refused
(one line) unless ``--restart``. A run tracks at most ``max_frames`` frames (default
:data:`DEFAULT_MAX_FRAMES`, or ``$ANYSEG_MAX_FRAMES``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from anyseg.errors import InputError, PromptError

PROGRESS_EVERY = 10
DEFAULT_MAX_FRAMES = 100_000
#: The tracking outputs a run folder holds besides ``run.json`` and ``masks/NNNNN.png``.
RUN_OUTPUTS = ("tracks.json", "progress.json", "overlay.mp4", ".overlay.partial.mp4")
MASK_NAME = re.compile(r"^(\d{5,})\.png$")


def parse_prompt(text: str, obj_id: int) -> dict[str, Any]:
    """``FRAME:point=X,Y[:LABEL]``, ``FRAME:box=X0,Y0,X1,Y1`` or ``FRAME:mask=PNG`` -> a prompt dict."""
    frame_text, sep, rest = text.partition(":")
    kind, eq, value = rest.partition("=")
    if not sep or not eq:
        raise PromptError(f"malformed --prompt {text!r}: expected FRAME:point=X,Y[:LABEL], FRAME:box=X0,Y0,X1,Y1 "
                          "or FRAME:mask=PNG")
    try:
        frame = int(frame_text)
    except ValueError:
        raise PromptError(f"malformed --prompt {text!r}: FRAME must be a frame index, e.g. 0:point=120,80") from None
    if frame < 0:
        raise PromptError(f"malformed --prompt {text!r}: FRAME must be >= 0")
    if kind == "point":
        from anyseg.cli import parse_point

        x, y, label = parse_point(value)
        return {"frame": frame, "obj_id": obj_id, "points": [[x, y]], "labels": [label]}
    if kind == "box":
        from anyseg.cli import parse_box

        return {"frame": frame, "obj_id": obj_id, "box": parse_box(value)}
    if kind == "mask":
        return {"frame": frame, "obj_id": obj_id, "mask_path": value}
    raise PromptError(f"malformed --prompt {text!r}: the kind must be point, box or mask, not {kind!r}")


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


_UNREADABLE = object()


def _read_json(path: Path) -> Any:
    """The JSON in ``path``; ``None`` when there is no such file, ``_UNREADABLE`` when it cannot be read."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return _UNREADABLE


def _trusted(progress: Any, run_id: str) -> bool:
    """Whether ``progress`` is well-formed and was written under ``run_id``."""
    if not isinstance(progress, dict) or progress.get("run_id") != run_id:
        return False
    if not isinstance(progress.get("done_passes"), list):
        return False
    values = [*progress["done_passes"], *(v for v in (progress.get("pass"), progress.get("last")) if v is not None)]
    return all(type(v) is int and v >= 0 for v in values)


def _palette_png(ids: np.ndarray) -> bytes:
    import io

    from PIL import Image

    from anyseg.io.export import davis_palette

    im = Image.fromarray(np.ascontiguousarray(ids.astype(np.uint8)), mode="L")
    im.putpalette(davis_palette().ravel().tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


class TrackWriter:
    """A run folder: per-frame PNGs written atomically as frames arrive, progress kept for resuming.

    Constructing it only reads the folder: it adopts the folder's run if it is this ``run`` (same
    identity, progress under its run id) and refuses another run's folder unless ``restart``.
    Nothing is written before the first :meth:`write` (the order of writes: module docstring).
    """

    def __init__(self, out_dir: Path, run: dict[str, Any], restart: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.masks_dir = self.out_dir / "masks"
        for path in (self.out_dir, self.masks_dir):
            if path.exists() and not path.is_dir():
                raise InputError(f"{path} exists and is not a folder: --out must be a run folder")
        self.run = run
        self.run_id: str | None = None
        self.status = "new"  # new (nothing written yet), running or done
        self.progress: dict[str, Any] = {"done_passes": [], "pass": None, "last": None}
        self._since = 0
        if not restart:
            self._adopt()

    def _adopt(self) -> None:
        record = _read_json(self.out_dir / "run.json")
        if record is None:
            if self._outputs():
                raise InputError(f"{self.out_dir} holds tracking outputs but no run.json; use another --out, or "
                                 "--restart to replace them")
            return
        if not isinstance(record, dict) or record.get("run") != self.run or not isinstance(record.get("run_id"), str):
            raise InputError(f"{self.out_dir} holds a different tracking run (other video, model or prompts); "
                             "use another --out, or --restart to replace it")
        progress = _read_json(self.out_dir / "progress.json")
        if _trusted(progress, record["run_id"]):
            self.run_id, self.progress = record["run_id"], progress
            self.status = "done" if record.get("status") == "done" else "running"
        # else: begun, but no progress under its id: nothing there is trusted, the run starts afresh

    def _outputs(self) -> list[Path]:
        """The tracking outputs in the folder (what a new run replaces); other files are not the run's."""
        found = [self.out_dir / n for n in RUN_OUTPUTS if (self.out_dir / n).exists()]
        if self.masks_dir.is_dir():
            found += [p for p in self.masks_dir.iterdir() if MASK_NAME.match(p.name)]
        return found

    def _claim(self) -> None:
        """Start the run in the folder (once): its record first, then the old outputs go."""
        import uuid

        from anyseg.io.atomic import write_json

        if self.status != "new":
            return
        self.run_id = uuid.uuid4().hex
        write_json(self.out_dir / "run.json", self._record("running"))  # from here on, the old run is gone
        for path in self._outputs():
            path.unlink(missing_ok=True)
        self.masks_dir.mkdir(exist_ok=True)
        self.progress = {"run_id": self.run_id, "done_passes": [], "pass": None, "last": None}
        self.status = "running"

    def _record(self, status: str) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": status, "run": self.run}

    @property
    def finished(self) -> bool:
        return self.status == "done"

    def resume_point(self, pass_index: int) -> int | None:
        """The frame to restart pass ``pass_index`` from, or ``None`` to run it from its start."""
        if self.progress.get("pass") == pass_index and self.progress.get("last") is not None:
            return int(self.progress["last"])
        return None

    def write(self, index: int, ids: np.ndarray, pass_index: int) -> None:
        from anyseg.io.atomic import write_bytes, write_json

        self._claim()
        write_bytes(self.masks_dir / f"{index:05d}.png", _palette_png(ids))
        self.progress.update({"pass": pass_index, "last": index})
        self._since += 1
        if self._since >= PROGRESS_EVERY:
            write_json(self.out_dir / "progress.json", self.progress)
            self._since = 0

    def end_pass(self, pass_index: int) -> None:
        from anyseg.io.atomic import write_json

        self._claim()
        self.progress["done_passes"] = sorted({*self.progress.get("done_passes", []), pass_index})
        self.progress.update({"pass": None, "last": None})
        write_json(self.out_dir / "progress.json", self.progress)
        self._since = 0

    def read_ids(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """Object ids of frame ``index`` as written; with ``size``, checked to be ``(H, W)`` (from the
        header, before decoding: a PNG swapped into the folder cannot be a decompression bomb)."""
        from PIL import Image

        path = self.masks_dir / f"{index:05d}.png"
        try:
            with Image.open(path) as im:
                wh = im.size
                if size is None or wh == (size[1], size[0]):
                    im.load()
                    arr, mode = np.asarray(im), im.mode
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise InputError(f"cannot read {path} ({e}); rerun with --restart") from None
        if size is not None and wh != (size[1], size[0]):
            raise InputError(f"{path} is {wh[0]}x{wh[1]}, but the video is {size[1]}x{size[0]}: the run folder "
                             "was changed; rerun with --restart")
        if mode != "P":
            raise InputError(f"{path} is not an indexed PNG of object ids (mode {mode}); rerun with --restart")
        return arr.astype(np.int32)

    def _settle_masks(self, n: int) -> None:
        """Refuse when a frame below ``n`` has no PNG; remove the PNGs beyond (no run of ``n`` frames wrote them)."""
        have = {int(MASK_NAME.match(p.name).group(1)): p for p in self._outputs() if p.parent == self.masks_dir}
        missing = sorted(set(range(n)) - set(have))
        if missing:
            raise InputError(f"frames {missing[:3]} have no masks: the run did not cover the whole video "
                             "(rerun with --restart)")
        for i, path in have.items():
            if i >= n:
                path.unlink(missing_ok=True)

    def finish(self, frames: Any, fps: float, overlay: bool = True, progress: bool = True) -> dict[str, Any]:
        """Write ``tracks.json`` (and ``overlay.mp4``) from the per-frame PNGs, in frame order, then
        mark the run done. ``masks/`` and ``tracks.json`` list the same frames afterwards."""
        from anyseg.io.atomic import write_json

        if self.status == "new":
            raise InputError(f"nothing was tracked into {self.out_dir}: the run wrote no frame")
        n = len(frames)
        self._settle_masks(n)
        if not overlay:
            for name in ("overlay.mp4", ".overlay.partial.mp4"):
                (self.out_dir / name).unlink(missing_ok=True)
        per_frame, seen, video = self._write_frames(frames, fps, overlay, progress)
        files = {"masks": "masks/NNNNN.png", "overlay": "overlay.mp4" if overlay else None,
                 "overlay_codec": video.codec if video else None}
        record = {**self.run, "run_id": self.run_id, "num_frames": n, "object_ids": sorted(seen),
                  "frames": per_frame, "files": files}
        write_json(self.out_dir / "tracks.json", record, indent=None)
        write_json(self.out_dir / "run.json", {**self._record("done"), "files": files})
        self.status = "done"
        return record

    def _write_frames(self, frames: Any, fps: float, overlay: bool, progress: bool) -> tuple[list, set[int], Any]:
        """Per-frame records and object ids from the PNGs; the overlay's ``WrittenVideo`` (or ``None``)."""
        from anyseg.masks.rle import encode

        writer = _OverlayWriter(self.out_dir / "overlay.mp4", frames.size, fps) if overlay else None
        per_frame, seen = [], set()
        try:
            for i in _bar(range(len(frames)), "writing", progress):
                ids = self.read_ids(i, frames.size)
                objects = {}
                for obj in np.unique(ids):
                    if obj == 0:
                        continue
                    m = ids == obj
                    ys, xs = np.nonzero(m)
                    objects[str(int(obj))] = {"rle": encode(m), "area": int(m.sum()),
                                              "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]}
                    seen.add(int(obj))
                per_frame.append({"frame": i, "objects": objects})
                if writer is not None:
                    writer.add(frames[i], ids)
        except BaseException:
            if writer is not None:
                writer.close(keep=False)
            raise
        return per_frame, seen, writer.close() if writer is not None else None


class _OverlayWriter:
    """``overlay.mp4`` (:func:`anyseg.io.video.open_video_writer`: H.264, else mp4v) of frames
    with object colours (DAVIS palette) and outlines."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float) -> None:
        from anyseg.io.export import davis_palette
        from anyseg.io.video import open_video_writer

        try:
            self.video = open_video_writer(path, size, fps if 0 < (fps or 0) < float("inf") else 24.0)
        except InputError as e:
            raise InputError(f"{e}; or rerun with --no-overlay") from None
        self.palette = davis_palette().astype(np.float32)

    def add(self, frame: np.ndarray, ids: np.ndarray) -> None:
        out = frame.astype(np.float32)
        fg = ids > 0
        out[fg] = out[fg] * 0.45 + self.palette[ids[fg]] * 0.55
        edge = np.zeros(ids.shape, bool)
        edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
        edge[1:, :] |= ids[1:, :] != ids[:-1, :]
        out[edge] = 255
        self.video.write(np.clip(out, 0, 255).astype(np.uint8))

    def close(self, keep: bool = True) -> Any:
        """Finish the file and move it into place (``keep``: returns its ``WrittenVideo``, with a
        notice on stderr when it is not H.264), or remove the partial file (returns ``None``)."""
        import sys

        from anyseg.io.video import fallback_notice

        if not keep:
            self.video.abort()
            return None
        video = self.video.close()
        if video.codec != "h264":
            print(fallback_notice(self.video.path.name), file=sys.stderr)
        return video


def _bar(items: Sequence[int] | None, desc: str, show: bool, total: int | None = None) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit="frame", disable=not show, dynamic_ncols=True, leave=False)


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
        bar = _bar(None, desc, progress, total=abs(end - start) + 1)
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

    merged = merge_prompts(parse_prompt(t, obj) for obj, t in prompts)
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

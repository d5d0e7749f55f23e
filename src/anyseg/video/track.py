"""``anyseg track``: prompts parsed from the command line, results streamed to disk, resumable.

Output folder::

    DIR/masks/NNNNN.png   per frame, an indexed PNG in the DAVIS palette (value = object id)
    DIR/overlay.mp4       the video with coloured masks and outlines (written after tracking)
    DIR/tracks.json       per frame, per object: COCO RLE, area, box (XYXY)
    DIR/run.json          the run's model, prompts, passes; progress.json while running

Resuming: a run writes ``progress.json`` (the pass and the last frame written) every few
frames. Rerunning the same command (same video, model and prompts) skips the passes already
done and continues the interrupted one from its last written frame: the objects' masks on
that frame (read back from its PNG) are added as mask prompts together with the original
prompts, so the tracker restarts there. A tracker's memory bank is rebuilt from those
prompts, not restored, so a resumed run can differ slightly from an uninterrupted one after
the resume frame. A different command on the same folder is refused (one line) unless
``--restart`` is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from anyseg.errors import InputError, PromptError
from anyseg.video.base import ObjectPrompt

PROGRESS_EVERY = 10


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


class TrackWriter:
    """Per-frame PNGs written atomically as frames arrive; progress kept for resuming."""

    def __init__(self, out_dir: Path, run: dict[str, Any], restart: bool = False) -> None:
        from anyseg.io.atomic import write_json

        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise InputError(f"--out {self.out_dir} exists and is not a folder")
        self.masks_dir = self.out_dir / "masks"
        self.run = run
        self.progress: dict[str, Any] = {"done_passes": [], "pass": None, "last": None}
        run_path = self.out_dir / "run.json"
        if run_path.is_file() and not restart:
            try:
                old = json.loads(run_path.read_text())
            except (OSError, ValueError):
                old = None
            if old != run:
                raise InputError(f"{self.out_dir} holds a different tracking run (other video, model or prompts); "
                                 "use another --out, or --restart to replace it")
            prog = self.out_dir / "progress.json"
            if prog.is_file():
                try:
                    self.progress = json.loads(prog.read_text())
                except (OSError, ValueError):
                    pass
        self.masks_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_path, run)
        self._since = 0

    @property
    def finished(self) -> bool:
        return bool(self.progress.get("finished"))

    def resume_point(self, pass_index: int) -> int | None:
        """The frame to restart pass ``pass_index`` from, or ``None`` to run it from its start."""
        if self.progress.get("pass") == pass_index and self.progress.get("last") is not None:
            return int(self.progress["last"])
        return None

    def write(self, index: int, ids: np.ndarray, pass_index: int) -> None:
        from anyseg.io.atomic import write_bytes, write_json
        from anyseg.io.export import _png_bytes, davis_palette

        write_bytes(self.masks_dir / f"{index:05d}.png", _png_bytes(ids.astype(np.uint8), palette=davis_palette()))
        self.progress.update({"pass": pass_index, "last": index})
        self._since += 1
        if self._since >= PROGRESS_EVERY:
            write_json(self.out_dir / "progress.json", self.progress)
            self._since = 0

    def end_pass(self, pass_index: int) -> None:
        from anyseg.io.atomic import write_json

        self.progress["done_passes"] = sorted({*self.progress.get("done_passes", []), pass_index})
        self.progress.update({"pass": None, "last": None})
        write_json(self.out_dir / "progress.json", self.progress)
        self._since = 0

    def read_ids(self, index: int) -> np.ndarray:
        from anyseg.eval.datasets import read_object_ids

        return read_object_ids(self.masks_dir / f"{index:05d}.png")

    def finish(self, frames: Any, fps: float, overlay: bool = True, progress: bool = True) -> dict[str, Any]:
        """Write ``tracks.json`` (and ``overlay.mp4``) from the per-frame PNGs, in frame order."""
        from anyseg.io.atomic import write_json
        from anyseg.masks.rle import encode

        n = len(frames)
        missing = [i for i in range(n) if not (self.masks_dir / f"{i:05d}.png").is_file()]
        if missing:
            raise InputError(f"frames {missing[:3]} have no masks: the run did not cover the whole video")
        writer = _OverlayWriter(self.out_dir / "overlay.mp4", frames.size, fps) if overlay else None
        per_frame, seen = [], set()
        try:
            for i in _bar(range(n), "writing", progress):
                ids = self.read_ids(i)
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
        finally:
            if writer is not None:
                writer.close()
        record = {**self.run, "num_frames": n, "object_ids": sorted(seen), "frames": per_frame,
                  "files": {"masks": "masks/NNNNN.png", "overlay": "overlay.mp4" if overlay else None}}
        write_json(self.out_dir / "tracks.json", record, indent=None)
        self.progress["finished"] = True
        write_json(self.out_dir / "progress.json", self.progress)
        return record


class _OverlayWriter:
    """mp4 (OpenCV ``mp4v``) of frames with object colours (DAVIS palette) and outlines."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float) -> None:
        import cv2

        from anyseg.io.export import davis_palette

        h, w = size
        self.path = path
        self.tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps or 24.0), (w, h))
        if not self.writer.isOpened():
            raise InputError(f"cannot write {path} (OpenCV has no mp4 encoder here); rerun with --no-overlay")
        self.palette = davis_palette().astype(np.float32)

    def add(self, frame: np.ndarray, ids: np.ndarray) -> None:

        out = frame.astype(np.float32)
        fg = ids > 0
        out[fg] = out[fg] * 0.45 + self.palette[ids[fg]] * 0.55
        edge = np.zeros(ids.shape, bool)
        edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
        edge[1:, :] |= ids[1:, :] != ids[:-1, :]
        out[edge] = 255
        self.writer.write(np.clip(out, 0, 255).astype(np.uint8)[..., ::-1])

    def close(self) -> None:
        import os

        self.writer.release()
        if self.tmp.is_file():
            os.replace(self.tmp, self.path)


def _bar(items: Sequence[int], desc: str, show: bool) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="frame", disable=not show, dynamic_ncols=True, leave=False)


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
        resume = writer.resume_point(k)
        if resume is not None and resume != start:
            ids = writer.read_ids(resume)
            for obj in np.unique(ids):
                if obj:
                    session.add_prompt(resume, int(obj), mask=ids == obj)
            start = resume
        desc = f"pass {k + 1}/{len(passes)} {'backward' if reverse else 'forward'}"
        bar = _bar_iter(abs(end - start) + 1, desc, progress)
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


def _bar_iter(total: int, desc: str, show: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not show, dynamic_ncols=True, leave=False)


def prompts_to_objects(prompts: Sequence[dict[str, Any]]) -> list[ObjectPrompt]:
    return [ObjectPrompt(p["frame"], p["obj_id"], points=p.get("points"), labels=p.get("labels"), box=p.get("box"))
            for p in prompts if "mask_path" not in p]

"""The run folder of ``anyseg track``: per-frame PNGs written as frames arrive, resumable.

Layout (a *run folder*)::

    DIR/masks/NNNNN.png   per frame, an indexed PNG in the DAVIS palette (value = object id)
    DIR/overlay.mp4       the video with coloured masks and outlines (written after tracking)
    DIR/tracks.json       per frame, per object: COCO RLE, area, box (XYXY); the run id
    DIR/run.json          the record: run id, status (running / done), the run's identity (video,
                          model, prompts, ...); progress.json (with the run id) while running

The record always describes exactly the files beside it. The folder changes only once the
first frame's masks are ready, so a run that fails to start leaves it as it was. A run starts
by writing ``run.json`` (a new run id, ``running``) and only then removes what an earlier run
left (masks, tracks, overlay, progress; other files stay); it ends with ``tracks.json``
(exactly the frames in ``masks/``), then ``run.json`` ``done``. A rerun trusts the PNGs only
under progress of the run id in ``run.json``; anything else starts the run afresh.
``progress.json`` (the pass and the last frame written) is written every
:data:`PROGRESS_EVERY` frames; :mod:`anyseg.tasks.track` resumes from it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anyseg.errors import InputError

__all__ = ["PROGRESS_EVERY", "RUN_OUTPUTS", "MASK_NAME", "TrackWriter", "frame_bar"]

PROGRESS_EVERY = 10
#: The tracking outputs a run folder holds besides ``run.json`` and ``masks/NNNNN.png``.
RUN_OUTPUTS = ("tracks.json", "progress.json", "overlay.mp4", ".overlay.partial.mp4")
MASK_NAME = re.compile(r"^(\d{5,})\.png$")


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
            for i in frame_bar(range(len(frames)), "writing", progress):
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


def frame_bar(items: Sequence[int] | None, desc: str, show: bool, total: int | None = None) -> Any:
    """A tqdm progress bar over frames (``show=False``: disabled)."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit="frame", disable=not show, dynamic_ncols=True, leave=False)

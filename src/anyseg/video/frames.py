"""Frame sources: a video file (OpenCV) or a folder of images, decoded lazily.

``open_frames(path)`` returns a :class:`FrameSource`: ``len``, ``size`` (H, W), ``fps`` and
``source[i]`` -> ``(H, W, 3)`` uint8 RGB. Nothing is decoded until asked, and only a few
decoded frames are cached (an LRU of ``cache_frames``), so memory does not grow with the
video. Sequential access (forward or backward) is what trackers do: a video file is read
forward with one decoder and re-seeked only when the next request is not the next frame.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import numpy as np

from anyseg.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


class FrameSource:
    """Base class: random access to frames with a small LRU of decoded frames."""

    def __init__(self, name: str, count: int, size: tuple[int, int], fps: float, cache_frames: int = 4) -> None:
        self.name = name
        self.count = int(count)
        self.size = (int(size[0]), int(size[1]))
        self.fps = float(fps)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_frames = max(1, int(cache_frames))

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise InputError(f"frame index must be an int; got {index!r}")
        if not 0 <= int(index) < self.count:
            raise InputError(f"frame {index} is out of range: {self.name} has {self.count} frames (0..{self.count - 1})")
        return int(index)

    def __getitem__(self, index: int) -> np.ndarray:
        index = self.check_index(index)
        hit = self._cache.get(index)
        if hit is not None:
            self._cache.move_to_end(index)
            return hit
        frame = self._read(index)
        if frame.shape[:2] != self.size:
            raise InputError(f"frame {index} of {self.name} is {frame.shape[1]}x{frame.shape[0]}, but the video is "
                             f"{self.size[1]}x{self.size[0]}: all frames must have one resolution")
        frame.flags.writeable = False
        self._cache[index] = frame
        while len(self._cache) > self._cache_frames:
            self._cache.popitem(last=False)
        return frame

    def _read(self, index: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        self._cache.clear()


class FolderFrames(FrameSource):
    """Images in a folder, in natural name order (``2.jpg`` before ``10.jpg``)."""

    def __init__(self, folder: Path, fps: float = 24.0, cache_frames: int = 4) -> None:
        import re

        from anyseg.io.images import load_image

        def key(p: Path) -> list:
            return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.stem)]

        self.paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=key)
        if not self.paths:
            raise InputError(f"{folder} has no image frames ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._load = load_image
        first = load_image(self.paths[0])
        super().__init__(str(folder), len(self.paths), first.shape[:2], fps, cache_frames)

    def _read(self, index: int) -> np.ndarray:
        return self._load(self.paths[index])

    def check_sizes(self) -> None:
        """Read every frame's header (not its pixels) and reject mixed resolutions up front."""
        from PIL import Image

        for i, p in enumerate(self.paths):
            try:
                with Image.open(p) as im:
                    w, h = im.size
                    if (im.getexif() or {}).get(0x0112) in (5, 6, 7, 8):
                        w, h = h, w
            except OSError as e:
                raise InputError(f"frame {p} is not a readable image ({e})") from None
            if (h, w) != self.size:
                raise InputError(f"frame {p.name} is {w}x{h}, but {self.paths[0].name} is {self.size[1]}x{self.size[0]}: "
                                 "all frames of a folder must have one resolution")


class VideoFileFrames(FrameSource):
    """A video file decoded with OpenCV, forward; a backward or jumping request re-seeks."""

    def __init__(self, path: Path, cache_frames: int = 4, max_frames: int | None = None) -> None:
        import cv2

        self.path = path
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise InputError(f"{path} is not a readable video (OpenCV could not open it)")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = cap.get(cv2.CAP_PROP_FPS) or 24.0
        ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            raise InputError(f"{path} is not a readable video (no frame could be decoded)")
        if count <= 0:  # some containers do not say: count by decoding once (no frames kept)
            count = 1
            while cap.grab():
                count += 1
                if max_frames is not None and count > max_frames:
                    cap.release()
                    raise too_many_frames(str(path), f"more than {max_frames}", max_frames)
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            cap.read()
        self._cap = cap
        self._next = 1  # index of the frame the decoder returns next
        super().__init__(str(path), count, frame.shape[:2], fps, cache_frames)
        self._cache[0] = np.ascontiguousarray(frame[..., ::-1])

    def _read(self, index: int) -> np.ndarray:
        import cv2

        if index != self._next:
            if index > self._next and index - self._next <= 16:
                while self._next < index:  # a short skip forward: decode and drop
                    self._cap.grab()
                    self._next += 1
            else:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                self._next = index
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise InputError(f"frame {index} of {self.path} could not be decoded (truncated video?)")
        self._next = index + 1
        return np.ascontiguousarray(frame[..., ::-1])

    def close(self) -> None:
        super().close()
        self._cap.release()


def too_many_frames(name: str, count: int | str, limit: int) -> InputError:
    """The one-line error for a video over the frame bound of a run."""
    return InputError(f"{name} has {count} frames, over the limit of {limit} frames per run "
                      "(raise it with --max-frames or ANYSEG_MAX_FRAMES)")


def open_frames(path: str | os.PathLike, fps: float | None = None, cache_frames: int = 4,
                max_frames: int | None = None) -> FrameSource:
    """A video file or a folder of frames; one-line :class:`InputError` when it is neither.

    With ``max_frames``, a longer video is refused before its frames are checked or counted
    by decoding (a folder's headers, a container that does not store its frame count).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"video not found: {p}")
    if p.is_dir():
        src = FolderFrames(p, fps=fps or 24.0, cache_frames=cache_frames)
        if max_frames is not None and len(src) > max_frames:
            raise too_many_frames(src.name, len(src), max_frames)
        src.check_sizes()
        return src
    if p.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"{p} is an image, not a video: give a video file or a folder of frames")
    src = VideoFileFrames(p, cache_frames=cache_frames, max_frames=max_frames)
    if max_frames is not None and len(src) > max_frames:
        src.close()
        raise too_many_frames(src.name, len(src), max_frames)
    if fps:
        src.fps = float(fps)
    return src


class PathFrames(FrameSource):
    """Frames from a list of image paths (e.g. a DAVIS sequence), decoded lazily."""

    def __init__(self, name: str, paths, fps: float = 24.0) -> None:
        from anyseg.io.images import load_image

        self._paths = list(paths)
        if not self._paths:
            raise InputError(f"sequence {name} has no frames")
        self._load = load_image
        first = load_image(self._paths[0])
        super().__init__(name, len(self._paths), first.shape[:2], fps, cache_frames=2)
        first.flags.writeable = False
        self._cache[0] = first

    def _read(self, index: int) -> np.ndarray:
        return self._load(self._paths[index])


class ArrayFrames(FrameSource):
    """Frames already in memory (tests, short clips): ``(T, H, W, 3)`` uint8 or a list of frames."""

    def __init__(self, frames, fps: float = 24.0, name: str = "array") -> None:
        self._frames = frames
        if len(frames) == 0:
            raise InputError("the video has no frames")
        first = np.asarray(frames[0])
        super().__init__(name, len(frames), first.shape[:2], fps, cache_frames=2)

    def _read(self, index: int) -> np.ndarray:
        from anyseg.models.base import check_image

        return check_image(np.asarray(self._frames[index])).copy()


class SyntheticFrames(FrameSource):
    """Frames made on demand by ``make(index) -> (H, W, 3) uint8`` (benchmarks: long videos, no disk)."""

    def __init__(self, make, count: int, size: tuple[int, int], fps: float = 24.0) -> None:
        self._make = make
        super().__init__("synthetic", count, size, fps, cache_frames=2)

    def _read(self, index: int) -> np.ndarray:
        return np.ascontiguousarray(self._make(index))

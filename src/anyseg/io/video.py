"""Writing MP4 videos that browsers play: H.264 through PyAV, else OpenCV's MPEG-4 Part 2.

:class:`H264Writer` encodes H.264 (``yuv420p``, the pixel format every browser decodes) with
the encoder in PyAV's bundled FFmpeg (``libx264``, else ``libopenh264``), at constant quality
(:data:`DEFAULT_CRF`), with the ``moov`` box before the media data (``+faststart``: a browser
starts playing before the whole file has arrived). 4:2:0 needs an even width and height: an
odd-sized video gets one more column and/or row, a copy of the last one, so every input pixel
is kept. The colours are tagged BT.601 (the matrix of the RGB -> YUV conversion), so players
convert them back the same way.

:class:`Mp4vWriter` is the fallback where there is no H.264 encoder (PyAV not installed, or
built without one): OpenCV's ``mp4v`` (MPEG-4 Part 2), at the video's own size, which desktop
players read but browsers may not. :func:`open_video_writer` picks the first that works here.

Both stream frames (memory does not grow with the video), write to a temporary name beside
``path`` (``.NAME.partial.mp4``) and rename it into place on :meth:`close`, which returns
what was written (a :class:`WrittenVideo`); a writer left by an exception removes its file.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anyseg.errors import InputError

#: libx264's constant rate factor: 0 lossless .. 51 worst; 18-23 is visually near-transparent.
DEFAULT_CRF = 20
#: libx264's speed/size trade-off (``ultrafast`` .. ``veryslow``); an overlay needs no slower one.
DEFAULT_PRESET = "veryfast"
#: H.264 encoders tried, in order: libx264 (GPL), then Cisco's openh264 (BSD).
H264_ENCODERS = ("libx264", "libopenh264")
#: Bits per pixel and frame for encoders without a constant-quality mode (openh264).
OPENH264_BITS_PER_PIXEL = 0.2
_BT601 = "colorprim=smpte170m:transfer=smpte170m:colormatrix=smpte170m"


@dataclass(frozen=True)
class WrittenVideo:
    """What a writer wrote: ``codec`` ``"h264"`` or ``"mpeg4"``, the encoder, pixel format,
    frame count, encoded ``size`` ``(H, W)`` (even for H.264) and frame rate."""

    path: str
    codec: str
    encoder: str
    pix_fmt: str
    frames: int
    size: tuple[int, int]
    fps: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "size": list(self.size)}


def fallback_notice(name: str = "the video") -> str:
    """The one line that says a video was written as MPEG-4 Part 2 and how to get H.264."""
    return (f"notice: {name} is MPEG-4 Part 2 (mp4v): browsers may not play it; "
            "pip install 'av>=12' for H.264")


def h264_encoder() -> str | None:
    """The first of :data:`H264_ENCODERS` that PyAV can encode with here, or ``None`` (no PyAV,
    or a PyAV whose FFmpeg has none of them)."""
    try:
        import av
    except ImportError:
        return None
    for name in H264_ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # av raises its own errors for an unknown codec; none of them matter here
            continue
        return name
    return None


def check_size(size: Any) -> tuple[int, int]:
    """``size`` as ``(H, W)`` of positive ints, or a one-line :class:`InputError`."""
    values = tuple(size) if isinstance(size, (tuple, list)) else ()
    ok = len(values) == 2 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    if not ok or min(values) < 1:
        raise InputError(f"a video size must be (height, width) in pixels, both >= 1; got {size!r}")
    return int(values[0]), int(values[1])


def check_fps(fps: Any) -> float:
    """``fps`` as a positive finite float, or a one-line :class:`InputError`."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(fps, bool) or not (math.isfinite(value) and value > 0):
        raise InputError(f"a video frame rate must be a positive number of frames per second; got {fps!r}")
    return value


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """``(H, W)`` rounded up to even numbers (what 4:2:0 chroma needs)."""
    h, w = size
    return h + h % 2, w + w % 2


def partial_path(path: Path) -> Path:
    """The temporary name a writer of ``path`` writes to: ``.NAME.partial.SUFFIX`` beside it."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


class _Writer:
    """What both writers share: checks, the temporary file, frame counting, the context manager."""

    codec = encoder = pix_fmt = ""

    def __init__(self, path: str | os.PathLike, size: Any, fps: Any) -> None:
        self.path = Path(path)
        self.size = check_size(size)
        self.fps = check_fps(fps)
        if not self.path.parent.is_dir():
            raise InputError(f"cannot write {self.path}: expected an existing folder, got {self.path.parent}")
        self.tmp = partial_path(self.path)
        self.frames = 0
        self.closed = False

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 RGB frame of the writer's size."""
        if self.closed:
            raise InputError(f"{self.path} is already closed: cannot write another frame")
        shape = tuple(self.size) + (3,)
        if not isinstance(frame, np.ndarray) or frame.shape != shape or frame.dtype != np.uint8:
            got = (f"shape {frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray)
                   else type(frame).__name__)
            raise InputError(f"a frame of {self.path.name} must be a {shape} uint8 RGB array; got {got}")
        self._encode(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> WrittenVideo:
        """Finish the file, move it to ``path`` and say what it holds."""
        if self.closed:
            raise InputError(f"{self.path} is already closed")
        self.closed = True
        try:
            self._finish()
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        if self.frames == 0:
            self.tmp.unlink(missing_ok=True)
            raise InputError(f"no frame was written to {self.path}: a video needs at least one")
        os.replace(self.tmp, self.path)
        return WrittenVideo(str(self.path), self.codec, self.encoder, self.pix_fmt, self.frames,
                            self.encoded_size, self.fps)

    def abort(self) -> None:
        """Stop writing and remove the partial file (``path`` is left as it was)."""
        if not self.closed:
            self.closed = True
            try:
                self._finish(flush=False)
            except Exception:  # the file goes anyway; an error finishing it does not matter
                pass
        self.tmp.unlink(missing_ok=True)

    @property
    def encoded_size(self) -> tuple[int, int]:
        return self.size

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.closed:
            self.close()

    def _encode(self, frame: np.ndarray) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _finish(self, flush: bool = True) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class H264Writer(_Writer):
    """H.264 MP4 (``yuv420p``, even size, ``+faststart``) with PyAV, written to ``path``.

    ``size`` is ``(H, W)`` of the frames given to :meth:`write`; ``crf`` and ``preset`` tune
    libx264 (openh264 gets a bit rate instead); ``encoder`` names one of :data:`H264_ENCODERS`
    (default: the first available). Without PyAV or an H.264 encoder: :class:`InputError`
    naming the ``video`` extra (:func:`open_video_writer` falls back to :class:`Mp4vWriter`).
    """

    codec, pix_fmt = "h264", "yuv420p"

    def __init__(self, path: str | os.PathLike, size: Any, fps: Any, crf: int = DEFAULT_CRF,
                 preset: str = DEFAULT_PRESET, encoder: str | None = None) -> None:
        super().__init__(path, size, fps)
        available = h264_encoder()
        if available is None:
            raise InputError(f"no H.264 encoder for {self.path.name}: expected PyAV with one of "
                             f"{', '.join(H264_ENCODERS)}; pip install 'av>=12'")
        name = encoder or available
        if name not in H264_ENCODERS:
            raise InputError(f"encoder must be one of {', '.join(H264_ENCODERS)}; got {name!r}")
        self.encoder = name
        self.container, self.stream = self._open(name, crf, preset)

    def _open(self, name: str, crf: int, preset: str) -> tuple[Any, Any]:
        from fractions import Fraction

        import av

        h, w = self.encoded_size
        self.tmp.unlink(missing_ok=True)
        container = av.open(str(self.tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        try:
            stream = container.add_stream(name, rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = w, h, self.pix_fmt
            if name == "libx264":
                stream.options = {"crf": str(int(crf)), "preset": preset, "x264-params": _BT601}
            else:
                stream.bit_rate = int(OPENH264_BITS_PER_PIXEL * w * h * self.fps)
            stream.codec_context.open()  # an encoder that cannot start fails here, not on the first frame
        except BaseException:
            container.close()
            self.tmp.unlink(missing_ok=True)
            raise
        return container, stream

    @property
    def encoded_size(self) -> tuple[int, int]:
        return even_size(self.size)

    def _encode(self, frame: np.ndarray) -> None:
        import av

        h, w = self.size
        eh, ew = self.encoded_size
        if (eh, ew) != (h, w):
            frame = np.pad(frame, ((0, eh - h), (0, ew - w), (0, 0)), mode="edge")
        picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=self.pix_fmt)
        picture.pts = self.frames
        for packet in self.stream.encode(picture):
            self.container.mux(packet)

    def _finish(self, flush: bool = True) -> None:
        try:
            if flush and self.frames:
                for packet in self.stream.encode(None):
                    self.container.mux(packet)
        finally:
            self.container.close()


class Mp4vWriter(_Writer):
    """MPEG-4 Part 2 MP4 with OpenCV (FOURCC ``mp4v``) at the frames' own size: the fallback
    where :func:`h264_encoder` finds nothing. Desktop players read it; browsers may not."""

    codec, encoder, pix_fmt = "mpeg4", "opencv-mp4v", "yuv420p"

    def __init__(self, path: str | os.PathLike, size: Any, fps: Any) -> None:
        import cv2

        super().__init__(path, size, fps)
        h, w = self.size
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        if not self.writer.isOpened():
            self.writer.release()
            self.tmp.unlink(missing_ok=True)
            raise InputError(f"cannot write {self.path}: no H.264 encoder (pip install 'av>=12') and "
                             "OpenCV has no mp4v encoder here")

    def _encode(self, frame: np.ndarray) -> None:
        self.writer.write(np.ascontiguousarray(frame[..., ::-1]))

    def _finish(self, flush: bool = True) -> None:
        self.writer.release()


def open_video_writer(path: str | os.PathLike, size: Any, fps: Any, crf: int = DEFAULT_CRF) -> H264Writer | Mp4vWriter:
    """An :class:`H264Writer` (at constant quality ``crf``) where an H.264 encoder starts here,
    else an :class:`Mp4vWriter` (its :class:`WrittenVideo` says ``codec="mpeg4"``;
    :func:`fallback_notice` is the line to show). ``size`` is ``(H, W)``."""
    if h264_encoder() is not None:
        try:
            return H264Writer(path, size, fps, crf=crf)
        except (InputError, OSError):
            raise
        except Exception:  # an encoder that is listed but cannot start (av's ValueError, ...): fall back
            pass
    return Mp4vWriter(path, size, fps)

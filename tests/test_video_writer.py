"""anyseg.io.video: H.264 MP4s that browsers play (PyAV), and the mp4v fallback that says so."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import anyseg.io.video as video_mod
from anyseg.cli import main
from anyseg.errors import InputError
from anyseg.io.video import H264Writer, Mp4vWriter, WrittenVideo, fallback_notice, open_video_writer

H, W, T = 21, 33, 10  # odd on purpose: H.264 4:2:0 needs even sizes


def clip(h: int = H, w: int = W, frames: int = T) -> list[np.ndarray]:
    """Smooth colour gradients with a brighter square moving right: sharp edges in brightness,
    smooth colour (like real video, unlike noise; 4:2:0 halves the colour resolution)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for t in range(frames):
        f = np.stack([x / w * 200 + 20, y / h * 180 + 40, np.full_like(x, 90 + 10 * t)], -1)
        f[5:15, 3 + 2 * t:13 + 2 * t] += 50
        out.append(f.astype(np.uint8))
    return out


def read_back(path: Path) -> tuple[dict, list[np.ndarray]]:
    """The stream's codec, pixel format and size as the file declares them, and its decoded RGB frames."""
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                "size": (stream.codec_context.height, stream.codec_context.width)}
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return info, frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def top_level_boxes(path: Path) -> list[str]:
    """The types of an MP4's top-level boxes, in file order (walking the box headers)."""
    data, boxes, pos = path.read_bytes(), [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        if size < 8:
            raise AssertionError(f"malformed box at byte {pos}")
        boxes.append(kind.decode("latin-1"))
        pos += size
    return boxes


@pytest.fixture()
def h264():
    if video_mod.h264_encoder() is None:
        pytest.skip("no H.264 encoder here (pip install 'av>=12')")


def test_h264_writer_pads_an_odd_clip_to_even_yuv420p_and_keeps_its_pixels(h264, tmp_path):
    path = tmp_path / "clip.mp4"
    with H264Writer(path, (H, W), fps=12) as writer:
        for f in clip():
            writer.write(f)
        written = writer.close()
    assert isinstance(written, WrittenVideo)
    assert (written.codec, written.pix_fmt, written.frames, written.size) == ("h264", "yuv420p", T, (H + 1, W + 1))
    assert written.encoder in video_mod.H264_ENCODERS and written.fps == 12.0
    info, frames = read_back(path)
    assert info == {"codec": "h264", "pix_fmt": "yuv420p", "size": (H + 1, W + 1)}
    assert len(frames) == T
    for t, (orig, got) in enumerate(zip(clip(), frames)):
        assert psnr(orig, got[:H, :W]) > 30, t
        # the padding repeats the last column and row: no dark border where the picture ends
        assert np.abs(got[:H, W].astype(int) - orig[:, -1]).mean() < 12, t
        assert np.abs(got[H, :W].astype(int) - orig[-1]).mean() < 12, t
    assert not list(tmp_path.glob(".*")), "the partial file was left behind"


def test_h264_file_starts_with_its_index_for_browsers(h264, tmp_path):
    path = tmp_path / "clip.mp4"
    with H264Writer(path, (H, W), fps=25) as writer:
        for f in clip():
            writer.write(f)
    boxes = top_level_boxes(path)
    assert boxes[0] == "ftyp" and "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat"), boxes


def test_even_sizes_are_not_padded(h264, tmp_path):
    with H264Writer(tmp_path / "v.mp4", (20, 32), fps=30) as writer:
        writer.write(clip(20, 32, 1)[0])
        assert writer.close().size == (20, 32)


def test_the_file_appears_only_when_closed_and_an_error_leaves_nothing(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"the earlier video")
    with pytest.raises(RuntimeError):
        with open_video_writer(path, (H, W), fps=10) as writer:
            writer.write(clip()[0])
            assert path.read_bytes() == b"the earlier video"
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"the earlier video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
    writer = open_video_writer(path, (H, W), fps=10)
    with pytest.raises(InputError, match="no frame was written"):
        writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


@pytest.mark.parametrize("frame, expected", [
    (np.zeros((H, W), np.uint8), r"\(21, 33, 3\) uint8 RGB array; got shape \(21, 33\) uint8"),
    (np.zeros((W, H, 3), np.uint8), r"got shape \(33, 21, 3\) uint8"),
    (np.zeros((H, W, 3), np.float32), r"got shape \(21, 33, 3\) float32"),
    ([[0]], "got list"),
])
def test_a_bad_frame_is_one_line_saying_what_was_expected(tmp_path, frame, expected):
    with open_video_writer(tmp_path / "v.mp4", (H, W), fps=10) as writer:
        with pytest.raises(InputError, match=expected):
            writer.write(frame)
        writer.write(clip()[0])  # the writer is still usable
        assert writer.close().frames == 1


@pytest.mark.parametrize("size, fps, expected", [
    ((0, 10), 10, "both >= 1; got \\(0, 10\\)"), ((10,), 10, "height, width"), ((2.5, 4), 10, "height, width"),
    ((10, 10), 0, "positive number of frames per second; got 0"), ((10, 10), float("nan"), "got nan"),
    ((10, 10), "fast", "got 'fast'"),
])
def test_bad_sizes_and_frame_rates_are_refused(tmp_path, size, fps, expected):
    with pytest.raises(InputError, match=expected):
        open_video_writer(tmp_path / "v.mp4", size, fps)
    assert not list(tmp_path.iterdir())


def test_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(InputError, match="expected an existing folder"):
        open_video_writer(tmp_path / "nope" / "v.mp4", (H, W), fps=10)


def test_without_an_h264_encoder_it_writes_mp4v_and_says_so(monkeypatch, tmp_path):
    import cv2

    monkeypatch.setattr(video_mod, "h264_encoder", lambda: None)
    path = tmp_path / "v.mp4"
    writer = open_video_writer(path, (H, W), fps=10)
    assert isinstance(writer, Mp4vWriter)
    for f in clip():
        writer.write(f)
    written = writer.close()
    assert (written.codec, written.encoder, written.frames, written.size) == ("mpeg4", "opencv-mp4v", T, (H, W))
    cap = cv2.VideoCapture(str(path))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("latin-1").lower()
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert fourcc in ("mp4v", "fmp4") and count == T  # FFmpeg reads MPEG-4 Part 2 back as FMP4
    with pytest.raises(InputError, match=r"no H.264 encoder .*pip install 'av>=12'"):
        H264Writer(tmp_path / "w.mp4", (H, W), fps=10)
    assert "MPEG-4 Part 2" in fallback_notice("x.mp4") and "av>=12" in fallback_notice()


def test_an_encoder_that_cannot_start_falls_back(monkeypatch, tmp_path):
    def broken(self, *args):
        raise ValueError("Invalid argument (the encoder would not open)")

    monkeypatch.setattr(video_mod, "h264_encoder", lambda: "libx264")
    monkeypatch.setattr(H264Writer, "_open", broken)
    assert isinstance(open_video_writer(tmp_path / "v.mp4", (H, W), fps=10), Mp4vWriter)


# -- anyseg track: the overlay is H.264, and the record says which codec it is ---------------------

@pytest.fixture()
def frames_dir(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, f in enumerate(clip(41, 57, 6)):
        Image.fromarray(f).save(folder / f"{t:05d}.png")
    return folder


def track(frames_dir: Path, out: Path) -> int:
    return main(["track", str(frames_dir), "--model", "classical", "--prompt", "0:box=3,5,13,15", "--out", str(out)])


def test_track_writes_an_h264_overlay_and_records_its_codec(h264, capsys, tmp_path, frames_dir):
    out = tmp_path / "run"
    assert track(frames_dir, out) == 0
    err = capsys.readouterr().err
    assert "notice: overlay.mp4" not in err
    info, frames = read_back(out / "overlay.mp4")
    assert info == {"codec": "h264", "pix_fmt": "yuv420p", "size": (42, 58)} and len(frames) == 6
    for name in ("tracks.json", "run.json"):
        files = json.loads((out / name).read_text())["files"]
        assert files["overlay"] == "overlay.mp4" and files["overlay_codec"] == "h264", name


def test_without_pyav_there_is_no_h264_encoder(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    assert video_mod.h264_encoder() is None


def test_track_without_h264_writes_mp4v_with_a_notice_and_records_it(monkeypatch, capsys, tmp_path, frames_dir):
    monkeypatch.setitem(sys.modules, "av", None)  # as without the video extra
    out = tmp_path / "run"
    assert track(frames_dir, out) == 0
    err = capsys.readouterr().err
    assert fallback_notice("overlay.mp4") in err.splitlines()
    for name in ("tracks.json", "run.json"):
        assert json.loads((out / name).read_text())["files"]["overlay_codec"] == "mpeg4", name
    assert (out / "overlay.mp4").stat().st_size > 0 and not (out / ".overlay.partial.mp4").exists()


def test_track_without_any_mp4_encoder_is_one_line_naming_no_overlay(monkeypatch, capsys, tmp_path, frames_dir):
    import cv2

    class Closed:
        def __init__(self, *args):
            pass

        def isOpened(self):
            return False

        def release(self):
            pass

    monkeypatch.setattr(video_mod, "h264_encoder", lambda: None)
    monkeypatch.setattr(cv2, "VideoWriter", Closed)
    assert track(frames_dir, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("anyseg: error: cannot write") and err[-1].endswith("rerun with --no-overlay")
    assert "Traceback" not in "".join(err)

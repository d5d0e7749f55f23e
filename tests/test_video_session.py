"""VideoSession, frame sources and ``anyseg track`` (resume, outputs, errors) with a stand-in tracker.

The engines have their own tests (test_video_classical.py, test_video_sam2.py); here the
tracker is a fake whose answer is known: object ``k``'s mask on frame ``t`` is a square at
``x = 5 + 2 t + 20 k``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from anyseg.cli import main
from anyseg.errors import InputError, PromptError
from anyseg.types import Masks
from anyseg.video.base import masks_from_objects
from anyseg.video.frames import ArrayFrames, SyntheticFrames, open_frames
from anyseg.video.session import VideoSession

H, W, T = 48, 96, 30


def square(t: int, k: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    x = (5 + 2 * t + 20 * k) % (W - 8)
    m[10:18, x:x + 8] = True
    return m


class FakeTracker:
    """Returns :class:`Masks` (one row per object, sorted ids), as :class:`anyseg.video.base.Tracker` says."""

    name = "fake"

    def __init__(self, fail_at: int | None = None):
        self.calls: list[tuple] = []
        self.fail_at = fail_at

    def start(self, frames):
        return {"objects": set(), "n": len(frames)}

    def add_prompt(self, state, prompt):
        self.calls.append(("prompt", prompt.frame, prompt.obj_id, prompt.mask is not None))
        state["objects"].add(prompt.obj_id)
        return masks_from_objects({o: square(prompt.frame, o) for o in state["objects"]}, (H, W))

    def propagate(self, state, start, end, reverse=False):
        self.calls.append(("propagate", start, end, reverse))
        step = -1 if reverse else 1
        for t in range(start, end + step, step):
            if self.fail_at is not None and t == self.fail_at:
                raise KeyboardInterrupt
            yield t, masks_from_objects({o: square(t, o) for o in state["objects"]}, (H, W))

    def close(self, state):
        state.clear()


def _frames() -> ArrayFrames:
    rng = np.random.default_rng(0)
    return ArrayFrames(rng.integers(0, 255, (T, H, W, 3), dtype=np.uint8))


def test_session_propagates_forward_then_backward_and_corrections_from_their_frame():
    tracker = FakeTracker()
    s = VideoSession(tracker, _frames())
    first = s.add_prompt(10, 3, points=[[20, 12]])
    assert first.object_ids.tolist() == [3] and first.masks.shape == (1, H, W)
    s.add_prompt(12, 7, box=[30, 5, 60, 30])
    out = list(s.propagate())
    assert [p[1:] for p in tracker.calls if p[0] == "propagate"] == [(10, T - 1, False), (10, 0, True)]
    frames = [i for i, _ in out]
    assert frames[: T - 10] == list(range(10, T)) and frames[T - 10:] == list(range(10, -1, -1))
    assert set(frames) == set(range(T))
    i, m = out[5]
    assert m.object_ids.tolist() == [3, 7] and np.array_equal(m.masks[0], square(i, 3))
    assert s.plan() == []  # nothing new
    s.add_prompt(20, 3, points=[[50, 12]], labels=[0])  # a correction
    assert s.plan() == [(20, T - 1, False)]
    assert [i for i, _ in s.propagate()] == list(range(20, T))
    s.add_prompt(2, 9, mask=square(2, 9))  # a new object before every prompt: backward too
    assert s.plan() == [(2, T - 1, False), (2, 0, True)]
    s.close()


def test_session_accepts_an_engine_that_still_returns_dicts():
    """An older, third-party engine whose results are ``{obj_id: mask}`` dicts: converted to Masks."""
    from anyseg.video.base import masks_by_object

    class DictTracker(FakeTracker):
        def add_prompt(self, state, prompt):
            return masks_by_object(super().add_prompt(state, prompt))

        def propagate(self, state, start, end, reverse=False):
            for t, masks in super().propagate(state, start, end, reverse):
                yield t, masks_by_object(masks)

    s = VideoSession(DictTracker(), _frames())
    s.add_prompt(0, 7, points=[[20, 12]])
    got = s.add_prompt(0, 2, box=[30, 5, 60, 30])
    assert isinstance(got, Masks) and got.object_ids.tolist() == [2, 7]
    out = dict(s.propagate())
    assert all(isinstance(m, Masks) and m.object_ids.tolist() == [2, 7] for m in out.values())
    assert np.array_equal(out[4].masks[1], square(4, 7))


def test_session_rejects_bad_prompts():
    s = VideoSession(FakeTracker(), _frames())
    with pytest.raises(PromptError, match="no prompts yet"):
        list(s.propagate())
    for kwargs, msg in (
        (dict(frame=T, obj_id=1, points=[[1, 1]]), "out of range"),
        (dict(frame=0, obj_id=0, points=[[1, 1]]), "positive integers"),
        (dict(frame=0, obj_id=1, points=[[W + 5, 1]]), "outside"),
        (dict(frame=0, obj_id=1, box=[10, 10, 5, 20]), "empty"),
        (dict(frame=0, obj_id=1, box=[-5, 0, 10, 10]), "outside"),
        (dict(frame=0, obj_id=1, mask=np.ones((H + 1, W), bool)), "the video is"),
        (dict(frame=0, obj_id=1, mask=np.zeros((H, W), bool)), "empty"),
        (dict(frame=0, obj_id=1), "empty"),
        (dict(frame=0, obj_id=1, points=[[1, 1]], labels=[2]), "labels"),
        (dict(frame=0, obj_id=4, points=[[1, 1]], labels=[0]), "object 4 is unknown"),
    ):
        with pytest.raises((InputError, PromptError), match=msg):
            s.add_prompt(**kwargs)


def test_frame_sources(tmp_path):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (1, 2, 10):
        Image.fromarray(np.full((20, 30, 3), i * 10, np.uint8)).save(folder / f"f{i}.png")
    src = open_frames(folder)
    assert len(src) == 3 and src.size == (20, 30) and src[2][0, 0, 0] == 100  # natural order: f10 last
    with pytest.raises(InputError, match="out of range"):
        src[3]
    Image.fromarray(np.zeros((21, 30, 3), np.uint8)).save(folder / "f11.png")
    with pytest.raises(InputError, match="one resolution"):
        open_frames(folder)

    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for i in range(12):
        w.write(np.full((24, 32, 3), i * 20, np.uint8))
    w.release()
    v = open_frames(video)
    assert len(v) == 12 and v.size == (24, 32) and v.fps == pytest.approx(10.0)
    means = [int(round(v[i].mean())) for i in (5, 6, 2, 11, 0)]  # forward, then jumps back and forth
    assert means == pytest.approx([100, 120, 40, 220, 0], abs=3)
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    with pytest.raises(InputError, match="not a readable video"):
        open_frames(tmp_path / "bad.mp4")
    with pytest.raises(InputError, match="not found"):
        open_frames(tmp_path / "missing.mp4")
    with pytest.raises(InputError, match="is an image"):
        open_frames(folder / "f1.png")
    syn = SyntheticFrames(lambda i: np.full((8, 8, 3), i % 256, np.uint8), 5000, (8, 8))
    assert len(syn) == 5000 and syn[4999][0, 0, 0] == 4999 % 256


@pytest.fixture()
def video_dir(tmp_path):
    folder = tmp_path / "vid"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(T):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / f"{i:05d}.jpg")
    return folder


def _use(monkeypatch, tracker):
    import anyseg.video.session as session_mod

    monkeypatch.setattr(session_mod, "load_tracker", lambda *a, **k: tracker)


def test_track_cli_writes_davis_pngs_tracks_json_and_overlay(capsys, monkeypatch, tmp_path, video_dir):
    tracker = FakeTracker()
    _use(monkeypatch, tracker)
    out = tmp_path / "out"
    code = main(["track", str(video_dir), "--prompt", "5:point=20,12", "--obj", "2", "--prompt", "5:box=40,5,70,30",
                 "--prompt", "5:point=45,14:0", "--out", str(out), "--json"])
    err = capsys.readouterr()
    assert code == 0, err.err
    summary = json.loads(err.out)
    assert summary["object_ids"] == [1, 2] and summary["frames"] == T
    prompts = [c for c in tracker.calls if c[0] == "prompt"]
    assert prompts == [("prompt", 5, 1, False), ("prompt", 5, 2, False)]  # the box and the click of object 2 merged
    png = Image.open(out / "masks" / "00007.png")
    assert png.mode == "P"
    ids = np.asarray(png)
    assert set(np.unique(ids)) == {0, 1, 2}
    assert np.array_equal(ids == 1, square(7, 1) & ~square(7, 2))
    tracks = json.loads((out / "tracks.json").read_text())
    assert len(tracks["frames"]) == T and set(tracks["frames"][0]["objects"]) == {"1", "2"}
    from anyseg.masks.rle import decode

    np.testing.assert_array_equal(decode(tracks["frames"][7]["objects"]["2"]["rle"]), square(7, 2))
    assert (out / "overlay.mp4").stat().st_size > 0
    import cv2

    from anyseg.io.video import h264_encoder

    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == T
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("latin-1").lower()
    cap.release()
    codec = "h264" if h264_encoder() else "mpeg4"  # H.264 with the video extra, else mp4v (read back as FMP4)
    assert tracks["files"]["overlay_codec"] == codec
    assert fourcc in {"h264": ("avc1", "h264"), "mpeg4": ("fmp4", "mp4v")}[codec]


def test_track_cli_resumes_an_interrupted_run(capsys, monkeypatch, tmp_path, video_dir):
    out = tmp_path / "out"
    argv = ["track", str(video_dir), "--prompt", "3:box=10,5,40,30", "--out", str(out), "--no-overlay"]
    _use(monkeypatch, FakeTracker(fail_at=25))
    assert main(argv) == 130
    capsys.readouterr()
    progress = json.loads((out / "progress.json").read_text())
    assert progress["pass"] == 0 and 3 <= progress["last"] < 25
    resumed_from = progress["last"]
    tracker = FakeTracker()
    _use(monkeypatch, tracker)
    code = main(argv)
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    calls = tracker.calls
    assert ("prompt", resumed_from, 1, True) in calls  # re-seeded from the written mask
    assert ("propagate", resumed_from, T - 1, False) in calls and ("propagate", 3, 0, True) in calls
    for i in range(T):
        assert np.array_equal(np.asarray(Image.open(out / "masks" / f"{i:05d}.png")) == 1, square(i, 1))
    # another command on the same folder is refused, and the results stay
    code = main(["track", str(video_dir), "--prompt", "4:box=10,5,40,30", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "different tracking run" in err and len(err.strip().splitlines()) == 1
    assert (out / "tracks.json").is_file()


def test_track_cli_errors_are_one_line(capsys, monkeypatch, tmp_path, video_dir):
    _use(monkeypatch, FakeTracker())
    cases = [
        (["track", str(video_dir), "--out", str(tmp_path / "o")], "no prompt"),
        (["track", str(video_dir), "--prompt", f"{T}:point=1,1", "--out", str(tmp_path / "o")], "out of range"),
        (["track", str(video_dir), "--prompt", "0:point=1", "--out", str(tmp_path / "o")], "malformed point"),
        (["track", str(video_dir), "--prompt", "x:point=1,1", "--out", str(tmp_path / "o")], "FRAME must be"),
        (["track", str(video_dir), "--prompt", "0:blob=1,1", "--out", str(tmp_path / "o")], "point, box or mask"),
        (["track", str(video_dir), "--obj", "0", "--prompt", "0:point=1,1", "--out", str(tmp_path / "o")], "--obj"),
        (["track", str(video_dir), "--prompt", "0:point=500,1", "--out", str(tmp_path / "o")], "outside"),
        (["track", str(tmp_path / "nope.mp4"), "--prompt", "0:point=1,1", "--out", str(tmp_path / "o")], "not found"),
        (["track", str(video_dir), "--prompt", "0:point=1,1", "--redetect", "5", "--out", str(tmp_path / "o")],
         "--redetect needs --text"),
    ]
    for argv, msg in cases:
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and msg in err, (argv, err)


def test_load_tracker_names():
    from anyseg.errors import ModelError
    from anyseg.video.session import load_tracker

    with pytest.raises(ModelError, match="cannot track video"):
        load_tracker("sam-vit-base")
    with pytest.raises(ModelError, match="unknown model"):
        load_tracker("nope")


def test_text_initialised_tracking_adds_new_objects_with_stable_ids(tmp_path):
    from anyseg.tasks.text import _labelled
    from anyseg.text.vocab import parse_classes
    from anyseg.tasks.track import Redetector, TrackWriter, run_track

    classes = parse_classes("car")

    class Backend:
        """Frame t shows object 1 from the start and object 2 from frame 10 on."""

        name = "fake-text"

        def __init__(self, frames):
            self.frames = frames
            self.asked = []

        def instances(self, image, classes_, params):
            t = next(i for i in range(T) if np.array_equal(self.frames[i], image))
            self.asked.append(t)
            objs = [1] + ([2] if t >= 10 else [])
            return _labelled(np.stack([square(t, k) for k in objs]), np.full(len(objs), 0.9, np.float32),
                             np.zeros(len(objs), np.int64), ["car"] * len(objs), classes_)

    frames = _frames()
    backend = Backend(frames)
    tracker = FakeTracker()
    session = VideoSession(tracker, frames)
    writer = TrackWriter(tmp_path / "out", {"run": 1})
    red = Redetector(backend, classes, every=10)
    run_track(session, [], writer, progress=False, redetect=red)
    assert backend.asked == [0, 10, 20]
    assert ("prompt", 0, 1, True) in tracker.calls and ("prompt", 10, 2, True) in tracker.calls
    assert [c for c in tracker.calls if c[0] == "prompt" and c[2] == 3] == []  # object 1 is never re-added
    assert red.labels == {1: "car", 2: "car"}
    ids5, ids15 = writer.read_ids(5), writer.read_ids(15)
    assert set(np.unique(ids5)) == {0, 1} and set(np.unique(ids15)) == {0, 1, 2}

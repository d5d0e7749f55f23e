"""Hostile runs of ``anyseg track`` (issue 13, class 6): restarts, failed starts, resumes, cancellation, fuzz.

A run folder's record (``run.json``) must always describe exactly the files beside it:
interrupted restarts, failed starts, failed ``--restart`` and restarts into longer runs'
folders are reproduced with the ``classical`` tracker on a small synthetic frame folder
(:mod:`_track_runs`). Killed runs, staging leftovers and the umask: test_adversarial_kills.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from anyseg.cli import main
from anyseg.video.base import masks_from_objects

from _track_runs import H, LEFT, RIGHT, T, W, assert_agrees, ids, iou, mask_frames, run_child, track, write_video


@pytest.fixture()
def video(tmp_path) -> Path:
    """A fresh synthetic frame folder per test (see :func:`_track_runs.write_video`)."""
    return write_video(tmp_path / "vid")


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones too): file bytes, ``None`` for folders."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


class Interrupt:
    """Patch ``TrackWriter.write`` to raise ``KeyboardInterrupt`` (Ctrl-C) after ``after`` frames."""

    def __init__(self, monkeypatch, after: int):
        import anyseg.tasks.track as track_mod

        original = track_mod.TrackWriter.write
        self.written = 0

        def write(writer, *args, **kwargs):
            if self.written == after:
                raise KeyboardInterrupt
            original(writer, *args, **kwargs)
            self.written += 1

        monkeypatch.setattr(track_mod.TrackWriter, "write", write)


# -- class 6, bullet 1: an interrupted --restart is not the old finished run ----------------------

@pytest.mark.parametrize("after", [3, 11])  # before the first progress.json, and after it
def test_interrupted_restart_is_never_mistaken_for_the_old_finished_run(monkeypatch, capsys, tmp_path, video, after):
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert track(str(video), "--prompt", RIGHT, "--out", str(clean)) == 0
    assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 0  # the old run: another object
    with monkeypatch.context() as m:
        Interrupt(m, after)
        assert track(str(video), "--prompt", RIGHT, "--out", str(out), "--restart") == 130
    capsys.readouterr()
    code = track(str(video), "--prompt", RIGHT, "--out", str(out))  # the same command, no --restart
    assert code == 0, capsys.readouterr().err
    for t in range(T):
        assert iou(ids(out, t) == 1, ids(clean, t) == 1) > 0.5, t  # the old run's masks have IoU 0
    assert_agrees(out)


# -- class 6, bullet 2: a failed start leaves nothing, and the corrected rerun runs ---------------

def bad_prompts(tmp_path: Path) -> list[tuple[list[str], str]]:
    """Prompts that are wrong in ways only the frame size or the mask files reveal."""
    Image.fromarray(np.full((H + 1, W), 255, np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "empty.png")
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return [
        (["--prompt", "0:point=500,10"], "outside"),
        (["--prompt", "3:box=10,10,200,40"], "outside"),
        (["--prompt", "0:point=-1,10"], "outside"),
        (["--prompt", f"0:mask={tmp_path / 'big.png'}"], "mask"),
        (["--prompt", f"0:mask={tmp_path / 'empty.png'}"], "empty"),
        (["--prompt", f"0:mask={tmp_path / 'garbage.png'}"], "garbage.png"),
        (["--prompt", f"0:mask={tmp_path / 'missing.png'}"], "not found"),
        (["--prompt", "0:point=20,30:0"], "object 1"),  # only a negative click for a new object
        (["--prompt", f"{T}:point=20,30"], "out of range"),
        (["--prompt", "0:point=nan,3"], "finite"),
    ]


def test_a_failed_start_leaves_no_trace_and_the_corrected_rerun_runs(capsys, tmp_path, video):
    out = tmp_path / "out"
    cases = bad_prompts(tmp_path)
    for argv, msg in cases:
        code = track(str(video), *argv, "--out", str(out))
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and msg in err and "anyseg: error:" in err, (argv, err)
        assert not out.exists(), argv
    assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 0, capsys.readouterr().err
    assert_agrees(out)


def test_an_error_inside_the_tracker_before_the_first_frame_leaves_no_trace(monkeypatch, capsys, tmp_path, video):
    from anyseg.errors import PromptError
    from anyseg.video.classical import ClassicalTracker

    def refuse(self, state, prompt):
        raise PromptError("the tracker refuses this prompt")

    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(ClassicalTracker, "add_prompt", refuse)
        assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 2
    assert "refuses" in capsys.readouterr().err and not out.exists()
    assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 0
    assert_agrees(out)


BOMB_MASK = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a decoder that allocates fails here, not the host
from anyseg.errors import AnysegError
from anyseg.tasks.track import run_track_command
try:
    run_track_command(sys.argv[1], [(1, "0:mask=" + sys.argv[2])], sys.argv[3], model="classical", show_progress=False)
except AnysegError as e:
    print(e)
    sys.exit(2)
"""


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A valid 1x1 PNG whose header claims ``width`` x ``height`` (nothing is decoded to tell)."""
    import struct
    import zlib

    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_a_bomb_mask_prompt_is_refused_from_its_header_in_a_child(tmp_path, video):
    out = tmp_path / "out"
    child = run_child(BOMB_MASK, video, bomb_png(tmp_path / "bomb.png", 100_000, 100_000), out)
    assert child.returncode == 2, (child.returncode, child.stderr[-2000:])
    assert len(child.stdout.strip().splitlines()) == 1 and "100000" in child.stdout and not out.exists()


# -- class 6, bullet 3: a failed --restart keeps the finished run byte-identical ------------------

def test_a_failed_restart_keeps_the_finished_run_byte_identical(monkeypatch, capsys, tmp_path, video):
    from anyseg.errors import ModelError
    from anyseg.video.classical import ClassicalTracker

    out = tmp_path / "out"
    assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 0
    before = snapshot(out)
    for argv, msg in bad_prompts(tmp_path):
        assert track(str(video), *argv, "--out", str(out), "--restart") == 2, argv
        assert msg in capsys.readouterr().err
        assert snapshot(out) == before, argv

    def broken(self, frames):
        raise ModelError("the tracker cannot start")

    with monkeypatch.context() as m:
        m.setattr(ClassicalTracker, "start", broken)
        assert track(str(video), "--prompt", RIGHT, "--out", str(out), "--restart") == 2
    assert "cannot start" in capsys.readouterr().err and snapshot(out) == before
    assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 0  # still the same finished run
    assert snapshot(out) == before


# -- class 6, bullet 4: --restart clears the files of the run it replaces -------------------------

def test_restart_into_a_longer_runs_folder_removes_its_stale_pngs(capsys, tmp_path, video):
    out = tmp_path / "out"
    assert main(["track", str(video), "--prompt", LEFT, "--model", "classical", "--out", str(out)]) == 0
    assert (out / "overlay.mp4").is_file() and mask_frames(out) == set(range(T))
    (out / "notes.txt").write_text("mine")  # not the run's: kept
    (out / "masks" / "readme.txt").write_text("mine too")
    short = write_video(tmp_path / "short", frames=T - 4, seed=1)
    code = track(str(short), "--prompt", RIGHT, "--out", str(out))
    assert code == 2 and "different tracking run" in capsys.readouterr().err
    assert track(str(short), "--prompt", RIGHT, "--out", str(out), "--restart") == 0
    assert_agrees(out, T - 4)
    assert (out / "notes.txt").read_text() == "mine" and (out / "masks" / "readme.txt").is_file()


# -- checks before the model loads; the frame bound (class 4) -------------------------------------

def test_inputs_are_checked_before_the_model_loads(monkeypatch, tmp_path, video):
    import anyseg.video.session as session_mod
    from anyseg.errors import AnysegError
    from anyseg.tasks.track import run_track_command

    loaded = []
    monkeypatch.setattr(session_mod, "load_tracker", lambda *a, **k: loaded.append(a) or pytest.fail("loaded"))
    out = tmp_path / "out"
    cases = [([(1, arg[1])], {}) for arg, _ in bad_prompts(tmp_path)]
    cases += [([(300, "0:point=20,30")], {}), ([(1, LEFT)], {"max_frames": T - 1}), ([(1, LEFT)], {"fps": -1.0}),
              ([(1, LEFT)], {"fps": float("nan")}), ([(1, LEFT)], {"redetect": -2}), ([(1, LEFT)], {"max_frames": 0})]
    for prompts, kwargs in cases:
        with pytest.raises(AnysegError) as e:
            run_track_command(video, prompts, out, model="classical", show_progress=False, **kwargs)
        assert len(str(e.value).splitlines()) == 1 and not out.exists(), (prompts, kwargs)
    assert loaded == []


def test_the_frame_bound_is_one_line_and_names_it(monkeypatch, capsys, tmp_path, video):
    out = tmp_path / "out"
    monkeypatch.setenv("ANYSEG_MAX_FRAMES", str(T - 1))
    assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert f"{T} frames, over the limit of {T - 1} frames" in err and "--max-frames" in err and not out.exists()
    monkeypatch.setenv("ANYSEG_MAX_FRAMES", "lots")
    assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 2
    assert "ANYSEG_MAX_FRAMES must be a positive number" in capsys.readouterr().err
    monkeypatch.setenv("ANYSEG_MAX_FRAMES", str(T))
    assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 0


# -- resumes trust only their own run's frames ----------------------------------------------------

class CountWrites:
    def __init__(self, monkeypatch):
        import anyseg.tasks.track as track_mod

        original = track_mod.TrackWriter.write
        self.frames: list[int] = []

        def write(writer, index, *args, **kwargs):
            self.frames.append(index)
            original(writer, index, *args, **kwargs)

        monkeypatch.setattr(track_mod.TrackWriter, "write", write)


def test_a_resume_continues_its_own_run_and_ignores_another_runs_progress(monkeypatch, capsys, tmp_path, video):
    out = tmp_path / "out"
    assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 0
    with monkeypatch.context() as m:
        Interrupt(m, 11)
        assert track(str(video), "--prompt", RIGHT, "--out", str(out), "--restart") == 130
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    progress = json.loads((out / "progress.json").read_text())
    assert progress["run_id"] == run_id and progress["last"] == 9
    with monkeypatch.context() as m:
        counted = CountWrites(m)
        assert track(str(video), "--prompt", RIGHT, "--out", str(out)) == 0
    assert counted.frames == [9, 10, 11]  # resumed from the last recorded frame
    assert assert_agrees(out)["run_id"] == run_id
    with monkeypatch.context() as m:  # the same command on a finished run writes no frame
        counted = CountWrites(m)
        assert track(str(video), "--prompt", RIGHT, "--out", str(out)) == 0
    assert counted.frames == [] and assert_agrees(out)["run_id"] == run_id

    progress["run_id"] = "another-run"  # progress that is not this run's: nothing is trusted
    (out / "progress.json").write_text(json.dumps(progress))
    with monkeypatch.context() as m:
        counted = CountWrites(m)
        assert track(str(video), "--prompt", RIGHT, "--out", str(out)) == 0
    assert counted.frames == list(range(T))
    assert assert_agrees(out)["run_id"] != run_id


def test_a_tampered_run_folder_is_a_one_line_error_or_a_fresh_start(monkeypatch, capsys, tmp_path, video):
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        Interrupt(m, 11)
        assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 130
    capsys.readouterr()
    progress = json.loads((out / "progress.json").read_text())
    assert progress["last"] == 9
    png = (out / "masks" / "00009.png").read_bytes()
    for junk, msg in ((b"not a png", "cannot read"), (Image.new("P", (3, 2)), "the run folder was changed"),
                      (Image.new("L", (W, H)), "not an indexed PNG")):
        if isinstance(junk, bytes):
            (out / "masks" / "00009.png").write_bytes(junk)
        else:
            junk.save(out / "masks" / "00009.png")
        assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "--restart" in err and len(err.splitlines()) == 1, err
    (out / "masks" / "00009.png").write_bytes(png)
    for bad in ({"done_passes": "all"}, {"last": "9"}, {"pass": -1}, {"last": True}):
        (out / "progress.json").write_text(json.dumps({**progress, **bad}))
        with monkeypatch.context() as m:
            counted, stop = CountWrites(m), Interrupt(m, 11)  # ill-formed progress: not trusted, a fresh start
            assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 130
        assert counted.frames == list(range(11)) and stop.written == 11, bad
        progress = json.loads((out / "progress.json").read_text())
    assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 0
    assert_agrees(out)


def test_outputs_without_a_record_are_refused_and_restart_replaces_them(capsys, tmp_path, video):
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "00003.png").write_bytes(b"old")
    for record in (None, b"{not json", b'{"video": "x"}'):  # none, unreadable, an older format
        if record is not None:
            (out / "run.json").write_bytes(record)
        before = snapshot(out)
        assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 2
        err = capsys.readouterr().err
        assert ("no run.json" if record is None else "different tracking run") in err and snapshot(out) == before
    assert track(str(video), "--prompt", LEFT, "--out", str(out), "--restart") == 0
    assert_agrees(out)
    (out / "masks").rename(tmp_path / "gone")
    assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 2  # a finished run whose masks are gone
    assert "rerun with --restart" in capsys.readouterr().err


# -- cancellation between frames ----------------------------------------------------------------

def test_a_cancelled_track_stops_between_frames_and_leaves_the_folder(monkeypatch, tmp_path, video):
    from anyseg import cancel
    from anyseg.tasks.track import run_track_command

    out = tmp_path / "out"
    token = cancel.CancelToken()
    with monkeypatch.context() as m, cancel.scope(token):
        counted = CountWrites(m)
        import anyseg.tasks.track as track_mod

        original = track_mod.TrackWriter.write

        def write(writer, index, *args, **kwargs):
            original(writer, index, *args, **kwargs)
            if len(counted.frames) == 4:
                token.cancel("stop")

        m.setattr(track_mod.TrackWriter, "write", write)
        with pytest.raises(cancel.Cancelled, match="stop"):
            run_track_command(video, [(1, LEFT)], out, model="classical", overlay=False, show_progress=False)
        assert counted.frames == [0, 1, 2, 3]  # the frame after the cancel was never written
        token2 = cancel.CancelToken()
        token2.cancel("before any frame")
        with cancel.scope(token2), pytest.raises(cancel.Cancelled):
            run_track_command(video, [(1, LEFT)], tmp_path / "other", model="classical", show_progress=False)
    assert not (tmp_path / "other").exists()
    assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 0  # the cancelled run resumes
    assert_agrees(out)


# -- fuzz: random prompts and options into one folder ---------------------------------------------

class SquareTracker:
    """A stand-in engine (fast): object ``k`` is a square at ``x = 2 t + 10 k`` on frame ``t``."""

    name = "squares"

    def start(self, frames):
        return {"objects": set()}

    def add_prompt(self, state, prompt):
        state["objects"].add(prompt.obj_id)
        return masks_from_objects({o: self.square(prompt.frame, o) for o in state["objects"]}, (H, W))

    def propagate(self, state, start, end, reverse=False):
        step = -1 if reverse else 1
        for t in range(start, end + step, step):
            yield t, masks_from_objects({o: self.square(t, o) for o in state["objects"]}, (H, W))

    def close(self, state):
        state.clear()

    @staticmethod
    def square(t: int, k: int) -> np.ndarray:
        m = np.zeros((H, W), bool)
        x = (2 * t + 10 * k) % (W - 6)
        m[5:11, x:x + 6] = True
        return m


def random_prompt(rng: np.random.Generator, masks: list[str]) -> tuple[int, str]:
    """``(obj_id, "FRAME:KIND=VALUE")``; each part is wrong with a probability of about 1/10."""
    def pick(good: list, bad: list) -> Any:
        return rng.choice(bad) if rng.random() < 0.1 else rng.choice(good)

    def num(limit: int) -> str:
        return str(pick([f"{rng.uniform(0, limit):.1f}"], ["nan", "inf", "-3", "1e9", "", "x", f"{limit + 1}"]))

    frame = pick([0, 1, 5, T - 1], [T, -1, "a", ""])
    kind = pick(["point", "point", "box", "mask"], ["blob", ""])
    if kind == "point":
        value = f"{num(W)},{num(H)}" + str(pick(["", ":1", ":0"], [":2", ":"]))
    elif kind == "box":
        x0, y0 = rng.uniform(0, W - 12), rng.uniform(0, H - 12)
        x1 = num(W) if rng.random() < 0.1 else f"{x0 + 10:.0f}"
        value = f"{x0:.0f},{y0:.0f},{x1},{y0 + 10:.0f}"
    else:
        value = str(pick(masks[:1], masks[1:]))
    return int(pick([1, 2, 254], [0, 255, -1])), f"{frame}:{kind}={value}"


def test_fuzzed_runs_either_finish_consistently_or_fail_in_one_line_leaving_the_folder(monkeypatch, tmp_path, video):
    import anyseg.video.session as session_mod
    from anyseg.errors import AnysegError
    from anyseg.tasks.track import run_track_command

    monkeypatch.setattr(session_mod, "load_tracker", lambda *a, **k: SquareTracker())
    good = tmp_path / "good.png"
    Image.fromarray((SquareTracker.square(0, 3) * 255).astype(np.uint8)).save(good)
    bad_prompts(tmp_path)
    masks = [str(good), str(tmp_path / "big.png"), str(tmp_path / "empty.png"), str(tmp_path / "garbage.png"),
             str(tmp_path / "missing.png")]
    rng = np.random.default_rng(13)
    out, outcomes = tmp_path / "out", {"done": 0, "refused": 0}
    for case in range(200):
        prompts = [random_prompt(rng, masks) for _ in range(int(rng.choice([0, 1, 1, 2, 3])))]
        kwargs = {"restart": bool(rng.random() < 0.7), "max_frames": rng.choice([None, None, T, T - 1])}
        before = snapshot(out)
        try:
            run_track_command(video, prompts, out, overlay=False, show_progress=False, **kwargs)
        except AnysegError as e:
            assert len(str(e).splitlines()) == 1 and snapshot(out) == before, (case, prompts, kwargs, str(e))
            outcomes["refused"] += 1
            continue
        assert_agrees(out)
        outcomes["done"] += 1
    assert outcomes["done"] >= 20 and outcomes["refused"] >= 100, outcomes

"""Hostile runs of ``anyseg track`` and the atomic-write helpers (issue 13, classes 6 and 7).

A run folder's record (``run.json``) must always describe exactly the files beside it:
interrupted restarts, failed starts, failed ``--restart`` and restarts into longer runs'
folders are reproduced with the ``classical`` tracker on a small synthetic frame folder.
Killed runs (a child process that SIGKILLs itself at a known point, so nothing is timed) must
leave nothing that a later run trusts, and their staging leftovers are removed by the next run
in the same folder, while a live run's are kept. Outputs follow the umask.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from anyseg.cli import main

H, W, T = 72, 96, 12
LEFT = "0:box=8,18,30,40"  # the object at the left (moves right)
RIGHT = "0:box=62,18,84,40"  # the object at the right (moves down)
CHILD_TIMEOUT_S = 120  # a safety net for a hung child only; nothing measures time
REPO = Path(__file__).resolve().parents[1]


def _texture(rng: np.random.Generator, h: int, w: int, cell: int = 4) -> np.ndarray:
    small = rng.normal(0, 1, (h // cell + 1, w // cell + 1, 3))
    return np.kron(small, np.ones((cell, cell, 1)))[:h, :w]


def write_video(folder: Path, frames: int = T, seed: int = 0) -> Path:
    """Two textured squares (left one moving right, right one moving down) over a texture."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    bg = 110 + 30 * _texture(rng, H, W)
    left = np.array([200, 60, 50]) + 25 * _texture(rng, 24, 24)
    right = np.array([50, 70, 210]) + 25 * _texture(rng, 24, 24)
    for t in range(frames):
        img = bg.copy()
        img[18:40, 8 + t:30 + t] = left[:22, :22]
        img[18 + t // 2:40 + t // 2, 62:84] = right[:22, :22]
        img += rng.normal(0, 2, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{t:05d}.png")
    return folder


@pytest.fixture()
def video(tmp_path) -> Path:
    return write_video(tmp_path / "vid")


def track(*argv: str) -> int:
    return main(["track", *argv, "--model", "classical", "--no-overlay"])


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones too): file bytes, ``None`` for folders."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def mask_frames(out: Path) -> set[int]:
    return {int(p.stem) for p in (out / "masks").glob("*.png")}


def ids(out: Path, t: int) -> np.ndarray:
    return np.asarray(Image.open(out / "masks" / f"{t:05d}.png"))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def assert_agrees(out: Path, frames: int = T) -> dict:
    """The record, the progress and the files of a finished run describe each other exactly."""
    tracks = json.loads((out / "tracks.json").read_text())
    assert [f["frame"] for f in tracks["frames"]] == list(range(frames)) == sorted(mask_frames(out))
    assert tracks["num_frames"] == frames and not (out / "overlay.mp4").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "done" and tracks["run_id"] == run["run_id"]
    assert json.loads((out / "progress.json").read_text())["run_id"] == run["run_id"]
    assert not [p.name for p in out.rglob(".*")], "leftover temporary files"
    return tracks


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


# -- SIGKILL (kill -9) at known points, in a child process ---------------------------------------

KILL_TRACK = """
import os, signal, sys
import anyseg.io.atomic as atomic
import anyseg.tasks.track as track
video, prompt, out, point, restart = sys.argv[1:6]
original_write, original_json = track.TrackWriter.write, atomic.write_json
written = []

def write(self, *args, **kwargs):
    original_write(self, *args, **kwargs)
    written.append(1)
    if point.isdigit() and len(written) == int(point):
        os.kill(os.getpid(), signal.SIGKILL)

def write_json(path, obj, *args, **kwargs):
    if point == "done" and os.path.basename(path) == "run.json" and obj.get("status") == "done":
        os.kill(os.getpid(), signal.SIGKILL)  # tracks.json is written, the record not yet
    return original_json(path, obj, *args, **kwargs)

track.TrackWriter.write, atomic.write_json = write, write_json
track.run_track_command(video, [(1, prompt)], out, model="classical", overlay=False, restart=restart == "1",
                        show_progress=False)
"""


def run_child(script: str, *args: str, umask: int | None = None) -> subprocess.CompletedProcess:
    prefix = f"import os; os.umask({umask:#o})\n" if umask is not None else ""
    return subprocess.run([sys.executable, "-c", prefix + textwrap.dedent(script), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)


@pytest.mark.parametrize("point, restart", [("3", "1"), ("11", "1"), ("11", "0"), ("done", "0")])
def test_a_run_killed_with_sigkill_resumes_to_a_folder_that_agrees(capsys, tmp_path, video, point, restart):
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert track(str(video), "--prompt", RIGHT, "--out", str(clean)) == 0
    if restart == "1":
        assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 0  # the finished run it replaces
    child = run_child(KILL_TRACK, video, RIGHT, out, point, restart)
    assert child.returncode == -9, child.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    code = track(str(video), "--prompt", RIGHT, "--out", str(out))
    assert code == 0, capsys.readouterr().err
    for t in range(T):
        assert iou(ids(out, t) == 1, ids(clean, t) == 1) > 0.5, t
    assert_agrees(out)


# -- class 7: staging leftovers and the umask ---------------------------------------------------

KILL_STAGING = """
import os, signal, sys
from anyseg.io.atomic import atomic_open, staged_dir, write_json
out = sys.argv[1]
with staged_dir(out) as stage:
    write_json(os.path.join(stage, "staged.json"), {"a": 1})
    with atomic_open(os.path.join(out, "half.json"), "w") as f:
        f.write("{")
        f.flush()
        if sys.argv[2] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        print("ready", flush=True)
        sys.stdin.readline()  # the parent lets go
        f.write("}")
"""


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


def test_a_killed_runs_staging_and_temporary_files_are_removed_by_the_next_run(tmp_path):
    from anyseg.io.atomic import write_json

    out = tmp_path / "out"
    child = run_child(KILL_STAGING, out, "kill")
    assert child.returncode == -9, child.stderr
    left = leftovers(out)
    assert len(left) == 2 and any(n.startswith(".anyseg-staging-") for n in left)
    assert any(n.startswith(".half.json.anyseg-") and n.endswith(".tmp") for n in left)
    write_json(out / "next.json", {})  # the next run writing into the folder
    assert leftovers(out) == [] and sorted(p.name for p in out.iterdir()) == ["next.json"]


def test_a_live_runs_staging_is_kept(tmp_path):
    from anyseg.io.atomic import clean_stale, staged_dir, write_json

    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILL_STAGING), str(out), "wait"], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        live = leftovers(out)
        write_json(out / "mine.json", {})
        with staged_dir(out) as stage:
            write_json(stage / "mine2.json", {})
        assert clean_stale(out) == 0 and leftovers(out) == live and len(live) == 2
        child.stdin.write("\n")
        child.stdin.close()
        assert child.wait(timeout=CHILD_TIMEOUT_S) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert leftovers(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["half.json", "mine.json", "mine2.json", "staged.json"]
    assert json.loads((out / "half.json").read_text()) == {}


def test_stale_names_are_judged_by_owner_then_age(tmp_path):
    from anyseg.io.atomic import UNVERIFIED_STALE_S, clean_stale, owner_tag, process_start

    host = owner_tag().split("-")[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S)
    dead_pid = int(dead.stdout)
    old = 2 * UNVERIFIED_STALE_S
    names = {
        f".anyseg-staging-{host}-{dead_pid}-5-abc": True,  # owner gone
        f".x.json.anyseg-{host}-{dead_pid}-5-abc.tmp": True,
        f".anyseg-staging-{owner_tag()}-live": False,  # this process: kept, however old
        ".anyseg-staging-abcd_123": True,  # an older anyseg's name, old: removed
        f".anyseg-staging-00000000-{dead_pid}-5-abc": True,  # another host, old
        ".notes.tmp": False, ".x.anyseg-zz.tmp": False, "anyseg-staging-x": False,  # not ours
    }
    if process_start(os.getpid()) is not None:
        names[f".anyseg-staging-{host}-{os.getpid()}-1-reused"] = True  # a live pid, another start: reused
    for name in names:
        (tmp_path / name).mkdir() if "staging" in name else (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (os.path.getmtime(tmp_path / name) - old,) * 2)
    fresh = [".anyseg-staging-wxyz_987", f".anyseg-staging-00000000-{dead_pid}-5-new"]
    for name in fresh:  # owner unknown and young: kept
        (tmp_path / name).mkdir()
    assert clean_stale(tmp_path) == sum(names.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([n for n, stale in names.items() if not stale] + fresh)


UMASK_CHILD = """
import json, os, sys
from pathlib import Path
from typing import Any
from anyseg.io.atomic import staged_dir, write_json
out = Path(sys.argv[1])
write_json(out / "direct.json", {})
with staged_dir(out) as stage:
    write_json(stage / "staged.json", {})
    (stage / "plain.txt").write_text("x")
    modes = {"stage": os.stat(stage).st_mode & 0o777}
modes.update({p.name: p.stat().st_mode & 0o777 for p in out.iterdir()})
print(json.dumps(modes))
"""


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["022", "027"])
def test_outputs_follow_the_umask(tmp_path, umask):
    child = run_child(UMASK_CHILD, tmp_path, umask=umask)
    assert child.returncode == 0, child.stderr
    modes = json.loads(child.stdout)
    files = 0o666 & ~umask
    assert modes == {"stage": 0o777 & ~umask, "direct.json": files, "staged.json": files, "plain.txt": files}


def test_track_outputs_follow_the_umask(capsys, tmp_path, video):
    from anyseg.io.atomic import FILE_MODE

    umask = os.umask(0o022)
    os.umask(umask)
    assert FILE_MODE == 0o666 & ~umask
    out = tmp_path / "out"
    assert track(str(video), "--prompt", LEFT, "--out", str(out)) == 0
    for path in (out / "run.json", out / "tracks.json", out / "progress.json", out / "masks" / "00004.png"):
        assert path.stat().st_mode & 0o777 == FILE_MODE, path


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
        return {o: self.square(prompt.frame, o) for o in state["objects"]}

    def propagate(self, state, start, end, reverse=False):
        step = -1 if reverse else 1
        for t in range(start, end + step, step):
            yield t, {o: self.square(t, o) for o in state["objects"]}

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

"""Killed ``anyseg track`` runs and the atomic-write helpers (issue 13, classes 6 and 7).

Killed runs (a child process that SIGKILLs itself at a known point, so nothing is timed) must
leave nothing that a later run trusts, and their staging leftovers are removed by the next run
in the same folder, while a live run's are kept. Outputs follow the umask. The synthetic frame
folder and the run checks are :mod:`_track_runs`'s; the other hostile runs are in
test_adversarial_runs.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _track_runs import CHILD_TIMEOUT_S, LEFT, REPO, RIGHT, T, assert_agrees, ids, iou, run_child, track, write_video


@pytest.fixture()
def video(tmp_path) -> Path:
    """A fresh synthetic frame folder per test (see :func:`_track_runs.write_video`)."""
    return write_video(tmp_path / "vid")


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

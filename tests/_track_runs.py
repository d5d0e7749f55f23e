"""Shared by the hostile ``anyseg track`` run tests (issue 13, classes 6 and 7): test_adversarial_runs.py and
test_adversarial_kills.py.

A small synthetic frame folder with two moving textured squares, ``anyseg track`` with the
``classical`` tracker on it, the check that a finished run folder agrees with its record, and
a child-process runner (optionally under a umask).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
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


def track(*argv: str) -> int:
    """``anyseg track ARGV --model classical --no-overlay``: its exit status."""
    return main(["track", *argv, "--model", "classical", "--no-overlay"])


def mask_frames(out: Path) -> set[int]:
    """The frame numbers of the run's mask PNGs."""
    return {int(p.stem) for p in (out / "masks").glob("*.png")}


def ids(out: Path, t: int) -> np.ndarray:
    """Frame ``t``'s indexed mask PNG (object ids) as an array."""
    return np.asarray(Image.open(out / "masks" / f"{t:05d}.png"))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (0 when both are empty)."""
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


def run_child(script: str, *args: str, umask: int | None = None) -> subprocess.CompletedProcess:
    """Runs ``script`` with ``args`` in a fresh interpreter (in the repository, under ``umask`` when given)."""
    prefix = f"import os; os.umask({umask:#o})\n" if umask is not None else ""
    return subprocess.run([sys.executable, "-c", prefix + textwrap.dedent(script), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)

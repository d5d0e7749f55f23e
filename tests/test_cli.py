"""The ``anyseg`` CLI: outputs, JSON, and every bad-input path (one line, exit 2, no traceback)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from cli_helpers import assert_one_line_error, run

from tiny_models import build_sam

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "anyseg" / "data" / "coffee.jpg"


@pytest.fixture()
def image_path(tmp_path) -> Path:
    """A 160 x 240 image: a bright disc on a dark noisy background."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (160, 240, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:160, :240]
    img[(yy - 80) ** 2 + (xx - 120) ** 2 < 45**2] = (220, 180, 40)
    path = tmp_path / "disc.png"
    Image.fromarray(img).save(path)
    return path


# -- successful runs ----------------------------------------------------------------------


def test_box_prompt_writes_masks_overlays_and_json(capsys, image_path, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "segment", image_path, "--box", "70,30,170,130", "--out", out, "--json")
    assert code == 0, err
    record = json.loads(stdout)
    assert record["model"] == "classical" and "classical" in err  # auto fell back, with a notice
    assert record["image_size"] == [160, 240]
    assert record["prompt"]["box"] == [70.0, 30.0, 170.0, 130.0]
    (m,) = record["masks"]
    assert set(m) >= {"rle", "score", "box", "area", "mask_png", "overlay_png"}
    png = np.array(Image.open(out / m["mask_png"])) > 127
    rle = dict(m["rle"], counts=m["rle"]["counts"].encode())
    np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), png)
    assert m["area"] == int(png.sum()) and m["rle"]["size"] == [160, 240]
    yy, xx = np.mgrid[:160, :240]
    disc = (yy - 80) ** 2 + (xx - 120) ** 2 < 45**2
    assert (png & disc).sum() / (png | disc).sum() > 0.85
    assert Image.open(out / m["overlay_png"]).size == (240, 160)
    assert json.loads((out / "disc.json").read_text()) == record
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_points_and_multimask(capsys, image_path, tmp_path):
    code, stdout, err = run(capsys, "segment", image_path, "--point", "120,80", "--point", "10,10:0",
                            "--multimask", "--model", "classical", "--out", tmp_path / "o", "--json")
    assert code == 0, err
    record = json.loads(stdout)
    assert len(record["masks"]) == 3 and record["prompt"]["labels"] == [1, 0]
    scores = [m["score"] for m in record["masks"]]
    assert scores == sorted(scores, reverse=True)
    assert len(list((tmp_path / "o").glob("disc_mask*.png"))) == 3


def test_mask_input_refinement(capsys, image_path, tmp_path):
    mask = np.zeros((160, 240), np.uint8)
    mask[40:120, 80:160] = 255
    Image.fromarray(mask).save(tmp_path / "prev.png")
    code, stdout, err = run(capsys, "segment", image_path, "--mask-input", tmp_path / "prev.png",
                            "--point", "120,80", "--model", "classical", "--out", tmp_path / "o", "--json")
    assert code == 0, err
    assert json.loads(stdout)["prompt"]["mask"] == "160x240 binary mask"


def test_tiny_sam_through_weights_flag(capsys, image_path, tmp_path):
    folder = build_sam(tmp_path / "sam")
    code, stdout, err = run(capsys, "segment", image_path, "--point", "120,80", "--model", "sam-vit-base",
                            "--weights", folder, "--multimask", "--device", "cpu", "--out", tmp_path / "o", "--json")
    assert code == 0, err
    record = json.loads(stdout)
    assert record["model"] == "sam-vit-base" and len(record["masks"]) == 3


def test_models_list_and_pull(capsys):
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    for name in ("sam-vit-base", "sam-vit-large", "sam-vit-huge", "slimsam", "sam-hq-vit-base", "sam2.1-hiera-tiny",
                 "sam2.1-hiera-small", "sam2.1-hiera-base-plus", "sam2.1-hiera-large", "edgetam", "sam3", "classical"):
        assert name in out
    code, out, _ = run(capsys, "models", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["classical"]["present"] and not rows["sam-vit-base"]["present"]
    assert rows["sam-vit-base"]["params_m"] > 90
    code, _, err = run(capsys, "models", "pull", "sam-vit-base")  # HF_HUB_OFFLINE=1 (conftest)
    assert_one_line_error(code, err, "sam-vit-base", "offline", "ANYSEG_MODELS")
    assert "--weights" not in err  # pull has no such option: its hint says what pull can do
    code, _, err = run(capsys, "models", "pull", "classical")
    assert code == 0 and "no weights" in err


# -- bad input: one line, exit 2 ------------------------------------------------------------


def _bomb_png(path: Path, width: int, height: int) -> None:
    """A valid PNG signature + IHDR claiming ``width x height`` (no real pixel data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = zlib.compress(b"\x00" * 16)
    data += struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    path.write_bytes(data)


@pytest.mark.parametrize(
    "setup, args, fragments",
    [
        (None, ["missing.png", "--box", "1,1,5,5"], ["image not found"]),
        ("text", ["notes.txt", "--box", "1,1,5,5"], ["not an image"]),
        ("truncated", ["cut.jpg", "--box", "1,1,5,5"], ["corrupt or truncated"]),
        ("bomb", ["bomb.png", "--box", "1,1,5,5"], ["too large"]),
        ("folder", ["adir", "--box", "1,1,5,5"], ["got a folder"]),
        ("image", ["disc.png", "--box", "1,1,5,5", "--max-pixels", "1000"], ["over the limit", "--max-pixels"]),
        ("image", ["disc.png", "--point", "500,20"], ["point (500, 20) is outside the 240x160 image"]),
        ("image", ["disc.png", "--point=-1,20"], ["outside"]),
        ("image", ["disc.png", "--box", "0,0,300,100"], ["outside the 240x160 image"]),
        ("image", ["disc.png", "--point", "10,abc"], ["malformed point"]),
        ("image", ["disc.png", "--point", "10,20:2"], ["LABEL must be 1"]),
        ("image", ["disc.png", "--box", "1,2,3"], ["malformed box", "X0,Y0,X1,Y1"]),
        ("image", ["disc.png", "--box", "50,50,50,80"], ["empty"]),
        ("image", ["disc.png"], ["no prompt"]),
        ("image", ["disc.png", "--box", "1,1,50,50", "--model", "sam-vit-bse"], ["unknown model", "sam-vit-base"]),
        ("image", ["disc.png", "--box", "1,1,50,50", "--model", "sam2.1-hiera-tiny"], ["not available locally"]),
        ("image", ["disc.png", "--box", "1,1,50,50", "--model", "sam-vit-base", "--weights", "adir"], ["lacks config.json"]),
        ("image", ["disc.png", "--box", "1,1,50,50", "--weights", "adir"], ["--weights needs an explicit --model"]),
        ("image", ["disc.png", "--mask-input", "small.png"], ["mask", "is 10x10 but the image is 240x160"]),
        ("image", ["disc.png", "--box", "1,1,50,50", "--bogus"], ["unrecognized arguments"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, image_path, setup, args, fragments, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    full = tmp_path / "full.jpg"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(full)
    (tmp_path / "cut.jpg").write_bytes(full.read_bytes()[:400])
    _bomb_png(tmp_path / "bomb.png", 30000, 30000)
    code, _, err = run(capsys, "segment", *args, "--out", tmp_path / "out")
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_failed_run_keeps_earlier_results(capsys, image_path, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run(capsys, "segment", image_path, "--box", "70,30,170,130", "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run(capsys, "segment", image_path, "--point", "999,1", "--out", out)
    assert_one_line_error(code, err, "outside")

    # a failure while writing (disk full, ...) after the first file: nothing half-written, JSON intact
    import anyseg.io.export as export

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "save_overlay_png", broken)
    code, _, err = run(capsys, "segment", image_path, "--box", "60,20,180,140", "--model", "classical", "--out", out)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before, "earlier results unchanged and no temporary files left behind"


def test_out_is_a_file(capsys, image_path, tmp_path):
    (tmp_path / "f").write_text("x")
    code, _, err = run(capsys, "segment", image_path, "--box", "1,1,50,50", "--out", tmp_path / "f")
    assert_one_line_error(code, err, "not a folder")


def test_console_script_has_no_traceback(tmp_path):
    """The installed entry point itself: exit 2 and a single line for a missing file."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "anyseg.cli", "segment", str(tmp_path / "nope.png"), "--box", "1,1,2,2",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"anyseg: error: image not found: {tmp_path / 'nope.png'}"


def test_example_image_is_shipped():
    assert EXAMPLE.is_file(), "the README's example image"
    assert Image.open(EXAMPLE).size == (600, 400)

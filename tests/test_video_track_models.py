"""``anyseg track`` end to end with the tiny SAM 2 video model found through ``$ANYSEG_MODELS``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from anyseg.cli import main

from tiny_video import build_sam2_video

H, W, T = 60, 100, 12


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    build_sam2_video(root / "sam2.1-hiera-tiny")
    return root


@pytest.fixture()
def video_dir(tmp_path):
    folder = tmp_path / "vid"
    folder.mkdir()
    rng = np.random.default_rng(3)
    bg = rng.integers(0, 120, (H, W, 3), dtype=np.uint8)
    for t in range(T):
        frame = bg.copy()
        frame[20:40, 10 + 3 * t:30 + 3 * t] = 230
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    return folder


def test_track_with_tiny_sam2_video_model(capsys, monkeypatch, models_dir, video_dir, tmp_path):
    monkeypatch.setenv("ANYSEG_MODELS", str(models_dir))
    out = tmp_path / "out"
    code = main(["track", str(video_dir), "--model", "sam2.1-hiera-tiny", "--prompt", "4:box=20,20,42,40",
                 "--obj", "5", "--prompt", "6:point=80,50", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["frames"] == T and set(summary["object_ids"]) <= {1, 5}
    for t in range(T):
        ids = np.asarray(Image.open(out / "masks" / f"{t:05d}.png"))
        assert ids.shape == (H, W) and set(np.unique(ids)) <= {0, 1, 5}
    tracks = json.loads((out / "tracks.json").read_text())
    assert [f["frame"] for f in tracks["frames"]] == list(range(T))
    assert (out / "overlay.mp4").is_file() and tracks["files"]["overlay_codec"] in ("h264", "mpeg4")


def test_track_auto_uses_the_sam2_model_present(capsys, monkeypatch, models_dir, video_dir, tmp_path):
    monkeypatch.setenv("ANYSEG_MODELS", str(models_dir))
    code = main(["track", str(video_dir), "--prompt", "0:box=10,20,30,40", "--out", str(tmp_path / "o"),
                 "--no-overlay", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["model"] == "sam2.1-hiera-tiny"


def test_track_from_text_with_tiny_sam3_and_the_classical_engine(capsys, monkeypatch, video_dir, tmp_path):
    from tiny_sam3 import build_sam3

    models = tmp_path / "models"
    build_sam3(models / "sam3")
    monkeypatch.setenv("ANYSEG_MODELS", str(models))
    out = tmp_path / "out"
    code = main(["track", str(video_dir), "--text", "square|block", "--text-model", "sam3", "--threshold", "0",
                 "--redetect", "5", "--model", "classical", "--no-overlay", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["object_ids"] and summary["object_ids"] == sorted(summary["object_ids"])
    assert set(summary["labels"].values()) == {"square"}
    assert min(int(k) for k in summary["labels"]) == 1
    tracks = json.loads((out / "tracks.json").read_text())
    assert len(tracks["frames"]) == T

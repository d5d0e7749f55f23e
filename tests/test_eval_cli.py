"""``anyseg eval``'s protocol table and ``--model PATH`` for ``eval video`` / ``eval semantic``.

``--model`` takes a registry name or a local model folder everywhere (as ``segment`` and ``eval
interactive`` do, through :func:`anyseg.models.resolver.resolve`); a folder that is not a model
of the right kind is a one-line error that names it, before ``--out`` is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anyseg.eval import cli as eval_cli
from cli_helpers import one_line, run

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models are all thread start-up: one thread is faster (and steadier on busy machines)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _disc(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


@pytest.fixture()
def davis(tmp_path) -> Path:
    """One 4-frame DAVIS sequence with two moving discs (palette annotations)."""
    root = tmp_path / "davis"
    img, ann = root / "JPEGImages" / "480p" / "seq", root / "Annotations" / "480p" / "seq"
    img.mkdir(parents=True)
    ann.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for t in range(4):
        ids = np.zeros((48, 64), np.uint8)
        for o in (1, 2):
            ids[_disc(48, 64, 24, 20 * o + 2 * t, 7)] = o
        frame = rng.integers(0, 50, (48, 64, 3)).astype(np.uint8)
        frame[ids > 0] = (230, 190, 40)
        Image.fromarray(frame).save(img / f"{t:05d}.jpg", quality=95)
        im = Image.fromarray(ids, mode="P")
        im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
        im.save(ann / f"{t:05d}.png")
    return root


@pytest.fixture()
def semantic_data(tmp_path) -> Path:
    """Two images with class-id label maps over three classes."""
    root = tmp_path / "sem"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (32, 48, 3)).astype(np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(rng.integers(0, 3, (32, 48)).astype(np.uint8)).save(root / "labels" / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    from tiny_clip import build_clip

    return build_clip(tmp_path_factory.mktemp("clip") / "my-clip")


# -- the protocol table ------------------------------------------------------------------------------
def test_every_protocol_is_an_eval_sub_command_in_table_order():
    from anyseg.cli import build_parser

    parser = build_parser()
    eval_parser = parser._subparsers._group_actions[0].choices["eval"]
    kinds = next(a for a in eval_parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert tuple(kinds) == eval_cli.KINDS == ("interactive", "box", "video", "semantic", "masks", "fewshot", "discover", "edit", "volume")
    assert [p.name for p in eval_cli.PROTOCOLS] == list(kinds)
    for name in ("interactive", "box", "video", "semantic"):
        model = next(a for a in kinds[name]._actions if "--model" in a.option_strings)
        assert "local model folder" in model.help and "name" in model.help, (name, model.help)


@pytest.mark.parametrize("pred, gt, video, source", [
    ("p.json", "g", False, "coco"), ("p", "g.JSON", True, "coco"), ("p", "g", True, "video"), ("p", "g", False, "files"),
])
def test_eval_masks_reads_what_its_inputs_are(pred, gt, video, source):
    args = argparse.Namespace(pred=pred, gt=gt, video=video)
    assert eval_cli.MasksProtocol.source(args) == source


# -- eval video --model PATH -------------------------------------------------------------------------
def test_eval_video_classical_still_works(capsys, davis, tmp_path):
    code, stdout, err = run(capsys, "eval", "video", "--model", "classical", "--data", davis, "--out", tmp_path / "o")
    assert code == 0, err
    assert "J&F-Mean" in stdout
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["header"]["model"] == "classical"


def test_eval_video_takes_a_local_video_checkpoint_folder(capsys, davis, tmp_path, monkeypatch):
    from tiny_video import build_sam2_video

    folder = build_sam2_video(tmp_path / "models" / "my-sam2")
    monkeypatch.chdir(tmp_path)  # the default --out: runs/eval/video-<the folder's name>-<data>
    code, stdout, err = run(capsys, "eval", "video", "--model", folder, "--data", davis, "--limit", "1")
    assert code == 0, err
    assert "J&F-Mean" in stdout
    out = tmp_path / "runs" / "eval" / "video-my-sam2-davis"
    header = json.loads((out / "summary.json").read_text())["header"]
    assert header["model"] == str(folder) and header["kind"] == "video"


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p.mkdir(), "has no config.json"),
    (lambda p: None, "model folder not found"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text('{"model_type": "resnet"}')), "no anyseg model family"),
])
def test_eval_video_folder_that_is_not_a_model_is_one_line(capsys, davis, tmp_path, make, fragment):
    folder = tmp_path / "not-a-model"
    make(folder)
    code, _, err = run(capsys, "eval", "video", "--model", folder, "--data", davis, "--out", tmp_path / "o")
    assert code == 2
    one_line(err, str(folder), fragment)
    assert not (tmp_path / "o").exists()


def test_eval_video_refuses_an_image_only_model_folder(capsys, davis, tmp_path):
    from tiny_models import build_sam

    folder = build_sam(tmp_path / "image-sam")
    capsys.readouterr()  # (the builder's progress bars)
    code, _, err = run(capsys, "eval", "video", "--model", folder, "--data", davis, "--out", tmp_path / "o")
    assert code == 2
    one_line(err, str(folder), "is not a video tracker")
    assert not (tmp_path / "o").exists()


def test_eval_video_unknown_name_still_lists_the_engines(capsys, davis, tmp_path):
    code, _, err = run(capsys, "eval", "video", "--model", "nope", "--data", davis, "--out", tmp_path / "o")
    assert code == 2
    one_line(err, "no video engine named 'nope'", "classical", "local model folder")


# -- eval semantic --model PATH[:METHOD] -------------------------------------------------------------
@pytest.mark.parametrize("method", ["", ":maskclip"])
def test_eval_semantic_takes_a_local_clip_folder(capsys, semantic_data, clip_folder, tmp_path, method):
    out = tmp_path / "o"
    code, stdout, err = run(capsys, "eval", "semantic", "--model", f"{clip_folder}{method}", "--data", semantic_data,
                            "--classes", "sky,road,car", "--out", out)
    assert code == 0, err
    assert "mIoU" in stdout
    record = json.loads((out / "summary.json").read_text())
    assert record["header"]["model"] == f"{clip_folder}{method}" and record["summary"]["num_images"] == 2


@pytest.mark.parametrize("suffix, fragment", [(":bogus", ":METHOD"), ("", "has no config.json")])
def test_eval_semantic_bad_folder_is_one_line(capsys, semantic_data, clip_folder, tmp_path, suffix, fragment):
    folder = clip_folder if suffix else tmp_path / "empty"
    folder.mkdir(exist_ok=True)
    code, _, err = run(capsys, "eval", "semantic", "--model", f"{folder}{suffix}", "--data", semantic_data,
                       "--classes", "sky,road,car", "--out", tmp_path / "o")
    assert code == 2
    one_line(err, str(folder), fragment)
    assert not (tmp_path / "o").exists()


def test_eval_semantic_method_goes_with_clip_folders_only(capsys, semantic_data, tmp_path):
    from tiny_models import build_sam

    folder = build_sam(tmp_path / "sam")
    capsys.readouterr()  # (the builder's progress bars)
    code, _, err = run(capsys, "eval", "semantic", "--model", f"{folder}:maskclip", "--data", semantic_data,
                       "--classes", "sky,road,car", "--out", tmp_path / "o")
    assert code == 2
    one_line(err, str(folder))
    assert not (tmp_path / "o").exists()

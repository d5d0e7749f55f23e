"""``anyseg edit ...`` end to end on small synthetic images: outputs, records, --in-place, compose,
remove-video, and bad input as one line with exit code 2."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from anyseg.edit import base

from test_edit_api import H, W, FakeEngine, scene
from cli_helpers import assert_one_line_error, run


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    img, mask = scene()
    out = {"image": tmp_path / "photo.png", "mask": tmp_path / "mask.png", "empty": tmp_path / "empty.png",
           "full": tmp_path / "full.png", "small": tmp_path / "small.png", "jpg": tmp_path / "shot.jpg"}
    Image.fromarray(img).save(out["image"])
    Image.fromarray(img).save(out["jpg"], quality=95)
    Image.fromarray(mask.astype(np.uint8) * 255).save(out["mask"])
    Image.fromarray(np.zeros((H, W), np.uint8)).save(out["empty"])
    Image.fromarray(np.full((H, W), 255, np.uint8)).save(out["full"])
    Image.fromarray(np.full((H - 4, W), 255, np.uint8)).save(out["small"])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    out["broken"] = tmp_path / "broken.png"
    return out


@pytest.fixture(autouse=True)
def fake_engines(monkeypatch):
    def make(generative):
        return lambda weights=None, model=None, device=None, allow_download=True, **o: \
            FakeEngine("fakegen" if generative else "fake", generative)

    monkeypatch.setitem(base.ENGINES, "fake", make(False))
    monkeypatch.setitem(base.ENGINES, "fakegen", make(True))


def decode(rle: dict) -> np.ndarray:
    return mask_utils.decode(dict(rle, counts=rle["counts"].encode())).astype(bool)


def test_remove_writes_the_edit_the_mask_and_the_record(capsys, files, tmp_path):
    before = files["image"].read_bytes()
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "edit", "remove", files["image"], "--mask", files["mask"], "--engine", "fake",
                            "--dilate", "2", "--feather", "0", "--seed", "4", "--out", out, "--json")
    assert code == 0, err
    record = json.loads(stdout)
    assert json.loads((out / "photo.json").read_text()) == record
    assert sorted(p.name for p in out.iterdir()) == ["photo.json", "photo_edited.png", "photo_mask.png"]
    for key, value in {"task": "edit", "operation": "remove", "engine": "fake", "model": "fake-v1", "seed": 4,
                       "prompt": None, "dilate": 2, "image": str(files["image"]), "image_size": [H, W],
                       "in_place": False, "mask_source": {"kind": "mask", "mask": str(files["mask"])}}.items():
        assert record[key] == value, key
    assert record["anyseg_version"] and record["seconds"] >= 0
    used = np.asarray(Image.open(out / "photo_mask.png")) > 0
    assert np.array_equal(decode(record["mask"]), used)
    edited, img = np.asarray(Image.open(out / "photo_edited.png")), scene()[0]
    assert np.array_equal(edited[~used], img[~used]) and (edited[used] == (0, 200, 0)).all()
    assert files["image"].read_bytes() == before  # the input is never touched
    assert record["outputs"] == {"edited_png": "photo_edited.png", "mask_png": "photo_mask.png"}


def test_remove_with_telea_from_a_box_and_the_default_out(capsys, files):
    code, _, err = run(capsys, "edit", "remove", files["image"], "--box", "26,16,64,44")
    assert code == 0, err
    folder = files["image"].parent  # --out defaults to the image's folder; the input stays
    record = json.loads((folder / "photo.json").read_text())
    assert record["engine"] == "telea" and record["mask_model"] == "classical"
    assert record["mask_source"] == {"kind": "prompt", "box": [26.0, 16.0, 64.0, 44.0]}
    assert (folder / "photo_edited.png").is_file() and Image.open(files["image"]).size == (W, H)


def test_in_place_replaces_the_image_and_writes_the_record_beside_it(capsys, files, tmp_path):
    code, _, err = run(capsys, "edit", "remove", files["jpg"], "--mask", files["mask"], "--engine", "fake",
                       "--in-place")
    assert code == 0, err
    folder = files["jpg"].parent
    assert not (folder / "shot_edited.png").exists() and (folder / "shot_mask.png").is_file()
    record = json.loads((folder / "shot.json").read_text())
    assert record["in_place"] and record["outputs"]["edited_png"] == str(files["jpg"])
    edited = np.asarray(Image.open(files["jpg"]))
    assert Image.open(files["jpg"]).format == "JPEG" and abs(edited[30, 45].astype(int) - (0, 200, 0)).max() < 30
    out = tmp_path / "records"
    code, _, err = run(capsys, "edit", "remove", files["image"], "--mask", files["mask"], "--engine", "fake",
                       "--in-place", "--out", out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["photo.json", "photo_mask.png"]
    assert (np.asarray(Image.open(files["image"]))[30, 45] == (0, 200, 0)).all()


def test_fill_replace_style_and_cutout(capsys, files, tmp_path, monkeypatch):
    code, stdout, err = run(capsys, "edit", "fill", files["image"], "--mask", files["full"], "--engine", "fakegen",
                            "--prompt", "a beach", "--steps", "3", "--out", tmp_path / "f", "--json")
    assert code == 0, err
    assert json.loads(stdout)["prompt"] == "a beach" and json.loads(stdout)["mask_area"] == H * W
    code, stdout, err = run(capsys, "edit", "replace", files["image"], "--mask", files["mask"], "--color", "0,0,255",
                            "--feather", "0", "--out", tmp_path / "r", "--json")
    assert code == 0, err
    record, mask = json.loads(stdout), scene()[1]
    edited = np.asarray(Image.open(tmp_path / "r" / "photo_edited.png"))
    assert record["engine"] == "color" and (edited[~mask] == (0, 0, 255)).all()
    assert np.array_equal(edited[mask], scene()[0][mask])

    def fake_style(image, mask, style_image, **kwargs):
        out = image.copy()
        out[mask] = style_image[mask]
        return base.EditResult(out, mask, {"operation": "style", "engine": kwargs["engine"], "seed": kwargs["seed"]})

    monkeypatch.setitem(sys.modules, "anyseg.edit.style", types.SimpleNamespace(style=fake_style))
    code, stdout, err = run(capsys, "edit", "style", files["image"], "--mask", files["mask"], "--style", files["jpg"],
                            "--strength", "0.5", "--out", tmp_path / "s", "--json")
    assert code == 0, err
    assert json.loads(stdout)["operation"] == "style" and (tmp_path / "s" / "photo_edited.png").is_file()
    cut = tmp_path / "c" / "cup.png"
    cut.parent.mkdir()
    code, _, err = run(capsys, "edit", "cutout", files["image"], "--mask", files["mask"], "--method", "feather",
                       "--feather", "2", "--out", cut)
    assert code == 0, err
    assert Image.open(cut).mode == "RGBA" and sorted(p.name for p in cut.parent.iterdir()) == \
        ["cup.json", "cup.png", "cup_mask.png"]
    code, _, err = run(capsys, "edit", "cutout", files["image"], "--mask", files["mask"], "--out", tmp_path / "cf")
    assert code == 0, err
    assert Image.open(tmp_path / "cf" / "photo_cutout.png").mode == "RGBA"


def test_compose_prints_the_pairs_and_edits_in_turn(capsys, files, tmp_path, monkeypatch):
    import anyseg.tasks.edit as task

    _, box = scene()
    sky = np.zeros((H, W), bool)
    sky[:8] = True
    asked = []

    def segmenter(model="auto", device=None, **kw):
        def segment(image, phrase):
            asked.append(phrase)
            return {"the box": box, "the sky": sky}.get(phrase, np.zeros((H, W), bool))
        return segment

    monkeypatch.setattr(task, "text_segmenter", segmenter)
    code, stdout, err = run(capsys, "edit", "compose", files["image"], "--prompt",
                            "replace the box with a vase and make the sky a sunset", "--engine", "fakegen",
                            "--out", tmp_path / "c", "--json")
    assert code == 0, err
    assert "1. 'the box' -> 'a vase'" in err and "2. 'the sky' -> 'a sunset'" in err and asked == ["the box", "the sky"]
    record = json.loads(stdout)
    assert [(s["target"], s["prompt"]) for s in record["steps"]] == [("the box", "a vase"), ("the sky", "a sunset")]
    steps = tmp_path / "steps.json"
    steps.write_text(json.dumps([{"target": "the box", "op": "remove"}]))
    code, stdout, err = run(capsys, "edit", "compose", files["image"], "--instructions", steps, "--engine", "fake",
                            "--out", tmp_path / "c2", "--json")
    assert code == 0, err
    assert json.loads(stdout)["steps"][0]["operation"] == "remove"
    code, _, err = run(capsys, "edit", "compose", files["image"], "--prompt", "remove the cat", "--engine", "fake",
                       "--out", tmp_path / "c3")
    assert err.startswith("anyseg: edit 1. remove 'the cat'\n")  # the steps first, then one error line
    assert_one_line_error(code, err.split("\n", 1)[1], "nothing matching 'the cat'")


def test_compose_and_text_without_a_text_model_say_what_to_pull(capsys, files, tmp_path):
    code, _, err = run(capsys, "edit", "compose", files["image"], "--prompt", "remove the box", "--engine", "fake",
                       "--out", tmp_path / "o")
    assert err.startswith("anyseg: edit 1. remove 'the box'\n")
    assert_one_line_error(code, err.split("\n", 1)[1], "anyseg models pull grounding-dino-tiny")
    code, _, err = run(capsys, "edit", "remove", files["image"], "--text", "the box", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "needs a text model")
    assert not (tmp_path / "o").exists()


def test_bad_input_is_one_line_and_writes_nothing(capsys, files, tmp_path):
    out = tmp_path / "bad"
    m = ["--mask", files["mask"]]
    cases = [
        ([], "no mask"),
        ([*m, "--box", "1,1,9,9"], "give one mask source"),
        (["--mask", files["empty"]], "empty"),
        (["--mask", files["full"]], "whole image"),
        (["--mask", files["small"]], "but the image is 96x64"),
        ([*m, "--engine", "nope"], "unknown edit engine 'nope'"),
        ([*m, "--engine", "fakegen"], "give --prompt"),
        ([*m, "--engine", "fake", "--steps", "3"], "--steps apply to generative engines"),
        ([*m, "--point", "1,1"], "give one mask source"),
        (["--point", "5,x"], "malformed point"),
        ([*m, "--dilate", "-1"], "--dilate"),
        ([*m, "--device", "tpu"], "tpu"),
    ]
    for extra, fragment in cases:
        code, _, err = run(capsys, "edit", "remove", files["image"], *extra, "--out", out)
        assert_one_line_error(code, err, fragment)
    code, _, err = run(capsys, "edit", "remove", files["image"], *m, "--out", files["image"])
    assert_one_line_error(code, err, "is the input image")
    code, _, err = run(capsys, "edit", "fill", files["image"], *m, "--engine", "fakegen", "--out", out)
    assert_one_line_error(code, err, "give --prompt")
    code, _, err = run(capsys, "edit", "fill", files["image"], *m, "--out", out)  # sd: refused before it loads
    assert_one_line_error(code, err, "fill: give --prompt TEXT for the sd engine")
    code, _, err = run(capsys, "edit", "replace", files["image"], *m, "--out", out)
    assert_one_line_error(code, err, "--blur R, --color R,G,B or --background IMG")
    code, _, err = run(capsys, "edit", "replace", files["image"], *m, "--blur", "3", "--color", "1,2,3", "--out", out)
    assert_one_line_error(code, err, "exactly one of")
    code, _, err = run(capsys, "edit", "replace", files["image"], *m, "--color", "red", "--out", out)
    assert_one_line_error(code, err, "--color must be R,G,B")
    code, _, err = run(capsys, "edit", "style", files["image"], *m, "--style", files["broken"], "--out", out)
    assert_one_line_error(code, err, "--style: cannot read the style image")
    code, _, err = run(capsys, "edit", "compose", files["image"], "--out", out)
    assert_one_line_error(code, err, "--prompt")
    code, _, err = run(capsys, "edit", "compose", files["image"], "--prompt", "paint it", "--out", out)
    assert_one_line_error(code, err, "cannot read 'paint it'")
    assert not out.exists() and files["image"].read_bytes() == files["image"].read_bytes()


def test_remove_video_tracks_then_removes_every_frame(capsys, tmp_path, monkeypatch):
    folder = tmp_path / "clip"
    folder.mkdir()
    img, _ = scene()
    for k in range(3):
        frame = img.copy()
        frame[20:40, 30:60] = img[0, 0]
        frame[20:40, 30 + 4 * k:54 + 4 * k] = (250, 20, 20)
        Image.fromarray(frame).save(folder / f"{k:03d}.png")
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "edit", "remove-video", folder, "--prompt", "0:box=28,18,56,42", "--model",
                            "classical", "--engine", "fake", "--dilate", "2", "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["frames"] == 3 and summary["engine"] == "fake" and summary["tracker"] == "classical"
    record = json.loads((out / "clip.json").read_text())
    assert record["operation"] == "remove-video" and record["num_frames"] == 3 and len(record["frames"]) == 3
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert (out / "clip_edited.mp4").stat().st_size > 0 and (out / "track" / "tracks.json").is_file()
    assert all(f["frame"] == k and "mask" in f for k, f in enumerate(record["frames"]))
    code, _, err = run(capsys, "edit", "remove-video", folder, "--prompt", "0:box=28,18,56,42", "--engine", "fakegen",
                       "--out", tmp_path / "g")
    assert_one_line_error(code, err, "non-generative engine")
    code, _, err = run(capsys, "edit", "remove-video", folder, "--out", tmp_path / "g")
    assert_one_line_error(code, err, "no prompt")


def test_style_and_remove_video_with_the_real_modules(capsys, files, tmp_path):
    """The classical style engine and flow-guided video removal with telea, end to end."""
    code, stdout, err = run(capsys, "edit", "style", files["image"], "--mask", files["mask"], "--style", files["jpg"],
                            "--out", tmp_path / "s", "--json")
    assert code == 0, err
    record, mask = json.loads(stdout), scene()[1]
    edited = np.asarray(Image.open(tmp_path / "s" / "photo_edited.png"))
    used = np.asarray(Image.open(tmp_path / "s" / "photo_mask.png")) > 0
    assert record["task"] == "edit" and np.array_equal(edited[~used], scene()[0][~used]) and used[mask].all()
    folder = tmp_path / "clip"
    folder.mkdir()
    img, _ = scene()
    for k in range(3):
        Image.fromarray(np.roll(img, 3 * k, axis=1)).save(folder / f"{k:03d}.png")
    code, stdout, err = run(capsys, "edit", "remove-video", folder, "--prompt", "0:box=28,18,62,42", "--model",
                            "classical", "--out", tmp_path / "v", "--json")
    assert code == 0, err
    record = json.loads((tmp_path / "v" / "clip.json").read_text())
    assert record["engine"] == "telea" and [f["frame"] for f in record["frames"]] == [0, 1, 2]

"""``anyseg fewshot`` end to end with the classical method: files, a folder, a video, --json,
bad input (one line, exit 2) and earlier results kept when a run fails."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from cli_helpers import assert_one_line_error, run

from test_fewshot_api import H, W, scene


def save(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A reference (image + mask), two target images with coins, a folder, a 3-frame video."""
    root = tmp_path_factory.mktemp("fewshot")
    img, gts = scene([(80, 90, "cat", 0.0)])
    out = {"ref": save(root / "ref.png", img), "mask": save(root / "ref_mask.png", gts[0].astype(np.uint8) * 255)}
    folder = root / "folder"
    folder.mkdir()
    for name, coins in (("b10", [(70, 70, "cat", 0.0), (230, 160, "cat", 45.0)]), ("b2", [(160, 120, "cat", -30.0)])):
        out[name] = save(folder / f"{name}.png", scene(coins)[0])
    (folder / "notes.txt").write_text("not an image")
    out["folder"] = folder
    out["single"] = save(root / "single.jpg", scene([(200, 100, "cat", 10.0)])[0])
    video = root / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (W, H))
    for k in range(3):
        writer.write(scene([(70 + 50 * k, 100, "cat", 15.0 * k)])[0][..., ::-1])
    writer.release()
    out["video"] = video
    return out


def ref_args(files: dict[str, Path]) -> list[Path | str]:
    return ["--ref", files["ref"], "--ref-mask", files["mask"], "--method", "classical"]


def test_files_and_folder_write_masks_overlays_and_json(capsys, files, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "fewshot", files["single"], files["folder"], *ref_args(files),
                            "--instances", "all", "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["task"] == "fewshot" and summary["method"] == "classical" and summary["instances"] == "all"
    assert summary["num_targets"] == 3
    assert [Path(r["image"]).name for r in summary["results"]] == ["single.jpg", "b2.png", "b10.png"]  # natural order
    assert summary["references"] == [{"image": str(files["ref"]), "mask": str(files["mask"]), "image_size": [H, W],
                                      "area": int(np.asarray(Image.open(files["mask"])).astype(bool).sum())}]
    counts = {Path(r["image"]).stem: r["num_masks"] for r in summary["results"]}
    assert counts == {"single": 1, "b2": 1, "b10": 2}
    for record in summary["results"]:
        stem = Path(record["image"]).stem
        assert json.loads((out / f"{stem}.json").read_text()) == record
        assert (out / record["overlay_png"]).is_file() and record["image_size"] == [H, W]
        for m in record["masks"]:
            png = np.asarray(Image.open(out / m["mask_png"])) > 0
            rle = dict(m["rle"], counts=m["rle"]["counts"].encode())
            assert np.array_equal(mask_utils.decode(rle).astype(bool), png)
            assert 0.5 < m["score"] <= 1 and m["details"]["source"] in ("keypoints", "colour")
            assert m["area"] == int(png.sum())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_video_is_per_frame_with_one_json(capsys, files, tmp_path):
    out = tmp_path / "vid"
    code, stdout, err = run(capsys, "fewshot", files["video"], *ref_args(files), "--out", out)
    assert code == 0, err
    assert stdout == "" and "3 mask(s) in 1 target(s) from classical" in err
    record = json.loads((out / "clip.json").read_text())
    assert record["video"] == str(files["video"]) and record["num_frames"] == 3 and len(record["frames"]) == 3
    for i, frame in enumerate(record["frames"]):
        assert frame["frame"] == i and frame["num_masks"] == 1
        assert frame["masks"][0]["mask_png"] == f"clip_{i:05d}_mask0.png"
        assert (out / f"clip_{i:05d}_mask0.png").is_file() and (out / f"clip_{i:05d}_overlay.png").is_file()
    boxes = [f["masks"][0]["box"] for f in record["frames"]]
    assert boxes[0][0] < boxes[1][0] < boxes[2][0]  # the coin moves right: found anew on every frame


def test_no_instance_found_writes_an_empty_record(capsys, files, tmp_path):
    empty = save(tmp_path / "empty.png", scene([])[0])
    code, stdout, err = run(capsys, "fewshot", empty, *ref_args(files), "--instances", "all", "--out", tmp_path / "o",
                            "--json")
    assert code == 0, err
    record = json.loads(stdout)["results"][0]
    assert record["num_masks"] == 0 and record["masks"] == [] and (tmp_path / "o" / "empty_overlay.png").is_file()


# -- bad input: one line, exit 2 -------------------------------------------------------------------

@pytest.fixture()
def bad(files, tmp_path) -> dict[str, Path]:
    blank = np.zeros((H, W), np.uint8)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "readme.txt").write_text("x")
    return {"empty": save(tmp_path / "empty_mask.png", blank), "full": save(tmp_path / "full_mask.png", blank + 255),
            "small": save(tmp_path / "small_mask.png", blank[:100, :100]), "corrupt": corrupt,
            "no_images": tmp_path / "no_images"}


@pytest.mark.parametrize("case, fragments", [
    ("empty mask", ["reference mask", "empty_mask.png is empty"]),
    ("full mask", ["full_mask.png covers the whole image"]),
    ("wrong size", ["small_mask.png is 100x100 but the image is 320x240"]),
    ("counts", ["each --ref needs its --ref-mask: got 2 --ref and 1 --ref-mask"]),
    ("no ref", ["no reference: give --ref IMAGE --ref-mask PNG"]),
    ("no targets", ["the following arguments are required: TARGET"]),
    ("missing target", ["target not found:", "nowhere.png"]),
    ("missing ref", ["reference image not found:", "nowhere.png"]),
    ("corrupt target", ["corrupt.png"]),
    ("corrupt ref", ["corrupt.png"]),
    ("unknown method", ["unknown few-shot method 'magic'"]),
    ("empty folder", ["folder", "no_images has no images"]),
    ("model for classical", ["the classical few-shot method uses no model"]),
    ("features for classical", ["uses no feature model"]),
    ("instances", ["invalid choice: 'some'"]),
    ("same stems", ["would write the same files (b2.json)"]),
])
def test_bad_input_is_one_line(capsys, files, bad, tmp_path, case, fragments):
    ref = ["--ref", files["ref"], "--ref-mask", files["mask"]]
    target = [files["single"]]
    argv = {
        "empty mask": [*target, "--ref", files["ref"], "--ref-mask", bad["empty"], "--method", "classical"],
        "full mask": [*target, "--ref", files["ref"], "--ref-mask", bad["full"], "--method", "classical"],
        "wrong size": [*target, "--ref", files["ref"], "--ref-mask", bad["small"], "--method", "classical"],
        "counts": [*target, *ref, "--ref", files["ref"], "--method", "classical"],
        "no ref": [*target, "--method", "classical"],
        "no targets": [*ref, "--method", "classical"],
        "missing target": [tmp_path / "nowhere.png", *ref, "--method", "classical"],
        "missing ref": [*target, "--ref", tmp_path / "nowhere.png", "--ref-mask", files["mask"], "--method", "classical"],
        "corrupt target": [bad["corrupt"], *ref, "--method", "classical"],
        "corrupt ref": [*target, "--ref", bad["corrupt"], "--ref-mask", files["mask"], "--method", "classical"],
        "unknown method": [*target, *ref, "--method", "magic"],
        "empty folder": [bad["no_images"], *ref, "--method", "classical"],
        "model for classical": [*target, *ref, "--method", "classical", "--model", "sam-vit-base"],
        "features for classical": [*target, *ref, "--method", "classical", "--features", "dinov2-small"],
        "instances": [*target, *ref, "--method", "classical", "--instances", "some"],
        "same stems": [files["b2"], files["folder"], *ref, "--method", "classical"],
    }[case]
    code, stdout, err = run(capsys, "fewshot", *argv, "--out", tmp_path / "out")
    assert_one_line_error(code, err, *fragments)
    assert stdout == ""
    if case != "corrupt target":
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # checked before any work


# -- earlier results are kept when a run fails -------------------------------------------------------

def test_earlier_results_kept_on_failure(capsys, files, tmp_path, monkeypatch):
    out = tmp_path / "out"
    target = save(tmp_path / "t.png", np.asarray(Image.open(files["single"])))
    code, _, err = run(capsys, "fewshot", target, *ref_args(files), "--out", out)
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"t.json", "t_mask0.png", "t_overlay.png"} <= set(before)

    import anyseg.io.export as export

    def broken(*args, **kwargs):  # the disk fills up after the mask PNGs were written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "save_overlay_png", broken)
    flipped = save(target, np.ascontiguousarray(np.asarray(Image.open(files["single"]))[:, ::-1]))
    code, _, err = run(capsys, "fewshot", flipped, *ref_args(files), "--out", out)
    assert code == 1 and "No space left on device" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the first run's files, untouched
    monkeypatch.undo()

    target.write_bytes(b"not an image at all")  # a target that cannot be read: one line, nothing replaced
    code, _, err = run(capsys, "fewshot", target, *ref_args(files), "--out", out)
    assert_one_line_error(code, err, "t.png")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

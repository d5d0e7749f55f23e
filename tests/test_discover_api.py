"""``anyseg.discover`` (Discoverer, discover, snapping to SAM) and ``anyseg discover`` end to end,
with stand-in methods registered through the users' registry (the methods' own tests are
``test_discover_*.py``): files, the record, partitions and clustering, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anyseg.discover import Discoverer, discover
from anyseg.discover.base import METHODS, check_grid, check_objects, register_method
from anyseg.discover.snap import interior_point, snap_to_sam
from anyseg.errors import InputError
from anyseg.types import Masks

from cli_helpers import assert_one_line_error, run

H, W = 64, 96


def square_image() -> tuple[np.ndarray, np.ndarray]:
    img = np.full((H, W, 3), 30, np.uint8)
    gt = np.zeros((H, W), bool)
    gt[16:48, 24:72] = True
    img[gt] = (220, 180, 40)
    return img, gt


class FakeObjects:
    """A stand-in ``objects`` method: the bright pixels, and a coarse (padded) copy as a second object."""

    name, kind, model_id = "fake-objects", "objects", "fake-objects:v1"
    calls = 0

    @classmethod
    def from_options(cls, model=None, device=None, allow_download=True, **options):
        if options:
            raise InputError(f"fake-objects takes no options; got {sorted(options)}")
        return cls()

    def discover(self, image, objects=None):
        type(self).calls += 1
        fg = image.sum(axis=2) > 300
        coarse = np.zeros_like(fg)
        ys, xs = np.nonzero(fg)
        coarse[max(0, ys.min() - 4):ys.max() + 5, max(0, xs.min() - 4):xs.max() + 5] = True
        masks = np.stack([fg, coarse])[: objects or 2]
        return Masks(masks=masks, scores=np.array([0.9, 0.4], np.float32)[: len(masks)])


class FakePartition:
    """A stand-in ``partition`` method: left / right halves, their mean colour as the feature."""

    name, kind, model_id = "fake-partition", "partition", "fake-partition"

    @classmethod
    def from_options(cls, model=None, device=None, allow_download=True, **options):
        return cls()

    def discover(self, image, objects=None):
        left = np.zeros(image.shape[:2], bool)
        left[:, : image.shape[1] // 2] = True
        masks = np.stack([left, ~left])
        feats = np.stack([image[m].mean(axis=0) for m in masks]).astype(np.float32)
        return Masks(masks=masks, scores=np.array([0.5, 0.5], np.float32), labels=np.array([0, 1]),
                     data={"feature": feats})


@pytest.fixture(autouse=True)
def fakes():
    register_method("fake-objects", FakeObjects.from_options, replace=True)
    register_method("fake-partition", FakePartition.from_options, replace=True)
    yield
    METHODS.pop("fake-objects", None)
    METHODS.pop("fake-partition", None)


def test_discoverer_runs_the_method_and_names_what_computed_it():
    img, gt = square_image()
    d = Discoverer("fake-objects")
    assert (d.name, d.kind) == ("fake-objects", "objects") and d.model_id == "fake-objects:fake-objects:v1"
    masks = d.discover(img)
    assert masks.masks.shape == (2, H, W) and np.array_equal(masks.masks[0], gt)
    assert len(discover(img, method="fake-objects", objects=1)) == 1


@pytest.mark.parametrize("kwargs, fragment", [
    ({"method": "nope"}, "unknown discovery method 'nope'"),
    ({"method": "fake-objects", "refine": "blur"}, "refine must be one of none, crf, bilateral"),
    ({"method": "fake-partition", "sam": "classical"}, "fake-partition returns a partition"),
    ({"method": "fake-objects", "tau": 0.3}, "takes no options"),
])
def test_discoverer_errors_are_one_line(kwargs, fragment):
    with pytest.raises(InputError) as e:
        Discoverer(**kwargs)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_objects_and_grid_checks():
    assert check_objects(None, 3) == 3 and check_objects(5, 3) == 5
    for bad in (0, -1, 65, 2.5, True, "3"):
        with pytest.raises(InputError):
            check_objects(bad, 3)
    check_grid((32, 32), 16)
    with pytest.raises(InputError, match="too small for the patch grid"):
        check_grid((20, 300), 16)


def test_interior_point_is_inside_a_concave_mask():
    m = np.zeros((40, 40), bool)
    m[5:35, 5:12] = m[28:35, 5:35] = True  # an L: its box centre is outside it
    x, y = interior_point(m)
    assert m[int(y), int(x)]


def test_snap_to_sam_keeps_the_agreeing_candidate_and_refuses_a_different_object():
    from anyseg.models import load_model

    img, gt = square_image()
    coarse = np.zeros_like(gt)
    coarse[12:52, 20:76] = True  # the object padded by 4 pixels: what a 16-pixel patch grid gives
    elsewhere = np.zeros_like(gt)
    elsewhere[2:10, 2:10] = True  # background only
    sam = load_model("classical")
    out = snap_to_sam(sam, img, Masks(masks=np.stack([coarse, elsewhere]), scores=np.array([0.8, 0.6], np.float32)))
    iou = (out.masks[0] & gt).sum() / (out.masks[0] | gt).sum()
    assert out.data["snapped"][0] and iou > 0.9  # sharper than the coarse mask (IoU 0.69)
    assert out.data["agreement"][0] > 0.5 and 0.4 <= out.scores[0] <= 0.8
    assert 0.0 <= out.scores[1] <= 0.6 and out.masks.shape == (2, H, W)


# -- the command ------------------------------------------------------------------------------
@pytest.fixture()
def folder(tmp_path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    img, _ = square_image()
    Image.fromarray(img).save(d / "a.png")
    Image.fromarray(img[:, ::-1].copy()).save(d / "b10.png")
    Image.fromarray(np.roll(img, 10, axis=0)).save(d / "b2.png")
    return d


def test_cli_objects_writes_masks_overlay_and_record(capsys, tmp_path, folder):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "discover", folder, "--method", "fake-objects", "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["num_targets"] == 3 and summary["num_masks"] == 6 and summary["kind"] == "objects"
    assert [Path(r["image"]).name for r in summary["results"]] == ["a.png", "b2.png", "b10.png"]
    rec = json.loads((out / "a.json").read_text())
    assert rec["task"] == "discover" and rec["method"] == "fake-objects" and rec["refine"] == "none"
    assert rec["masks"][0]["score"] == pytest.approx(0.9) and (out / "a_overlay.png").is_file()
    assert np.array_equal(np.asarray(Image.open(out / rec["masks"][0]["mask_png"])) > 0, square_image()[1])


def test_cli_partition_writes_segments_and_clusters_across_images(capsys, tmp_path, folder):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "discover", folder, "--method", "fake-partition", "--clusters", "2", "--out", out,
                            "--json")
    assert code == 0, err
    seg = np.asarray(Image.open(out / "a_segments.png"))
    assert set(np.unique(seg)) == {1, 2}
    recs = {n: json.loads((out / f"{n}.json").read_text()) for n in ("a", "b2", "b10")}
    clusters = {n: [m["cluster"] for m in r["masks"]] for n, r in recs.items()}
    # a's right half and b10's left half (the mirror image) hold the object: the same cluster
    assert clusters["a"][1] == clusters["b10"][0] and clusters["a"][0] == clusters["b10"][1]
    assert np.asarray(Image.open(out / recs["a"]["clusters_png"])).max() <= 2


@pytest.mark.parametrize("argv, fragment", [
    (["--method", "nope"], "unknown discovery method"),
    (["--method", "fake-objects", "--objects", "0"], "--objects must be in 1..64"),
    (["--method", "fake-objects", "--clusters", "2"], "finds objects, not a partition"),
    (["--method", "fake-objects", "--mode", "partition"], "--mode applies to --method classical"),
    (["--method", "fake-partition", "--clusters", "0"], "--clusters must be a positive"),
    (["--method", "fake-partition", "--clusters", "99"], "--clusters must be in 1..6"),
])
def test_cli_errors_are_one_line(capsys, tmp_path, folder, argv, fragment):
    code, _, err = run(capsys, "discover", folder, *argv, "--out", tmp_path / "out")
    assert_one_line_error(code, err, fragment)


def test_cli_refuses_videos_and_missing_targets_before_any_work(capsys, tmp_path, folder):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 16)
    FakeObjects.calls = 0
    code, _, err = run(capsys, "discover", folder, video, "--method", "fake-objects", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "is a video: discovery runs per image")
    code, _, err = run(capsys, "discover", tmp_path / "missing.png", "--method", "fake-objects", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "target not found")
    assert FakeObjects.calls == 0

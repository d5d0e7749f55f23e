"""``anyseg everything``: outputs and bad parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from anyseg.cli import main
from cli_helpers import run

from _bounds import bound_error
from tiny_models import build_sam2


@pytest.fixture()
def image_path(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 40, (96, 128, 3)).astype(np.uint8)
    img[20:60, 20:60] = (200, 60, 60)
    img[30:80, 80:120] = (40, 200, 90)
    path = tmp_path / "shapes.png"
    Image.fromarray(img).save(path)
    return path


def test_classical_everything_writes_indexed_png_overlay_and_coco(capsys, image_path, tmp_path):
    out = tmp_path / "o"
    code, stdout, err = run(capsys, "everything", image_path, "--model", "classical", "--granularity", "whole",
                            "--per-mask", "--out", out, "--json")
    assert code == 0, err
    record = json.loads(stdout)
    n = record["num_masks"]
    assert n >= 3 and record["model"] == "classical"
    ids = np.array(Image.open(out / "shapes_ids.png"))
    assert ids.shape == (96, 128) and 1 <= ids.max() <= n
    assert len(record["files"]["mask_pngs"]) == n
    coco = COCO(str(out / "shapes_coco.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == n
    first = np.array(Image.open(out / record["files"]["mask_pngs"][0])) > 127
    assert (coco.annToMask(anns[0]).astype(bool) == first).all()
    areas = [m["area"] for m in record["masks"]]
    assert areas == sorted(areas, reverse=True)
    # the record says what the classical generator used, none of SAM's parameters it ignores
    params = record["params"]
    assert params["engine"] == "classical" and params["granularity"] == "whole" and params["min_area"] == 0
    assert "points_per_side" not in params and "pred_iou_thresh" not in params
    assert record["overlay"] == {"drawn": n, "skipped_whole_image": 0}
    assert np.asarray(Image.open(out / "shapes_overlay.png")).shape == (96, 128, 3)


def test_sam2_everything_through_weights(capsys, image_path, tmp_path):
    folder = build_sam2(tmp_path / "sam2")
    code, stdout, err = run(capsys, "everything", image_path, "--model", "sam2.1-hiera-tiny", "--weights", folder,
                            "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0",
                            "--device", "cpu", "--out", tmp_path / "o", "--json")
    assert code == 0, err
    record = json.loads(stdout)
    assert record["params"]["pred_iou_thresh"] == 0 and record["params"]["points_per_side"] == 4
    assert record["num_masks"] >= 1 and (tmp_path / "o" / "shapes_overlay.png").is_file()
    assert record["overlay"]["drawn"] + record["overlay"]["skipped_whole_image"] <= record["num_masks"]


@pytest.mark.parametrize("args, fragment", [
    (["--points-per-side", "0"], bound_error("--points-per-side")),
    (["--pred-iou-thresh", "1.5"], "--pred-iou-thresh"),
    (["--stability-thresh", "-0.1"], "--stability-thresh"),
    (["--min-area", "-5"], "--min-area must be an integer >= 0"),
    (["--crop-layers", "-1"], bound_error("--crop-layers")),
    (["--granularity", "tiny"], "invalid choice"),
])
def test_bad_parameters_are_one_line_errors(capsys, image_path, tmp_path, args, fragment):
    code, _, err = run(capsys, "everything", image_path, "--model", "classical", *args, "--out", tmp_path / "o")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anyseg: error:") and fragment in lines[0]
    assert not (tmp_path / "o").exists()


def test_classical_says_which_sam_options_it_ignores(capsys, image_path, tmp_path):
    assert main(["everything", str(image_path), "--model", "classical", "--points-per-side", "8", "--use-m2m",
                 "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "ignore --points-per-side, --use-m2m" in err
    assert main(["everything", str(image_path), "--model", "classical", "--out", str(tmp_path / "p")]) == 0
    assert "ignore" not in capsys.readouterr().err

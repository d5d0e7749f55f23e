"""``anyseg eval volume``: label volumes from files (``--pred --gt``), a model prompted from the
ground truth on volumes (first-slice, middle-slice, box3d) and on 2D medical images (box).

Phantoms are built here: ellipsoids in an anisotropic, obliquely oriented volume, written with
:func:`anyseg.volume.io.save_labels` and read back through :func:`anyseg.volume.io.load_volume`,
the path users take.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anyseg.eval import volume_metrics as vm
from cli_helpers import one_line, run

pytest.importorskip("nibabel")
SHARED_KVASIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "kvasir"
SPACING = (0.8, 0.9, 2.5)  # (si, sj, sk) mm
SHAPE = (12, 40, 44)  # (K, J, I)


def _rotation(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def like(shape=SHAPE, spacing=SPACING, origin=(-10.0, 20.0, 5.0)):
    from anyseg.volume.base import Volume

    return Volume(np.zeros(shape, np.uint8), spacing=spacing, origin=origin, direction=_rotation(20))


def ellipsoid(centre, radii, shape=SHAPE) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def phantom_labels(shift: int = 0) -> np.ndarray:
    """Two truncated ellipsoids (their end slices are discs, not points: a box prompt there means something)."""
    labels = np.zeros(SHAPE, np.uint8)
    k = np.arange(SHAPE[0])[:, None, None]
    labels[ellipsoid((6, 14, 14 + shift), (5, 7, 8)) & (k >= 2) & (k <= 10)] = 1
    labels[ellipsoid((5, 26, 30 + shift), (4, 6, 6)) & (k >= 2) & (k <= 8)] = 2
    return labels


def save(arr: np.ndarray, path: Path, ref=None) -> Path:
    from anyseg.volume.io import save_labels

    path.parent.mkdir(parents=True, exist_ok=True)
    return save_labels(arr, ref or like(), path)


@pytest.fixture()
def pairs(tmp_path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    save(phantom_labels(), gt / "case1.nii.gz")
    save(phantom_labels(shift=1), pred / "case1.nii.gz")
    other = phantom_labels()
    other[other == 2] = 0  # object 2 missed
    save(phantom_labels(), gt / "case2.nrrd")
    save(other, pred / "case2.mha")  # paired by stem across formats
    return pred, gt


def test_volume_is_an_eval_kind():
    from anyseg.eval import cli as eval_cli

    assert eval_cli.KINDS[-1] == "volume" and isinstance(eval_cli.PROTOCOLS[-1], eval_cli.VolumeProtocol)


def test_pred_gt_scores_every_object_in_mm_and_resumes(capsys, pairs, tmp_path):
    pred, gt = pairs
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "eval", "volume", "--pred", pred, "--gt", gt, "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)["summary"]
    records = {r["name"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines()[1:])
               if "name" in r}
    spacing = tuple(reversed(SPACING))  # per array axis (k, j, i)
    want = vm.score_object(phantom_labels(shift=1) == 1, phantom_labels() == 1, spacing, 2.0).to_record()
    assert records["case1"]["objects"]["1"] == want
    assert records["case1"]["spacing"] == list(spacing)
    missed = records["case2"]["objects"]["2"]
    assert missed["dice"] == 0.0 and missed["nsd"] == 0.0 and missed["hd95"] is None and missed["pred_voxels"] == 0
    assert records["case2"]["objects"]["1"]["dice"] == 1.0
    assert summary["num_cases"] == 2 and summary["num_objects"] == 4 and summary["hd95_nonfinite"] == 1
    finite = [records["case1"]["objects"][k]["hd95"] for k in "12"] + [0.0]
    assert summary["mean_hd95"] == pytest.approx(np.mean(finite), abs=1e-4)
    assert summary["per_object"]["2"]["num_cases"] == 2 and summary["per_object"]["2"]["hd95_nonfinite"] == 1
    assert summary["tolerance_mm"] == 2.0 and "dice[1]" in summary
    lines = (out / "results.jsonl").read_text().splitlines()
    code, stdout2, err = run(capsys, "eval", "volume", "--pred", pred, "--gt", gt, "--out", out, "--json")
    assert code == 0, err
    kept = (out / "results.jsonl").read_text().splitlines()
    assert [ln for ln in kept if '"run"' not in ln] == [ln for ln in lines if '"run"' not in ln]  # nothing rescored
    assert {k: v for k, v in json.loads(stdout2)["summary"].items() if "peak" not in k} == \
        {k: v for k, v in summary.items() if "peak" not in k}
    assert (out / "report.md").exists()


def test_labels_option_scores_absent_and_false_positive_objects(capsys, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    labels = phantom_labels()
    save(labels, gt / "a.nii.gz")
    fp = labels.copy()
    fp[0, :3, :3] = 3  # an object the ground truth does not have
    save(fp, pred / "a.nii.gz")
    code, stdout, err = run(capsys, "eval", "volume", "--pred", pred, "--gt", gt, "--labels", "1,3,4",
                            "--tolerance", "1", "--out", tmp_path / "o", "--json")
    assert code == 0, err
    rec = json.loads((tmp_path / "o" / "results.jsonl").read_text().splitlines()[1])
    assert set(rec["objects"]) == {"1", "3"} and rec["absent"] == [4] and rec["extra_pred_ids"] == [2]
    assert rec["objects"]["3"]["dice"] == 0.0 and rec["objects"]["3"]["gt_voxels"] == 0
    assert json.loads(stdout)["summary"]["tolerance_mm"] == 1.0


def test_geometry_mismatch_and_missing_files_are_one_line_errors(capsys, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    save(phantom_labels(), gt / "a.nii.gz")
    save(phantom_labels(), pred / "a.nii.gz", ref=like(spacing=(0.8, 0.9, 3.0)))
    code, _, err = run(capsys, "eval", "volume", "--pred", pred, "--gt", gt, "--out", tmp_path / "o")
    assert code != 0
    one_line(err, "a.nii.gz", "differ in geometry", "spacing")
    save(phantom_labels(), gt / "b.nii.gz")
    code, _, err = run(capsys, "eval", "volume", "--pred", pred, "--gt", gt, "--out", tmp_path / "o2")
    one_line(err, "no prediction for b.nii.gz")


@pytest.mark.parametrize("argv,fragment", [
    (["--pred", "p"], "--pred and --gt go together"),
    (["--pred", "p", "--gt", "g", "--model", "classical"], "either --pred DIR --gt DIR"),
    ([], "either --pred DIR --gt DIR"),
    (["--model", "classical"], "--model and --data go together"),
    (["--pred", "p", "--gt", "g", "--tolerance", "-1"], "tolerance"),
    (["--pred", "p", "--gt", "g", "--tolerance", "nan"], "tolerance"),
    (["--pred", "p", "--gt", "g", "--labels", "1,x"], "--labels"),
    (["--pred", "p", "--gt", "g", "--labels", "0"], "--labels"),
    (["--pred", "p", "--gt", "g", "--axis", "up"], "--axis"),
    (["--pred", "p", "--gt", "g", "--prompt-protocol", "box3d"], "--prompt-protocol applies"),
    (["--pred", "p", "--gt", "g", "--weights", "w"], "apply to --model"),
    (["--model", "classical", "--data", "d", "--window", "0,255"], "positive width"),
    (["--model", "classical", "--data", "d", "--window", "soft"], "--window must be one of"),
])
def test_bad_options_are_one_line_errors_before_anything_is_read(capsys, tmp_path, argv, fragment):
    code, _, err = run(capsys, "eval", "volume", *argv, "--out", tmp_path / "o")
    assert code != 0
    one_line(err, fragment)
    assert not (tmp_path / "o").exists()


@pytest.fixture()
def scans(tmp_path) -> Path:
    """images/ + labels/: one CT-like phantom (bright ellipsoids on a noisy dark background)."""
    root = tmp_path / "scans"
    labels = phantom_labels()
    rng = np.random.default_rng(0)
    image = (60 + 20 * rng.standard_normal(SHAPE) + 90 * (labels == 1) + 70 * (labels == 2)).clip(0, 255)
    save(image.astype(np.uint8), root / "images" / "ct1.nii.gz")
    save(labels, root / "labels" / "ct1.nii.gz")
    return root


@pytest.mark.parametrize("protocol", ["first-slice", "middle-slice", "box3d"])
def test_model_on_volumes_prompted_from_the_ground_truth(capsys, scans, tmp_path, protocol):
    out = tmp_path / protocol
    code, stdout, err = run(capsys, "eval", "volume", "--model", "classical", "--data", scans, "--prompt-protocol",
                            protocol, "--window", "255,128", "--out", out, "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["header"]["prompt_protocol"] == protocol and result["header"]["model"] == "classical"
    rec = json.loads((out / "results.jsonl").read_text().splitlines()[1])
    prompts = rec["prompts"]
    if protocol == "box3d":
        assert prompts["1"]["box3d"] == [6.0, 7.0, 2.0, 23.0, 22.0, 10.0]  # x0, y0, z0, x1, y1, z1 (z inclusive)
    else:
        assert prompts["1"]["slice"] == {"first-slice": 2, "middle-slice": 6}[protocol]
    for obj in ("1", "2"):
        s = rec["objects"][obj]
        assert 0.0 <= s["nsd"] <= 1.0 and s["dice"] >= 0.75, (obj, s)
    assert rec["seconds"] >= 0 and result["summary"]["num_objects"] == 2


def test_object_prompts_along_other_axes():
    from anyseg.eval.volume import object_prompt

    m = ellipsoid((6, 14, 14), (4, 7, 8))
    coronal = object_prompt(m, "middle-slice", 1)  # slices along j: rows k, columns i
    assert coronal["slice"] == 14 and coronal["box"] == [6.0, 2.0, 23.0, 11.0]
    sagittal = object_prompt(m, "box3d", 2)  # slices along i: rows k, columns j
    assert sagittal["box3d"] == [7.0, 2.0, 6.0, 22.0, 11.0, 22.0]


def _disc(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


@pytest.fixture()
def polyps(tmp_path) -> Path:
    """A Kvasir-like folder: images/ID.jpg + masks/ID.jpg (foreground > 127)."""
    root = tmp_path / "kvasir"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    for n, (cy, cx, r) in enumerate([(30, 40, 14), (40, 50, 18)]):
        disc = _disc(64, 96, cy, cx, r)
        image = np.stack([60 + 20 * rng.random((64, 96)) + 150 * disc] * 3, -1).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"p{n}.jpg", quality=95)
        Image.fromarray((disc * 255).astype(np.uint8)).save(root / "masks" / f"p{n}.jpg", quality=95)
    return root


def test_2d_medical_images_with_box_prompts(capsys, polyps, tmp_path):
    out = tmp_path / "o"
    code, stdout, err = run(capsys, "eval", "volume", "--model", "classical", "--data", polyps, "--prompt-protocol",
                            "box", "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)["summary"]
    assert summary["num_cases"] == 2 and summary["tolerance_px"] == 2.0
    recs = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()[1:]]
    recs = [r for r in recs if "name" in r]
    for r in recs:
        s = r["objects"]["1"]
        assert s["dice"] > 0.7 and 0 <= s["nsd"] <= 1 and s["hd95"] is not None and len(r["box"]) == 4
    assert summary["mean_dice"] == pytest.approx(np.mean([r["objects"]["1"]["dice"] for r in recs]), abs=1e-4)


@pytest.mark.skipif(not SHARED_KVASIR.is_dir(), reason="needs ../shared/data/kvasir")
def test_kvasir_with_the_classical_engine(capsys, tmp_path):
    code, stdout, err = run(capsys, "eval", "volume", "--model", "classical", "--data", SHARED_KVASIR,
                            "--prompt-protocol", "box", "--limit", "1", "--out", tmp_path / "k", "--json")
    assert code == 0, err
    summary = json.loads(stdout)["summary"]
    assert summary["num_cases"] == 1 and 0 < summary["mean_dice"] <= 1 and 0 <= summary["mean_nsd"] <= 1


def test_score_case_on_object_boxes_equals_the_whole_volume():
    """Each object is scored on its own box (plus one voxel): the same numbers as on the whole volume."""
    from anyseg.eval.volume import score_case

    gt = np.zeros((6, 20, 24), np.uint16)
    gt[:, :5, :7] = 7  # touching three borders
    gt[2:4, 10:15, 10:20] = 300
    pred = np.zeros_like(gt)
    pred[1:, :6, :6] = 7
    pred[2:5, 11:15, 12:22] = 300
    rec = score_case("c", pred, gt, (3.0, 0.7, 0.7), [7, 300], 1.5)
    for obj in (7, 300):
        assert rec["objects"][str(obj)] == vm.score_object(pred == obj, gt == obj, (3.0, 0.7, 0.7), 1.5).to_record()

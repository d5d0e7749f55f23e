"""What a new user meets first (issue 14): mask conventions, partial video results, and errors
and defaults that must not mislead."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anyseg.errors import InputError
from anyseg.eval import datasets
from anyseg.eval.report import format_table, format_value
from cli_helpers import run

from conftest import shared_dataset


def _disc(h: int = 40, w: int = 60, cy: int = 20, cx: int = 28, r: int = 12) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


def _image_with(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 50, (*mask.shape, 3)).astype(np.uint8)
    img[mask] = (230, 190, 40)
    return img


def _palette(ids: np.ndarray) -> Image.Image:
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12))
    return im


PROGRESS = re.compile(r"^\w+: +\d+%\|")  # a tqdm bar left by the run


def one_error_line(err: str, *parts: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert len(lines) == 1 and lines[0].startswith("anyseg: error: "), err
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


# -- item 7: the binary-mask rule -------------------------------------------------------------


DISC = _disc()


@pytest.mark.parametrize("name, values", [
    ("zero-one.png", DISC.astype(np.uint8)),
    ("zero-255.png", DISC.astype(np.uint8) * 255),
    ("zero-v.png", DISC.astype(np.uint8) * 37),
    ("zero-128.png", DISC.astype(np.uint8) * 128),  # two values: 128 is the object, not a void band
    ("rgb-equal.png", np.repeat(DISC[..., None].astype(np.uint8) * 255, 3, -1)),
    ("black-red.png", np.stack([DISC * 200, DISC * 0, DISC * 0], -1).astype(np.uint8)),
])
def test_two_valued_masks_read_their_non_zero_value_as_foreground(tmp_path, name, values):
    Image.fromarray(values).save(tmp_path / name)
    gt, ignore = datasets.read_binary_mask(tmp_path / name)
    np.testing.assert_array_equal(gt, DISC)
    assert ignore is None
    np.testing.assert_array_equal(datasets.read_object_ids(tmp_path / name), DISC.astype(np.int32))


def test_grabcut_band_is_ignored_and_an_explicit_void_value_applies(tmp_path):
    m = DISC.astype(np.uint8) * 255
    band = _disc(r=14) & ~_disc(r=10)
    m[band] = 128
    Image.fromarray(m).save(tmp_path / "g.bmp")
    gt, ignore = datasets.read_binary_mask(tmp_path / "g.bmp")
    np.testing.assert_array_equal(ignore, band)
    np.testing.assert_array_equal(gt, DISC & ~band)
    one = DISC.astype(np.uint8)
    one[band] = 9
    Image.fromarray(one).save(tmp_path / "v.png")
    gt, ignore = datasets.read_binary_mask(tmp_path / "v.png", void=9)
    np.testing.assert_array_equal(gt, DISC & ~band)  # 0/1 once the void value 9 is set aside
    np.testing.assert_array_equal(ignore, band)


def test_grabcut_masks_keep_their_band():
    samples = datasets.read_mask_folder(shared_dataset("grabcut"))
    with_band = 0
    for s in samples[:10]:
        raw = np.asarray(Image.open(s.mask_path))
        gt, ignore = s.load_gt()
        np.testing.assert_array_equal(gt, raw == 255)
        with_band += ignore is not None and np.array_equal(ignore, raw == 128)
    assert with_band >= 5


def test_jpeg_and_resampled_masks_are_thresholded(tmp_path):
    big = _disc(200, 300, 100, 140, 60)
    Image.fromarray(big.astype(np.uint8) * 255).save(tmp_path / "noisy.jpg", quality=70)
    raw = np.asarray(Image.open(tmp_path / "noisy.jpg"))
    assert len(np.unique(raw)) > 2  # the compression noise this is about
    gt, ignore = datasets.read_binary_mask(tmp_path / "noisy.jpg")
    np.testing.assert_array_equal(gt, raw > 127)
    assert ignore is None and (gt ^ big).mean() < 0.01
    Image.fromarray(big.astype(np.uint8) * 255).resize((150, 100), Image.BILINEAR).save(tmp_path / "small.png")
    raw = np.asarray(Image.open(tmp_path / "small.png"))
    assert len(np.unique(raw)) > 2
    np.testing.assert_array_equal(datasets.read_binary_mask(tmp_path / "small.png")[0], raw > 127)


def test_a_zero_one_mask_saved_as_jpeg_is_an_error(tmp_path):
    Image.fromarray(_disc(200, 300, 100, 140, 60).astype(np.uint8)).save(tmp_path / "01.jpg", quality=70)
    with pytest.raises(InputError, match=r"01.jpg has values only up to \d+: foreground must be > 127"):
        datasets.read_binary_mask(tmp_path / "01.jpg")


def test_palette_masks_take_an_object_id(tmp_path):
    ids = np.zeros((40, 60), np.uint8)
    ids[_disc(cx=15, r=8)] = 1
    ids[_disc(cx=45, r=8)] = 2
    ids[0, :] = 255  # void (DAVIS / Pascal VOC)
    _palette(ids).save(tmp_path / "p.png")
    gt, ignore = datasets.read_binary_mask(tmp_path / "p.png", object_id=2)
    np.testing.assert_array_equal(gt, ids == 2)
    np.testing.assert_array_equal(ignore, ids == 255)
    with pytest.raises(InputError) as e:
        datasets.read_binary_mask(tmp_path / "p.png")
    assert "\n" not in str(e.value)
    assert "p.png has 3 distinct values besides the void value 255 (0, 1, 2)" in str(e.value)
    assert "--object-id K" in str(e.value)
    with pytest.raises(InputError, match=r"p.png has no object id 3 \(its values: 0, 1, 2, 255\)"):
        datasets.read_binary_mask(tmp_path / "p.png", object_id=3)
    _palette(np.where(ids == 2, 0, ids)).save(tmp_path / "one.png")  # one object (and void): no id needed
    gt, ignore = datasets.read_binary_mask(tmp_path / "one.png")
    np.testing.assert_array_equal(gt, ids == 1)
    # a grey label map picks by id the same way
    Image.fromarray(ids).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(datasets.read_binary_mask(tmp_path / "grey.png", object_id=1)[0], ids == 1)


@pytest.mark.parametrize("name, values, match", [
    ("labels.png", np.arange(40 * 60).reshape(40, 60) % 4, r"labels.png has 4 distinct values \(0, 1, 2, 3\)"),
    ("soft.png", np.tile(np.linspace(0, 255, 60), (40, 1)),
     r"soft.png has 60 distinct values \(0, 4, 8, 12, \d+, \d+, \.\.\.\)"),
    ("colours.png", np.stack([DISC * 200, ~DISC * 90, DISC * 0], -1), r"colour mask .*colours.png has 2 colours"),
])
def test_ambiguous_masks_are_one_line_errors_naming_file_and_values(tmp_path, name, values, match):
    Image.fromarray(values.astype(np.uint8)).save(tmp_path / name)
    with pytest.raises(InputError, match=match) as e:
        datasets.read_binary_mask(tmp_path / name)
    assert "\n" not in str(e.value) and str(tmp_path / name) in str(e.value)


def _mask_set(root: Path, masks: list[np.ndarray], palette: bool = False) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, m in enumerate(masks):
        Image.fromarray(_image_with(m > 0, i)).save(root / "images" / f"im{i}.png")
        (_palette(m) if palette else Image.fromarray(m.astype(np.uint8))).save(root / "masks" / f"im{i}.png")
    return root


def test_eval_box_scores_zero_one_ground_truth(capsys, tmp_path):
    data = _mask_set(tmp_path / "d", [DISC.astype(np.uint8)])
    code, stdout, err = run(capsys, "eval", "box", "--model", "classical", "--data", data, "--out", tmp_path / "o")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["summary"]["mean_iou"] > 0.8


def test_eval_masks_with_object_id_and_ambiguous_ground_truth(capsys, tmp_path):
    ids = np.zeros((40, 60), np.uint8)
    ids[_disc(cx=15, r=8)] = 1
    ids[_disc(cx=45, r=8)] = 2
    data = _mask_set(tmp_path / "d", [ids], palette=True)
    pred = tmp_path / "pred"
    pred.mkdir()
    Image.fromarray((ids == 2).astype(np.uint8)).save(pred / "im0.png")  # a 0/1 prediction of object 2
    code, _, err = run(capsys, "eval", "masks", "--pred", pred, "--gt", data, "--object-id", "2",
                       "--out", tmp_path / "o")
    assert code == 0, err
    out = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert out["summary"]["mean_iou"] == 1.0 and out["header"]["object_id"] == 2
    _palette(ids).save(pred / "im0.png")  # the same palette map as prediction: --object-id picks in it too
    code, _, err = run(capsys, "eval", "masks", "--pred", pred, "--gt", data, "--object-id", "1",
                       "--out", tmp_path / "o1")
    assert code == 0, err
    assert json.loads((tmp_path / "o1" / "summary.json").read_text())["summary"]["mean_iou"] == 1.0
    code, _, err = run(capsys, "eval", "masks", "--pred", pred, "--gt", data, "--out", tmp_path / "o2")
    assert code == 2
    one_error_line(err, "im0.png has 3 distinct values (0, 1, 2)", "--object-id K")
    for extra, message in ((["--object-id", "0"], "--object-id must be an object id in 1..65535"),
                           (["--object-id", "1", "--video"], "--object-id does not apply to --video"),
                           (["--require-all"], "--require-all applies to `eval masks --video`")):
        code, _, err = run(capsys, "eval", "masks", "--pred", pred, "--gt", data, *extra, "--out", tmp_path / "bad")
        assert code == 2
        one_error_line(err, message)
    assert not (tmp_path / "bad").exists()


# -- item 8: partial video results ------------------------------------------------------------


def _davis(root: Path, names: tuple[str, ...] = ("a", "b", "c"), frames: int = 3) -> Path:
    for name in names:
        img, ann = root / "JPEGImages" / "480p" / name, root / "Annotations" / "480p" / name
        img.mkdir(parents=True)
        ann.mkdir(parents=True)
        for t in range(frames):
            m = _disc(cx=20 + 3 * t, r=8)
            Image.fromarray(_image_with(m, t)).save(img / f"{t:05d}.jpg")
            Image.fromarray(m.astype(np.uint8) * 255).save(ann / f"{t:05d}.png")
    return root


def test_eval_masks_video_scores_the_sequences_present(capsys, tmp_path):
    root = _davis(tmp_path / "davis")
    pred = tmp_path / "pred"
    for p in sorted((root / "Annotations" / "480p" / "b").iterdir()):
        (pred / "b").mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.asarray(Image.open(p)) > 0).astype(np.uint8)).save(pred / "b" / p.name)  # 0/1 PNGs
    (pred / "c").mkdir()  # an empty folder counts as missing
    code, stdout, err = run(capsys, "eval", "masks", "--video", "--pred", pred, "--gt", root, "--out", tmp_path / "o")
    assert code == 0, err
    assert "scored 1 of 3 sequences; 2 missing (e.g. a, c); --require-all to refuse" in err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())["summary"]
    assert summary["num_sequences"] == 1 and summary["J&F-Mean"] == 1.0
    assert summary["missing_sequences"] == ["a", "c"] and summary["num_sequences_missing"] == 2
    code, _, err = run(capsys, "eval", "masks", "--video", "--require-all", "--pred", pred, "--gt", root,
                       "--out", tmp_path / "o2")
    assert code == 2
    one_error_line(err, "for 2 of 3 sequences (a, c;", "drop --require-all")
    (pred / "b" / "00001.png").unlink()  # within a scored sequence a missing frame stays an error
    code, _, err = run(capsys, "eval", "masks", "--video", "--pred", pred, "--gt", root, "--out", tmp_path / "o3")
    assert code == 2
    one_error_line(err, "missing prediction", "00001.png for frame 1 of b")
    code, _, err = run(capsys, "eval", "masks", "--video", "--pred", tmp_path / "davis", "--gt", root,
                       "--out", tmp_path / "o4")
    assert code == 2
    one_error_line(err, "no predictions in", "for 3 of 3 sequences")
    assert not (tmp_path / "o4").exists() and not (tmp_path / "o2").exists()  # refused before writing


# -- item 9: errors and defaults that mislead -------------------------------------------------


@pytest.fixture()
def no_weights(tmp_path, monkeypatch):
    """A machine without any model weights (and without the network)."""
    for var in ("ANYSEG_MODELS", "HF_HOME"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "HF_HOME" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    img = tmp_path / "im.png"
    Image.fromarray(_image_with(DISC)).save(img)
    return img


@pytest.mark.parametrize("runtime", ["onnx", "torch-bf16"])
def test_readme_runtime_example_without_weights_says_how_to_get_a_model(capsys, tmp_path, no_weights, runtime):
    code, _, err = run(capsys, "segment", no_weights, "--box", "10,5,45,35", "--runtime", runtime,
                       "--out", tmp_path / "o")
    assert code == 2
    one_error_line(err, "no SAM-family model is present on this machine",
                   f"(the classical engine has no {runtime} runtime)", "anyseg models pull sam2.1-hiera-tiny",
                   "$ANYSEG_MODELS", "drop --runtime")
    code, _, err = run(capsys, "segment", no_weights, "--model", "classical", "--box", "10,5,45,35",
                       "--runtime", runtime, "--out", tmp_path / "o")
    assert code == 2
    line = one_error_line(err, f"the classical engine has no {runtime} runtime: it has only its own")
    assert "no SAM-family model is present" not in line


def test_eval_with_a_runtime_and_no_weights_says_the_same(capsys, tmp_path, no_weights):
    data = _mask_set(tmp_path / "d", [DISC.astype(np.uint8) * 255])
    code, _, err = run(capsys, "eval", "box", "--model", "auto", "--data", data, "--runtime", "onnx-int8",
                       "--out", tmp_path / "o")
    assert code == 2
    one_error_line(err, "no SAM-family model is present", "no onnx-int8 runtime")


def test_device_cuda_without_a_gpu_is_refused_in_one_line(capsys, tmp_path, no_weights):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    code, _, err = run(capsys, "segment", no_weights, "--box", "10,5,45,35", "--device", "cuda",
                       "--out", tmp_path / "o")
    assert code == 2
    one_error_line(err, "--device cuda", "use --device cpu")
    assert not (tmp_path / "o").exists()


def test_status_line_names_classical_without_a_runtime(capsys, tmp_path, no_weights):
    from anyseg.cli import model_label

    code, _, err = run(capsys, "segment", no_weights, "--model", "classical", "--box", "10,5,45,35",
                       "--out", tmp_path / "o")
    assert code == 0, err
    assert "mask(s) from classical (scores " in err and "[torch]" not in err

    class Sam:
        name, family, runtime = "sam2.1-hiera-tiny", "sam2", "torch-bf16"

    assert model_label(Sam()) == "sam2.1-hiera-tiny [torch-bf16]"


@pytest.mark.parametrize("value, text", [
    (226.5, "226.5"), (226.5000001, "226.5"), (3.0, "3"), (19.95, "19.95"), (1234.56, "1235"), (0.904213, "0.9042"),
    (1.0, "1.0000"), (0.0, "0.0000"), (-0.01234, "-0.0123"), (50, "50"), (np.float32(0.5), "0.5000"),
    (float("nan"), "nan"), ("sam", "sam"),
])
def test_summary_values_are_formatted_for_people(value, text):
    assert format_value(value) == text


def test_report_and_table_use_the_formatting(capsys, tmp_path):
    data = _mask_set(tmp_path / "d", [DISC.astype(np.uint8) * 255])
    pred = tmp_path / "pred"
    pred.mkdir()
    Image.fromarray(DISC.astype(np.uint8) * 255).save(pred / "im0.png")
    code, stdout, err = run(capsys, "eval", "masks", "--pred", pred, "--gt", data, "--out", tmp_path / "o")
    assert code == 0, err
    assert re.search(r"^num_images +1$", stdout, re.M) and re.search(r"^mean_iou +1\.0000$", stdout, re.M)
    assert not any(line.split()[-1].endswith("0000") and float(line.split()[-1]) > 1 for line in stdout.splitlines())
    assert "| num_images | 1 |" in (tmp_path / "o" / "report.md").read_text()
    assert format_table({"peak_rss_mb": 226.5}) == "peak_rss_mb  226.5"


def test_resumed_eval_keeps_the_largest_peak_rss_and_each_runs(capsys, tmp_path, monkeypatch):
    import anyseg.eval.perf as perf

    peaks = iter([300.0, 200.0, 250.0])

    class FakeMonitor:
        def __init__(self, interval_s):
            self.peak_mb = next(peaks)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(perf, "RSSMonitor", FakeMonitor)
    data = _mask_set(tmp_path / "d", [DISC.astype(np.uint8) * 255, _disc(cx=35).astype(np.uint8) * 255])
    pred = tmp_path / "pred"
    pred.mkdir()
    for i in range(2):
        Image.fromarray(np.asarray(Image.open(data / "masks" / f"im{i}.png"))).save(pred / f"im{i}.png")
    out = tmp_path / "o"
    argv = ("eval", "masks", "--pred", pred, "--gt", data, "--out", out)
    assert run(capsys, *argv, "--limit", "1")[0] == 0
    code, stdout, err = run(capsys, *argv)  # resumes: scores the second image only
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["peak_rss_mb"] == 300.0 and summary["peak_rss_mb_runs"] == [300.0, 200.0]
    assert re.search(r"^peak_rss_mb +300$", stdout, re.M), stdout
    runs = [json.loads(line)["run"] for line in (out / "results.jsonl").read_text().splitlines() if '"run"' in line]
    assert [r["scored"] for r in runs] == [1, 1]
    code, _, err = run(capsys, *argv, "--fresh")
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["summary"]["peak_rss_mb_runs"] == [250.0]

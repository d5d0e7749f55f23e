"""Data readers, resumable runners, reports and the ``anyseg eval`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anyseg.errors import InputError
from anyseg.eval import datasets, runners
from anyseg.eval.store import ResultStore
from cli_helpers import run

from conftest import shared_dataset


def _disc(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


def _image_with(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 50, (*mask.shape, 3)).astype(np.uint8)
    img[mask] = (230, 190, 40)
    return img


@pytest.fixture()
def mask_data(tmp_path) -> Path:
    """3 images (.jpg/.png/.bmp) with lossless masks; one mask has a 128 unlabeled band."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, ext in enumerate([".jpg", ".png", ".bmp"]):
        gt = _disc(80, 120, 40, 50 + 10 * i, 22)
        Image.fromarray(_image_with(gt, i)).save(root / "images" / f"im{i}{ext}", quality=95)
        m = gt.astype(np.uint8) * 255
        if i == 0:
            band = _disc(80, 120, 40, 50, 25) & ~_disc(80, 120, 40, 50, 19)
            m[band] = 128
        Image.fromarray(m).save(root / "masks" / f"im{i}.png")
    return root


# -- readers -----------------------------------------------------------------------------------


def test_mask_folder_pairs_by_stem_and_ignores_the_band(mask_data):
    samples = datasets.read_mask_folder(mask_data)
    assert [s.name for s in samples] == ["im0", "im1", "im2"]
    gt, ignore = samples[0].load_gt()
    assert ignore is not None and ignore.sum() > 0 and not (gt & ignore).any()
    assert samples[1].load_gt()[1] is None  # no 128 pixels: nothing ignored
    assert len(datasets.read_mask_folder(mask_data, limit=2)) == 2


def test_mask_folder_errors_name_the_file(mask_data, tmp_path):
    (mask_data / "masks" / "im2.png").unlink()
    with pytest.raises(InputError, match="no mask for image im2.bmp"):
        datasets.read_mask_folder(mask_data)
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    with pytest.raises(InputError, match="no image files in"):
        datasets.read_mask_folder(tmp_path / "empty")
    with pytest.raises(InputError, match="image folder not found"):
        datasets.read_mask_folder(tmp_path / "nothing")


def _davis(root: Path, frames: int = 5, objects: int = 2, palette: bool = True) -> Path:
    seq_img = root / "JPEGImages" / "480p" / "seq"
    seq_ann = root / "Annotations" / "480p" / "seq"
    seq_img.mkdir(parents=True)
    seq_ann.mkdir(parents=True)
    for t in range(frames):
        ids = np.zeros((60, 90), np.uint8)
        for o in range(1, objects + 1):
            ids[_disc(60, 90, 30, 20 * o + 2 * t, 8)] = o
        Image.fromarray(_image_with(ids > 0, t)).save(seq_img / f"{t:05d}.jpg")
        if palette:
            im = Image.fromarray(ids, mode="P")
            im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
        else:
            im = Image.fromarray((ids > 0).astype(np.uint8) * 255)
        im.save(seq_ann / f"{t:05d}.png")
    return root


def test_davis_reader_palette_and_binary(tmp_path):
    v = datasets.read_davis(_davis(tmp_path / "a"))[0]
    assert len(v) == 5 and set(np.unique(v.load_annotation(0))) == {0, 1, 2}
    b = datasets.read_davis(_davis(tmp_path / "b", palette=False))[0]
    assert set(np.unique(b.load_annotation(0))) == {0, 1}  # DAVIS 2016: 0/255 -> object 1
    (tmp_path / "a" / "Annotations" / "480p" / "seq" / "00003.png").unlink()
    with pytest.raises(InputError, match="no annotation for frame 00003.jpg"):
        datasets.read_davis(tmp_path / "a")


def test_semantic_reader_rejects_unknown_labels(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.array([[0, 1, 2, 7]] * 4, np.uint8)).save(tmp_path / "labels" / "a.png")
    (s,) = datasets.read_semantic(tmp_path, num_classes=3, void_id=11)
    with pytest.raises(InputError, match=r"a.png has unknown label values \[7\]"):
        s.load_labels()


def test_store_resumes_and_refuses_other_runs(tmp_path):
    st = ResultStore(tmp_path, {"kind": "box", "model": "m"})
    st.add({"name": "a", "iou": 0.5})
    with open(st.path, "a") as f:
        f.write('{"name": "b", "io')  # a run killed mid-line
    again = ResultStore(tmp_path, {"kind": "box", "model": "m"})
    assert "a" in again and "b" not in again and len(again.records()) == 1
    with pytest.raises(InputError, match="different run.*model"):
        ResultStore(tmp_path, {"kind": "box", "model": "other"})
    assert len(ResultStore(tmp_path, {"kind": "box", "model": "other"}, fresh=True).records()) == 0


# -- commands ----------------------------------------------------------------------------------


def test_eval_box_writes_report_and_resumes(capsys, mask_data, tmp_path, monkeypatch):
    out = tmp_path / "box"
    code, stdout, err = run(capsys, "eval", "box", "--model", "classical", "--data", mask_data, "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["num_images"] == 3 and summary["mean_iou"] > 0.85 and "mean_iou" in stdout
    assert (out / "report.md").is_file() and (out / "per_item.png").is_file()
    # a rerun scores nothing again
    monkeypatch.setattr(runners, "tight_box", lambda m: pytest.fail("re-scored a finished image"))
    code, _, err = run(capsys, "eval", "box", "--model", "classical", "--data", mask_data, "--out", out)
    assert code == 0, err
    header = json.loads((out / "results.jsonl").read_text().splitlines()[0])["header"]
    assert header["runtime"] == "torch"  # eval's default: the reference's fp32 numbers
    # another runtime is another run: never mixed into this one's results
    code, _, err = run(capsys, "eval", "box", "--model", "classical", "--data", mask_data, "--out", out,
                       "--runtime", "torch-bf16")
    assert code == 2 and "classical engine has no torch-bf16 runtime" in err


def test_eval_interactive_reports_noc_and_curve(capsys, mask_data, tmp_path):
    out = tmp_path / "int"
    code, stdout, err = run(capsys, "eval", "interactive", "--model", "classical", "--data", mask_data,
                            "--max-clicks", "3", "--limit", "2", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["num_images"] == 2 and len(summary["iou_curve"]) == 3
    assert {"NoC@85", "NoC@90", "NoF@85", "NoF@90", "mIoU@1", "mIoU@3"} <= set(summary)
    assert (out / "iou_vs_clicks.png").is_file()
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert lines[0]["header"]["max_clicks"] == 3 and sum("name" in line for line in lines) == 2
    assert [line["run"]["scored"] for line in lines if "run" in line] == [2]


def test_eval_masks_from_any_tool(capsys, mask_data, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    expected = []
    for s in datasets.read_mask_folder(mask_data):
        gt, ignore = s.load_gt()
        p = np.roll(gt, 3, axis=1)
        Image.fromarray(p.astype(np.uint8) * 255).save(pred / f"{s.name}.png")
        keep = ~ignore if ignore is not None else np.ones_like(gt)
        expected.append(((p & gt) & keep).sum() / ((p | gt) & keep).sum())
    code, stdout, err = run(capsys, "eval", "masks", "--pred", pred, "--gt", mask_data, "--out", tmp_path / "o")
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())["summary"]
    assert summary["mean_iou"] == pytest.approx(np.mean(expected), abs=1e-4)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(pred / "im1.png")
    code, _, err = run(capsys, "eval", "masks", "--pred", pred, "--gt", mask_data, "--out", tmp_path / "o2")
    assert code == 2 and "im1.png is 10x10 but the ground truth is 120x80" in err


def test_eval_masks_video_and_missing_frames(capsys, tmp_path):
    root = _davis(tmp_path / "davis")
    pred = tmp_path / "pred" / "seq"
    pred.mkdir(parents=True)
    for p in sorted((root / "Annotations" / "480p" / "seq").iterdir()):
        Image.open(p).save(pred / p.name)
    code, stdout, err = run(capsys, "eval", "masks", "--video", "--pred", tmp_path / "pred", "--gt", root,
                            "--out", tmp_path / "o")
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())["summary"]
    assert summary["J&F-Mean"] == 1.0 and summary["num_objects"] == 2
    (pred / "00002.png").unlink()
    code, _, err = run(capsys, "eval", "masks", "--video", "--pred", tmp_path / "pred", "--gt", root,
                       "--out", tmp_path / "o2")
    assert code == 2 and "missing prediction" in err and "00002.png" in err


def test_eval_video_and_semantic_take_registered_engines(capsys, tmp_path, monkeypatch):
    root = _davis(tmp_path / "davis")

    def oracle_factory(name, weights=None, device=None):
        def engine(sample, first):
            assert set(first) == {1, 2}  # the first frame's objects are given
            for t in range(len(sample)):
                ids = sample.load_annotation(t)
                yield t, {o: ids == o for o in (1, 2)}
        return engine

    monkeypatch.setitem(runners.VIDEO_ENGINES, "oracle", oracle_factory)
    code, stdout, err = run(capsys, "eval", "video", "--model", "oracle", "--data", root, "--out", tmp_path / "v")
    assert code == 0, err
    assert "J&F-Mean" in stdout
    code, _, err = run(capsys, "eval", "video", "--model", "nope", "--data", root, "--out", tmp_path / "v2")
    assert code == 2 and "no video engine named 'nope'" in err
    code, _, err = run(capsys, "eval", "video", "--model", "classical", "--weights", tmp_path, "--data", root,
                       "--out", tmp_path / "v3")
    assert code == 2 and "classical video engine has no weights" in err  # never silently ignored
    assert not (tmp_path / "v3").exists()  # the error came before anything was written

    sem = tmp_path / "sem"
    (sem / "images").mkdir(parents=True)
    (sem / "labels").mkdir()
    labels = np.array([[0, 0, 1, 1], [2, 2, 1, 9]] * 2, np.uint8)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(sem / "images" / "a.png")
    Image.fromarray(labels).save(sem / "labels" / "a.png")
    monkeypatch.setitem(runners.SEMANTIC_ENGINES, "oracle",
                        lambda name, classes, weights=None, device=None: (lambda image: np.where(labels == 9, 0, labels)))
    code, stdout, err = run(capsys, "eval", "semantic", "--model", "oracle", "--data", sem, "--classes", "a,b,c",
                            "--void-id", "9", "--out", tmp_path / "s")
    assert code == 0, err
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())["summary"]
    assert summary["mIoU"] == 1.0 and (tmp_path / "s" / "per_class_iou.png").is_file()
    code, _, err = run(capsys, "eval", "semantic", "--model", "oracle", "--data", sem, "--classes", "a,a,c",
                       "--out", tmp_path / "s2")
    assert code == 2 and "duplicate" in err


def test_eval_bad_input(capsys, tmp_path):
    code, _, err = run(capsys, "eval", "box", "--model", "classical", "--data", tmp_path / "none")
    assert code == 2 and "data folder not found" in err
    code, _, err = run(capsys, "eval", "interactive", "--model", "classical", "--data", tmp_path, "--max-clicks", "0")
    assert code == 2


def test_davis2016_ground_truth_scores_one(capsys, tmp_path):
    root = shared_dataset("davis2016")
    seq = datasets.read_davis(root, limit=1)[0]
    pred = tmp_path / "pred" / seq.name
    pred.mkdir(parents=True)
    for p in seq.annotations:
        Image.open(p).save(pred / p.name)
    code, _, err = run(capsys, "eval", "masks", "--video", "--pred", tmp_path / "pred", "--gt", root, "--limit", "1",
                       "--out", tmp_path / "o")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["summary"]["J&F-Mean"] == 1.0


def test_eval_masks_coco_json_equals_pycocotools(capsys, tmp_path):
    from anyseg.eval.coco_eval import coco_mask_ap
    from anyseg.io.export import to_coco
    from anyseg.types import Masks

    gt_masks = Masks(np.stack([_disc(50, 70, 25, 20, 10), _disc(50, 70, 25, 50, 12)]))
    gt = to_coco(gt_masks, image_id=1, file_name="a.png")
    pred = to_coco(Masks(np.stack([np.roll(gt_masks.masks[0], 2, 1), gt_masks.masks[1]]), scores=[0.9, 0.8]),
                   image_id=1, file_name="a.png")["annotations"]
    results = [{k: a[k] for k in ("image_id", "category_id", "segmentation", "score")} for a in pred]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(results))
    code, stdout, err = run(capsys, "eval", "masks", "--pred", tmp_path / "pred.json", "--gt", tmp_path / "gt.json",
                            "--out", tmp_path / "o")
    assert code == 0, err
    stats = json.loads((tmp_path / "o" / "summary.json").read_text())["summary"]
    assert stats["AP"] == pytest.approx(coco_mask_ap(gt, results)["AP"]) and "AP50" in stdout

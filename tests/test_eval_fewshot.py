"""``anyseg eval fewshot``: the four layouts, the fold splits, seeded episodes, the metrics and resuming.

Synthetic data sets are written into tmp folders in each layout (lossless images: every class
is a solid colour no other class or background has), scored by methods registered here: an
*oracle* that finds the reference's colour (mIoU 1, FB-IoU 1), an *empty* one (known values)
and a *big-only* one (the class-accumulated IoU and the mean per-episode IoU differ). The real
DAVIS 2016 protocol runs on ``../shared/data/davis2016`` when it is there.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anyseg.errors import InputError
from anyseg.eval import fewshot, fewshot_data
from anyseg.fewshot.base import register_method
from anyseg.types import Masks
from cli_helpers import one_line, run
from conftest import shared_dataset

COLOURS = [(230, 30, 30), (30, 220, 40), (40, 60, 230), (230, 220, 30), (220, 40, 220), (40, 220, 220),
           (250, 140, 20), (140, 20, 250)]
H, W = 40, 56


# -- methods -----------------------------------------------------------------------------------
class Colour:
    """Finds the references' colour: exact on these data sets (an oracle)."""

    name = "oracle"
    calls = {"fit": 0, "predict": 0}
    interrupt_after: int | None = None  # predictions before a KeyboardInterrupt (a killed run)
    min_area = 0  # big-only: report nothing for objects smaller than this
    empty = False

    def fit(self, refs):
        Colour.calls["fit"] += 1
        return [np.median(r.image[r.mask], axis=0) for r in refs]

    def predict(self, fitted, image, instances="one"):
        Colour.calls["predict"] += 1
        if Colour.interrupt_after is not None and Colour.calls["predict"] > Colour.interrupt_after:
            raise KeyboardInterrupt
        mask = np.zeros(image.shape[:2], bool)
        for colour in fitted:
            mask |= np.abs(image.astype(int) - colour).max(axis=2) < 12
        if self.empty or mask.sum() < self.min_area or not mask.any():
            return Masks(masks=np.zeros((0, *image.shape[:2]), bool), scores=np.zeros(0, np.float32))
        return Masks(masks=mask[None], scores=np.array([0.9], np.float32))


class Empty(Colour):
    name = "empty"
    empty = True


class BigOnly(Colour):
    name = "big-only"
    min_area = 200


@pytest.fixture(autouse=True)
def _methods():
    for cls in (Colour, Empty, BigOnly):
        register_method(cls.name, lambda cls=cls, **_: cls(), replace=True)
    Colour.calls.update(fit=0, predict=0)
    Colour.interrupt_after = None
    yield
    Colour.interrupt_after = None


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())["summary"]


def rows(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines()[1:]) if "name" in r]


# -- synthetic data sets -----------------------------------------------------------------------
def _background(rng) -> np.ndarray:
    grey = rng.integers(60, 130, (H, W, 1))
    return np.repeat(grey, 3, axis=2).astype(np.uint8)


def _rect(rng, size: int | None = None) -> tuple[slice, slice]:
    h = size or int(rng.integers(6, 16))
    w = size or int(rng.integers(6, 20))
    y, x = int(rng.integers(0, H - h)), int(rng.integers(0, W - w))
    return slice(y, y + h), slice(x, x + w)


def _scene(rng, colour, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    image = _background(rng)
    mask = np.zeros((H, W), np.uint8)
    box = _rect(rng, size)
    image[box] = colour
    mask[box] = 255
    return image, mask


def make_fss(root: Path, classes: int = 3, per_class: int = 5, sizes=None) -> Path:
    rng = np.random.default_rng(1)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            image, mask = _scene(rng, COLOURS[c], None if sizes is None else sizes[i % len(sizes)])
            Image.fromarray(image).save(folder / f"{i + 1}.bmp")
            Image.fromarray(mask).save(folder / f"{i + 1}.png")
    return root


def make_perseg(root: Path, classes: int = 2, per_class: int = 4) -> Path:
    rng = np.random.default_rng(2)
    for c in range(classes):
        (root / "Images" / f"obj{c}").mkdir(parents=True)
        (root / "Annotations" / f"obj{c}").mkdir(parents=True)
        for i in range(per_class):
            image, mask = _scene(rng, COLOURS[c])
            Image.fromarray(image).save(root / "Images" / f"obj{c}" / f"{i:02d}.png")
            Image.fromarray(np.stack([mask] * 3, -1)).save(root / "Annotations" / f"obj{c}" / f"{i:02d}.png")
    return root


def make_davis(root: Path, objects: int = 1, frames: int = 5, name: str = "seq") -> Path:
    rng = np.random.default_rng(3)
    img, ann = root / "JPEGImages" / "480p" / name, root / "Annotations" / "480p" / name
    img.mkdir(parents=True)
    ann.mkdir(parents=True)
    for t in range(frames):
        image, ids = _background(rng), np.zeros((H, W), np.uint8)
        for k in range(objects):
            box = (slice(4 + 18 * k, 14 + 18 * k), slice(3 + 2 * t + 20 * k, 15 + 2 * t + 20 * k))
            image[box], ids[box] = COLOURS[k], k + 1
        Image.fromarray(image).save(img / f"{t:05d}.png")
        if objects == 1:
            Image.fromarray(ids * 255).save(ann / f"{t:05d}.png")
        else:
            p = Image.fromarray(ids, mode="P")
            p.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
            p.save(ann / f"{t:05d}.png")
    return root


def make_episodes(root: Path, classes: int = 8, images: int = 24, band: bool = False, spec: dict | None = None) -> Path:
    """``images/`` + ``masks/`` label maps: each image shows two classes (ids 1..classes)."""
    rng = np.random.default_rng(4)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i in range(images):
        image, labels = _background(rng), np.zeros((H, W), np.uint8)
        for k, c in enumerate(((2 * i) % classes + 1, (2 * i + 1) % classes + 1)):
            box = (slice(2 + 19 * k, 16 + 19 * k), slice(int(rng.integers(0, 30)), None))
            box = (box[0], slice(box[1].start, box[1].start + int(rng.integers(8, 24))))
            image[box], labels[box] = COLOURS[c - 1], c
            if band:  # PASCAL's boundary band: the object's colour, but labelled 255 (ignored)
                edge = (slice(box[0].stop, box[0].stop + 2), box[1])
                image[edge], labels[edge] = COLOURS[c - 1], 255
        Image.fromarray(image).save(root / "images" / f"im{i:03d}.png")
        Image.fromarray(labels).save(root / "masks" / f"im{i:03d}.png")
    (root / "fewshot.json").write_text(json.dumps(spec or {"classes": [f"c{c}" for c in range(1, classes + 1)]}))
    return root


LAYOUTS = {"fss": make_fss, "perseg": make_perseg, "davis": make_davis, "episodes": make_episodes}


# -- the oracle and the empty method: exact values on every layout -----------------------------
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_oracle_scores_one_on_every_layout(tmp_path, capsys, layout):
    data = LAYOUTS[layout](tmp_path / layout)
    out = tmp_path / "out"
    extra = ["--episodes", 40] if layout == "episodes" else []
    code, stdout, err = run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", *extra, "--out", out)
    assert code == 0, err
    s = summary(out)
    assert s["mIoU"] == 1.0 and s["FB-IoU"] == 1.0 and s["mean_episode_IoU"] == 1.0, s
    header = json.loads((out / "summary.json").read_text())["header"]
    assert header["layout"] == layout and header["method"] == "oracle" and header["kind"] == "fewshot"
    assert "mIoU" in stdout and (out / "report.md").is_file()
    assert len(rows(out)) == s["num_episodes"] > 0


def test_an_empty_prediction_scores_zero_miou_and_half_the_background(tmp_path, capsys):
    data = make_fss(tmp_path / "fss")
    out = tmp_path / "out"
    assert run(capsys, "eval", "fewshot", "--data", data, "--method", "empty", "--out", out)[0] == 0
    s = summary(out)
    masks = [np.asarray(Image.open(p)) > 127 for p in sorted(data.glob("*/*.png"))]
    bg = sum(int((~m).sum()) for m in masks) / sum(m.size for m in masks)
    assert s["mIoU"] == 0.0 and s["fg_IoU"] == 0.0 and s["mean_episode_IoU"] == 0.0
    assert s["bg_IoU"] == pytest.approx(bg, abs=1e-4) and s["FB-IoU"] == pytest.approx(bg / 2, abs=1e-4)
    assert s["num_episodes"] == 15 and s["num_classes"] == 3  # fss: every image is the query once
    assert all(r["masks"] == 0 and r["score"] == 0.0 for r in rows(out))


def test_class_iou_is_accumulated_over_episodes_not_averaged():
    records = [{"class": "a", "fg_inter": 90, "fg_union": 100, "bg_inter": 900, "bg_union": 910, "gt_area": 95,
                "iou": 0.9, "seconds": 0.1, "fitted": True, "fit_seconds": 0.2},
               {"class": "a", "fg_inter": 0, "fg_union": 10, "bg_inter": 990, "bg_union": 1000, "gt_area": 10,
                "iou": 0.0, "seconds": 0.1, "fitted": False, "fit_seconds": 0.0},
               {"class": "b", "fg_inter": 50, "fg_union": 100, "bg_inter": 900, "bg_union": 950, "gt_area": 60,
                "iou": 0.5, "seconds": 0.1, "fitted": True, "fit_seconds": 0.4}]
    s = fewshot.fewshot_summary(records)
    assert s["per_class"]["a"]["IoU"] == round(90 / 110, 4) and s["per_class"]["b"]["IoU"] == 0.5
    assert s["mIoU"] == round((90 / 110 + 0.5) / 2, 4)
    assert s["mean_episode_IoU"] == round((0.9 + 0.0 + 0.5) / 3, 4) != s["mIoU"]
    fg, bg = 140 / 210, 2790 / 2860
    assert s["FB-IoU"] == round((fg + bg) / 2, 4) and s["fits"] == 2 and s["seconds_per_fit"] == 0.3
    assert s["per_class"]["a"]["episodes"] == 2 and s["per_class"]["a"]["Acc"] == round(90 / 105, 4)
    assert s["mAcc"] == round((90 / 105 + 50 / 60) / 2, 4)


def test_accumulation_and_episode_mean_differ_on_a_run(tmp_path, capsys):
    """Big objects found, small ones missed: the class IoU is the big objects' share of the pixels."""
    data = make_fss(tmp_path / "fss", classes=1, per_class=4, sizes=[20, 6])
    out = tmp_path / "out"
    assert run(capsys, "eval", "fewshot", "--data", data, "--method", "big-only", "--out", out)[0] == 0
    s = summary(out)
    assert s["mean_episode_IoU"] == 0.5  # 2 of 4 queries found exactly
    assert s["mIoU"] == round(2 * 400 / (2 * 400 + 2 * 36), 4)


def test_episode_counts_leave_ignored_pixels_out():
    gt = np.zeros((4, 4), bool)
    gt[:2] = True
    pred = np.zeros((4, 4), bool)
    pred[:3] = True
    ignore = np.zeros((4, 4), bool)
    ignore[2] = True
    c = fewshot.episode_counts(pred, gt, ignore)
    assert c == {"fg_inter": 8, "fg_union": 8, "bg_inter": 4, "bg_union": 4, "gt_area": 8, "pred_area": 8}


def test_the_ignored_band_of_label_maps_is_not_scored(tmp_path, capsys):
    data = make_episodes(tmp_path / "ep", band=True)
    out = tmp_path / "out"
    assert run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", "--episodes", 20, "--out", out)[0] == 0
    assert summary(out)["mIoU"] == 1.0  # the oracle paints the band too; it is ignored


# -- folds, seeds, fixed episodes --------------------------------------------------------------
def test_fold_splits_follow_hsnet():
    pascal = fewshot_data.fold_split(20)
    assert pascal == tuple(tuple(range(5 * i + 1, 5 * i + 6)) for i in range(4))  # PASCAL-5i
    coco = fewshot_data.fold_split(80)
    assert coco[0] == tuple(range(1, 81, 4)) and coco[3] == tuple(range(4, 81, 4))  # COCO-20i: 4k + i + 1
    assert all(len(f) == 20 for f in coco) and sorted(sum(coco, ())) == list(range(1, 81))
    assert fewshot_data.fold_split(80, split="contiguous")[1] == tuple(range(21, 41))  # PFENet's default
    with pytest.raises(InputError, match="split must be"):
        fewshot_data.fold_split(20, split="random")


def test_a_fold_keeps_only_its_classes(tmp_path, capsys):
    data = make_episodes(tmp_path / "ep")  # 8 classes, 4 folds: contiguous, fold 1 = classes 3, 4
    out = tmp_path / "out"
    assert run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", "--fold", 1, "--episodes", 12,
               "--out", out)[0] == 0
    assert {r["class"] for r in rows(out)} == {"c3", "c4"}
    spec = {"classes": [f"c{c}" for c in range(1, 9)], "split": "interleaved"}
    data2 = make_episodes(tmp_path / "ep2", spec=spec)
    plan = fewshot_data.plan_episodes(fewshot_data.read_fewshot(data2), fold=1, episodes=30)
    assert {e.cls for e in plan} == {"c2", "c6"}
    for e in plan:
        assert e.query not in e.supports and all(s.value == e.query.value for s in e.supports)


def test_drawn_episodes_are_reproducible_by_seed(tmp_path):
    data = fewshot_data.read_fewshot(make_episodes(tmp_path / "ep"))

    def names(seed):
        return [(e.cls, e.query.name, tuple(s.name for s in e.supports))
                for e in fewshot_data.plan_episodes(data, shots=2, episodes=30, seed=seed)]

    assert names(0) == names(0) and names(7) == names(7)
    assert names(0) != names(7)
    assert all(len(set(sup)) == 2 and q not in sup for _, q, sup in names(3))
    fss = fewshot_data.read_fewshot(make_fss(tmp_path / "fss"))
    a = fewshot_data.plan_episodes(fss, shots=2, seed=5)
    assert [e.query.name for e in a] == [s.name for c in fss.classes.values() for s in c]  # each image once
    assert a == fewshot_data.plan_episodes(fss, shots=2, seed=5) != fewshot_data.plan_episodes(fss, shots=2, seed=6)


def test_fixed_episodes_from_fewshot_json(tmp_path, capsys):
    spec = {"classes": [f"c{c}" for c in range(1, 9)],
            "episodes": [{"class": "c1", "query": "im000", "supports": ["im004"]},
                         {"class": 2, "query": "im004", "supports": ["im000"]}]}
    data = make_episodes(tmp_path / "ep", spec=spec)
    out = tmp_path / "out"
    assert run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", "--out", out)[0] == 0
    got = [(r["class"], r["query"], r["supports"]) for r in rows(out)]
    assert got == [("c1", "im000", ["im004"]), ("c2", "im004", ["im000"])]
    bad = make_episodes(tmp_path / "bad", spec={"episodes": [{"class": 1, "query": "im001", "supports": ["im000"]}]})
    one_line(run(capsys, "eval", "fewshot", "--data", bad, "--method", "oracle", "--out", tmp_path / "o2")[2],
             "no image 'im001' showing class 1")


def test_perseg_and_davis_fit_each_class_once(tmp_path, capsys):
    data = make_perseg(tmp_path / "perseg", classes=2, per_class=4)
    out = tmp_path / "out"
    assert run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", "--out", out)[0] == 0
    r = rows(out)
    assert [x["supports"] for x in r] == [["obj0/00"]] * 3 + [["obj1/00"]] * 3
    assert summary(out)["fits"] == 2 and Colour.calls["fit"] == 2
    data = make_davis(tmp_path / "davis", objects=2, frames=7)
    out = tmp_path / "out2"
    assert run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", "--stride", 2, "--out", out)[0] == 0
    r = rows(out)
    assert [x["name"] for x in r] == [f"seq:{k}/{t:05d}" for k in (1, 2) for t in (1, 3, 5)]
    assert all(x["supports"] == [f"seq:{x['class'][-1]}/00000"] for x in r) and summary(out)["mIoU"] == 1.0


# -- resuming and refusing -----------------------------------------------------------------------
def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, capsys):
    data = make_fss(tmp_path / "fss")
    out = tmp_path / "out"
    Colour.interrupt_after = 4
    code, _, err = run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", "--shots", 2, "--out", out)
    assert code == 130 and "interrupted" in err
    assert len(rows(out)) == 4
    Colour.interrupt_after = None
    Colour.calls.update(predict=0)
    assert run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", "--shots", 2, "--out", out)[0] == 0
    assert Colour.calls["predict"] == 11 and len(rows(out)) == 15  # only the 11 left were scored
    full = tmp_path / "full"
    assert run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", "--shots", 2, "--out", full)[0] == 0
    strip = [{k: v for k, v in r.items() if "seconds" not in k and k != "fitted"} for r in rows(full)]
    assert sorted(strip, key=lambda r: r["name"]) == sorted(
        ({k: v for k, v in r.items() if "seconds" not in k and k != "fitted"} for r in rows(out)), key=lambda r: r["name"])
    code, _, err = run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", "--shots", 3, "--out", out)
    one_line(err, "different run", "shots")


def test_limit_scores_the_first_episodes(tmp_path, capsys):
    data = make_davis(tmp_path / "davis", frames=6)
    out = tmp_path / "out"
    assert run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", "--limit", 2, "--out", out)[0] == 0
    assert [r["name"] for r in rows(out)] == ["seq/00001", "seq/00002"]
    assert run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", "--out", out)[0] == 0
    assert len(rows(out)) == 5 and Colour.calls["fit"] == 2  # (the rerun fitted its reference once)


@pytest.mark.parametrize("argv, fragments", [
    (["--layout", "davis", "--fold", "0"], ["--fold applies to the episodes layout"]),
    (["--layout", "davis", "--episodes", "5"], ["--episodes does not apply to the davis layout"]),
    (["--layout", "davis", "--seed", "3"], ["--seed applies to drawn episodes"]),
    (["--layout", "davis", "--shots", "0"], ["--shots must be in 1..64"]),
    (["--layout", "davis", "--shots", "5"], ["class seq has 5 images"]),
    (["--layout", "davis", "--method", "nope"], ["unknown few-shot method 'nope'"]),
    (["--layout", "fss"], ["class folder", "has no images"]),
    (["--layout", "episodes"], ["image folder not found"]),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, argv, fragments):
    data = make_davis(tmp_path / "davis", frames=5)
    if "fss" in argv:
        data = data / "JPEGImages" / "480p"
    code, _, err = run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", *argv, "--out", tmp_path / "o")
    assert code == 2
    one_line(err, *fragments)
    assert not (tmp_path / "o").exists()


def test_unknown_layouts_and_bad_masks_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    one_line(run(capsys, "eval", "fewshot", "--data", tmp_path / "nothing", "--method", "oracle")[2],
             "cannot tell the few-shot layout")
    one_line(run(capsys, "eval", "fewshot", "--data", tmp_path / "missing", "--method", "oracle")[2],
             "data folder not found")
    data = make_episodes(tmp_path / "ep", classes=8, spec={"num_classes": 4})
    one_line(run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", "--out", tmp_path / "o")[2],
             "over the 4 classes")
    data = make_perseg(tmp_path / "perseg")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(data / "Annotations" / "obj0" / "00.png")
    one_line(run(capsys, "eval", "fewshot", "--data", data, "--method", "oracle", "--out", tmp_path / "o3")[2],
             "is empty")


# -- real data ---------------------------------------------------------------------------------
def test_davis2016_protocol_on_the_real_data(tmp_path, capsys):
    root = shared_dataset("davis2016")
    data = fewshot_data.read_fewshot(root)
    assert data.layout == "davis" and len(data.classes) == 10
    plan = fewshot_data.plan_episodes(data)
    assert len(plan) == sum(len(v) - 1 for v in data.classes.values())  # every later frame, once
    assert all(e.supports[0].name.endswith("/00000") for e in plan)
    out = tmp_path / "out"
    assert run(capsys, "eval", "fewshot", "--data", root, "--method", "empty", "--stride", 20, "--limit", 4,
               "--out", out)[0] == 0
    s = summary(out)
    assert s["num_episodes"] == 4 and s["mIoU"] == 0.0 and 0.4 < s["FB-IoU"] < 0.5


@pytest.mark.skipif(importlib.util.find_spec("anyseg.fewshot.classical") is None,
                    reason="the classical few-shot method is not written yet")
def test_classical_on_davis2016(tmp_path, capsys):
    root = shared_dataset("davis2016")
    out = tmp_path / "out"
    code, _, err = run(capsys, "eval", "fewshot", "--data", root, "--method", "classical", "--stride", 30,
                       "--limit", 3, "--out", out)
    assert code == 0, err
    s = summary(out)
    assert s["num_episodes"] == 3 and 0.0 < s["mIoU"] <= 1.0 and 0.4 < s["FB-IoU"] <= 1.0
    assert all(0.0 <= r["score"] <= 1.0 for r in rows(out))

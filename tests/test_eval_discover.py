"""``anyseg eval discover``: the saliency, CorLoc and unsupervised-semantic protocols.

The metrics are checked against hand-computed values on tiny arrays; the command runs on tiny
synthetic folders (GrabCut-style images/ + masks/, CamVid-style images/ + labels/, DAVIS, VOC)
with fake methods registered here: *fake-objects* returns the image's red pixels (so each
image's prediction is drawn into it), *fake-partition* one segment per colour with a planted
feature. The global clustering is a stand-in (the argmax of the planted feature) unless the
real :func:`anyseg.discover.spectral.cluster_segments` is tested.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anyseg.discover import base
from anyseg.errors import InputError
from anyseg.eval import discover as ed
from anyseg.types import Masks
from cli_helpers import one_line, run
from test_eval_fewshot import rows, summary

H, W = 64, 96
RED, GREEN, BLUE = (230, 20, 20), (20, 220, 30), (30, 40, 230)
CALLS = {"objects": 0, "partition": 0}
#: colour -> planted feature of fake-partition's segments
FEATURES = {RED: [1.0, 0.0, 0.0], GREEN: [0.0, 1.0, 0.0], BLUE: [0.0, 0.0, 1.0]}


class FakeObjects:
    name, kind = "fake-objects", "objects"

    def discover(self, image, objects=None):
        CALLS["objects"] += 1
        mask = image[..., 0] > 127
        if not mask.any():
            return base.empty_masks(image.shape[:2])
        return Masks(masks=mask[None], scores=np.array([0.8], np.float32))


class FakePartition:
    name, kind = "fake-partition", "partition"
    features = True

    def discover(self, image, objects=None):
        CALLS["partition"] += 1
        colours = np.unique(image.reshape(-1, 3), axis=0)
        masks = np.stack([(image == c).all(axis=2) for c in colours])
        feats = np.array([FEATURES.get(tuple(int(v) for v in c), [0.3, 0.3, 0.3]) for c in colours], np.float32)
        planted = getattr(self, "planted", {})
        feats = np.array([planted.get(tuple(int(v) for v in c), f) for c, f in zip(colours, feats)], np.float32)
        return Masks(masks=masks, scores=np.full(len(masks), 0.5, np.float32), labels=np.arange(len(masks)),
                     data={"feature": feats} if self.features else {})


def fake_cluster_segments(results, k, seed=0):
    """Stand-in: each segment's cluster is the argmax of its feature; one image's masks of one
    cluster merged (as the real one merges them)."""
    out = []
    for m in results:
        ids = np.argmax(np.asarray(m.data["feature"]), axis=1)
        keep = sorted(set(ids.tolist()))
        masks = np.stack([m.masks[ids == c].any(axis=0) for c in keep])
        out.append(Masks(masks=masks, scores=np.ones(len(keep), np.float32), labels=np.array(keep)))
    return out


@pytest.fixture(autouse=True)
def _fakes(monkeypatch):
    base.register_method("fake-objects", lambda **_: FakeObjects(), replace=True)
    base.register_method("fake-partition", lambda **_: FakePartition(), replace=True)
    CALLS.update(objects=0, partition=0)
    try:
        import anyseg.discover.spectral as spectral

        monkeypatch.setattr(spectral, "cluster_segments", fake_cluster_segments)
    except ImportError:
        monkeypatch.setitem(sys.modules, "anyseg.discover.spectral",
                            types.SimpleNamespace(cluster_segments=fake_cluster_segments))
    yield
    for name in ("fake-objects", "fake-partition"):
        base.METHODS.pop(name, None)


def _rect(y0, y1, x0, x1, value=True, shape=(H, W)) -> np.ndarray:
    a = np.zeros(shape, bool)
    a[y0:y1, x0:x1] = value
    return a


# -- metrics ----------------------------------------------------------------------------------------
def test_saliency_scores_by_hand():
    pred, gt = _rect(10, 30, 10, 40), _rect(10, 30, 25, 55)  # 600 px each, 300 shared
    s = ed.saliency_scores(pred, gt)
    assert s["iou"] == pytest.approx(300 / 900) and s["accuracy"] == pytest.approx(1 - 600 / (H * W))
    assert s["precision"] == s["recall"] == 0.5 and s["fbeta"] == pytest.approx(0.5)
    empty = ed.saliency_scores(np.zeros((H, W), bool), gt)  # TokenCut: precision 1 when nothing is predicted
    assert (empty["iou"], empty["precision"], empty["recall"], empty["fbeta"]) == (0.0, 1.0, 0.0, 0.0)
    ignore = _rect(10, 30, 10, 25)  # the prediction's own part left out: exact
    assert ed.saliency_scores(pred, gt, ignore)["iou"] == pytest.approx(300 / 600)


def test_max_fbeta_is_tokencuts_mean_of_f_then_max_and_the_mean_pr_variant():
    # two images, two thresholds: F per image per threshold, mean over images, best threshold
    p, r = np.array([[1.0, 0.5], [0.5, 0.5]]), np.array([[0.5, 1.0], [1.0, 0.5]])
    f = lambda pp, rr: 1.3 * pp * rr / (0.3 * pp + rr)  # noqa: E731
    want = max((f(1, .5) + f(.5, 1)) / 2, (f(.5, 1) + f(.5, .5)) / 2)
    assert ed.max_fbeta(p, r)[0] == pytest.approx(want)
    assert ed.max_fbeta(p, r)[1] == pytest.approx(max(f(.75, .75), f(.5, .75)))
    assert ed.fbeta(0.0, 0.0) == 0.0
    with pytest.raises(InputError):
        ed.max_fbeta([[1.0]], [[1.0, 0.5]])


def test_corloc_hits_and_misses():
    gt = [[10, 10, 40, 30], [60, 40, 90, 60]]
    assert ed.corloc_hit([[60, 40, 90, 60]], gt) == (1, 1.0)  # any gt box
    hit, best = ed.corloc_hit([[10, 10, 40, 30]], [[25, 10, 55, 30]])
    assert (hit, best) == (0, pytest.approx(1 / 3))
    assert ed.corloc_hit([[0, 0, 10, 10], [52, 42, 88, 58]], [[50, 40, 90, 60]])[0] == 1  # any predicted box
    assert ed.corloc_hit(np.zeros((0, 4)), gt) == (0, 0.0)
    assert ed.box_iou([0, 0, 10, 10], [[0, 0, 10, 5]])[0] == pytest.approx(0.5)


def test_component_boxes_drop_specks_and_voc_boxes_shift_by_one(tmp_path):
    mask = _rect(10, 30, 10, 40) | _rect(40, 50, 60, 70)
    mask[0, 0] = True  # a JPEG speck: under 1% of the foreground
    assert ed.component_boxes(mask).tolist() == [[10, 10, 40, 30], [60, 40, 70, 50]]
    xml = tmp_path / "a.xml"
    xml.write_text("<annotation><object><name>cat</name><bndbox><xmin>1</xmin><ymin>5</ymin><xmax>20</xmax>"
                   "<ymax>30</ymax></bndbox></object></annotation>")
    assert ed.read_voc_boxes(xml).tolist() == [[0, 4, 20, 30]]
    xml.write_text('<!DOCTYPE a [<!ENTITY x "y">]><annotation/>')
    with pytest.raises(InputError, match="DOCTYPE"):
        ed.read_voc_boxes(xml)


def test_hungarian_miou_with_a_known_permutation_and_unmatched_clusters():
    hist = np.array([[0, 5, 0], [7, 0, 0], [0, 0, 4]])  # clusters 0,1,2 are classes 1,0,2
    s = ed.class_scores(*ed.hungarian_counts(hist))
    assert s["mIoU"] == 1.0 and s["pixel_accuracy"] == 1.0
    tp, fp, fn = ed.hungarian_counts(np.array([[6, 0], [2, 0], [0, 4]]))  # three clusters, two classes
    assert (tp.tolist(), fp.tolist(), fn.tolist()) == ([6, 4], [0, 0], [2, 0])  # cluster 1 is unmatched: wrong
    s = ed.class_scores(*ed.hungarian_counts(np.array([[3, 3]])))  # one cluster, two classes
    assert s["mIoU"] == pytest.approx((3 / 6 + 0) / 2) and s["pixel_accuracy"] == 0.5


def test_partition_counts_first_segment_wins_and_uncovered_pixels_are_counted():
    labels = np.array([[0, 0, 1], [1, 9, 2]])
    masks = np.array([[[1, 1, 0], [0, 0, 0]], [[0, 1, 1], [0, 1, 0]]], bool)
    c = ed.partition_counts(masks, labels, void_id=9)
    assert c["classes"] == [0, 1, 2] and c["hist"] == [[2, 0, 0], [0, 1, 0]] and c["uncovered"] == [0, 1, 1]


# -- data sets ---------------------------------------------------------------------------------------
def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _image(*rects) -> np.ndarray:
    img = np.full((H, W, 3), 40, np.uint8)
    for r in rects:
        img[r] = RED
    return img


@pytest.fixture()
def grabcut(tmp_path) -> Path:
    """Four images: exact, half-shifted, nothing found, exact with a 128 band ignored."""
    root = tmp_path / "grabcut"
    cases = {"a": (_rect(10, 30, 10, 40), _rect(10, 30, 10, 40)), "b": (_rect(10, 30, 10, 40), _rect(10, 30, 25, 55)),
             "c": (np.zeros((H, W), bool), _rect(0, 8, 0, 8))}
    for name, (pred, gt) in cases.items():
        _save(root / "images" / f"{name}.png", _image(pred))
        _save(root / "masks" / f"{name}.png", gt.astype(np.uint8) * 255)
    band = _rect(40, 60, 50, 90).astype(np.uint8) * 128
    band[42:58, 52:88] = 255
    _save(root / "images" / "d.png", _image(_rect(40, 60, 50, 90)))
    _save(root / "masks" / "d.png", band)
    return root


SALIENCY = {"IoU": (1 + 1 / 3 + 0 + 1) / 4, "accuracy": 1 - 664 / (4 * H * W), "maxFbeta": (1 + 0.5 + 0 + 1) / 4,
            "maxFbeta_meanPR": 1.3 * 0.875 * 0.625 / (0.3 * 0.875 + 0.625)}


def test_saliency_run_summary_resume_and_json(capsys, grabcut, tmp_path):
    out = tmp_path / "run"
    argv = ["eval", "discover", "--data", grabcut, "--protocol", "saliency", "--method", "fake-objects", "--out", out]
    code, stdout, err = run(capsys, *argv)
    assert code == 0, err
    s = summary(out)
    for key, value in SALIENCY.items():
        assert s[key] == pytest.approx(value, abs=1e-6), key
    assert (s["num_images"], s["fbeta_thresholds"], s["skipped_no_object"], s["masks_per_image"]) == (4, 1, 0, 0.75)
    assert s["maxrss_mb"] > 0 and "seconds_per_image" in s and "maxFbeta" in stdout
    header = json.loads((out / "summary.json").read_text())["header"]
    assert header["method"] == "fake-objects" and header["model"] and header["protocol"] == "saliency"
    assert CALLS["objects"] == 4 and [r["name"] for r in rows(out)] == ["a", "b", "c", "d"]
    assert (out / "report.md").is_file()
    code, stdout, err = run(capsys, *argv, "--json")  # resumed: nothing recomputed
    assert code == 0 and CALLS["objects"] == 4, err
    printed = json.loads(stdout)
    assert printed["summary"]["IoU"] == pytest.approx(SALIENCY["IoU"], abs=1e-6)
    assert "maxFbeta" in err  # the table went to stderr


def test_corloc_run_on_masks_and_a_skipped_empty_ground_truth(capsys, grabcut, tmp_path):
    _save(grabcut / "images" / "e.png", _image())
    _save(grabcut / "masks" / "e.png", np.zeros((H, W), np.uint8))
    out = tmp_path / "run"
    code, _, err = run(capsys, "eval", "discover", "--data", grabcut, "--protocol", "corloc", "--method",
                       "fake-objects", "--out", out)
    assert code == 0, err
    s = summary(out)
    assert (s["CorLoc"], s["found"], s["num_images"], s["skipped_no_object"]) == (0.5, 2, 4, 1)
    assert CALLS["objects"] == 4  # the image without an object was not discovered
    d = next(r for r in rows(out) if r["name"] == "d")
    assert d["gt_boxes"] == [[52, 42, 88, 58]] and d["best_iou"] == pytest.approx(0.72)


def test_corloc_on_voc_and_saliency_on_davis(capsys, tmp_path):
    voc = tmp_path / "voc"
    for name, pred, box in (("x", _rect(10, 30, 10, 40), (11, 11, 40, 30)), ("y", _rect(10, 30, 10, 40), (60, 40, 90, 60))):
        _save(voc / "JPEGImages" / f"{name}.jpg", _image(pred))
        (voc / "Annotations").mkdir(exist_ok=True)
        (voc / "Annotations" / f"{name}.xml").write_text(
            "<annotation><object><bndbox>" + "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
            + "</bndbox></object></annotation>")
    code, _, err = run(capsys, "eval", "discover", "--data", voc, "--protocol", "corloc", "--method", "fake-objects",
                       "--out", tmp_path / "r1")
    assert code == 0 and summary(tmp_path / "r1")["CorLoc"] == 0.5, err
    davis = tmp_path / "davis"
    for seq in ("s1", "s2"):
        for i in range(4):
            _save(davis / "JPEGImages" / "480p" / seq / f"{i:05d}.jpg", _image(_rect(10, 30, 10, 40)))
            gt = _rect(10, 30, 10, 40) if i % 2 == 0 else _rect(10, 30, 25, 55)
            _save(davis / "Annotations" / "480p" / seq / f"{i:05d}.png", gt.astype(np.uint8) * 255)
    argv = ["eval", "discover", "--data", davis, "--protocol", "saliency", "--method", "fake-objects"]
    code, _, err = run(capsys, *argv, "--out", tmp_path / "r2")
    assert code == 0 and summary(tmp_path / "r2")["num_images"] == 2 and summary(tmp_path / "r2")["IoU"] == 1.0, err
    code, _, err = run(capsys, *argv, "--stride", 3, "--out", tmp_path / "r3")  # frames 0 and 3
    s = summary(tmp_path / "r3")
    assert code == 0 and s["num_images"] == 4 and s["IoU"] == pytest.approx((1 + 1 / 3) / 2), err
    assert [r["name"] for r in rows(tmp_path / "r3")] == ["s1/00000", "s1/00003", "s2/00000", "s2/00003"]


@pytest.fixture()
def camvid(tmp_path) -> Path:
    """Two 32x48 images; A: left red = class 0, right green = class 1 (row 0 void 11); B: top red =
    class 0, bottom blue = class 2."""
    root, h, w = tmp_path / "camvid", 32, 48
    a, b = np.zeros((h, w, 3), np.uint8), np.zeros((h, w, 3), np.uint8)
    la, lb = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    a[:, :24], a[:, 24:], la[:, 24:], la[0] = RED, GREEN, 1, 11
    b[:16], b[16:], lb[16:] = RED, BLUE, 2
    for name, img, lab in (("A", a, la), ("B", b, lb)):
        _save(root / "images" / f"{name}.png", img)
        _save(root / "labels" / f"{name}.png", lab)
    return root


def _semantic(capsys, camvid, out, *extra):
    code, _, err = run(capsys, "eval", "discover", "--data", camvid, "--protocol", "unsupervised-semantic",
                       "--method", "fake-partition", "--void-id", 11, "--out", out, *extra)
    assert code == 0, err
    return summary(out)


def test_unsupervised_semantic_global_and_per_image_matching(capsys, camvid, tmp_path, monkeypatch):
    s = _semantic(capsys, camvid, tmp_path / "ok")
    assert (s["mIoU"], s["pixel_accuracy"], s["num_classes"], s["clusters"]) == (1.0, 1.0, 3, 3)
    # B's blue segment carries A's green feature: the global clusters merge class 1 and class 2
    monkeypatch.setattr(FakePartition, "planted", {BLUE: [0.0, 1.0, 0.0]}, raising=False)
    s = _semantic(capsys, camvid, tmp_path / "mixed")
    # clusters: red = 744 + 768 px of class 0; green = 744 of class 1 + 768 of class 2 -> matched to class 2
    assert s["mIoU"] == pytest.approx((1 + 0 + 768 / 1512) / 3, abs=1e-6)
    assert s["pixel_accuracy"] == pytest.approx((1512 + 768) / 3024, abs=1e-6)
    assert s["per_class"]["1"] == {"IoU": 0.0, "Acc": 0.0}
    calls = CALLS["partition"]
    s = _semantic(capsys, camvid, tmp_path / "mixed", "--matching", "per-image")  # resumed: matching is post-hoc
    assert CALLS["partition"] == calls and (s["mIoU"], s["pixel_accuracy"], s["matching"]) == (1.0, 1.0, "per-image")
    s = _semantic(capsys, camvid, tmp_path / "mixed", "--classes", 2)
    assert s["clusters"] == 2 and s["mIoU"] == pytest.approx((1 + 0 + 768 / 1512) / 3, abs=1e-6)
    assert (tmp_path / "mixed" / "features" / "A.npz").is_file()


def test_real_cluster_segments_groups_planted_features(capsys, camvid, tmp_path, monkeypatch):
    try:
        import anyseg.discover.spectral as spectral
    except ImportError:
        pytest.skip("anyseg.discover.spectral is not there yet")
    monkeypatch.undo()  # the real k-means (the planted features are three one-hot directions)
    assert spectral.cluster_segments is not fake_cluster_segments
    s = _semantic(capsys, camvid, tmp_path / "real")
    assert (s["mIoU"], s["pixel_accuracy"]) == (1.0, 1.0)


# -- errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, fragments", [
    (["--protocol", "saliency", "--method", "nope"], ["unknown discovery method 'nope'", "tokencut"]),
    (["--protocol", "saliency", "--method", "fake-objects", "--objects", 0], ["--objects must be in 1..64"]),
    (["--protocol", "unsupervised-semantic", "--method", "fake-partition", "--classes", 0], ["--classes must be in 1.."]),
    (["--protocol", "saliency", "--method", "fake-partition"], ["returns a partition; use --protocol unsupervised-semantic"]),
    (["--protocol", "corloc", "--method", "fake-objects", "--classes", 3], ["apply to --protocol unsupervised-semantic"]),
    (["--protocol", "unsupervised-semantic", "--method", "fake-partition"], ["not a semantic data folder", "labels/"]),
    (["--protocol", "nope"], ["invalid choice: 'nope'"]),
    (["--protocol", "saliency", "--method", "fake-objects", "--stride", 2], ["--stride applies to DAVIS folders"]),
])
def test_bad_input_is_one_line(capsys, grabcut, tmp_path, extra, fragments):
    code, _, err = run(capsys, "eval", "discover", "--data", grabcut, "--out", tmp_path / "run", *extra)
    assert code != 0
    one_line(err, *fragments)
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_bad_folders_and_methods_without_features_are_one_line(capsys, camvid, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "eval", "discover", "--data", tmp_path / "empty", "--protocol", "saliency",
                       "--method", "fake-objects")
    assert code != 0
    one_line(err, "not a discovery data folder")
    code, _, err = run(capsys, "eval", "discover", "--data", camvid, "--protocol", "unsupervised-semantic",
                       "--method", "fake-objects", "--out", tmp_path / "r")
    assert code != 0
    one_line(err, "returns objects, not a partition")
    monkeypatch.setattr(FakePartition, "features", False)
    code, _, err = run(capsys, "eval", "discover", "--data", camvid, "--protocol", "unsupervised-semantic",
                       "--method", "fake-partition", "--void-id", 11, "--out", tmp_path / "r2")
    assert code != 0
    one_line(err, "gives no segment features", "--matching per-image")
    s = _semantic(capsys, camvid, tmp_path / "r3", "--matching", "per-image")
    assert s["mIoU"] == 1.0

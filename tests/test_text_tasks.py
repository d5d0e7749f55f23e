"""The text task layer (instances, class maps, panoptic, files) with stand-in backends.

The backends' own tests (tiny real models) live in test_text_{sam3,detectors,clip}.py; here the
composition is checked with backends whose answers are known.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from anyseg.errors import InputError, ModelError
from anyseg.tasks import text as tt
from anyseg.tasks.text_output import write_instances, write_panoptic, write_semantic
from anyseg.text.base import Detections
from anyseg.text.vocab import UNLABELED, parse_classes, parse_phrases
from anyseg.types import Masks


def _image(h: int = 60, w: int = 90) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _rect(h, w, x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


class FakeDetector:
    name = "fake-detector"

    def __init__(self, det: Detections):
        self.det = det
        self.seen = None

    def detect(self, image, classes, box_threshold=None, text_threshold=None):
        self.seen = (list(classes), box_threshold, text_threshold)
        return self.det


class BoxPredictor:
    """Mask = the prompt's box, score 0.9: checks that boxes reach the promptable model."""

    name, family = "box-predictor", "sam"

    def embed(self, image):
        return image.shape[:2]

    def predict_batch(self, emb, prompts, multimask=False):
        h, w = emb
        out = []
        for p in prompts:
            x0, y0, x1, y1 = (int(round(v)) for v in np.asarray(p.box).reshape(4))
            out.append(Masks(_rect(h, w, x0, y0, x1, y1)[None], scores=[0.9]))
        return out


class FakeInstances:
    name = "fake"

    def __init__(self, masks: Masks):
        self.masks = masks

    def instances(self, image, classes, params):
        return self.masks


def _instances(h, w, boxes, scores, class_ids, classes):
    return tt._labelled(np.stack([_rect(h, w, *b) for b in boxes]), np.asarray(scores, np.float32),
                        np.asarray(class_ids), [classes[c].label for c in class_ids], classes)


def test_grounded_backend_nms_boxes_to_masks_and_labels():
    h, w = 60, 90
    classes = parse_classes("cat,dog|puppy")
    det = Detections(boxes=[[10, 10, 40, 40], [11, 10, 40, 41], [50, 5, 80, 30]], scores=[0.5, 0.9, 0.6],
                     labels=[0, 0, 1], phrases=["cat", "cat", "puppy"])
    detector = FakeDetector(det)
    backend = tt.GroundedBackend(detector, BoxPredictor())
    out = tt.find_instances(_image(h, w), classes, backend, tt.TextParams(box_threshold=0.3, text_threshold=0.2))
    assert detector.seen[1:] == (0.3, 0.2) and [c.label for c in detector.seen[0]] == ["cat", "dog"]
    # the two overlapping cat boxes are one after NMS (0.8, class-agnostic); the best one stays
    assert out.labels.tolist() == ["cat", "dog"] and out.scores.tolist() == pytest.approx([0.9, 0.6])
    assert out.data["phrase"].tolist() == ["cat", "puppy"] and out.data["class_id"].tolist() == [0, 1]
    np.testing.assert_array_equal(out.boxes[0], [11, 10, 40, 41])
    assert out.data["mask_score"].tolist() == pytest.approx([0.9, 0.9])
    assert backend.name == "fake-detector+box-predictor"
    top = tt.find_instances(_image(h, w), classes, backend, tt.TextParams(top=1))
    assert len(top) == 1 and top.labels[0] == "cat"


def test_grounded_backend_with_no_boxes_is_empty():
    backend = tt.GroundedBackend(FakeDetector(Detections(np.zeros((0, 4)), [], [])), BoxPredictor())
    out = tt.find_instances(_image(), "cat", backend)
    assert len(out) == 0 and out.image_size == (60, 90)


def test_find_instances_sorts_applies_min_area_and_rejects_bad_params():
    h, w = 60, 90
    classes = parse_classes("a,b")
    masks = _instances(h, w, [(0, 0, 5, 5), (10, 10, 50, 50), (0, 0, 20, 20)], [0.2, 0.5, 0.9], [0, 1, 0], classes)
    out = tt.find_instances(_image(h, w), classes, FakeInstances(masks), tt.TextParams(min_area=100))
    assert out.scores.tolist() == pytest.approx([0.9, 0.5])
    for bad in ({"threshold": 1.5}, {"nms": -0.1}, {"top": 0}, {"min_area": -1}, {"box_threshold": 2}):
        with pytest.raises(InputError):
            tt.TextParams(**bad)


class FakeClip:
    name, logit_scale = "fake-clip", 100.0

    def __init__(self, probs=None, logits=None):
        self.probs, self._logits, self.asked = probs, logits, None

    def classify_masks(self, image, masks, classes):
        self.asked = [c.label for c in classes]
        return self.probs

    def dense_logits(self, image, classes, method="sclip"):
        self.asked = (method, [c.label for c in classes])
        return self._logits


def test_label_masks_drops_background_and_low_probability():
    h, w = 20, 30
    masks = Masks(np.stack([_rect(h, w, 0, 0, 5, 5), _rect(h, w, 5, 5, 10, 10), _rect(h, w, 0, 0, 30, 20)]))
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.4, 0.35, 0.25]], np.float32)  # cat, dog, background
    clip = FakeClip(probs)
    classes = parse_classes("cat,dog")
    out = tt.label_masks(clip, _image(h, w), masks, classes)
    assert clip.asked == ["cat", "dog", "background"]
    assert out.labels.tolist() == ["cat"] and out.scores.tolist() == pytest.approx([0.7])
    every = tt.label_masks(clip, _image(h, w), masks, classes, keep_all=True)
    assert every.labels.tolist() == ["cat", "", ""] and every.data["class_id"].tolist() == [0, -1, -1]
    low = tt.label_masks(clip, _image(h, w), masks, classes, threshold=0.3)
    assert low.labels.tolist() == ["cat", "cat"]
    # a class named "background" is not asked twice
    tt.label_masks(FakeClip(probs[:, :2]), _image(h, w), masks, parse_classes("cat,background"))


def test_paint_lets_the_best_instance_win_and_leaves_the_rest_unlabeled():
    h, w = 10, 10
    classes = parse_classes("a,b")
    masks = _instances(h, w, [(0, 0, 6, 6), (3, 3, 8, 8)], [0.9, 0.4], [0, 1], classes)
    cmap = tt.paint(masks, (h, w))
    assert cmap[4, 4] == 0 and cmap[7, 7] == 1 and cmap[9, 9] == UNLABELED


def test_dense_clip_semantic_argmax_and_unlabeled_threshold():
    h, w = 8, 12
    logits = np.zeros((2, h, w), np.float32)
    logits[0, :, :6] = 0.3
    logits[1, :, 6:] = 0.3
    logits[:, 0, 0] = 0.25  # a tie: probability 0.5 each
    clip = FakeClip(logits=logits)
    sem = tt.DenseClipSemantic(clip, method="maskclip")
    cmap = tt.semantic_map(_image(h, w), "sky,road", sem)
    assert clip.asked == ("maskclip", ["sky", "road"])
    assert cmap.dtype == np.uint8 and (cmap[1:, :6] == 0).all() and (cmap[:, 6:] == 1).all()
    strict = tt.semantic_map(_image(h, w), "sky,road", tt.DenseClipSemantic(clip, unlabeled_below=0.9))
    assert strict[0, 0] == UNLABELED and strict[5, 2] == 0
    with pytest.raises(InputError, match="method"):
        tt.DenseClipSemantic(clip, method="nope")


def test_panoptic_follows_the_coco_panoptic_format(tmp_path):
    h, w = 40, 60
    things, stuff = parse_classes("person,car"), parse_classes("sky,road")
    allc = [*things, *stuff]
    masks = _instances(h, w, [(5, 5, 20, 30), (15, 10, 30, 35), (0, 0, 60, 15), (0, 30, 60, 40), (40, 20, 42, 22)],
                       [0.9, 0.8, 0.7, 0.6, 0.95], [0, 0, 2, 3, 1], allc)

    class ByName(FakeInstances):
        def instances(self, image, classes, params):
            names = [c.label for c in classes]
            keep = [i for i, lab in enumerate(self.masks.labels) if lab in names]
            sel = self.masks[np.asarray(keep, np.int64)]
            return tt._labelled(sel.masks, sel.scores, [names.index(lab) for lab in sel.labels],
                                list(sel.labels), classes)

    res = tt.panoptic(_image(h, w), things, stuff, ByName(masks), min_area=5)
    cats = {c["id"]: c for c in res.categories}
    assert [(c["name"], c["isthing"]) for c in res.categories] == [("person", 1), ("car", 1), ("sky", 0), ("road", 0)]
    labels = [s["label"] for s in res.segments]
    assert labels.count("sky") == 1 and labels.count("road") == 1 and labels.count("person") == 2
    assert "car" not in labels  # 4 pixels < min_area
    for s in res.segments:
        m = res.ids == s["id"]
        ys, xs = np.nonzero(m)
        assert s["area"] == m.sum() and s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert cats[s["category_id"]]["isthing"] == s["isthing"]
    assert res.ids[20, 17] == next(s["id"] for s in res.segments if s["score"] == pytest.approx(0.9))  # best wins
    assert set(np.unique(res.ids)) == {0} | {s["id"] for s in res.segments}

    record, path = write_panoptic(res, _image(h, w), tmp_path / "out", "img", "fake", {})
    coco = json.loads((tmp_path / "out" / "img_panoptic.json").read_text())
    assert set(coco) >= {"images", "annotations", "categories"}
    ann = coco["annotations"][0]
    png = np.asarray(Image.open(tmp_path / "out" / ann["file_name"]).convert("RGB"))
    ids = tt.rgb_to_id(png)
    np.testing.assert_array_equal(ids, res.ids)
    for seg in ann["segments_info"]:
        assert set(seg) == {"id", "category_id", "area", "bbox", "iscrowd"}
        assert seg["area"] == int((ids == seg["id"]).sum())
    assert {c["id"] for c in coco["categories"]} >= {s["category_id"] for s in ann["segments_info"]}
    with pytest.raises(InputError, match="both a thing and a stuff"):
        tt.panoptic(_image(h, w), "sky", "sky", ByName(masks))


def test_id_rgb_roundtrip():
    ids = np.array([[0, 1, 255], [256, 65535, 70000]])
    np.testing.assert_array_equal(tt.rgb_to_id(tt.id_to_rgb(ids)), ids)


def test_write_instances_and_semantic_files(tmp_path):
    h, w = 30, 40
    classes = parse_classes("cat,dog|puppy")
    masks = _instances(h, w, [(0, 0, 10, 10), (20, 5, 35, 25)], [0.9, 0.7], [0, 1], classes)
    record, path = write_instances(masks, _image(h, w), classes, tmp_path / "t", "im", "fake", {"top": None})
    coco = json.loads((tmp_path / "t" / "im_coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]
    assert [a["category_id"] for a in coco["annotations"]] == [1, 2]
    assert [m["label"] for m in record["instances"]] == ["cat", "dog"] and path.is_file()
    cmap = np.full((h, w), UNLABELED, np.uint8)
    cmap[:10] = 0
    cmap[10:20] = 1
    record, _ = write_semantic(cmap, _image(h, w), classes, tmp_path / "s", "im", "fake", {})
    saved = np.asarray(Image.open(tmp_path / "s" / "im_classes.png"))
    np.testing.assert_array_equal(saved, cmap)
    assert record["classes"][0]["fraction"] == pytest.approx(1 / 3) and record["unlabeled_fraction"] == pytest.approx(1 / 3)
    overlay = np.asarray(Image.open(tmp_path / "s" / "im_overlay.png"))
    assert overlay.shape[1] == w and overlay.shape[0] > h  # legend strip below


def test_class_names_and_phrases_validation():
    assert [c.names for c in parse_classes("person|pedestrian, car")] == [("person", "pedestrian"), ("car",)]
    assert parse_phrases(["the dog, on the left"])[0].label == "the dog, on the left"
    for bad in ("", " , ", "a,,b", "car,Car", "a|a", "a|"):
        with pytest.raises(InputError):
            parse_classes(bad)
    with pytest.raises(InputError, match="empty"):
        parse_phrases([])
    with pytest.raises(InputError, match="at most 255"):
        parse_classes([f"c{i}" for i in range(256)])


def test_auto_without_text_models_is_one_clear_error():
    with pytest.raises(ModelError, match="no text model is present locally"):
        tt.resolve_text_model("auto")
    with pytest.raises(ModelError, match="cannot read text"):
        tt.load_instance_backend("sam-vit-base")


def test_semantic_engines_register_for_eval():
    from anyseg.eval import runners
    from anyseg.eval.engines import register_semantic_engines

    register_semantic_engines()
    assert {"clip-vit-b16", "clip-vit-b16:maskclip", "sam3", "grounding-dino-tiny", "auto"} <= set(runners.SEMANTIC_ENGINES)


def test_text_cli_errors_are_one_line(capsys, tmp_path):
    from anyseg.cli import main

    img = tmp_path / "im.png"
    Image.fromarray(_image()).save(img)
    cases = [
        (["text", str(img), "cat", "--out", str(tmp_path / "o")], "no text model is present locally"),
        (["text", str(img), "cat", "Cat", "--model", "owlv2-base", "--out", str(tmp_path / "o")], "duplicate"),
        (["text", str(img), "cat", "--model", "nope", "--out", str(tmp_path / "o")], "unknown model"),
        (["text", str(img), "cat", "--model", "sam-vit-base", "--out", str(tmp_path / "o")], "cannot read text"),
        (["text", str(img), "cat", "--top", "0", "--out", str(tmp_path / "o")], "top must be at least 1"),
        (["semantic", str(img), "--classes", "", "--out", str(tmp_path / "o")], "empty"),
        (["semantic", str(img), "--classes", "a,a", "--out", str(tmp_path / "o")], "duplicate"),
        (["panoptic", str(img), "--out", str(tmp_path / "o")], "--things and/or --stuff"),
        (["panoptic", str(img), "--things", "sky", "--stuff", "sky", "--out", str(tmp_path / "o")], "both a thing"),
        (["everything", str(img), "--label-with", "clip", "--out", str(tmp_path / "o")], "go together"),
        (["text", str(tmp_path / "missing.png"), "cat", "--out", str(tmp_path / "o")], "missing.png"),
    ]
    for argv, msg in cases:
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, err)
        assert len(err.splitlines()) == 1 and msg in err, (argv, err)
    assert not (tmp_path / "o").exists()


def test_promptable_loader_refuses_text_models():
    from anyseg.models import load_model

    with pytest.raises(ModelError, match="not a promptable segmenter"):
        load_model("clip-vit-b16")

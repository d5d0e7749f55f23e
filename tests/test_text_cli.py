"""``anyseg text / semantic / panoptic / everything --label-with`` end to end on tiny random models.

The tiny models are saved in an ``$ANYSEG_MODELS`` folder under their registry names and found
through the users' path, as real downloaded weights would be. Random weights make the
*content* of the answers meaningless, so these tests check the plumbing: files, formats, ids.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from anyseg.cli import main
from anyseg.tasks.text import rgb_to_id

from conftest import shared_dataset
from tiny_clip import build_clip
from tiny_detectors import build_grounding_dino, build_owlv2
from tiny_models import BUILDERS
from tiny_sam3 import build_sam3


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    build_sam3(root / "sam3")
    build_grounding_dino(root / "grounding-dino-tiny")
    build_owlv2(root / "owlv2-base")
    build_clip(root / "clip-vit-b16")
    BUILDERS["sam"](root / "sam-vit-base")
    return root


@pytest.fixture()
def env(models_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("ANYSEG_MODELS", str(models_dir))
    img = tmp_path / "street.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(img)
    return img


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("model", ["sam3", "grounding-dino-tiny", "owlv2-base", "clip-vit-b16"])
def test_text_command_writes_labelled_instances(capsys, env, tmp_path, model):
    out = tmp_path / model
    code, stdout, err = _run(capsys, "text", env, "a red car", "person|pedestrian", "--model", model,
                             "--threshold", "0", "--box-threshold", "0", "--text-threshold", "0", "--top", "3",
                             "--out", out, "--json")
    assert code == 0, err
    record = json.loads(stdout)
    assert record["classes"] == [["a red car"], ["person", "pedestrian"]]
    assert len(record["instances"]) <= 3
    for m in record["instances"]:
        assert m["label"] in ("a red car", "person") and m["class_id"] in (0, 1)
    scores = [m["score"] for m in record["instances"]]
    assert scores == sorted(scores, reverse=True)
    coco = json.loads((out / "street_coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["a red car", "person"]
    assert len(coco["annotations"]) == len(record["instances"])
    assert (out / "street_overlay.png").is_file()
    if model.startswith(("grounding", "owlv2")):
        assert record["model"] == f"{model}+sam-vit-base"


def test_semantic_command_dense_clip_and_instance_backend(capsys, env, tmp_path):
    for extra in (["--model", "clip-vit-b16", "--method", "maskclip"], ["--model", "clip-vit-b16"],
                  ["--model", "clip-vit-b16", "--refine", "sam-vit-base"], ["--model", "sam3", "--threshold", "0"]):
        out = tmp_path / "_".join(extra).replace("-", "")
        code, stdout, err = _run(capsys, "semantic", env, "--classes", "sky,road,car|vehicle", *extra, "--out", out,
                                 "--json")
        assert code == 0, err
        record = json.loads(stdout)
        cmap = np.asarray(Image.open(out / "street_classes.png"))
        assert cmap.shape == (48, 80)
        assert set(np.unique(cmap)) <= {0, 1, 2, 255}
        if "clip-vit-b16" in extra:
            assert 255 not in cmap  # dense CLIP labels every pixel
        if "--refine" in extra:
            assert record["model"] == "clip-vit-b16:sclip+sam-vit-base"
        fractions = sum(c["fraction"] for c in record["classes"]) + record["unlabeled_fraction"]
        assert fractions == pytest.approx(1.0, abs=1e-4)


def test_panoptic_command_writes_coco_panoptic(capsys, env, tmp_path):
    out = tmp_path / "pan"
    code, stdout, err = _run(capsys, "panoptic", env, "--things", "person,car", "--stuff", "sky,road",
                             "--model", "sam3", "--stuff-model", "clip-vit-b16", "--threshold", "0",
                             "--min-area", "0", "--out", out, "--json")
    assert code == 0, err
    coco = json.loads((out / "street_panoptic.json").read_text())
    ann = coco["annotations"][0]
    ids = rgb_to_id(np.asarray(Image.open(out / ann["file_name"]).convert("RGB")))
    infos = ann["segments_info"]
    assert sorted(np.unique(ids[ids > 0]).tolist()) == sorted(s["id"] for s in infos)
    cats = {c["id"]: c for c in coco["categories"]}
    assert {c["name"]: c["isthing"] for c in cats.values()} == {"person": 1, "car": 1, "sky": 0, "road": 0}
    for s in infos:
        assert s["area"] == int((ids == s["id"]).sum()) and s["category_id"] in cats
    stuff = [s for s in infos if not cats[s["category_id"]]["isthing"]]
    assert len({s["category_id"] for s in stuff}) == len(stuff)  # one segment per stuff class


def test_everything_label_with_clip(capsys, env, tmp_path):
    out = tmp_path / "ev"
    code, stdout, err = _run(capsys, "everything", env, "--model", "classical", "--label-with", "clip-vit-b16",
                             "--classes", "sky,road", "--out", out, "--json")
    assert code == 0, err
    record = json.loads(stdout)
    assert record["classes"] == [["sky"], ["road"]] and record["masks"]
    assert all(m["label"] in ("sky", "road", "") and 0 <= m["class_prob"] <= 1 for m in record["masks"])
    coco = json.loads((out / "street_coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["sky", "road", "unlabeled"]


def test_text_command_bad_input_keeps_earlier_results(capsys, env, tmp_path):
    out = tmp_path / "keep"
    assert _run(capsys, "text", env, "car", "--model", "sam3", "--threshold", "0", "--out", out)[0] == 0
    before = sorted(p.name for p in out.iterdir())
    for argv, msg in (
        (["text", env, "car", "--model", "sam3", "--threshold", "1.5", "--out", out], "threshold must be in [0, 1]"),
        (["text", env, "car", "--model", "clip-vit-l14", "--out", out], "clip-vit-l14"),
        (["semantic", env, "--classes", "a", "--model", "clip-vit-b16", "--method", "masks", "--refine", "sam-vit-base",
          "--out", out], "--refine"),
    ):
        code, _, err = _run(capsys, *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1 and msg in err, err
    assert sorted(p.name for p in out.iterdir()) == before


def test_eval_semantic_on_camvid_with_dense_clip(capsys, env, tmp_path):
    data = shared_dataset("camvid")
    classes = "Sky,Building,Pole,Road,Pavement,Tree,SignSymbol,Fence,Car,Pedestrian,Bicyclist"
    code, stdout, err = _run(capsys, "eval", "semantic", "--model", "clip-vit-b16:maskclip", "--data", data,
                             "--classes", classes, "--void-id", "11", "--limit", "2", "--out", tmp_path / "ev")
    assert code == 0, err
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    s = summary["summary"]
    assert s["num_images"] == 2 and 0 <= s["mIoU"] <= 1 and 0 <= s["aAcc"] <= 1

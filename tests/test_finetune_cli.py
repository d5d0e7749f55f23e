"""``anyseg finetune`` / ``anyseg pseudolabel``: options checked first, one-line errors, outputs, resume.

The CLI is tested twice: with the trainer replaced by a stub (the report, ``finetune.json``,
the before/after ``eval box`` numbers, the printed model folder) and end to end with a tiny
random SAM (:mod:`tiny_models`) and the real trainer (a few steps: the exported folder loads
through ``--model``, a rerun resumes, a different configuration is refused, ``--fresh``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from cli_helpers import assert_one_line_error, run

HAS_TRAIN = importlib.util.find_spec("anyseg.finetune.train") is not None


def _data(root: Path, n: int = 3, size: tuple[int, int] = (64, 96), seed: int = 0) -> Path:
    """``root/images/`` + ``root/masks/``: bright ellipses on noise, 64x96."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        cy, cx, ry, rx = rng.uniform(20, h - 20), rng.uniform(25, w - 25), rng.uniform(8, 16), rng.uniform(10, 20)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        image = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
        image[mask] = (220, 180, 60)
        Image.fromarray(image).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"im{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory) -> Path:
    from tiny_models import build_sam

    return build_sam(tmp_path_factory.mktemp("tiny") / "sam")


@pytest.fixture
def data(tmp_path) -> tuple[Path, Path]:
    return _data(tmp_path / "train"), _data(tmp_path / "val", n=2, seed=1)


# -- option errors: one line, before any work ------------------------------------------------------
@pytest.mark.parametrize("extra, fragments", [
    (["--epochs", "2", "--steps", "3"], ["--steps", "--epochs"]),
    (["--lora-rank", "0"], ["--lora-rank", "1..256"]),
    (["--lora-rank", "100000"], ["--lora-rank"]),
    (["--method", "full", "--lora-rank", "4"], ["--lora-rank applies to --method lora"]),
    (["--method", "decoder", "--lora-decoder"], ["--lora-decoder applies"]),
    (["--method", "decoder", "--keep-adapter"], ["--keep-adapter applies"]),
    (["--method", "bogus"], ["--method must be one of lora, decoder, full"]),
    (["--steps", "0"], ["--steps"]),
    (["--batch", "0"], ["--batch"]),
    (["--accumulate", "-1"], ["--accumulate"]),
    (["--lr", "-1"], ["--lr"]),
    (["--lr", "nan"], ["--lr"]),
    (["--prompts", "box,scribble"], ["--prompts"]),
    (["--prompts", "mask"], ["mask needs box or point"]),
    (["--precision", "fp16"], ["--precision"]),
    (["--checkpoint-every", "0"], ["--checkpoint-every"]),
    (["--device", "tpu"], ["tpu"]),
])
def test_bad_options_are_one_line_before_any_work(capsys, tmp_path, extra, fragments):
    out = tmp_path / "out"
    code, _, err = run(capsys, "finetune", "--model", "no-such-model", "--data", tmp_path / "nope", "--out", out, *extra)
    assert_one_line_error(code, err, *fragments)
    assert not out.exists()


def test_data_errors_name_the_folder_or_files(capsys, tmp_path, data):
    code, _, err = run(capsys, "finetune", "--model", "classical", "--data", tmp_path / "nope", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "nope")
    bad = _data(tmp_path / "bad", n=2)
    (bad / "masks" / "im1.png").unlink()
    code, _, err = run(capsys, "finetune", "--model", "classical", "--data", bad, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "im1")
    empty = _data(tmp_path / "empty", n=1)
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(empty / "masks" / "im0.png")
    code, _, err = run(capsys, "finetune", "--model", "classical", "--data", data[0], "--val", empty,
                       "--out", tmp_path / "o")
    assert_one_line_error(code, err, "im0")
    assert not (tmp_path / "o").exists()


def test_the_classical_engine_is_refused(capsys, tmp_path, data):
    code, _, err = run(capsys, "finetune", "--model", "classical", "--data", data[0], "--out", tmp_path / "o")
    assert_one_line_error(code, err, "classical", "learnable")


# -- the CLI around a stub trainer ------------------------------------------------------------------
def _stub_train(calls: list):
    def train(model, data_dir, out_dir, cfg, val_dir=None, device=None, resume=True, progress=True, on_step=None,
              **kw):
        calls.append(dict(cfg=cfg, resume=resume, val_dir=val_dir, **kw))
        model_dir = Path(out_dir) / "model"
        shutil.copytree(Path(model.folder), model_dir, dirs_exist_ok=True)
        history = [{"step": i, "loss": 1.0 / i, "lr": 1e-4} for i in range(1, 6)]
        return SimpleNamespace(history=history, val=[{"epoch": 1, "iou": 0.4}, {"epoch": 2, "iou": 0.6}],
                               out_dir=Path(out_dir), model_dir=model_dir, steps=5, seconds=0.5)
    return train


@pytest.fixture
def stub(monkeypatch):
    import anyseg.finetune as ft

    calls: list = []
    monkeypatch.setattr(ft, "train", _stub_train(calls), raising=False)
    if not hasattr(ft, "FinetuneConfig"):  # (before anyseg.finetune's trainer exists)
        fields = dict(method="lora", lora_rank=8, lora_decoder=False, steps=None, epochs=None, batch=2, accumulate=1,
                      lr=None, weight_decay=None, prompts=("box", "point"), max_points=3, precision="fp32", seed=0,
                      checkpoint_every=100, val_every=None)
        cfg = dataclasses.make_dataclass("FinetuneConfig", [(k, object, dataclasses.field(default=v))
                                                            for k, v in fields.items()])
        monkeypatch.setattr(ft, "FinetuneConfig", cfg, raising=False)
    if not hasattr(ft, "load_pairs"):
        from anyseg.finetune.data import load_pairs

        monkeypatch.setattr(ft, "load_pairs", load_pairs, raising=False)
    return calls


def test_the_report_and_before_after_numbers(capsys, tmp_path, data, tiny_sam, stub):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "finetune", "--model", tiny_sam, "--data", data[0], "--val", data[1], "--steps", 5,
                            "--method", "decoder", "--prompts", "box", "--out", out)
    assert code == 0, err
    assert stdout.strip() == str(out / "model")  # the model folder, on stdout
    assert stub[0]["cfg"].method == "decoder" and stub[0]["cfg"].steps == 5 and stub[0]["resume"] is True
    assert tuple(stub[0]["cfg"].prompts) == ("box",)
    for name in ("curves.png", "report.md", "finetune.json", "eval/base/summary.json", "eval/finetuned/summary.json"):
        assert (out / name).is_file(), name
    with Image.open(out / "curves.png") as im:
        assert im.format == "PNG" and im.size[0] > 400
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["num_train"] == 3 and summary["num_val"] == 2 and summary["steps"] == 5
    assert summary["val_iou"] == 0.6 and summary["final_loss"] == pytest.approx(0.2)
    # the stub's model is the base model: eval box gives the same numbers before and after
    assert summary["before"]["num_images"] == 2 and summary["before"]["mean_iou"] == summary["after"]["mean_iou"]
    report = (out / "report.md").read_text()
    assert "curves.png" in report and "| base |" in report and "| fine-tuned |" in report
    assert "anyseg eval box --model" in report and "best 0.6000" in report


def test_json_no_eval_and_fresh(capsys, tmp_path, data, tiny_sam, stub):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "finetune", "--model", tiny_sam, "--data", data[0], "--val", data[1], "--no-eval",
                            "--fresh", "--keep-adapter", "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["before"] is None and summary["after"] is None and not (out / "eval").exists()
    assert stub[0]["resume"] is False and summary["config"]["lora_rank"] == 8
    assert len(summary["eval_commands"]) == 2 and "Not measured" in (out / "report.md").read_text()


def test_report_without_validation(tmp_path):
    from anyseg.finetune.report import plot_curves, smooth, write_report

    assert smooth([1, 3, 5], window=2) == [1.0, 2.0, 4.0] and smooth([]) == []
    paths = write_report(tmp_path, {"base_model": "m", "model_dir": "d", "config": {"method": "full"}, "steps": 0},
                         [], [])
    assert paths["curves"].is_file() and "No validation split" in paths["report"].read_text()
    p = plot_curves([{"step": 1, "loss": float("nan")}, {"step": 2, "loss": 0.5}], [{"step": 2, "iou": 0.1}],
                    tmp_path / "c.png")
    assert p.stat().st_size > 1000


# -- end to end: the real trainer, a tiny SAM -------------------------------------------------------
@pytest.mark.skipif(not HAS_TRAIN, reason="anyseg.finetune.train is not there yet")
def test_end_to_end_resume_and_config_change(capsys, tmp_path, data, tiny_sam):
    out = tmp_path / "out"
    common = ["finetune", "--model", tiny_sam, "--data", data[0], "--val", data[1], "--batch", 1,
              "--checkpoint-every", 2, "--out", out, "--json", "--no-eval"]  # (eval box: the stub test)
    code, stdout, err = run(capsys, *common, "--steps", 2)
    assert code == 0, err
    first = json.loads(stdout)
    model_dir = Path(first["model_dir"])
    assert first["steps"] == 2 and (model_dir / "config.json").is_file() and (out / "curves.png").is_file()
    assert [v["step"] for v in first["val"]][:1] == [0] and all(0 <= v["iou"] <= 1 for v in first["val"])
    code, stdout, err = run(capsys, *common, "--steps", 4)  # the same configuration, longer: resumes
    assert code == 0, err
    second = json.loads(stdout)
    assert second["steps"] == 4 and second["resumed"] is True and [h["step"] for h in _history(out)] == [1, 2, 3, 4]
    code, _, err = run(capsys, *common, "--steps", 4, "--lora-rank", 4)  # another configuration: refused, before loading
    assert_one_line_error(code, err, "--fresh")
    code, stdout, err = run(capsys, *common, "--steps", 1, "--lora-rank", 4, "--fresh")
    assert code == 0, err and json.loads(stdout)["steps"] == 1
    code, stdout, err = run(capsys, "segment", data[1] / "images" / "im0.png", "--box", "10,10,60,50",
                            "--model", model_dir, "--out", tmp_path / "seg")
    assert code == 0, err  # the exported folder loads like any model


def _history(out: Path) -> list[dict]:
    """The trainer's per-step records (``history.jsonl``), training steps only."""
    lines = (out / "history.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "train"]


# -- pseudolabel ----------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, fragments", [
    (["--augment", "rotate90"], ["--augment", "rotate90"]),
    (["--augment", ","], ["--augment is empty"]),
    (["--augment", "scale9"], ["scale9"]),
    (["--device", "tpu"], ["tpu"]),
])
def test_pseudolabel_bad_options(capsys, tmp_path, extra, fragments):
    code, _, err = run(capsys, "pseudolabel", "--data", tmp_path, "--sparse", tmp_path / "p.json", "--model", "x",
                       "--out", tmp_path / "o", *extra)
    assert_one_line_error(code, err, *fragments)


def test_pseudolabel_missing_inputs(capsys, tmp_path, data):
    code, _, err = run(capsys, "pseudolabel", "--data", data[0], "--sparse", tmp_path / "p.json", "--model", "classical",
                       "--out", tmp_path / "o")
    assert_one_line_error(code, err, "--sparse", "p.json")


def test_pseudolabel_calls_the_method(capsys, tmp_path, data, tiny_sam, monkeypatch):
    seen = {}

    def pseudolabel(model, images_dir, sparse, out_dir, augment=None, gt_dir=None, **kw):
        seen.update(images_dir=images_dir, sparse=sparse, gt_dir=gt_dir, augment=augment)
        return {"images": 3, "quality": {"miou_kept": 0.75}}

    import anyseg.finetune.pseudolabel as method

    monkeypatch.setattr(method, "pseudolabel", pseudolabel)
    sparse = tmp_path / "points.json"
    sparse.write_text("{}")
    code, stdout, err = run(capsys, "pseudolabel", "--data", data[0], "--sparse", sparse, "--model", tiny_sam,
                            "--gt", data[0], "--augment", "hflip,scale0.75", "--out", tmp_path / "o", "--json")
    assert code == 0, err
    assert json.loads(stdout)["quality"]["miou_kept"] == 0.75
    assert seen == {"images_dir": data[0] / "images", "sparse": sparse, "gt_dir": data[0] / "masks",
                    "augment": ("hflip", "scale0.75")}


def test_pseudolabel_end_to_end_then_finetune_reads_it(capsys, tmp_path, data, tiny_sam):
    from anyseg.finetune import load_pairs
    from anyseg.finetune.pseudolabel import sample_sparse_from_masks

    points = tmp_path / "points.json"
    sample_sparse_from_masks(data[0] / "masks", points, points=2, seed=0)
    out = tmp_path / "pseudo"
    code, stdout, err = run(capsys, "pseudolabel", "--data", data[0], "--sparse", points, "--model", tiny_sam,
                            "--gt", data[0], "--augment", "hflip", "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["images"] == 3 and summary["augment"] == ["hflip"] and 0 <= summary["quality"]["miou_kept"] <= 1
    # (a random tiny SAM is unsure everywhere: its images may be left out, never written with no kept pixel)
    assert (out / "pseudolabels.json").is_file() and len(list((out / "masks").glob("*.png"))) == summary["selected"]
    if summary["selected"]:
        assert len(load_pairs(out)) == summary["selected"]  # ready for anyseg finetune --data

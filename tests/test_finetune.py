"""anyseg.finetune core (issue 20): data checks, prompt sampling, SAM's loss, the training loop
(LoRA / decoder / full), resume, export and the merged / adapter folders, on tiny random models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anyseg.errors import InputError, ModelError
from tiny_models import build_sam, build_sam2


def _write_data(root: Path, n: int = 2, seed: int = 0, size: tuple[int, int] = (64, 96)) -> Path:
    """``n`` 64x96 images with one bright rectangle each, and its 0/255 mask."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(n):
        img = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        m = np.zeros((h, w), np.uint8)
        y, x = int(rng.integers(5, h - 35)), int(rng.integers(5, w - 40))
        m[y:y + 28, x:x + 34] = 255
        img[m > 0] += 150
        Image.fromarray(img).save(root / "images" / f"im{i}.png")
        Image.fromarray(m).save(root / "masks" / f"im{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("finetune")
    return {"sam": build_sam(base / "sam"), "sam2": build_sam2(base / "sam2"), "data": _write_data(base / "data")}


def _cfg(**kw):
    from anyseg.finetune import FinetuneConfig

    base = dict(steps=2, batch=2, prompts=("box",), rounds=1, lr=1e-2, checkpoint_every=100, val_every=1000)
    base.update(kw)
    return FinetuneConfig(**base)


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# -- data and prompts ---------------------------------------------------------------------------


def test_data_errors_name_the_files(tmp_path):
    from anyseg.finetune import load_pairs

    root = _write_data(tmp_path / "d", n=3)
    assert [p[0].name for p in load_pairs(root)] == ["im0.png", "im1.png", "im2.png"]
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(root / "masks" / "im1.png")
    Image.fromarray(np.full((32, 48), 255, np.uint8)).save(root / "masks" / "im2.png")
    with pytest.raises(InputError) as e:
        load_pairs(root)
    msg = str(e.value)
    assert "\n" not in msg and "im1.png" in msg and "empty" in msg and "im2.png (48x32, image 96x64)" in msg
    (root / "masks" / "im2.png").unlink()
    with pytest.raises(InputError, match="no mask for image im2.png"):
        load_pairs(root)
    with pytest.raises(InputError, match="not found"):
        load_pairs(tmp_path / "nowhere")


def test_ignore_band_and_prompts():
    from anyseg.finetune.data import (BOX_NOISE_MAX, corrective_click, low_res_target, sample_box,
                                      sample_points)
    from anyseg.eval.datasets import binary_mask
    from anyseg.models.sam import Geometry

    m = np.zeros((64, 96), np.uint8)
    m[10:40, 20:60] = 255
    m[8:10, 20:60] = 128  # F2's pseudo-label format: 128 = ignored
    gt, ignore = binary_mask(m, "m.png", "auto")
    assert ignore is not None and ignore.sum() == 80 and gt.sum() == 30 * 40
    geo = Geometry.for_family("sam", (64, 96), 256)
    exact = sample_box(gt, geo, None)
    np.testing.assert_allclose(exact, geo.to_model(np.array([[20, 10], [60, 40]])).reshape(4), rtol=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        jit = sample_box(gt, geo, rng)
        assert np.abs(jit - exact).max() <= BOX_NOISE_MAX + 1e-4 and jit[2] >= jit[0] and jit[3] >= jit[1]
    pts = sample_points(gt, ignore, 3, geo, rng) * np.array([96 / 256, 64 / geo.input_size[0]])
    assert pts.shape == (3, 2) and all(gt[int(y), int(x)] for x, y in pts)
    target, valid = low_res_target(gt, ignore, geo, 64)
    assert target.shape == (64, 64) and not valid[50:].any() and valid[:40].any()  # padding below row 43
    assert (~valid[4:8, 15:38]).any() and valid[15:25, 15:38].all()  # the ignored band (rows 8-9) is not valid
    pred = np.zeros((64, 64), bool)
    xy, label = corrective_click(pred, target, valid, 256, rng)
    assert label == 1 and target[int(xy[1] / 4), int(xy[0] / 4)]
    xy, label = corrective_click(~target & valid, target & False, valid, 256, rng)
    assert label == 0
    assert corrective_click(target, target, valid, 256, rng) is None


def test_sam_loss_parts():
    import torch

    from anyseg.finetune.losses import sam_loss

    target = torch.zeros(1, 8, 8, dtype=torch.bool)
    target[0, 2:6, 2:6] = True
    valid = torch.ones_like(target)
    good = torch.where(target, 8.0, -8.0)[:, None].repeat(1, 3, 1, 1)
    good[:, 1] = -good[:, 1]  # one wrong candidate among the three
    loss, parts, best = sam_loss(good, torch.ones(1, 3), target, valid)
    assert int(best[0]) != 1 and parts["iou"] == 1.0 and parts["dice"] < 0.01
    bad, _, _ = sam_loss(-good[:, 1:2].clone() * 0, torch.ones(1, 1), target, valid)
    assert float(loss) < float(bad)


# -- training -----------------------------------------------------------------------------------


def test_classical_refuses(tiny, tmp_path):
    from anyseg.finetune import train

    with pytest.raises(ModelError) as e:
        train("classical", tiny["data"], tmp_path / "out", _cfg())
    assert "\n" not in str(e.value) and "classical" in str(e.value)
    with pytest.raises(InputError, match="unknown fine-tuning method"):
        train(str(tiny["sam"]), tiny["data"], tmp_path / "out", _cfg(method="adapter"))


def test_loss_decreases_on_a_fixed_batch(tiny, tmp_path):
    from anyseg.finetune import train

    r = train(str(tiny["sam"]), tiny["data"], tmp_path / "out", _cfg(method="decoder", steps=12, lr=2e-2),
              progress=False)
    losses = [h["loss"] for h in r.history]
    assert len(losses) == 12 and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    assert (tmp_path / "out" / "history.jsonl").is_file() and r.val[0]["step"] == 0 and r.val[-1]["step"] == 12


def test_decoder_only_trains_only_the_decoder(tiny, tmp_path):
    from anyseg.finetune import train

    r = train(str(tiny["sam"]), tiny["data"], tmp_path / "out", _cfg(method="decoder"), progress=False)
    before, after = _tensors(tiny["sam"]), _tensors(r.model_dir)
    assert before.keys() == after.keys()
    changed = {k for k in before if not (before[k] == after[k]).all()}
    assert changed and all(k.startswith("mask_decoder.") for k in changed)


def test_lora_merged_folder_reproduces_the_adapter(tiny, tmp_path):
    from anyseg.finetune import load_adapter, train
    from anyseg.models import load_model
    from anyseg.types import Prompt

    cfg = _cfg(method="lora", lora_rank=4, lora_decoder=True, keep_adapter=True, steps=2, lr=5e-2)
    r = train(str(tiny["sam2"]), tiny["data"], tmp_path / "out", cfg, progress=False)
    md = r.model_dir
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= {p.name for p in md.iterdir()}
    assert "LoRA" in (md / "README.md").read_text() or "lora" in (md / "README.md").read_text()
    before, after = _tensors(tiny["sam2"]), _tensors(md)
    changed = {k for k in before if not (before[k] == after[k]).all()}
    assert changed and all(k.endswith("qkv.weight") or k.endswith("_proj.weight") for k in changed)  # frozen: bit-equal
    merged = load_model(str(md))
    adapted = load_adapter(md / "adapter")
    base = load_model(str(tiny["sam2"]))
    image = np.array(Image.open(tiny["data"] / "images" / "im0.png").convert("RGB"))
    prompt = Prompt(box=np.array([10, 10, 60, 50], dtype=np.float32))
    out = [p.predict(p.embed(image), prompt).logits for p in (merged, adapted, base)]
    assert np.abs(out[0] - out[1]).max() <= 1e-5
    assert np.abs(out[0] - out[2]).max() > 1e-4  # training changed the model


def test_resume_equals_an_uninterrupted_run(tiny, tmp_path):
    import torch

    from anyseg.finetune import train

    cfg = _cfg(method="lora", lora_rank=2, steps=3, checkpoint_every=2, prompts=("box", "point", "mask"), rounds=2,
               lr=2e-2)
    full = train(str(tiny["sam"]), tiny["data"], tmp_path / "a", cfg, progress=False)

    def kill(rec):
        if rec["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(str(tiny["sam"]), tiny["data"], tmp_path / "b", cfg, progress=False, on_step=kill)
    assert [p.name for p in sorted((tmp_path / "b" / "checkpoints").glob("*.pt"))] == ["step-00000002.pt"]
    seen = []
    resumed = train(str(tiny["sam"]), tiny["data"], tmp_path / "b", cfg, progress=False,
                    on_step=lambda rec: seen.append(rec["step"]))
    assert seen == [3] and [h["step"] for h in resumed.history] == [1, 2, 3]
    a, b = _tensors(full.model_dir), _tensors(resumed.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(tmp_path / "a" / "checkpoints" / "step-00000003.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "checkpoints" / "step-00000003.pt", weights_only=True)
    for k, st in sa["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg_sq"], sb["optimizer"]["state"][k]["exp_avg_sq"])
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]

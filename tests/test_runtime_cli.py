"""``--runtime`` on the command line: the same masks as the default runtime (tiny SAM)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from anyseg.cli import main

from tiny_models import BUILDERS


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    return BUILDERS["sam"](tmp_path_factory.mktemp("w") / "sam")


@pytest.mark.parametrize("runtime", ["torch-bf16", "onnx"])
def test_segment_runtime_matches_torch(capsys, tmp_path, tiny_sam, runtime):
    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
    img = tmp_path / "im.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(img)
    records = {}
    for rt in ("torch", runtime):
        code = main(["segment", str(img), "--model", "sam-vit-base", "--weights", str(tiny_sam), "--box", "10,10,70,50",
                     "--runtime", rt, "--out", str(tmp_path / rt), "--json"])
        out = capsys.readouterr()
        assert code == 0, out.err
        records[rt] = json.loads(out.out)
    from anyseg.masks.rle import decode

    a, b = (decode(records[rt]["masks"][0]["rle"]) for rt in ("torch", runtime))
    iou = (a & b).sum() / max((a | b).sum(), 1)
    assert iou >= (0.99 if runtime == "onnx" else 0.95)


def test_everything_with_onnx_runtime_and_bad_runtime(capsys, tmp_path, tiny_sam):
    pytest.importorskip("onnxruntime")
    img = tmp_path / "im.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(img)
    code = main(["everything", str(img), "--model", "sam-vit-base", "--weights", str(tiny_sam), "--runtime", "onnx",
                 "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0", "--out",
                 str(tmp_path / "ev"), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["num_masks"] >= 1
    code = main(["segment", str(img), "--model", "classical", "--box", "5,5,30,30", "--runtime", "onnx",
                 "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "classical engine has no onnx runtime" in err


@pytest.mark.parametrize("native, want", [(True, "torch-bf16"), (False, "torch")])
def test_auto_runtime_is_chosen_per_machine(monkeypatch, capsys, tmp_path, tiny_sam, native, want):
    import anyseg.runtime.torch_fast as tf
    from anyseg.runtime import default_runtime

    monkeypatch.setattr(tf, "cpu_bf16_support", lambda: {"native": native, "avx512_bf16": native, "amx_bf16": False})
    runtime, reason = default_runtime("cpu")
    assert runtime == want and ("bf16" in reason)
    img = tmp_path / "im.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(img)
    code = main(["segment", str(img), "--model", "sam-vit-base", "--weights", str(tiny_sam), "--box", "10,10,70,50",
                 "--out", str(tmp_path / "o")])  # --runtime auto is the default
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"[{want}]" in err


def test_auto_on_classical_and_fp16_off_cuda(tiny_sam):
    from anyseg.errors import InputError
    from anyseg.models import load_model
    from anyseg.runtime import with_runtime

    classical = load_model("classical")
    assert with_runtime(classical, "auto") is classical
    with pytest.raises(InputError, match="CUDA"):
        with_runtime(load_model("sam-vit-base", weights=tiny_sam, device="cpu"), "torch-fp16")

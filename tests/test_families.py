"""Family records (issue 15): one record per family, one resolver, a model option that takes a name or a path,
capabilities read from the records, runtimes composed of parts.

A family registered from this test module (``fake``) is loaded by name through ``load_model``,
``resolve`` and ``anyseg segment --model`` without any anyseg file knowing it. The tiny models of
``tiny_models`` / ``tiny_video`` / ``tiny_detectors`` (saved with ``save_pretrained``) show that
``--model PATH`` gives what ``--model NAME --weights PATH`` gives.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anyseg.cli import main
from anyseg.errors import InputError, ModelError
from anyseg.models import (
    REGISTRY, Family, ModelSpec, Predictor, get_family, load_model, models_with, register_family, register_model,
    resolve,
)
from anyseg.models.families import (
    CAPABILITIES, EVERYTHING, FAMILY_RECORDS, GRID, PROMPTABLE, SEMANTIC, TEXT, VIDEO, family_for_model_type,
    known_model_types,
)
from anyseg.types import Embedding, Masks

SRC = Path(__file__).resolve().parents[1] / "src" / "anyseg"


# -- the records -----------------------------------------------------------------------------------
def test_every_registered_model_points_at_a_record_and_model_types_name_one_family():
    for spec in REGISTRY.values():
        assert spec.family_record is get_family(spec.family)
    types = [t for f in FAMILY_RECORDS.values() for t in f.model_types]
    assert len(types) == len(set(types)) and known_model_types() == sorted(types)
    assert family_for_model_type("sam2_video").name == "sam2" and family_for_model_type("resnet") is None
    for family in FAMILY_RECORDS.values():
        assert family.capabilities <= set(CAPABILITIES)
        if family.has(PROMPTABLE):
            assert family.runtimes and family.predictor is not None


def test_auto_orders_are_derived_from_the_records():
    """The orders ``auto`` used to keep in three hand-written tables come out of the records unchanged."""
    assert [s.name for s in models_with(TEXT)] == [
        "sam3", "grounding-dino-base", "grounding-dino-tiny", "owlv2-large", "owlv2-base",
        "clip-vit-l14", "clip-vit-b16", "clip-vit-b32"]
    assert [s.name for s in models_with(SEMANTIC)] == [
        "clip-vit-b16", "clip-vit-l14", "clip-vit-b32", "sam3", "grounding-dino-base",
        "grounding-dino-tiny", "owlv2-large", "owlv2-base"]
    assert [s.name for s in models_with(VIDEO)] == [
        "sam3", "sam2.1-hiera-large", "sam2.1-hiera-base-plus", "sam2.1-hiera-small", "sam2.1-hiera-tiny",
        "edgetam", "medsam2", "classical"]
    promptable = [s.name for s in models_with(PROMPTABLE)]
    assert promptable[0] == "sam3" and promptable[-1] == "classical" and "clip-vit-b16" not in promptable


def test_no_family_is_switched_on_by_its_name_outside_the_records():
    """``family in ("sam", "sam_hq")``, ``family == "classical"``, ``family in SOME_FAMILIES``: gone (the
    records, in models/families.py, are the one place that names families)."""
    pattern = re.compile(r"""(?<!for )\bfamily\s*(==|!=|\bin\b|\bnot in\b)\s*[("'A-Z]""")
    hits = [f"{p.relative_to(SRC)}:{i}: {line.strip()}" for p in sorted(SRC.rglob("*.py"))
            if p.name != "families.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, "family checks by string (read the family record instead):\n" + "\n".join(hits)


@pytest.mark.parametrize("kwargs, words", [
    (dict(name="sam"), ["already registered"]),
    (dict(name="sam_twin", model_types=("sam",)), ["'sam'", "already belong"]),
    (dict(name="odd", capabilities={"flying"}), ["unknown capabilities", "flying"]),
    (dict(name="noloader", capabilities={PROMPTABLE}, runtimes=("torch",)), ["needs a predictor loader"]),
    (dict(name="badrt", capabilities=set(), runtimes=("tensorrt",)), ["unknown runtimes", "tensorrt"]),
])
def test_bad_records_are_one_line_errors(kwargs, words):
    with pytest.raises(ModelError) as e:
        register_family(Family(title="X", **kwargs))
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)
    assert kwargs["name"] == "sam" or kwargs["name"] not in FAMILY_RECORDS


# -- a family registered from a test module ----------------------------------------------------------
class FakePredictor(Predictor):
    """A box-shaped mask for any box prompt; no weights."""

    family = "fake"

    def __init__(self, name: str) -> None:
        self.name = name

    def embed(self, image):
        return Embedding(self.name, image.shape[:2], image.shape[:2], None)

    def predict(self, embedding, prompt, multimask=False):
        h, w = embedding.original_size
        mask = np.zeros((1, h, w), bool)
        if prompt.box is not None:
            x0, y0, x1, y1 = (int(v) for v in prompt.box)
            mask[0, y0:y1, x0:x1] = True
        return Masks(mask, scores=[0.75])


def _load_fake(spec, folder, device):
    return FakePredictor(spec.name)


@pytest.fixture()
def fake_family():
    family = register_family(Family("fake", "Fake", capabilities={PROMPTABLE}, predictor=_load_fake,
                                    runtimes=("torch",)))
    spec = register_model(ModelSpec("fake-name", "fake", None, 0.0, 0, notes="a family from a test module"))
    yield family, spec
    del REGISTRY["fake-name"], FAMILY_RECORDS["fake"]


def test_a_family_from_a_test_module_loads_by_name(fake_family, tmp_path, capsys):
    from anyseg.runtime import with_runtime

    family, spec = fake_family
    assert resolve("fake-name", PROMPTABLE) is spec and spec.family_record is family
    predictor = load_model("fake-name")
    assert isinstance(predictor, FakePredictor) and predictor.name == "fake-name"
    assert with_runtime(predictor, "auto") is predictor
    with pytest.raises(InputError, match="fake-name has no onnx runtime"):
        with_runtime(predictor, "onnx")
    with pytest.raises(ModelError, match="not a video tracker: a Fake model cannot track video"):
        resolve("fake-name", VIDEO)
    img = tmp_path / "im.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(img)
    code = main(["segment", str(img), "--model", "fake-name", "--box", "5,5,25,20", "--out", str(tmp_path / "o"),
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads(captured.out)
    assert record["model"] == "fake-name" and record["masks"][0]["area"] == 20 * 15


def test_registered_names_cannot_look_like_paths(fake_family):
    for name in ("./mine", "org/model", "~x", "auto", "fake-name"):
        with pytest.raises(ModelError):
            register_model(ModelSpec(name, "fake", None, 0.0, 0))


# -- a model option takes a name or a path ----------------------------------------------------------
def _image(tmp_path: Path, h: int = 48, w: int = 64) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _json_run(capsys, argv) -> dict:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_segment_model_path_equals_name_and_weights(capsys, tmp_path, monkeypatch):
    from tiny_models import BUILDERS

    folder = BUILDERS["sam"](tmp_path / "tiny-sam")
    img = _image(tmp_path)
    common = ["segment", img, "--box", "5,6,40,30", "--multimask", "--json"]
    named = _json_run(capsys, [*common, "--model", "sam-vit-base", "--weights", folder, "--out", tmp_path / "a"])
    monkeypatch.chdir(tmp_path)
    by_path = _json_run(capsys, [*common, "--model", "./tiny-sam", "--out", tmp_path / "b"])
    assert by_path["model"] == "./tiny-sam" and named["model"] == "sam-vit-base"
    assert [m["rle"] for m in by_path["masks"]] == [m["rle"] for m in named["masks"]]
    assert [m["score"] for m in by_path["masks"]] == [m["score"] for m in named["masks"]]
    spec = resolve(str(folder), PROMPTABLE)
    assert spec.family == "sam" and spec.path == folder and spec.needs_weights
    with pytest.raises(ModelError, match="is a model folder already"):
        load_model(str(folder), weights=str(folder))


def test_track_model_path_equals_name_and_weights(capsys, tmp_path):
    from tiny_video import build_sam2_video

    folder = build_sam2_video(tmp_path / "my-sam2-video")
    frames = tmp_path / "vid"
    frames.mkdir()
    bg = np.random.default_rng(3).integers(0, 120, (40, 64, 3), dtype=np.uint8)
    for t in range(5):
        frame = bg.copy()
        frame[10:25, 5 + 3 * t:20 + 3 * t] = 230
        Image.fromarray(frame).save(frames / f"{t:05d}.png")
    outs = {}
    for key, model in (("named", ["--model", "sam2.1-hiera-tiny", "--weights", folder]), ("path", ["--model", folder])):
        outs[key] = tmp_path / key
        _json_run(capsys, ["track", frames, *model, "--prompt", "1:box=8,10,30,26", "--no-overlay", "--out",
                           outs[key], "--json"])
    for t in range(5):
        a, b = (np.asarray(Image.open(outs[k] / "masks" / f"{t:05d}.png")) for k in ("named", "path"))
        assert np.array_equal(a, b)


def test_text_model_and_sam_paths_equal_names_and_weights(capsys, tmp_path):
    from tiny_detectors import build_owlv2
    from tiny_models import BUILDERS

    owl = build_owlv2(tmp_path / "owl")
    sam = BUILDERS["sam"](tmp_path / "sam")
    img = _image(tmp_path)
    common = ["text", img, "a red car", "--threshold", "0", "--box-threshold", "0", "--top", "3", "--json"]
    named = _json_run(capsys, [*common, "--model", "owlv2-base", "--weights", owl, "--sam", "sam-vit-base",
                               "--sam-weights", sam, "--out", tmp_path / "a"])
    by_path = _json_run(capsys, [*common, "--model", owl, "--sam", sam, "--out", tmp_path / "b"])
    assert len(named["instances"]) == len(by_path["instances"]) > 0
    for a, b in zip(named["instances"], by_path["instances"]):
        assert (a["score"], a["box"], a["rle"]) == (b["score"], b["box"], b["rle"])


def test_folders_that_are_not_models_are_one_line_errors(capsys, tmp_path):
    img = _image(tmp_path)
    odd = tmp_path / "resnet"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "resnet"}))
    (odd / "model.safetensors").write_bytes(b"")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(odd, ["'resnet'", "no anyseg model family reads", "sam2_video", "owlv2"]),
             (empty, ["has no config.json"]), (tmp_path / "missing", ["model folder not found"])]
    for folder, words in cases:
        code = main(["segment", str(img), "--model", str(folder), "--box", "1,1,9,9", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ModelError, match="unknown model 'sam-vit-bse'.*did you mean 'sam-vit-base'"):
        resolve("sam-vit-bse", PROMPTABLE)  # not a path: still a mistyped name


def test_a_clip_folder_is_not_a_promptable_segmenter(tmp_path):
    from tiny_clip import build_clip

    folder = build_clip(tmp_path / "my-clip")
    with pytest.raises(ModelError, match="not a promptable segmenter: a CLIP model cannot take point") as e:
        load_model(str(folder))
    assert "\n" not in str(e.value) and "sam-vit-base" in str(e.value)
    assert resolve(folder, TEXT).family == "clip"


# -- capabilities and protocols ----------------------------------------------------------------------
def test_predictors_declare_protocols_and_records_declare_capabilities(tmp_path):
    from tiny_models import BUILDERS

    from anyseg.models import GridDecoder, Promptable
    from anyseg.tasks.everything import generate

    sam = load_model("sam-vit-base", weights=BUILDERS["sam"](tmp_path / "s"), device="cpu")
    classical = load_model("classical")
    assert isinstance(sam, GridDecoder) and isinstance(sam, Promptable) and isinstance(classical, Promptable)
    assert sam.spec.family_record.has(GRID) and not get_family("classical").has(GRID)
    assert get_family("classical").has(EVERYTHING) and get_family("classical").baseline

    class NoGrid(FakePredictor):  # every GridDecoder method, but its family record says no grid decoding
        def geometry(self, size): ...
        def decode_points(self, *a, **k): raise AssertionError("never called")
        def upscale_logits(self, *a): ...

    register_family(Family("nogrid", "No-grid", capabilities={PROMPTABLE, EVERYTHING}, predictor=_load_fake,
                           runtimes=("torch",)))
    try:
        p = NoGrid("n")
        p.family = "nogrid"
        assert isinstance(p, GridDecoder)
        with pytest.raises(InputError, match="SAM-family model or 'classical'"):
            generate(p, np.zeros((20, 20, 3), np.uint8))
    finally:
        del FAMILY_RECORDS["nogrid"]


# -- runtimes by composition -------------------------------------------------------------------------
def test_runtimes_are_compositions_built_through_the_public_constructor(tmp_path):
    from tiny_models import BUILDERS

    from anyseg.cli import build_parser
    from anyseg.models.sam import SamFamilyPredictor, TorchDecoder, TorchEncoder
    from anyseg.runtime import RUNTIMES, table
    from anyseg.runtime.torch_fast import RuntimeEncoder, apply_runtime

    base = load_model("sam-vit-base", weights=BUILDERS["sam"](tmp_path / "s"), device="cpu")
    assert isinstance(base.image_encoder, TorchEncoder) and isinstance(base.prompt_decoder, TorchDecoder)
    fast = apply_runtime(base, "torch-bf16", decode_chunk=3)
    assert type(fast) is SamFamilyPredictor and fast.model is base.model and fast.runtime == "torch-bf16"
    assert isinstance(fast.image_encoder, RuntimeEncoder) and fast.prompt_decoder.chunk == 3
    assert fast.model_id == base.model_id + "@bf16"
    again = SamFamilyPredictor(base.spec, base.model, folder=base.folder, encoder=fast.image_encoder,
                               decoder=TorchDecoder(chunk=3, share_rows=True), runtime="torch-bf16",
                               model_id=fast.model_id)
    assert again.model_id == fast.model_id
    assert RUNTIMES == table.RUNTIMES == ("auto", *(r.name for r in table.TABLE))
    seg = next(a for a in build_parser()._subparsers._group_actions[0].choices["segment"]._actions
               if "--runtime" in a.option_strings)
    assert tuple(seg.choices) == RUNTIMES
    assert get_family("sam_hq").runtimes == table.TORCH_RUNTIMES and "onnx" in get_family("sam2").runtimes

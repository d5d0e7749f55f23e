"""The editing API (anyseg.edit) with a fake engine, the compose parser and the instruction file.

The fake engines are registered in :data:`anyseg.edit.base.ENGINES` for a test only; the real
classical engine (``telea``) is exercised end to end at the bottom.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
from pycocotools import mask as mask_utils

import anyseg.edit as edit
from anyseg.edit import base
from anyseg.edit.compose import EditStep, MAX_STEPS, describe_steps, load_instructions, parse_instruction, steps_of
from anyseg.errors import InputError

H, W = 64, 96


def scene() -> tuple[np.ndarray, np.ndarray]:
    """A gradient image with a red box, and the box's mask."""
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = (np.arange(W) * 2)[None]
    img[..., 1] = (np.arange(H) * 3)[:, None]
    img[..., 2] = 90
    mask = np.zeros((H, W), bool)
    mask[20:40, 30:60] = True
    img[mask] = (250, 20, 20)
    return img, mask


class FakeEngine:
    """Fills the mask with one colour; remembers its calls."""

    working_size = None

    def __init__(self, name: str = "fake", generative: bool = False, colour: tuple[int, int, int] = (0, 200, 0)):
        self.name, self.generative, self.colour = name, generative, colour
        self.calls: list[dict] = []

    @property
    def model_id(self) -> str:
        return f"{self.name}-v1"

    def inpaint(self, image, mask, prompt=None, seed=0, **options):
        self.calls.append({"shape": image.shape, "area": int(mask.sum()), "prompt": prompt, "seed": seed, **options})
        out = image.copy()
        out[mask] = self.colour
        return out


@pytest.fixture()
def engines(monkeypatch):
    """``fake`` (classical-like) and ``fakegen`` (generative) registered; the builds are counted."""
    built: list[dict] = []

    def factory(generative):
        def make(weights=None, model=None, device=None, allow_download=True, **options):
            built.append({"generative": generative, "weights": weights, "model": model, "device": device})
            return FakeEngine("fakegen" if generative else "fake", generative)
        return make

    monkeypatch.setitem(base.ENGINES, "fake", factory(False))
    monkeypatch.setitem(base.ENGINES, "fakegen", factory(True))
    return built


def decode(rle: dict) -> np.ndarray:
    return mask_utils.decode(dict(rle, counts=rle["counts"].encode())).astype(bool)


# -- remove / fill -----------------------------------------------------------------------------------

def test_remove_records_the_edit_and_keeps_everything_outside_the_dilated_mask(engines):
    img, mask = scene()
    out = edit.remove(img, mask, engine="fake", dilate=3, feather=0, seed=5, weights="w", model="m", device="cpu")
    assert engines == [{"generative": False, "weights": "w", "model": "m", "device": "cpu"}]  # built once
    assert out.image.shape == img.shape and out.image.dtype == np.uint8
    assert out.mask.sum() > mask.sum() and (out.mask | ~mask).all()  # dilated, contains the mask
    assert np.array_equal(out.image[~out.mask], img[~out.mask])
    assert (out.image[mask] == (0, 200, 0)).all()
    r = out.record
    assert (r["operation"], r["engine"], r["model"], r["seed"], r["prompt"], r["dilate"]) == \
        ("remove", "fake", "fake-v1", 5, None, 3)
    assert np.array_equal(decode(r["mask"]), out.mask) and r["mask_area"] == int(out.mask.sum())
    json.dumps(r)


def test_an_engine_object_is_used_as_it_is(engines):
    img, mask = scene()
    eng = FakeEngine()
    edit.remove(img, mask, engine=eng)
    edit.remove(img, mask, engine=eng)
    assert engines == [] and len(eng.calls) == 2
    with pytest.raises(InputError, match="engine must be"):
        edit.remove(img, mask, engine=42)


def test_bad_masks_and_engines_are_one_line_errors(engines):
    img, mask = scene()
    cases = [
        (lambda: edit.remove(img, np.zeros((H, W), bool), engine="fake"), "empty"),
        (lambda: edit.remove(img, np.ones((H, W), bool), engine="fake"), "whole image"),
        (lambda: edit.remove(img, mask[:-1], engine="fake"), "the mask is 96x63 but the image is 96x64"),
        (lambda: edit.remove(img, mask, engine="nope"), "unknown edit engine 'nope'"),
        (lambda: edit.fill(img, mask, None, engine="fakegen"), "give --prompt"),
        (lambda: edit.remove(img, mask, engine="fakegen"), "give --prompt"),
        (lambda: edit.fill(img, np.ones((H, W), bool), "x", engine="fake"), "whole image"),
    ]
    for call, fragment in cases:
        with pytest.raises(InputError) as e:
            call()
        assert fragment in str(e.value) and "\n" not in str(e.value)


def test_fill_passes_prompt_seed_and_options_and_may_cover_the_whole_image(engines):
    img, mask = scene()
    out = edit.fill(img, mask, "a vase of flowers", engine="fakegen", seed=7, steps=3, guidance=2.0)
    eng_calls = out.record
    assert eng_calls["prompt"] == "a vase of flowers" and eng_calls["operation"] == "fill" and eng_calls["seed"] == 7
    full = edit.fill(img, np.ones((H, W), bool), "a beach", engine="fakegen", feather=0)
    assert full.mask.all() and (full.image == (0, 200, 0)).all() and full.record["crop"] == [0, 0, W, H]
    eng = FakeEngine(generative=True)
    edit.fill(img, mask, "x", engine=eng, seed=3, negative_prompt="blur")
    assert eng.calls[0]["prompt"] == "x" and eng.calls[0]["seed"] == 3 and eng.calls[0]["negative_prompt"] == "blur"


# -- replace -----------------------------------------------------------------------------------------

def test_replace_generative_regenerates_the_inverse_mask_over_the_whole_image(engines):
    img, mask = scene()
    eng = FakeEngine(generative=True)
    out = edit.replace(img, mask, prompt="a beach", engine=eng, feather=0)
    assert np.array_equal(out.image[mask], img[mask])  # the object stays, bit for bit
    assert (out.image[~mask] == (0, 200, 0)).all()
    assert np.array_equal(out.mask, ~mask) and out.record["inverted"] and out.record["object_area"] == mask.sum()
    assert eng.calls[0]["shape"] == (H, W, 3) and out.record["crop"] == [0, 0, W, H]
    with pytest.raises(InputError, match="give --prompt"):
        edit.replace(img, mask, engine=FakeEngine(generative=True))
    with pytest.raises(InputError, match="cannot make a new background"):
        edit.replace(img, mask, prompt="x", engine="fake")
    with pytest.raises(InputError, match="covers the whole image"):
        edit.replace(img, np.ones((H, W), bool), prompt="x", engine=eng)


def test_replace_without_a_model_blur_colour_background(engines, tmp_path):
    from PIL import Image

    img, mask = scene()
    for kwargs, engine in (({"blur": 4}, "blur"), ({"color": "255,255,255"}, "color"),
                           ({"background": np.full((10, 30, 3), 7, np.uint8)}, "background")):
        out = edit.replace(img, mask, feather=2, **kwargs)
        assert np.array_equal(out.image[mask], img[mask]) and out.record["engine"] == engine
        assert not np.array_equal(out.image[~mask], img[~mask]) and out.record["model"] is None
    white = edit.replace(img, mask, color=(255, 255, 255), feather=0).image
    assert (white[~mask] == 255).all()
    blurred = edit.replace(img, mask, blur=6, feather=0).image
    assert blurred[~mask][..., 0].max() < 250  # no halo: the red object does not bleed into the blur
    Image.fromarray(np.full((20, 20, 3), 9, np.uint8)).save(tmp_path / "bg.png")
    assert (edit.replace(img, mask, background=str(tmp_path / "bg.png"), feather=0).image[~mask] == 9).all()
    assert engines == []  # no engine built
    for kwargs, fragment in (({"blur": 0}, "--blur"), ({"color": "1,2"}, "--color"), ({"color": "1,2,300"}, "--color"),
                             ({"blur": 3, "color": "1,2,3"}, "exactly one"), ({"blur": 3, "prompt": "x"}, "--prompt"),
                             ({"background": str(tmp_path / "missing.png")}, "missing.png")):
        with pytest.raises(InputError, match=fragment):
            edit.replace(img, mask, **kwargs)


# -- compose -----------------------------------------------------------------------------------------

def test_compose_applies_the_pairs_in_order_with_one_engine(engines):
    img, mask = scene()
    sky = np.zeros((H, W), bool)
    sky[:10] = True
    seen = []

    def segment(image, phrase):
        seen.append((phrase, image.copy()))
        return {"the box": mask, "the sky": sky}[phrase]

    out = edit.compose(img, "replace the box with a vase and make the sky a sunset", segment=segment,
                       engine="fakegen", dilate=0, feather=0, seed=2)
    assert len(engines) == 1 and [p for p, _ in seen] == ["the box", "the sky"]
    assert np.array_equal(seen[0][1], img) and not np.array_equal(seen[1][1], img)  # step 2 sees step 1's result
    steps = out.record["steps"]
    assert [(s["target"], s["prompt"], s["operation"]) for s in steps] == \
        [("the box", "a vase", "fill"), ("the sky", "a sunset", "fill")]
    assert np.array_equal(out.mask, mask | sky) and out.record["operation"] == "compose"
    assert np.array_equal(out.image[~(mask | sky)], img[~(mask | sky)])
    removed = edit.compose(img, [("the box", None)], segment=segment, engine="fake", dilate=0)
    assert removed.record["steps"][0]["operation"] == "remove"


def test_compose_errors(engines):
    img, mask = scene()
    with pytest.raises(InputError, match="needs a generative engine"):
        edit.compose(img, "replace the box with a vase", segment=lambda i, p: mask, engine="fake")
    with pytest.raises(InputError, match="nothing matching 'the cat'"):
        edit.compose(img, "remove the cat", segment=lambda i, p: np.zeros((H, W), bool), engine="fake")
    with pytest.raises(InputError, match="segment"):
        edit.compose(img, "remove the cat", engine="fake")
    with pytest.raises(InputError, match="cannot read 'paint it'"):
        edit.compose(img, "remove the box and then paint it", segment=lambda i, p: mask, engine="fake")
    assert parse_instruction("remove the box and paint it") == [("the box and paint it", None)]  # (documented)


# -- the parser --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, steps", [
    ("replace the dog with a cat and make the sky a sunset", [("the dog", "a cat"), ("the sky", "a sunset")]),
    ("Replace the dog by a cat.", [("the dog", "a cat")]),
    ("turn the car into a bus, then remove the man", [("the car", "a bus"), ("the man", None)]),
    ("change the wall to brick and then erase the lamp", [("the wall", "brick"), ("the lamp", None)]),
    ("the dog -> a cat; sky => a sunset", [("the dog", "a cat"), ("sky", "a sunset")]),
    ("make the car into a bus", [("the car", "a bus")]),
    ("please make the car red", [("the car", "red")]),
    ("make the big dog a small cat", [("the big dog", "a small cat")]),
    ("replace the salt and pepper with a vase", [("the salt and pepper", "a vase")]),
    ("remove the dog, and delete the cat", [("the dog", None), ("the cat", None)]),
    ("get rid of the stain\nmake the shirt into a jacket", [("the stain", None), ("the shirt", "a jacket")]),
    ("'remove \"the dog\"'", [("the dog", None)]),
])
def test_the_parser_reads_the_documented_forms(text, steps):
    parsed = parse_instruction(text)
    assert parsed == steps and all(isinstance(s, EditStep) for s in parsed)
    assert [s.op for s in parsed] == ["remove" if p is None else "fill" for _, p in steps]


@pytest.mark.parametrize("text, fragment", [
    ("paint it", "cannot read 'paint it'"),
    ("replace the dog", "cannot read 'replace the dog'"),
    ("replace the dog with a cat; paint the sky", "cannot read 'paint the sky'"),
    ("make it", "cannot read 'make it'"),
    ("the dog ->", "empty"),
    ("   ", "empty"),
    ("; ".join(["remove x"] * (MAX_STEPS + 1)), "at most"),
])
def test_the_parser_quotes_what_it_cannot_read(text, fragment):
    with pytest.raises(InputError) as e:
        parse_instruction(text)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_instruction_files_and_pairs(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"target": "the dog", "prompt": "a cat"}, {"target": "the sky", "op": "remove"},
                                {"target": "a car", "prompt": "a bus", "op": "fill"}]))
    assert load_instructions(good) == [("the dog", "a cat"), ("the sky", None), ("a car", "a bus")]
    assert steps_of([("a", "b"), {"target": "c", "op": "remove"}]) == [("a", "b"), ("c", None)]
    assert describe_steps(steps_of([("a", "b"), ("c", None)])) == ["1. 'a' -> 'b'", "2. remove 'c'"]
    cases = {"[": "not valid JSON", '{"target": "x"}': "JSON list", "[1]": "instruction 1: expected an object",
             '[{"target": "x"}]': "give a \"prompt\"", '[{"target": "", "prompt": "y"}]': "target must be",
             '[{"target": "x", "prompt": 3}]': "prompt must be", '[{"target": "x", "op": "remove", "prompt": "y"}]':
             "takes no prompt", '[{"target": "x", "prompt": "y", "colour": 1}]': "unknown key", "[]": "no edit steps",
             '[{"target": "x", "op": "fill"}]': "needs a \"prompt\""}
    for text, fragment in cases.items():
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(InputError) as e:
            load_instructions(bad)
        assert fragment in str(e.value) and "\n" not in str(e.value), text
    with pytest.raises(InputError, match="not found"):
        load_instructions(tmp_path / "missing.json")
    with pytest.raises(InputError, match="pair"):
        steps_of([("a", "b", "c")])


# -- the package's names -----------------------------------------------------------------------------

def test_submodules_do_not_shadow_the_api_functions():
    import importlib

    for name in ("replace", "compose", "cutout", "style"):
        module = importlib.import_module(f"anyseg.edit.{name}")
        assert isinstance(module, types.ModuleType)
        assert callable(getattr(edit, name)) and not isinstance(getattr(edit, name), types.ModuleType)
    assert edit.replace.__module__ == "anyseg.edit"


def test_style_and_cutout_delegate(monkeypatch):
    img, mask = scene()
    seen = {}

    def fake_style(image, mask, style_image, **kwargs):
        seen.update(kwargs)
        return base.EditResult(image, mask, {"operation": "style"})

    monkeypatch.setitem(sys.modules, "anyseg.edit.style", types.SimpleNamespace(style=fake_style))
    out = edit.style(img, mask, img, strength=0.5, engine="classical")
    assert out.record == {"operation": "style"} and seen["strength"] == 0.5 and seen["feather"] == 8
    cut = edit.cutout(img, mask, method="feather", feather=3)
    assert cut.image.shape == (H, W, 4) and cut.image[30, 45, 3] == 255 and cut.image[2, 2, 3] == 0


# -- the real classical engine -----------------------------------------------------------------------

def test_remove_with_telea_end_to_end():
    img, mask = scene()
    out = edit.remove(img, mask)  # engine="telea", dilate=15
    assert out.record["engine"] == "telea" and np.array_equal(out.image[~out.mask], img[~out.mask])
    assert np.abs(out.image[mask].astype(int) - (250, 20, 20)).sum(axis=1).mean() > 100  # the red box is gone

"""The ``classical`` (GrabCut) engine: synthetic scenes, prompt handling, and the GrabCut data set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from anyseg.errors import InputError, PromptError
from anyseg.io.images import load_image
from anyseg.models.classical import ClassicalPredictor
from anyseg.types import Embedding, Masks, Prompt, masks_to_boxes
from conftest import REPO_ROOT, shared_dataset

RED, BLUE = (220, 60, 50), (40, 70, 200)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def scene(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """A smooth colourful texture with pixel noise (float, to paint objects on)."""
    rng = np.random.default_rng(seed)
    blobs = cv2.resize(rng.normal(0, 1, (h // 8, w // 8, 3)), (w, h), interpolation=cv2.INTER_CUBIC)
    img = 90 + 25 * blobs + rng.normal(0, 8, (h, w, 3))
    img[..., 2] += 20
    return img


def paint(img: np.ndarray, region: np.ndarray, colour: tuple[int, int, int], seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    img[region] = np.array(colour) + rng.normal(0, 10, (int(region.sum()), 3))


def disc(h: int, w: int, cx: int, cy: int, r: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, (cx, cy), r, 1, -1)
    return m.astype(bool)


def finish(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def predictor() -> ClassicalPredictor:
    return ClassicalPredictor()


@pytest.fixture(scope="module")
def disc_scene() -> tuple[np.ndarray, np.ndarray]:
    img = scene()
    gt = disc(240, 320, 170, 120, 60)
    paint(img, gt, RED)
    return finish(img), gt


@pytest.fixture(scope="module")
def two_blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two touching discs of the same colour: A on the left, B on the right."""
    img = scene(seed=2)
    a = disc(240, 320, 110, 120, 50)
    b = disc(240, 320, 205, 120, 50) & ~a
    paint(img, a | b, RED)
    return finish(img), a, b


@pytest.fixture(scope="module")
def two_colour_object() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A red disc ("head") on top of a blue rectangle ("body"): one object of two colours."""
    img = scene(seed=3)
    head = disc(240, 320, 160, 80, 45)
    body = np.zeros((240, 320), bool)
    body[110:211, 120:201] = True
    body &= ~head
    paint(img, head, RED)
    paint(img, body, BLUE, seed=4)
    return finish(img), head, head | body


def test_embedding_and_output_contract(predictor, disc_scene):
    img, gt = disc_scene
    big = cv2.resize(img, (800, 600), interpolation=cv2.INTER_NEAREST)
    emb = predictor.embed(big)
    assert isinstance(emb, Embedding) and emb.model_id == "classical"
    assert emb.original_size == (600, 800) and emb.input_size == (270, 360)
    big_gt = cv2.resize(gt.astype(np.uint8), (800, 600), interpolation=cv2.INTER_NEAREST).astype(bool)
    res = predictor.predict(emb, Prompt(box=masks_to_boxes(big_gt[None])[0]))
    assert isinstance(res, Masks) and len(res) == 1
    assert res.masks.shape == (1, 600, 800) and res.masks.dtype == bool
    assert res.logits.shape == (1, 270, 360) and res.logits.dtype == np.float32
    assert 0.0 <= float(res.scores[0]) <= 1.0
    assert iou(res.masks[0], big_gt) > 0.95  # upsampled and refined at full size
    assert ClassicalPredictor(max_side=None).embed(big).input_size == (600, 800)


def test_box_prompt_disc_and_rectangle(predictor, disc_scene):
    img, gt = disc_scene
    res = predictor.predict(predictor.embed(img), Prompt(box=[110, 60, 231, 181]))
    assert iou(res.masks[0], gt) > 0.9
    canvas = scene(seed=5)
    rect = np.zeros((240, 320), bool)
    rect[50:170, 60:260] = True
    paint(canvas, rect, BLUE)
    res = predictor.predict(predictor.embed(finish(canvas)), Prompt(box=[60, 50, 260, 170]))
    assert iou(res.masks[0], rect) > 0.9


def test_clicks_only(predictor, disc_scene):
    img, gt = disc_scene
    emb = predictor.embed(img)
    res = predictor.predict(emb, Prompt(points=[[170, 120]], labels=[1]))
    assert iou(res.masks[0], gt) > 0.9
    assert not predictor.predict(emb, Prompt(points=[[20, 20]], labels=[0])).masks.any()  # nothing asked for


def test_negative_click_removes_touching_blob(predictor, two_blobs):
    img, a, b = two_blobs
    emb = predictor.embed(img)
    pos_only = predictor.predict(emb, Prompt(points=[[110, 120]], labels=[1])).masks[0]
    assert (pos_only & b).sum() > 0.5 * b.sum()  # same colour, touching: GrabCut alone takes both
    both = predictor.predict(emb, Prompt(points=[[110, 120], [205, 120]], labels=[1, 0])).masks[0]
    assert (both & b).sum() < 0.15 * b.sum()
    assert iou(both, a) > 0.85
    boxed = predictor.predict(emb, Prompt(box=[55, 65, 260, 175], points=[[205, 120]], labels=[0])).masks[0]
    assert (boxed & b).sum() < 0.15 * b.sum() and (boxed & a).sum() > 0.5 * a.sum()


def test_refinement_with_previous_logits(predictor, two_colour_object):
    img, head, whole = two_colour_object
    emb = predictor.embed(img)
    first = predictor.predict(emb, Prompt(points=[[160, 70]], labels=[1]))
    assert iou(first.masks[0], head) > 0.9 and iou(first.masks[0], whole) < 0.6  # only the red part
    again = predictor.predict(emb, Prompt(mask_logits=first.logits[0]))
    assert iou(again.masks[0], first.masks[0]) > 0.95  # the logits carry the mask
    second = predictor.predict(emb, Prompt(points=[[160, 70], [160, 180]], labels=[1, 1], mask_logits=first.logits[0]))
    assert iou(second.masks[0], whole) > 0.9
    from_mask = predictor.predict(emb, Prompt(points=[[160, 180]], labels=[1], mask=first.masks[0]))
    assert iou(from_mask.masks[0], whole) > 0.9


def test_multimask_returns_three_sorted(predictor, disc_scene):
    img, gt = disc_scene
    res = predictor.predict(predictor.embed(img), Prompt(box=[110, 60, 231, 181]), multimask=True)
    assert len(res) == 3 and res.masks.shape == (3, 240, 320) and res.logits.shape[0] == 3
    assert np.all(np.diff(res.scores) <= 0) and np.all((res.scores >= 0) & (res.scores <= 1))
    assert sorted(res.data["variant"].tolist()) == ["grabcut", "pruned", "pruned-lab"]
    assert iou(res.masks[0], gt) > 0.9


def test_prompt_errors(predictor, disc_scene):
    img, _ = disc_scene
    emb = predictor.embed(img)
    for bad in (Prompt(points=[[321, 10]]), Prompt(points=[[10, -1]]), Prompt(box=[10, 10, 330, 100]),
                Prompt(mask=np.zeros((10, 10), bool))):
        with pytest.raises(PromptError):
            predictor.predict(emb, bad)
    with pytest.raises(PromptError, match="text"):
        predictor.predict(emb, Prompt(text="a red disc"))
    foreign = Embedding(model_id="sam-vit-base", original_size=(240, 320), input_size=(240, 320), features=None)
    with pytest.raises(InputError):
        predictor.predict(foreign, Prompt(box=[0, 0, 10, 10]))
    with pytest.raises(InputError):
        ClassicalPredictor(iterations=0)
    with pytest.raises(InputError, match=r"iterations must be an integer in 1\.\.20; got 1000000"):
        ClassicalPredictor(iterations=10**6)


def test_degenerate_prompts_never_crash(predictor, disc_scene):
    img, gt = disc_scene
    emb = predictor.embed(img)
    for box in ([100, 100, 102, 101], [100, 100, 100.4, 100.3], [0, 0, 320, 240], [318, 238, 320, 240]):
        res = predictor.predict(emb, Prompt(box=box), multimask=True)
        assert res.masks.shape == (3, 240, 320) and res.masks[0].any()
    flat = np.full((50, 60, 3), 128, np.uint8)
    res = predictor.predict(predictor.embed(flat), Prompt(box=[10, 10, 40, 30]))
    assert res.masks.shape == (1, 50, 60) and np.isfinite(res.scores).all()
    res = predictor.predict(predictor.embed(flat[:1, :1]), Prompt(points=[[0, 0]]))
    assert res.masks.shape == (1, 1, 1)


def test_deterministic(predictor):
    """Same prompt, same masks (the speed is measured by bench/classical_degenerate.py, not here)."""
    img = scene(400, 500, seed=7)
    obj = disc(400, 500, 250, 200, 110)
    paint(img, obj, RED)
    img = finish(img)
    emb = predictor.embed(img)
    first = predictor.predict(emb, Prompt(box=[138, 88, 362, 312]))
    assert iou(first.masks[0], obj) > 0.9
    assert emb.features["dithered"] == (0, 0)  # a natural-looking image takes the unguarded path
    assert np.array_equal(first.masks, predictor.predict(emb, Prompt(box=[138, 88, 362, 312])).masks)


def test_bench_script_without_data():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "classical_grabcut.py"), "--data", "/nonexistent/grabcut"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not found" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_grabcut_dataset_box_prompt_mean_iou(predictor):
    """All 50 images, tight box of the 255 pixels, 128 band ignored: mean IoU >= 0.85."""
    root = shared_dataset("grabcut")
    ious = []
    for img_path in sorted((root / "images").iterdir()):
        gt = np.asarray(Image.open(root / "masks" / f"{Path(img_path).stem}.bmp").convert("L"))
        ys, xs = np.nonzero(gt == 255)
        res = predictor.segment(load_image(img_path), Prompt(box=[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]))
        valid, obj = gt != 128, gt == 255
        ious.append((res.masks[0] & obj & valid).sum() / ((res.masks[0] | obj) & valid).sum())
    assert len(ious) == 50
    assert np.mean(ious) >= 0.85, f"mean IoU {np.mean(ious):.4f} over {len(ious)} images"

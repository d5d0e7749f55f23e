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
from anyseg.models.classical import EVIDENCE, ClassicalPredictor
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


def assert_distinct(masks: np.ndarray, min_area: int = 0) -> None:
    """Candidates are pairwise distinct (IoU <= 0.9) and none is smaller than ``min_area``."""
    for i in range(len(masks)):
        assert masks[i].sum() >= min_area, f"candidate {i} is a fragment of {masks[i].sum()} pixels"
        for j in range(i):
            assert iou(masks[i], masks[j]) <= 0.9, f"candidates {j} and {i} overlap at IoU {iou(masks[i], masks[j]):.3f}"


def assert_clicks_honoured(masks: np.ndarray, points, labels) -> None:
    """Every mask holds every positive click's pixel and no negative click's pixel."""
    for m in masks:
        for (x, y), lab in zip(points, labels):
            px, py = min(m.shape[1] - 1, int(x)), min(m.shape[0] - 1, int(y))
            assert m[py, px] == (lab == 1), f"click ({x:.1f}, {y:.1f}) label {lab} but the mask says {m[py, px]}"


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
    cands = predictor.predict(emb, Prompt(points=[[160, 70]], labels=[1]), multimask=True)
    ious = [(iou(m, head), iou(m, whole)) for m in cands.masks]  # two extents: the red part, the whole figure
    k = next(i for i, (h, _) in enumerate(ious) if h > 0.9)
    assert any(w > 0.9 for _, w in ious) and ious[k][1] < 0.6, ious
    part, part_logits = cands.masks[k], cands.logits[k]
    again = predictor.predict(emb, Prompt(mask_logits=part_logits))
    assert iou(again.masks[0], part) > 0.95  # the logits carry the mask
    second = predictor.predict(emb, Prompt(points=[[160, 70], [160, 180]], labels=[1, 1], mask_logits=part_logits))
    assert iou(second.masks[0], whole) > 0.9
    from_mask = predictor.predict(emb, Prompt(points=[[160, 180]], labels=[1], mask=part))
    assert iou(from_mask.masks[0], whole) > 0.9


def test_multimask_box_candidates_are_sorted_and_distinct(predictor, disc_scene):
    img, gt = disc_scene
    res = predictor.predict(predictor.embed(img), Prompt(box=[110, 60, 231, 181]), multimask=True)
    assert 1 <= len(res) <= 3 and res.masks.shape[1:] == (240, 320) and res.logits.shape[0] == len(res)
    assert np.all(np.diff(res.scores) <= 0) and np.all((res.scores >= 0) & (res.scores <= 1))
    assert set(res.data["variant"].tolist()) <= {"grabcut", "pruned", "pruned-lab"}
    assert_distinct(res.masks)
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
        assert 1 <= len(res) <= 3 and res.masks.shape[1:] == (240, 320) and res.masks[0].any()
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


# -- the click path: hard constraints, distinct candidates, a score that means something -----------
@pytest.fixture(scope="module")
def small_scene() -> tuple[np.ndarray, np.ndarray]:
    """160 x 120: a red disc and a blue bar on a textured background (fast to cut)."""
    img = scene(120, 160, seed=11)
    obj = disc(120, 160, 60, 60, 28)
    bar = np.zeros((120, 160), bool)
    bar[20:100, 110:140] = True
    paint(img, obj, RED)
    paint(img, bar, BLUE, seed=12)
    return finish(img), obj


def random_clicks(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """1 to 4 clicks on distinct pixels, each positive or negative."""
    k = int(rng.integers(1, 5))
    pix = rng.choice(h * w, size=k, replace=False)
    points = np.stack([pix % w, pix // w], 1) + rng.uniform(0, 1, (k, 2))
    return points, rng.integers(0, 2, k)


def test_every_mask_holds_its_positive_clicks_and_none_of_its_negative_ones(predictor, small_scene):
    """Property test: random click sets, alone, after a previous mask and inside a box."""
    img, obj = small_scene
    emb = predictor.embed(img)
    rng = np.random.default_rng(14)
    for trial in range(18):
        points, labels = random_clicks(rng, 120, 160)
        if trial % 3 == 0:
            prompt = Prompt(points=points, labels=labels)
        elif trial % 3 == 1:
            first = predictor.predict(emb, Prompt(points=[[60, 60]], labels=[1]))
            prompt = Prompt(points=points, labels=labels, mask_logits=first.logits[0])
        else:
            x0, y0 = points.min(0) - 3
            x1, y1 = points.max(0) + 3
            prompt = Prompt(points=points, labels=labels, box=[max(0, x0), max(0, y0), min(160, x1), min(120, y1)])
        res = predictor.predict(emb, prompt, multimask=True)
        assert_clicks_honoured(res.masks, points, labels)


def test_click_candidates_are_distinct_and_no_fragments(predictor, disc_scene, small_scene):
    for img, click in ((disc_scene[0], [170, 120]), (small_scene[0], [60, 60]), (small_scene[0], [125, 60])):
        res = predictor.predict(predictor.embed(img), Prompt(points=[click], labels=[1]), multimask=True)
        assert len(res) == 3 and np.all(np.diff(res.scores) <= 0)
        radius = max(2, round(max(img.shape[:2]) / 120))  # the click disc: 1/120 of the longest side
        assert_distinct(res.masks, min_area=int(4 * np.pi * radius**2))  # at least 4 click discs: never a 40-pixel fragment
        assert res.data["evidence"].shape == (3, len(EVIDENCE))
        for m in res.masks:  # one connected piece, the one under the click
            assert cv2.connectedComponents(m.astype(np.uint8), connectivity=8)[0] == 2


def test_best_scored_click_candidate_is_the_best_one(predictor, disc_scene):
    canvas = scene(seed=5)
    rect = np.zeros((240, 320), bool)
    rect[50:170, 60:260] = True
    paint(canvas, rect, BLUE)
    for img, gt, click in ((disc_scene[0], disc_scene[1], [170, 120]), (finish(canvas), rect, [160, 110])):
        res = predictor.predict(predictor.embed(img), Prompt(points=[click], labels=[1]), multimask=True)
        ious = [iou(m, gt) for m in res.masks]
        assert int(np.argmax(res.scores)) == int(np.argmax(ious)), (res.scores, ious)
        assert ious[0] > 0.9 and res.scores[0] > 0.5
        assert max(res.scores[1:]) < res.scores[0] - 0.2, res.scores  # the wrong extents are clearly worse


def test_no_evidence_gives_a_low_score(predictor):
    flat = np.full((120, 160, 3), 128, np.uint8)
    emb = predictor.embed(flat)
    for prompt in (Prompt(points=[[80, 60]], labels=[1]), Prompt(box=[40, 30, 120, 90]),
                   Prompt(points=[[80, 60], [20, 20]], labels=[1, 0])):
        res = predictor.predict(emb, prompt, multimask=True)
        assert res.scores.max() < 0.05, (prompt, res.scores)
        assert_clicks_honoured(res.masks, *([prompt.points, prompt.labels] if prompt.points is not None else [[], []]))
    noise = np.random.default_rng(5).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    res = predictor.predict(predictor.embed(noise), Prompt(points=[[80, 60]], labels=[1]), multimask=True)
    assert res.scores.max() < 0.15, res.scores  # texture everywhere: no boundary stronger than the rest


def test_click_path_is_deterministic(predictor, two_colour_object):
    img, _, _ = two_colour_object
    emb = predictor.embed(img)
    prompt = Prompt(points=[[160, 70], [60, 200]], labels=[1, 0])
    a, b = predictor.predict(emb, prompt, multimask=True), predictor.predict(predictor.embed(img), prompt, multimask=True)
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.scores, b.scores)
    again = Prompt(points=[[160, 70], [160, 180]], labels=[1, 1], mask_logits=a.logits[0])
    assert np.array_equal(predictor.predict(emb, again).masks, predictor.predict(emb, again).masks)


def test_single_answer_is_the_best_candidate_and_candidates_lists_them_all(predictor, disc_scene):
    img, _ = disc_scene
    emb = predictor.embed(img)
    prompt = Prompt(points=[[170, 120]], labels=[1])
    many, one = predictor.predict(emb, prompt, multimask=True), predictor.predict(emb, prompt)
    assert len(one) == 1 and np.array_equal(one.masks[0], many.masks[0]) and one.scores[0] == many.scores[0]
    every = predictor.candidates(emb, prompt)  # what predict chose from, at the working resolution
    assert len(every) >= len(many) and every.data["evidence"].shape == (len(every), len(EVIDENCE))
    assert float(every.scores.max()) == pytest.approx(float(many.scores[0]))


def test_a_pixel_cannot_be_both_positive_and_negative(predictor, disc_scene):
    emb = predictor.embed(disc_scene[0])
    with pytest.raises(PromptError, match=r"pixel \(170, 120\) has both a positive and a negative click"):
        predictor.predict(emb, Prompt(points=[[170.2, 120.5], [170.7, 120.1]], labels=[1, 0]))


def _gt(root: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = next(p for p in (root / "images").iterdir() if p.stem == name)
    gt = np.asarray(Image.open(root / "masks" / f"{name}.bmp").convert("L"))
    return load_image(image), gt == 255, gt == 128


@pytest.mark.parametrize("name", ["teddy", "banana1"])
def test_real_images_clicks_alone_never_return_the_background(predictor, name):
    """The issue's report: three positive clicks on teddy gave the background (89,255 of 113,032
    pixels) at score 0.914, three times. Clicks inside the object, then the clicker's corrections."""
    from anyseg.eval.clicker import next_click

    img, obj, ignore = _gt(shared_dataset("grabcut"), name)
    emb = predictor.embed(img)
    inner = cv2.distanceTransform(obj.astype(np.uint8), cv2.DIST_L2, 5)
    ys, xs = np.nonzero(inner > 0.5 * inner.max())
    pick = np.random.default_rng(3).choice(len(xs), 3, replace=False)
    points, labels = np.stack([xs[pick], ys[pick]], 1).astype(float), np.ones(3, int)
    res = predictor.predict(emb, Prompt(points=points, labels=labels), multimask=True)
    assert_clicks_honoured(res.masks, points, labels)
    assert_distinct(res.masks, min_area=100)
    valid = ~ignore
    best = res.masks[0]
    assert (best & obj & valid).sum() / ((best | obj) & valid).sum() > 0.6, "the best candidate is mostly the object"
    assert (best & ~obj & valid).sum() < 0.5 * obj.sum(), "not the background"
    clicks = [(float(x), float(y), True) for x, y in points]
    pred, logits = best, res.logits[0]
    for _ in range(3):  # corrections: the rules hold after each one
        x, y, positive = next_click(pred, obj, ignore)
        clicks.append((x, y, positive))
        out = predictor.predict(emb, Prompt(points=[c[:2] for c in clicks], labels=[int(c[2]) for c in clicks], mask_logits=logits))
        assert_clicks_honoured(out.masks, [c[:2] for c in clicks], [int(c[2]) for c in clicks])
        pred, logits = out.masks[0], out.logits[0]


def test_bench_script_without_data():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "classical_grabcut.py"), "--data", "/nonexistent/grabcut"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not found" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_click_bench_script_without_data():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "classical_clicks.py"), "--data", "/nonexistent/grabcut"],
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

"""The RITM click simulator, NoC/NoF/mIoU@k and the simulated session against a fake predictor."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from anyseg.errors import InputError
from anyseg.eval.clicker import InteractiveResult, next_click, noc, reached, simulate, summarize
from anyseg.models.base import Predictor
from anyseg.types import Embedding, Masks, Prompt


def _rect(shape, y0, y1, x0, x1):
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _edt_first_max(region: np.ndarray) -> tuple[float, float]:
    """Independent reference: scipy EDT on the zero-padded region, first row-major maximum."""
    dt = distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    row, col = np.argwhere(np.isclose(dt, dt.max()))[0]
    return float(col), float(row)


# -- next_click -------------------------------------------------------------------------------
def test_first_click_square_centre():
    gt = _rect((40, 50), 5, 26, 10, 31)  # 21 x 21, centre at row 15, col 20
    assert next_click(np.zeros_like(gt), gt) == (20.0, 15.0, True)


def test_first_click_rectangle_first_of_the_plateau():
    # 21 rows x 31 columns: every pixel of the middle row with columns 10..20 (relative) is
    # 11 px from the boundary; the reference takes the first one in row-major order.
    gt = _rect((40, 60), 5, 26, 10, 41)
    x, y, pos = next_click(np.zeros_like(gt), gt)
    assert pos and (x, y) == (20.0, 15.0) == _edt_first_max(gt)


def test_first_click_l_shape_matches_independent_edt():
    gt = _rect((60, 60), 5, 55, 5, 20) | _rect((60, 60), 40, 55, 5, 55)
    x, y, pos = next_click(np.zeros_like(gt), gt)
    assert pos and (x, y) == _edt_first_max(gt)
    assert gt[int(y), int(x)]


def test_negative_when_false_positive_region_is_larger():
    gt = _rect((60, 60), 10, 30, 10, 30)
    pred = gt.copy()
    pred[10:30, 25:30] = False  # FN: a 20x5 strip
    pred |= _rect((60, 60), 35, 55, 35, 55)  # FP: a 20x20 square
    x, y, pos = next_click(pred, gt)
    # an even 20-px side: rows/columns 44 and 45 tie at distance 10; the first one wins
    assert not pos and (x, y) == (44.0, 44.0) == _edt_first_max(~gt & pred)


def test_positive_when_false_negative_region_is_larger():
    gt = _rect((60, 60), 10, 50, 10, 50)
    pred = _rect((60, 60), 10, 50, 10, 25) | _rect((60, 60), 0, 3, 0, 60)  # FN 40x25, FP thin strip
    x, y, pos = next_click(pred, gt)
    assert pos and gt[int(y), int(x)] and not pred[int(y), int(x)]
    assert (x, y) == _edt_first_max(gt & ~pred)


def test_tie_gives_a_negative_click():
    gt = _rect((40, 40), 5, 15, 5, 15)  # FN: the whole 10x10 square
    pred = _rect((40, 40), 25, 35, 25, 35)  # FP: an identical 10x10 square
    assert next_click(pred, gt)[2] is False


def test_no_error_returns_none():
    gt = _rect((20, 20), 5, 10, 5, 10)
    assert next_click(gt, gt) is None


def test_ignore_pixels_are_never_clicked():
    gt = _rect((50, 50), 5, 45, 5, 45)
    ignore = _rect((50, 50), 15, 35, 15, 35)  # the object's centre
    x, y, pos = next_click(np.zeros_like(gt), gt, ignore)
    assert pos and not ignore[int(y), int(x)] and gt[int(y), int(x)]
    # the only error lies inside the ignore region: nothing to click
    pred = gt & ~_rect((50, 50), 20, 30, 20, 30)
    assert next_click(pred, gt, ignore) is None


def test_padding_keeps_clicks_off_the_image_border():
    gt = _rect((30, 40), 0, 30, 0, 10)  # touches the top, left and bottom borders
    x, y, pos = next_click(np.zeros_like(gt), gt)
    assert pos and (x, y) == (4.0, 4.0) == _edt_first_max(gt)
    x, y, _ = next_click(np.zeros_like(gt), gt, padding=False)
    assert x == 0.0 or y == 0.0  # without padding the border is no boundary


def test_clicked_pixels_are_not_clicked_again():
    gt = _rect((40, 40), 5, 26, 5, 26)
    first = next_click(np.zeros_like(gt), gt)
    clicked = np.zeros_like(gt)
    clicked[int(first[1]), int(first[0])] = True
    second = next_click(np.zeros_like(gt), gt, clicked=clicked)
    assert second[:2] != first[:2] and second[2]


def test_next_click_rejects_bad_masks():
    gt = np.zeros((10, 10), dtype=bool)
    with pytest.raises(InputError, match="shape"):
        next_click(np.zeros((10, 11), dtype=bool), gt)
    with pytest.raises(InputError, match="binary"):
        next_click(np.full((10, 10), -1), gt)


# -- noc / NoF / summarize --------------------------------------------------------------------
def test_noc_and_reached():
    ious = [0.5, 0.8, 0.86, 0.91]
    assert noc(ious, 0.85) == 3 and noc(ious, 0.90) == 4
    assert reached(ious, 0.90) and not reached([0.5, 0.6], 0.85)
    assert noc([0.5, 0.6], 0.85, max_clicks=20) == 20
    assert noc(ious, 0.90, max_clicks=3) == 3 and not reached(ious, 0.90, max_clicks=3)
    assert noc([0.95], 0.9) == 1


def test_summarize_hand_made():
    a = InteractiveResult(ious=[0.5, 0.8, 0.86, 0.91, 0.92])
    b = InteractiveResult(ious=[0.3, 0.4, 0.5, 0.6, 0.7])
    s = summarize([a, b], max_clicks=5, k_values=(1, 3, 5, 10))
    assert s["NoC@85"] == pytest.approx((3 + 5) / 2) and s["NoC@90"] == pytest.approx((4 + 5) / 2)
    assert s["NoF@85"] == 1 and s["NoF@90"] == 1
    assert s["mIoU@1"] == pytest.approx(0.4) and s["mIoU@3"] == pytest.approx(0.68)
    assert s["mIoU@5"] == pytest.approx(0.81) and "mIoU@10" not in s
    assert s["num_images"] == 2 and s["iou_curve"] == pytest.approx([0.4, 0.6, 0.68, 0.755, 0.81])
    # a truncated (RITM-style early-stopped) sequence is extended with its last IoU
    s = summarize([[0.95]], max_clicks=3)
    assert s["iou_curve"] == pytest.approx([0.95] * 3) and s["NoC@90"] == 1 and s["NoF@90"] == 0
    with pytest.raises(InputError):
        summarize([])


# -- simulate ---------------------------------------------------------------------------------
class DiscPredictor(Predictor):
    """Union of discs around positive clicks minus discs around negative ones; records prompts."""

    name = "fake-discs"

    def __init__(self, radius: float = 6.0):
        self.radius = radius
        self.prompts: list[tuple[Prompt, bool]] = []
        self.returned: list[Masks] = []

    def embed(self, image):
        h, w = image.shape[:2]
        return Embedding(self.name, (h, w), (h, w), features=None)

    def predict(self, embedding, prompt, multimask=False):
        self.prompts.append((prompt, multimask))
        h, w = embedding.original_size
        yy, xx = np.mgrid[:h, :w]
        mask = np.zeros((h, w), dtype=bool)
        for (x, y), lab in zip(prompt.points, prompt.labels):
            disc = (xx - x) ** 2 + (yy - y) ** 2 <= self.radius**2
            mask = mask | disc if lab == 1 else mask & ~disc
        logits = np.where(mask, 5.0, -5.0).astype(np.float32)[::2, ::2] + len(self.prompts)
        if multimask:  # unsorted on purpose: the best candidate is in the middle
            out = Masks(np.stack([np.zeros_like(mask), mask, ~mask]), scores=[0.1, 0.9, 0.2],
                        logits=np.stack([logits - 1, logits, logits + 1]))
        else:
            out = Masks(mask[None], scores=[0.5], logits=logits[None])
        self.returned.append(out)
        return out


def test_simulate_accumulates_clicks_and_feeds_logits():
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    gt = _rect((48, 64), 8, 40, 10, 50)
    fake = DiscPredictor()
    res = simulate(fake, image, gt, max_clicks=8)
    assert len(res.ious) == 8 and res.num_clicks == 8 and len(fake.prompts) == 8
    assert res.clicks[0] == next_click(np.zeros_like(gt), gt)
    for k, (prompt, multimask) in enumerate(fake.prompts, start=1):
        assert multimask == (k == 1)
        assert prompt.points.tolist() == [[x, y] for x, y, _ in res.clicks[:k]]
        assert prompt.labels.tolist() == [int(p) for _, _, p in res.clicks[:k]]
        if k == 1:
            assert prompt.mask_logits is None
        else:
            best = 1 if k == 2 else 0  # the first step kept the highest-scoring candidate
            np.testing.assert_array_equal(prompt.mask_logits, fake.returned[k - 2].logits[best])
    assert res.ious[-1] > res.ious[0] and max(res.ious) > 0.5
    assert res.mask.shape == gt.shape


def test_simulate_without_prev_logits_and_early_stop():
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:40, :40]
    gt = (xx - 20) ** 2 + (yy - 20) ** 2 <= 36  # the fake's disc itself
    fake = DiscPredictor(radius=6.0)
    res = simulate(fake, image, gt, max_clicks=5, use_prev_logits=False, stop_at=0.9)
    assert res.num_clicks == 1 and res.stopped_early and res.ious == [1.0] * 5
    assert all(p.mask_logits is None for p, _ in fake.prompts)
    assert summarize([res], max_clicks=5)["NoC@90"] == 1


def test_simulate_ignore_pixels_do_not_count():
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:40, :40]
    disc = (xx - 20) ** 2 + (yy - 20) ** 2 <= 36
    gt = _rect((40, 40), 14, 27, 14, 27)  # a square around the disc
    ignore = gt ^ disc  # everything the disc gets wrong is ignored
    res = simulate(DiscPredictor(6.0), image, gt, ignore=ignore, max_clicks=3)
    assert res.ious[0] == 1.0 and all(not ignore[int(y), int(x)] for x, y, _ in res.clicks)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gt=np.ones((10, 10), bool)), "image's shape"),
        (dict(max_clicks=0), "max_clicks"),
        (dict(gt=np.zeros((20, 30), bool)), "gt is empty"),
        (dict(ignore=np.ones((20, 30), bool)), "gt is empty"),
        (dict(stop_at=1.5), "stop_at"),
    ],
)
def test_simulate_bad_inputs(kwargs, match):
    args = dict(image=np.zeros((20, 30, 3), np.uint8), gt=_rect((20, 30), 5, 15, 5, 15))
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        simulate(DiscPredictor(), **args)

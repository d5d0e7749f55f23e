"""SAM 3 exemplar prompts on a tiny random Sam3Model (tests/tiny_sam3.py), loaded through the users' path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_models import build_sam3_tracker
from tiny_sam3 import build_sam3

from anyseg.errors import InputError, ModelError
from anyseg.fewshot import Reference, Segmenter
from anyseg.fewshot.sam3 import UNSUPPORTED, Sam3ExemplarMethod, exemplar_boxes, roi_align


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_sam3(tmp_path_factory.mktemp("sam3") / "tiny-sam3")


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _ref() -> Reference:
    image = _image(90, 150, 1)
    mask = np.zeros(image.shape[:2], bool)
    mask[20:50, 30:80] = True
    mask[60:75, 100:125] = True
    return Reference(image, mask, "coins")


def test_exemplars_on_the_reference_image(folder):
    ref = _ref()
    seg = Segmenter(method="sam3", model=str(folder), device="cpu", threshold=0.0).fit([ref])
    every = seg.predict(ref.image, instances="all")
    one = seg.predict(ref.image)
    assert every.masks.shape[1:] == ref.size and len(every) >= 1 and len(one) == 1
    assert list(every.scores) == sorted(every.scores, reverse=True)
    assert np.all((every.scores >= 0) & (every.scores <= 1))
    assert one.scores[0] == every.scores[0]
    b = every.boxes
    assert np.all((b[:, 0::2] >= 0) & (b[:, 0::2] <= 150) & (b[:, 1::2] >= 0) & (b[:, 1::2] <= 90))


def test_exemplar_boxes_reach_the_model(folder):
    ref = _ref()
    method = Sam3ExemplarMethod.from_options(model=str(folder), device="cpu")
    calls = []
    model = method.exemplars.model
    forward = model.forward
    model.forward = lambda *a, **k: calls.append(k) or forward(*a, **k)
    try:
        method.predict(method.fit([ref]), ref.image, "all")
    finally:
        del model.forward
    boxes = calls[0]["input_boxes"][0]  # normalised cx, cy, w, h
    want = torch.tensor([[55 / 150, 35 / 90, 50 / 150, 30 / 90], [112.5 / 150, 67.5 / 90, 25 / 150, 15 / 90]])
    torch.testing.assert_close(boxes, want)
    assert calls[0]["input_boxes_labels"].tolist() == [[1, 1]]


def test_another_image_is_one_line_saying_what_sam3_supports(folder):
    seg = Segmenter(method="sam3", model=str(folder), device="cpu").fit([_ref()])
    with pytest.raises(ModelError) as e:
        seg.predict(_image(90, 150, 9))
    assert str(e.value) == UNSUPPORTED and "\n" not in UNSUPPORTED


def test_tracker_only_checkpoint_and_bad_options(folder, tmp_path):
    tracker = build_sam3_tracker(tmp_path / "tracker")
    with pytest.raises(ModelError, match="only the SAM 3 tracker"):
        Sam3ExemplarMethod.from_options(model=str(tracker), device="cpu")
    with pytest.raises(InputError, match="--features is for --method matcher"):
        Sam3ExemplarMethod.from_options(model=str(folder), features="dinov2-small")
    with pytest.raises(InputError, match="unknown option"):
        Sam3ExemplarMethod.from_options(model=str(folder), topk=2)
    with pytest.raises(ModelError):
        Sam3ExemplarMethod.from_options(allow_download=False)  # sam3 absent offline


def test_exemplar_boxes_per_component():
    mask = np.zeros((50, 60), bool)
    mask[5:25, 10:40] = True
    mask[30:40, 45:55] = True
    mask[48, 2] = True  # a speck: under 1% of the largest component
    boxes = exemplar_boxes(mask)
    np.testing.assert_array_equal(boxes, [[10, 5, 40, 25], [45, 30, 55, 40]])


def _roi_align_loop(x, box, out, ratio=-1, aligned=False):
    """torchvision's CPU kernel, written as its loops (roi_align_kernel.cpp)."""
    c, height, width = x.shape
    off = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (float(v) - off for v in box)
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    bh, bw = rh / out, rw / out
    gh = ratio if ratio > 0 else math.ceil(rh / out)
    gw = ratio if ratio > 0 else math.ceil(rw / out)
    res = torch.zeros(c, out, out, dtype=torch.float64)

    def bilinear(y, xx):
        if y < -1.0 or y > height or xx < -1.0 or xx > width:
            return torch.zeros(c, dtype=torch.float64)
        y, xx = max(y, 0.0), max(xx, 0.0)
        yl, xl = int(y), int(xx)
        if yl >= height - 1:
            yh = yl = height - 1
            y = float(yl)
        else:
            yh = yl + 1
        if xl >= width - 1:
            xh = xl = width - 1
            xx = float(xl)
        else:
            xh = xl + 1
        ly, lx = y - yl, xx - xl
        return ((1 - ly) * (1 - lx) * x[:, yl, xl] + (1 - ly) * lx * x[:, yl, xh] + ly * (1 - lx) * x[:, yh, xl]
                + ly * lx * x[:, yh, xh])

    for ph in range(out):
        for pw in range(out):
            acc = torch.zeros(c, dtype=torch.float64)
            for iy in range(gh):
                y = y1 + ph * bh + (iy + 0.5) * bh / gh
                for ix in range(gw):
                    acc += bilinear(y, x1 + pw * bw + (ix + 0.5) * bw / gw)
            res[:, ph, pw] = acc / max(gh * gw, 1)
    return res


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_is_torchvisions_kernel(aligned):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 13, generator=g, dtype=torch.float64)
    boxes = [torch.tensor([[1.3, 0.2, 7.9, 6.1], [-3.0, -2.0, 14.5, 10.2]], dtype=torch.float64),
             torch.tensor([[11.6, 7.7, 12.9, 8.8], [4.0, 4.0, 4.2, 4.1]], dtype=torch.float64)]
    for out in (1, 3, 7):
        got = roi_align(x, boxes, out, aligned=aligned)
        want = torch.stack([_roi_align_loop(x[b], box, out, aligned=aligned) for b, t in enumerate(boxes) for box in t])
        torch.testing.assert_close(got, want)
    got = roi_align(x, [boxes[0], boxes[1][:0]], (2, 2), sampling_ratio=2)
    want = torch.stack([_roi_align_loop(x[0], box, 2, ratio=2) for box in boxes[0]])
    torch.testing.assert_close(got, want)


def test_roi_align_of_a_linear_ramp():
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(20.0), indexing="ij")
    x = (2 * yy + 0.5 * xx)[None, None]
    got = roi_align(x, [torch.tensor([[2.0, 4.0, 10.0, 12.0]])], 2)[0, 0]
    # bins of 4 x 4 pixels, 4 x 4 samples each at the bin's pixel centres: the ramp at the bin centres
    centres_y, centres_x = torch.tensor([6.0, 10.0]), torch.tensor([4.0, 8.0])
    torch.testing.assert_close(got, 2 * centres_y[:, None] + 0.5 * centres_x[None])


def test_roi_align_matches_torchvision_when_installed():
    tv = pytest.importorskip("torchvision", reason="torchvision is not installed (anyseg does not need it)")
    x = torch.randn(1, 4, 12, 15)
    boxes = [torch.tensor([[1.2, 0.5, 7.9, 6.1], [0.0, 0.0, 15.0, 12.0]])]
    torch.testing.assert_close(roi_align(x, boxes, 7), tv.ops.roi_align(x, boxes, 7))

"""Flow-guided object removal in video (anyseg.edit.video): a panning textured background with
an object on top, whose hidden background other frames show."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from anyseg.edit.base import dilate_mask
from anyseg.edit.video import complete_flow, fb_consistent, laplace_fill, optical_flow, remove_video
from anyseg.errors import InputError

H, W, SHIFT = 64, 96, 3


class Telea:
    """A per-frame engine (OpenCV Telea), counting its calls."""

    name, generative, working_size = "telea-test", False, None

    def __init__(self) -> None:
        self.calls = 0

    @property
    def model_id(self) -> str:
        return "cv2-telea"

    def inpaint(self, image, mask, prompt=None, seed=0, **options):
        self.calls += 1
        return cv2.inpaint(image, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 2.0)
    return np.clip((big - big.mean()) * 4 + 128, 0, 255).astype(np.uint8)


def panning_video(frames: int = 12, shift: int = SHIFT, static: bool = False):
    """``(frames, masks, clean backgrounds)``: the camera pans by ``shift`` px a frame (not when
    ``static``) over a texture; a red square stays at one place in the frame."""
    big = _texture(H, W + shift * frames + 8)
    clean = [big[:, (0 if static else shift * t):(0 if static else shift * t) + W].copy() for t in range(frames)]
    video, masks = [], []
    for bg in clean:
        m = np.zeros((H, W), bool)
        m[22:42, 36:56] = True
        f = bg.copy()
        f[m] = (250, 20, 20)
        video.append(f)
        masks.append(m)
    return video, masks, clean


def test_laplace_fill_is_smooth_and_exact_outside():
    yy, xx = np.mgrid[0:40, 0:50].astype(np.float32)
    plane = 2 * xx - yy + 3
    hole = np.zeros((40, 50), bool)
    hole[10:30, 15:35] = True
    filled = laplace_fill(np.where(hole, 0, plane), hole)
    assert np.allclose(filled[~hole], plane[~hole])
    assert np.abs(filled[hole] - plane[hole]).max() < 1e-3  # a plane is harmonic: recovered exactly
    coarse = laplace_fill(np.where(hole, 0, plane), hole, max_unknowns=50)  # solved on a coarser grid
    assert np.abs(coarse[hole] - plane[hole]).mean() < 0.5
    assert np.array_equal(laplace_fill(plane, np.ones((40, 50), bool)), np.zeros((40, 50), np.float32))


def test_flow_completion_and_consistency():
    video, masks, clean = panning_video(3)
    hole = dilate_mask(masks[0], 14)
    for method in ("farneback", "dis"):
        f = complete_flow(optical_flow(video[0], video[1], method), hole)
        assert np.abs(f[hole] - [-SHIFT, 0]).mean() < 0.3, method
        b = complete_flow(optical_flow(video[1], video[0], method), hole)
        assert fb_consistent(f, b)[8:-8, 8:-8].mean() > 0.9


def test_removal_recovers_the_background_from_other_frames():
    video, masks, clean = panning_video(12)
    engine = Telea()
    results = list(remove_video(video, masks, engine, dilate=2, progress=False))
    assert len(results) == 12
    ours, telea = [], []
    for t, r in enumerate(results):
        hole = r.mask
        assert np.array_equal(hole, dilate_mask(masks[t], 2))
        assert np.array_equal(r.image[~hole], video[t][~hole])  # bit-identical outside the grown mask
        rec = r.record
        assert rec["frame"] == t and rec["hole"] == hole.sum()
        assert rec["propagated"] + rec["carried"] + rec["inpainted"] == rec["hole"]
        ours.append(np.abs(r.image[hole].astype(float) - clean[t][hole]).mean())
        per_frame = cv2.inpaint(video[t], hole.astype(np.uint8), 3, cv2.INPAINT_TELEA)
        telea.append(np.abs(per_frame[hole].astype(float) - clean[t][hole]).mean())
    middle = slice(4, 8)  # (frames whose hidden background the window of 5 frames a side shows)
    assert np.mean(ours[middle]) < 0.2 * np.mean(telea[middle]), (ours, telea)
    assert np.mean(ours) < 0.5 * np.mean(telea)
    assert all(r.record["propagated"] == r.record["hole"] for r in results[middle])
    # frame 0's far side is seen only later than the window: the engine fills it, once
    assert results[0].record["inpainted"] > 0 and engine.calls == 1


def test_never_seen_falls_back_to_the_engine():
    video, masks, clean = panning_video(6, static=True)  # nothing behind the object is ever visible
    engine = Telea()
    results = list(remove_video(video, masks, engine, dilate=2, progress=False))
    assert all(r.record["propagated"] == 0 for r in results)
    assert results[0].record["inpainted"] == results[0].record["hole"]
    assert all(r.record["carried"] == r.record["hole"] for r in results[1:])  # carried: one fill, no flicker
    for a, b in zip(results, results[1:]):
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 1
    engine = Telea()
    independent = list(remove_video(video, masks, engine, dilate=2, progress=False, carry=False))
    assert engine.calls == 6 and all(r.record["inpainted"] == r.record["hole"] for r in independent)


def test_bounded_window_and_lazy_input():
    video, masks, clean = panning_video(12)
    pulled = []

    def frames():
        for t, f in enumerate(video):
            pulled.append(t)
            yield f

    gen = remove_video(frames(), iter(masks), Telea(), dilate=2, window=3, progress=False)
    first = next(gen)
    assert first.record["frame"] == 0 and first.record["window"] == 3
    assert max(pulled) == 3  # frame 0 needs frames 0..3, no more
    next(gen)
    assert max(pulled) == 4
    rest = list(gen)
    assert len(rest) == 10


def test_empty_masks_pass_through():
    video, masks, clean = panning_video(4)
    masks[2] = np.zeros((H, W), bool)
    results = list(remove_video(video, masks, Telea(), dilate=2, progress=False))
    assert np.array_equal(results[2].image, video[2]) and results[2].record["hole"] == 0


def test_bad_input_is_one_line():
    video, masks, clean = panning_video(4)
    engine = Telea()
    cases = [
        (video, masks[:3], "4 frames but 3 masks"),
        (iter(video), iter(masks[:3]), "more frames than masks"),
        (video, [np.zeros((10, 10), bool)] * 4, "the mask of frame 0 is 10x10 but the frame is 96x64"),
        (video, [masks[0], np.ones((H, W), bool), masks[0], masks[0]], "covers the whole frame"),
        ([video[0], video[1][:32]], masks[:2], "frame 1 is 96x32 but frame 0 is 96x64"),
        ([], [], "no frames"),
    ]
    for frames, ms, text in cases:
        with pytest.raises(InputError) as e:
            list(remove_video(frames, ms, engine, dilate=2, progress=False))
        assert text in str(e.value) and "\n" not in str(e.value)
    for kwargs, text in (({"flow": "raft"}, "unknown optical flow"), ({"window": 0}, "--window"),
                         ({"dilate": -1}, "--dilate")):
        with pytest.raises(InputError, match=text):
            next(remove_video(video, masks, engine, progress=False, **kwargs))
    with pytest.raises(InputError, match="InpaintEngine"):
        next(remove_video(video, masks, object(), progress=False))

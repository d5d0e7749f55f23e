"""The ``classical`` video engine: optical-flow propagation with GrabCut refinement (no weights).

Synthetic videos (textured shapes moving over a textured background) check tracking forward and
backward, several objects, click/box prompts, corrections, constant memory and bad inputs; one
real DAVIS 2016 sequence (skipped when ``../shared/data/davis2016`` is absent) checks J&F through
anyseg's evaluation runner.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from anyseg.errors import InputError, PromptError
from anyseg.eval.datasets import read_davis
from anyseg.eval.engines import davis_engine, register_video_engines
from anyseg.eval.runners import VIDEO_ENGINES, run_video
from anyseg.eval.store import ResultStore
from anyseg.types import Masks
from anyseg.video.base import ObjectPrompt, masks_by_object
from anyseg.video.classical import ClassicalState, ClassicalTracker
from anyseg.video.frames import ArrayFrames
from conftest import shared_dataset

H, W, T = 120, 160, 24


def objects(masks: Masks) -> dict[int, np.ndarray]:
    """A tracker's result (Masks, one row per object sorted by id) as ``{obj_id: mask}``."""
    assert isinstance(masks, Masks) and masks.object_ids is not None
    assert masks.object_ids.tolist() == sorted(masks.object_ids.tolist()) and masks.image_size == (H, W)
    return masks_by_object(masks)


def stream(frames):
    """``(t, Masks)`` from ``propagate`` -> ``(t, {obj_id: mask}})``, checked as :func:`objects`."""
    return ((t, objects(m)) for t, m in frames)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def texture(h: int, w: int, seed: int, cell: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.normal(0, 1, (h // cell + 1, w // cell + 1, 3)), (w, h), interpolation=cv2.INTER_CUBIC)


def moving_video(objects: list[dict], frames: int = T, seed: int = 0) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """``(frames (T, H, W, 3) uint8, {obj_id: (T, H, W) bool true masks})``.

    Each object: ``id``, ``shape`` (``"disc"`` or ``"square"``), ``center`` (x, y) at frame 0,
    ``velocity`` (integer px/frame), ``radius`` and ``colour``; its texture moves with it. The
    background is a static texture; every frame gets fresh pixel noise.
    """
    rng = np.random.default_rng(seed)
    bg = 105 + 28 * texture(H, W, seed) + np.array([0, 5, 20])
    yy, xx = np.mgrid[:H, :W]
    video = np.zeros((frames, H, W, 3), np.uint8)
    truth = {o["id"]: np.zeros((frames, H, W), bool) for o in objects}
    textures = {o["id"]: 22 * texture(H, W, seed + o["id"], cell=4) for o in objects}
    for t in range(frames):
        img = bg.copy()
        for o in objects:
            (cx, cy), (vx, vy), r = o["center"], o["velocity"], o["radius"]
            x, y = cx + vx * t, cy + vy * t
            if o["shape"] == "disc":
                m = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
            else:
                m = (abs(xx - x) <= r) & (abs(yy - y) <= r)
            tex = np.roll(textures[o["id"]], (vy * t, vx * t), axis=(0, 1))
            img[m] = np.array(o["colour"]) + tex[m]
            for earlier in truth.values():  # drawn over the objects before it
                earlier[t] &= ~m
            truth[o["id"]][t] = m
        video[t] = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    return video, truth


DISC = {"id": 1, "shape": "disc", "center": (40, 45), "velocity": (3, 2), "radius": 18, "colour": (200, 70, 60)}


@pytest.fixture(scope="module")
def disc_video():
    return moving_video([DISC])


@pytest.fixture(scope="module")
def tracker():
    return ClassicalTracker()


def test_forward_tracks_a_moving_disc(disc_video, tracker):
    video, truth = disc_video
    state = tracker.start(ArrayFrames(video))
    first = objects(tracker.add_prompt(state, ObjectPrompt(frame=0, obj_id=1, mask=truth[1][0])))
    assert set(first) == {1} and (first[1] == truth[1][0]).all()  # a mask prompt is taken as is
    seen = []
    for t, masks in stream(tracker.propagate(state, 0, T - 1)):
        assert set(masks) == {1} and masks[1].shape == (H, W) and masks[1].dtype == bool
        assert iou(masks[1], truth[1][t]) >= 0.85, f"frame {t}: IoU {iou(masks[1], truth[1][t]):.3f}"
        seen.append(t)
    assert seen == list(range(T))


def test_backward_from_the_last_frame(disc_video, tracker):
    video, truth = disc_video
    state = tracker.start(ArrayFrames(video))
    tracker.add_prompt(state, ObjectPrompt(frame=T - 1, obj_id=1, mask=truth[1][T - 1]))
    seen = []
    for t, masks in stream(tracker.propagate(state, T - 1, 0, reverse=True)):
        assert iou(masks[1], truth[1][t]) >= 0.85, f"frame {t}: IoU {iou(masks[1], truth[1][t]):.3f}"
        seen.append(t)
    assert seen == list(range(T - 1, -1, -1))
    # forward from a prompt on the last frame: nothing to propagate from, the object is empty before it
    out = dict(stream(tracker.propagate(state, 0, T - 1)))
    assert not out[0][1].any() and (out[T - 1][1] == truth[1][T - 1]).all()


def test_two_objects_keep_their_ids_and_never_overlap(tracker):
    # they pass each other 6 pixels apart: the bands around them overlap
    square = {"id": 5, "shape": "square", "center": (130, 74), "velocity": (-3, 0), "radius": 14, "colour": (60, 190, 80)}
    disc = dict(DISC, id=2, center=(30, 38), velocity=(3, 0), radius=16)
    video, truth = moving_video([disc, square], seed=3)
    state = tracker.start(ArrayFrames(video))
    tracker.add_prompt(state, ObjectPrompt(frame=0, obj_id=2, mask=truth[2][0]))
    out = objects(tracker.add_prompt(state, ObjectPrompt(frame=0, obj_id=5, mask=truth[5][0])))
    assert set(out) == {2, 5}
    for t, masks in stream(tracker.propagate(state, 0, T - 1)):
        assert set(masks) == {2, 5}
        assert not (masks[2] & masks[5]).any(), f"frame {t}: a pixel is in both objects"
        for k in (2, 5):
            assert iou(masks[k], truth[k][t]) >= 0.8, f"frame {t}, object {k}: IoU {iou(masks[k], truth[k][t]):.3f}"


def test_click_and_box_prompts_segment_their_frame(disc_video, tracker):
    video, truth = disc_video
    state = tracker.start(ArrayFrames(video))
    x, y = 40 + 3 * 5, 45 + 2 * 5  # the disc's centre on frame 5
    clicked = objects(tracker.add_prompt(state, ObjectPrompt.of(5, 1, points=np.array([[x, y]]), labels=np.array([1]))))
    assert set(clicked) == {1} and iou(clicked[1], truth[1][5]) >= 0.8
    masks = dict(stream(tracker.propagate(state, 5, T - 1)))
    assert iou(masks[20][1], truth[1][20]) >= 0.8
    # a negative click alone corrects the mask the object has on that (propagated) frame
    out = objects(tracker.add_prompt(state, ObjectPrompt.of(15, 1, points=[[5.0, 5.0]], labels=[0])))
    assert iou(out[1], truth[1][15]) >= 0.8

    state = tracker.start(ArrayFrames(video))
    ys, xs = np.nonzero(truth[1][12])
    box = np.array([xs.min() - 2, ys.min() - 2, xs.max() + 3, ys.max() + 3], float)
    boxed = objects(tracker.add_prompt(state, ObjectPrompt(frame=12, obj_id=3, box=box)))
    assert set(boxed) == {3} and iou(boxed[3], truth[1][12]) >= 0.85
    masks = dict(stream(tracker.propagate(state, 12, 0, reverse=True)))
    assert iou(masks[2][3], truth[1][2]) >= 0.8


def test_a_correction_changes_its_frame_and_the_later_ones(disc_video, tracker):
    video, truth = disc_video
    state = tracker.start(ArrayFrames(video))
    tracker.add_prompt(state, ObjectPrompt(frame=0, obj_id=1, mask=truth[1][0]))
    before = {t: m[1].copy() for t, m in stream(tracker.propagate(state, 0, T - 1))}
    fix = np.zeros((H, W), bool)  # "the object is only the disc's left half" from frame 10 on
    fix[truth[1][10]] = True
    fix[:, 40 + 3 * 10:] = False
    out = objects(tracker.add_prompt(state, ObjectPrompt(frame=10, obj_id=1, mask=fix)))
    assert (out[1] == fix).all()
    after = {t: m[1] for t, m in stream(tracker.propagate(state, 0, T - 1))}
    for t in range(10):
        assert (after[t] == before[t]).all(), f"frame {t} before the correction changed"
    assert (after[10] == fix).all()
    for t in range(11, T):
        assert after[t].sum() < 0.8 * before[t].sum(), f"frame {t} did not follow the correction"
    # the same through a propagation that starts at the corrected frame
    again = dict(stream(tracker.propagate(state, 10, T - 1)))
    assert all((again[t][1] == after[t]).all() for t in range(10, T))


def test_objects_prompted_on_different_frames_and_prompts_while_streaming(tracker):
    square = {"id": 4, "shape": "square", "center": (130, 95), "velocity": (-2, 0), "radius": 12, "colour": (60, 190, 80)}
    video, truth = moving_video([dict(DISC, center=(30, 30), velocity=(3, 1)), square], seed=5)
    state = tracker.start(ArrayFrames(video))
    tracker.add_prompt(state, ObjectPrompt(frame=0, obj_id=1, mask=truth[1][0]))
    masks = {}
    for t, m in stream(tracker.propagate(state, 0, T - 1)):
        masks[t] = m
        if t == 5:  # added while streaming, on a frame the stream has not reached yet
            tracker.add_prompt(state, ObjectPrompt(frame=8, obj_id=4, mask=truth[4][8]))
    assert sorted(masks) == list(range(T))
    assert all(set(m) == {1} for t, m in masks.items() if t <= 5)
    assert all(set(m) == {1, 4} for t, m in masks.items() if t > 5)
    assert not masks[7][4].any() and (masks[8][4] == truth[4][8]).all()
    assert all(iou(masks[t][4], truth[4][t]) >= 0.85 for t in range(8, T))
    assert all(iou(masks[t][1], truth[1][t]) >= 0.85 for t in range(T))
    fresh = dict(stream(tracker.propagate(state, 0, T - 1)))
    assert all((fresh[t][k] == masks[t][k]).all() for t in range(6, T) for k in (1, 4))


def test_memory_does_not_grow_with_the_video(tracker):
    video, truth = moving_video([dict(DISC, velocity=(2, 1))], frames=32)
    state = tracker.start(ArrayFrames(video))
    tracker.add_prompt(state, ObjectPrompt(frame=0, obj_id=1, mask=truth[1][0]))
    sizes = []
    for t, _ in stream(tracker.propagate(state, 0, 31)):
        sizes.append(state.nbytes())
        assert state.cursor.index == t and len(state.cursor.objects) == 1
    assert sizes[30] == sizes[3]  # one frame, one mask and two GMMs, whatever the length
    arrays = [state.cursor.gray, state.cursor.objects[1].mask]
    assert all(a.shape == (H, W) for a in arrays)
    assert len(state.prompts) == 1 and len(state.frames._cache) <= 2
    tracker.close(state)
    assert state.nbytes() == 0
    with pytest.raises(InputError, match="closed"):
        tracker.propagate(state, 0, 1)


def test_bad_inputs_are_one_line_errors(disc_video, tracker):
    video, truth = disc_video
    state = tracker.start(ArrayFrames(video))
    errors = []
    with pytest.raises(PromptError, match="no prompts yet") as e:
        tracker.propagate(state, 0, 5)
    errors.append(e)
    with pytest.raises(InputError, match="out of range") as e:
        tracker.add_prompt(state, ObjectPrompt(frame=T, obj_id=1, mask=truth[1][0]))
    errors.append(e)
    with pytest.raises(PromptError, match="160x120") as e:
        tracker.add_prompt(state, ObjectPrompt(frame=0, obj_id=1, mask=np.ones((60, 80), bool)))
    errors.append(e)
    with pytest.raises(PromptError, match="object 7 has no mask") as e:  # unknown object, negative click only
        tracker.add_prompt(state, ObjectPrompt(frame=3, obj_id=7, points=np.array([[10.0, 10.0]]), labels=np.array([0])))
    errors.append(e)
    tracker.add_prompt(state, ObjectPrompt(frame=0, obj_id=1, mask=truth[1][0]))
    for bad in ((0, T), (-1, 3)):
        with pytest.raises(InputError, match="out of range") as e:
            tracker.propagate(state, *bad)
        errors.append(e)
    with pytest.raises(InputError, match="reverse=True") as e:
        tracker.propagate(state, 5, 2)
    errors.append(e)
    with pytest.raises(PromptError) as e:
        tracker.add_prompt(state, "mask")
    errors.append(e)
    with pytest.raises(InputError, match="unknown flow") as e:
        ClassicalTracker(flow="lk")
    errors.append(e)
    assert all("\n" not in str(x.value) for x in errors)


def test_engine_is_registered_and_runs_on_a_davis_layout(tmp_path):
    register_video_engines()  # eval builds its engines; importing the tracker registers nothing
    assert VIDEO_ENGINES["classical"] is davis_engine
    VIDEO_ENGINES.pop("classical")
    register_video_engines()
    assert VIDEO_ENGINES["classical"] is davis_engine
    video, truth = moving_video([DISC], frames=12)
    for t in range(12):
        (tmp_path / "JPEGImages" / "480p" / "disc").mkdir(parents=True, exist_ok=True)
        (tmp_path / "Annotations" / "480p" / "disc").mkdir(parents=True, exist_ok=True)
        Image.fromarray(video[t]).save(tmp_path / "JPEGImages" / "480p" / "disc" / f"{t:05d}.png")
        Image.fromarray(truth[1][t].astype(np.uint8) * 255).save(tmp_path / "Annotations" / "480p" / "disc" / f"{t:05d}.png")
    samples = read_davis(tmp_path)
    _, summary = run_video(VIDEO_ENGINES["classical"]("classical"), samples, ResultStore(tmp_path / "out", {"t": 1}))
    assert summary["num_sequences"] == 1 and summary["J-Mean"] >= 0.85 and summary["J&F-Mean"] >= 0.85


def test_state_type_is_checked(tracker):
    with pytest.raises(InputError, match="state returned by"):
        tracker.add_prompt(object(), ObjectPrompt(frame=0, obj_id=1, box=np.array([0, 0, 5, 5])))
    assert isinstance(tracker.start(np.zeros((3, 8, 8, 3), np.uint8)), ClassicalState)


#: measured J&F of the default engine on car-shadow (40 frames, a tuning sequence): 0.887
DAVIS_JF_BOUND = 0.80


def test_davis2016_shortest_sequence(tmp_path):
    root = shared_dataset("davis2016")
    samples = read_davis(root)
    shortest = min(samples, key=lambda s: (len(s), s.name))  # car-shadow (40 frames)
    _, summary = run_video(davis_engine("classical"), [shortest], ResultStore(tmp_path, {"test": "classical"}))
    assert summary["J&F-Mean"] >= DAVIS_JF_BOUND, f"{shortest.name}: J&F {summary['J&F-Mean']:.3f}"
    assert summary["J-Mean"] >= DAVIS_JF_BOUND - 0.03 and summary["F-Mean"] >= DAVIS_JF_BOUND - 0.03

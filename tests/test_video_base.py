"""The video layer's shared types: ObjectPrompt (a frame, an object id and a Prompt), the
TrackerState protocol, and the Masks every tracker returns (one row per object, sorted ids)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from anyseg.errors import InputError, PromptError
from anyseg.types import Masks, Prompt
from anyseg.video.base import ObjectPrompt, TrackerState, checked_prompt, masks_by_object, masks_from_objects
from anyseg.video.frames import ArrayFrames

H, W = 40, 60


def test_object_prompt_holds_a_prompt_and_is_frozen():
    p = ObjectPrompt(3, 2, Prompt(points=[[10, 12]]))
    q = ObjectPrompt.of(3, 2, points=[[10, 12]])
    for x in (p, q):
        assert x.frame == 3 and x.obj_id == 2 and isinstance(x.prompt, Prompt)
        assert x.points.tolist() == [[10.0, 12.0]] and x.labels.tolist() == [1] and x.box is None and x.mask is None
    assert ObjectPrompt(frame=0, obj_id=1, box=[1, 2, 5, 6]).box.tolist() == [1, 2, 5, 6]  # keywords, as before
    assert type(ObjectPrompt.of(0, np.int64(4), mask=np.ones((H, W), np.uint8)).obj_id) is int
    assert ObjectPrompt.of(0, 1, mask=np.ones((H, W), np.uint8)).mask.dtype == bool
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.frame = 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.prompt = Prompt(box=[0, 0, 1, 1])


@pytest.mark.parametrize("kwargs, message", [
    (dict(points=[[1, 1]], labels=[2]), "point labels must be 1 (positive) or 0 (negative); got [2]"),
    (dict(points=[[1, 1], [2, 2]], labels=[1]), "labels must have shape (2,) to match the points; got 1"),
    (dict(points=[1, 2, 3]), "points must have shape (K, 2) with K >= 1; got 3"),
    (dict(points=[[np.nan, 1]]), "points must be finite numbers"),
    (dict(box=[10, 10, 5, 20]), "box [10.0, 10.0, 5.0, 20.0] is empty: expected X1 > X0 and Y1 > Y0"),
    (dict(box=[1, 2, 3]), "box must have 4 numbers X0,Y0,X1,Y1; got shape 3"),
    (dict(box=[0, 0, 5, 5], labels=[1]), "labels given without points"),
    (dict(mask=np.ones((2, H, W), bool)), "mask must have shape (H, W); got 2x40x60"),
])
def test_object_prompt_uses_prompt_validation(kwargs, message):
    with pytest.raises(PromptError) as e:
        ObjectPrompt.of(0, 1, **kwargs)
    assert str(e.value) == message
    with pytest.raises(PromptError) as same:  # the very message Prompt itself gives
        Prompt(**kwargs)
    assert str(same.value) == message


def test_object_prompt_ids_and_empty_prompts():
    for bad in (0, -3, True, 1.5, "1", None):
        with pytest.raises(PromptError, match=r"^object ids must be positive integers; got "):
            ObjectPrompt.of(0, bad, points=[[1, 1]])
    with pytest.raises(PromptError, match="^the prompt for object 1 on frame 0 is empty$"):
        ObjectPrompt.of(0, 1)
    with pytest.raises(PromptError, match="^the prompt for object 1 on frame 0 is empty$"):
        ObjectPrompt.of(0, 1, labels=[1])
    with pytest.raises(PromptError, match="is empty: a video prompt needs points, a box or a mask"):
        ObjectPrompt(0, 1, Prompt(text="a cat"))
    with pytest.raises(PromptError, match="not both"):
        ObjectPrompt(0, 1, Prompt(points=[[1, 1]]), box=[0, 0, 4, 4])
    with pytest.raises(PromptError, match="expected an anyseg.types.Prompt"):
        ObjectPrompt(0, 1, {"points": [[1, 1]]})


def test_check_within_the_frame_and_checked_prompt():
    frames = ArrayFrames(np.zeros((5, H, W, 3), np.uint8))
    cases = [
        (ObjectPrompt.of(2, 1, points=[[W + 1, 3]]), f"point ({W + 1}, 3) is outside the {W}x{H} frame 2"),
        (ObjectPrompt.of(2, 1, box=[-1, 0, 10, 10]), f"box [-1.0, 0.0, 10.0, 10.0] is outside the {W}x{H} frame 2"),
        (ObjectPrompt.of(2, 1, mask=np.ones((H, W + 1), bool)), f"mask prompt is {W + 1}x{H}, the video is {W}x{H}"),
    ]
    for p, message in cases:
        with pytest.raises(PromptError) as e:
            checked_prompt(frames, p)
        assert str(e.value) == message
    with pytest.raises(InputError, match="out of range"):
        checked_prompt(frames, ObjectPrompt.of(5, 1, points=[[1, 1]]))
    with pytest.raises(PromptError, match="expected an ObjectPrompt; got dict"):
        checked_prompt(frames, {"frame": 0})
    assert checked_prompt(frames, ObjectPrompt.of(np.int64(4), 9, points=[[W, H]])) == (4, 9)


def test_masks_from_objects_sorts_ids_both_ways():
    a, b = np.zeros((H, W), bool), np.ones((H, W), bool)
    m = masks_from_objects({7: a, 2: b}, (H, W))
    assert isinstance(m, Masks) and m.object_ids.tolist() == [2, 7] and m.masks[0].all() and not m.masks[1].any()
    assert list(masks_by_object(m)) == [2, 7]
    empty = masks_from_objects({}, (H, W))
    assert len(empty) == 0 and empty.image_size == (H, W) and empty.object_ids.tolist() == []
    with pytest.raises(PromptError, match="no object_ids"):
        masks_by_object(Masks(np.zeros((1, H, W), bool)))


def test_the_classical_tracker_returns_masks_with_object_ids_and_a_tracker_state():
    from anyseg.video.classical import ClassicalTracker

    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (4, H, W, 3), dtype=np.uint8)
    left, right = np.zeros((H, W), bool), np.zeros((H, W), bool)
    left[10:25, 5:20] = True
    right[10:25, 35:50] = True
    tracker = ClassicalTracker(refine="none")
    state = tracker.start(ArrayFrames(video))
    assert isinstance(state, TrackerState) and state.size == (H, W) and not state.closed
    tracker.add_prompt(state, ObjectPrompt.of(0, 9, mask=right))
    out = tracker.add_prompt(state, ObjectPrompt.of(0, 4, mask=left))
    assert isinstance(out, Masks) and out.object_ids.tolist() == [4, 9] and out.masks.shape == (2, H, W)
    assert np.array_equal(out.masks[0], left) and np.array_equal(out.masks[1], right)
    seen = []
    for t, masks in tracker.propagate(state, 0, 3):
        assert isinstance(masks, Masks) and masks.object_ids.tolist() == [4, 9] and masks.image_size == (H, W)
        seen.append(t)
    assert seen == [0, 1, 2, 3] and state.object_ids == [4, 9]
    tracker.close(state)
    assert state.closed

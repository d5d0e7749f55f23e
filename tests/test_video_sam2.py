"""SAM 2 / SAM 3 video engine (anyseg.video.sam2) on tiny random-weight video checkpoints.

The checkpoints (``tiny_video``) are the real transformers architectures at a small input size,
loaded through the users' path (``weights=``, ``ANYSEG_MODELS``). The video is non-square
(160 x 90) so that the prompt scaling is checked per axis.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from anyseg.errors import InputError, ModelError, PromptError  # noqa: E402
from anyseg.types import Masks  # noqa: E402
from anyseg.video.base import ObjectPrompt, masks_by_object  # noqa: E402
from anyseg.video.frames import ArrayFrames, SyntheticFrames  # noqa: E402
from anyseg.video.sam2 import Sam2VideoTracker, _Spans, load_video_tracker  # noqa: E402
from tiny_video import SAM2_FRAME, build_sam2_video, build_sam3_tracker_video, build_sam3_video  # noqa: E402

H, W = 90, 160
NAME = "sam2.1-hiera-tiny"


def frame(i: int) -> np.ndarray:
    """A textured background, a red square moving right and a static green square."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([(xx * 3 + yy) % 64 + 20, (yy * 5) % 48 + 30, (xx + yy * 2) % 32 + 40], -1).astype(np.uint8)
    x = 10 + 2 * i
    img[30:60, x:x + 30] = (220, 60, 60)
    img[10:30, 100:130] = (60, 200, 60)
    return img


def video(n: int, reads: list[int] | None = None) -> SyntheticFrames:
    def make(i: int) -> np.ndarray:
        if reads is not None:
            reads.append(i)
        return frame(i)

    return SyntheticFrames(make, n, (H, W))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models are all thread start-up: one thread is several times faster (and steadier on busy machines)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sam2_folder(tmp_path_factory):
    return build_sam2_video(tmp_path_factory.mktemp("sam2v") / NAME)


@pytest.fixture(scope="module")
def tracker(sam2_folder) -> Sam2VideoTracker:
    return load_video_tracker(NAME, weights=str(sam2_folder), device="cpu")


def two_objects(tracker: Sam2VideoTracker, n: int = 12, f: int = 0):
    st = tracker.start(video(n))
    tracker.add_prompt(st, ObjectPrompt(frame=f, obj_id=3, points=[[25, 45]]))
    tracker.add_prompt(st, ObjectPrompt(frame=f, obj_id=7, box=[100, 10, 130, 30]))
    return st


def objects(masks: Masks) -> dict[int, np.ndarray]:
    """A tracker's result (Masks, one row per object sorted by id) as ``{obj_id: mask}``."""
    assert isinstance(masks, Masks) and masks.object_ids is not None
    assert masks.object_ids.tolist() == sorted(masks.object_ids.tolist()) and masks.image_size == (H, W)
    return masks_by_object(masks)


def stream(frames):
    """``(t, Masks)`` from ``propagate`` -> ``(t, {obj_id: mask}})``, checked as :func:`objects`."""
    return ((t, objects(m)) for t, m in frames)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# -- loading ---------------------------------------------------------------------------------------
def test_loads_through_weights_and_models_dir(sam2_folder, tracker, tmp_path, monkeypatch):
    assert type(tracker.model).__name__ == "Sam2VideoModel"
    assert tracker.name == NAME and tracker.spec.family == "sam2" and tracker.device == "cpu"
    assert tracker.frame_size == SAM2_FRAME
    assert tracker.max_memory_frames == 16  # max(num_maskmem 7, max_object_pointers_in_encoder 16)
    assert tracker.mean == pytest.approx((0.485, 0.456, 0.406))

    root = tmp_path / "models"
    shutil.copytree(sam2_folder, root / NAME)
    monkeypatch.setenv("ANYSEG_MODELS", str(root))
    again = load_video_tracker(NAME, allow_download=False, device="cpu", max_memory_frames=5)
    assert again.folder == root / NAME and again.max_memory_frames == 5
    a = dict(tracker.model.named_parameters())
    for k, p in again.model.named_parameters():
        assert torch.equal(p, a[k]), k


def test_image_checkpoints_are_refused(tmp_path):
    from tiny_models import build_sam2, build_sam3_tracker

    with pytest.raises(ModelError, match="video checkpoint.*sam2_video"):
        load_video_tracker(NAME, weights=str(build_sam2(tmp_path / "img2")), device="cpu")
    with pytest.raises(ModelError, match="image model"):
        load_video_tracker("sam3", weights=str(build_sam3_tracker(tmp_path / "img3")), device="cpu")


@pytest.mark.parametrize("name", ["sam-vit-base", "classical", "clip-vit-b32", "grounding-dino-tiny"])
def test_non_video_models_are_refused(name):
    with pytest.raises(ModelError, match="not a video tracker"):
        load_video_tracker(name, device="cpu")


def test_edgetam_without_timm_is_one_line():
    import importlib.util

    if importlib.util.find_spec("timm") and importlib.util.find_spec("torchvision"):
        pytest.skip("timm and torchvision are installed")
    with pytest.raises(ModelError, match="timm") as e:
        load_video_tracker("edgetam", device="cpu")
    assert "\n" not in str(e.value)


def test_bad_options(sam2_folder, tracker):
    with pytest.raises(InputError, match="max_memory_frames"):
        load_video_tracker(NAME, weights=str(sam2_folder), max_memory_frames=0)
    with pytest.raises(InputError, match="FrameSource"):
        tracker.start("video.mp4")


# -- tracking ----------------------------------------------------------------------------------------
def test_two_objects_forward(tracker):
    st = tracker.start(video(12))
    first = objects(tracker.add_prompt(st, ObjectPrompt(frame=0, obj_id=3, points=[[25, 45]])))
    assert list(first) == [3] and first[3].shape == (H, W) and first[3].dtype == bool
    both = objects(tracker.add_prompt(st, ObjectPrompt(frame=0, obj_id=7, box=[100, 10, 130, 30])))
    assert sorted(both) == [3, 7]
    assert np.array_equal(both[3], first[3])  # object 3's conditioning output is reused
    assert st.object_ids == [3, 7]

    out = list(stream(tracker.propagate(st, 0, 11)))
    assert [t for t, _ in out] == list(range(12))
    for _, masks in out:
        assert sorted(masks) == [3, 7]
        assert all(m.shape == (H, W) and m.dtype == bool for m in masks.values())
    assert same(out[0][1], both)  # the prompted frame: the prompts' masks
    assert any((m[3] != m[7]).any() for _, m in out)  # two objects, not one twice
    assert [t for t, _ in tracker.propagate(st, 3, 7)] == [3, 4, 5, 6, 7]
    tracker.close(st)


def test_backward(tracker):
    st = tracker.start(video(12))
    tracker.add_prompt(st, ObjectPrompt(frame=11, obj_id=3, points=[[45, 45]]))
    tracker.add_prompt(st, ObjectPrompt(frame=8, obj_id=7, box=[100, 10, 130, 30]))
    out = list(stream(tracker.propagate(st, 11, 0, reverse=True)))
    assert [t for t, _ in out] == list(range(11, -1, -1))
    assert all(sorted(m) == [3, 7] and m[3].shape == (H, W) for _, m in out)


def test_frames_are_read_one_at_a_time(tracker):
    reads: list[int] = []
    st = tracker.start(video(30, reads))
    tracker.add_prompt(st, ObjectPrompt(frame=10, obj_id=1, points=[[50, 45]]))
    assert reads == [10]
    for t, _ in stream(tracker.propagate(st, 10, 20)):
        assert max(reads) == t  # nothing ahead of the current frame was decoded
    for t, _ in stream(tracker.propagate(st, 10, 0, reverse=True)):
        assert min(reads) == t


def test_correction_changes_that_frame_and_later(tracker):
    st = tracker.start(video(10))
    tracker.add_prompt(st, ObjectPrompt(frame=0, obj_id=3, points=[[25, 45]]))
    before = dict(stream(tracker.propagate(st, 0, 9)))

    # control: propagating again over the same frames without a correction gives the same masks
    control = tracker.start(video(10))
    tracker.add_prompt(control, ObjectPrompt(frame=0, obj_id=3, points=[[25, 45]]))
    list(stream(tracker.propagate(control, 0, 9)))
    again = dict(stream(tracker.propagate(control, 5, 9)))
    assert all(same(again[t], before[t]) for t in range(5, 10))

    fix = np.zeros((H, W), bool)
    fix[20:70, 60:110] = True
    got = objects(tracker.add_prompt(st, ObjectPrompt(frame=5, obj_id=3, mask=fix)))
    iou = (got[3] & fix).sum() / (got[3] | fix).sum()
    assert iou > 0.9  # a mask prompt is that frame's output
    after = dict(stream(tracker.propagate(st, 5, 9)))
    assert np.array_equal(after[5][3], got[3])  # reused as a conditioning frame
    assert not np.array_equal(after[5][3], before[5][3])
    assert any(not np.array_equal(after[t][3], before[t][3]) for t in range(6, 10))
    cond = st.session.output_dict_per_obj[0]["cond_frame_outputs"]
    assert sorted(cond) == [0, 5]

    # a click correction on a tracked frame is decoded with memory and kept as conditioning frame
    clicked = objects(tracker.add_prompt(st, ObjectPrompt(frame=7, obj_id=3, points=[[40, 45], [5, 5]], labels=[1, 0])))
    assert sorted(cond) == [0, 5, 7] and 7 not in st.session.output_dict_per_obj[0]["non_cond_frame_outputs"]
    assert np.array_equal(dict(stream(tracker.propagate(st, 7, 7)))[7][3], clicked[3])


def test_a_new_prompt_replaces_the_old_one(tracker):
    st = tracker.start(video(6))
    tracker.add_prompt(st, ObjectPrompt(frame=2, obj_id=4, points=[[25, 45], [60, 20], [70, 70]]))
    s = st.session
    idx = s.obj_id_to_idx(4)
    got = objects(tracker.add_prompt(st, ObjectPrompt(frame=2, obj_id=4, points=[[30, 50]])))
    assert s.point_inputs_per_obj[idx][2]["point_coords"].shape == (1, 1, 1, 2)  # not accumulated
    fresh = tracker.start(video(6))
    assert same(objects(tracker.add_prompt(fresh, ObjectPrompt(frame=2, obj_id=4, points=[[30, 50]]))), got)

    mask = np.zeros((H, W), bool)
    mask[30:60, 20:50] = True
    tracker.add_prompt(st, ObjectPrompt(frame=2, obj_id=4, mask=mask))
    assert 2 not in s.point_inputs_per_obj[idx] and 2 in s.mask_inputs_per_obj[idx]
    tracker.add_prompt(st, ObjectPrompt(frame=2, obj_id=4, box=[20, 30, 50, 60]))
    assert 2 in s.point_inputs_per_obj[idx] and 2 not in s.mask_inputs_per_obj[idx]
    assert sorted(s.output_dict_per_obj[idx]["cond_frame_outputs"]) == [2]


def test_prompts_reach_the_model_in_its_frame(tracker):
    from anyseg.models.sam import SamFamilyPredictor

    seen, pixels = [], []

    def on_prompt(module, args, kwargs):
        labels = kwargs.get("input_labels")
        if labels is not None and (labels >= 0).any():
            seen.append((kwargs["input_points"].clone(), labels.clone()))

    hooks = [
        tracker.model.prompt_encoder.register_forward_pre_hook(on_prompt, with_kwargs=True),
        tracker.model.vision_encoder.register_forward_pre_hook(lambda m, a: pixels.append(a[0].clone())),
    ]
    try:
        st = tracker.start(video(4))
        masks = objects(tracker.add_prompt(st, ObjectPrompt.of(1, 2, points=[[80, 45], [40, 30]], labels=[1, 0],
                                                               box=[16, 9, 144, 81])))
    finally:
        for h in hooks:
            h.remove()
    assert masks[2].shape == (H, W)
    s = SAM2_FRAME
    sx, sy = s / W, s / H  # no aspect ratio kept: each axis scales on its own
    want = [[16 * sx, 9 * sy], [144 * sx, 81 * sy], [80 * sx, 45 * sy], [40 * sx, 30 * sy]]
    pts, labels = seen[0]
    assert pts.shape == (1, 1, 4, 2)
    np.testing.assert_allclose(pts[0, 0].numpy(), want, rtol=1e-6)
    assert labels[0, 0].tolist() == [2, 3, 1, 0]  # box corners first, then the clicks

    # the frame is preprocessed exactly as the SAM 2 image predictor does (resize to S x S, normalise)
    image_path = SamFamilyPredictor(tracker.spec, tracker.model, mean=tracker.mean, std=tracker.std)
    expected, _ = image_path.preprocess(frame(1))
    assert pixels[0].shape == (1, 3, s, s)
    torch.testing.assert_close(pixels[0], expected, atol=1e-5, rtol=1e-5)

    # a mask prompt is resized to S x S
    left = np.zeros((H, W), bool)
    left[:, : W // 2] = True
    tracker.add_prompt(st, ObjectPrompt(frame=1, obj_id=5, mask=left))
    m = st.session.mask_inputs_per_obj[st.session.obj_id_to_idx(5)][1]
    assert m.shape == (1, 1, s, s)
    assert m[0, 0, :, : s // 2 - 1].min() == 1 and m[0, 0, :, s // 2 + 1:].max() == 0


def test_memory_stays_bounded_on_a_long_video(tracker):
    st = tracker.start(video(60))
    tracker.add_prompt(st, ObjectPrompt(frame=0, obj_id=3, points=[[25, 45]]))
    tracker.add_prompt(st, ObjectPrompt(frame=0, obj_id=7, box=[100, 10, 130, 30]))
    keep = tracker.max_memory_frames
    held = {}
    for t, _ in stream(tracker.propagate(st, 0, 59)):
        r = st.retained()
        assert r["max_memory_outputs"] <= keep and r["pixel_frames"] == 0 and r["vision_features"] <= 1
        assert r["tracked_flags"] <= 2 * keep
        held[t] = r
    last = held[59]
    assert last["conditioning_outputs"] == 2  # the two prompts
    assert last["memory_outputs"] == 2 * keep  # the last `keep` frames of each object, nothing older
    assert last["tracked_runs"] == 2  # one run of tracked frames per object, not one entry per frame
    for idx in (0, 1):
        assert sorted(st.session.output_dict_per_obj[idx]["non_cond_frame_outputs"]) == list(range(60 - keep, 60))
        kept = st.session.output_dict_per_obj[idx]["non_cond_frame_outputs"].values()
        assert all("high_res_masks" not in o for o in kept)
    assert held[30]["tensor_bytes"] == held[59]["tensor_bytes"]  # flat: frames 30..59 added nothing

    # backward over the same video: the window follows the current frame
    list(stream(tracker.propagate(st, 59, 20, reverse=True)))
    assert sorted(st.session.output_dict_per_obj[0]["non_cond_frame_outputs"]) == list(range(20, 20 + keep))
    tracker.close(st)
    assert st.retained()["tensor_bytes"] == 0


def test_a_smaller_memory_bound(sam2_folder):
    small = load_video_tracker(NAME, weights=str(sam2_folder), device="cpu", max_memory_frames=3)
    st = small.start(video(20))
    small.add_prompt(st, ObjectPrompt(frame=0, obj_id=9, points=[[25, 45]]))
    list(stream(small.propagate(st, 0, 19)))
    assert sorted(st.session.output_dict_per_obj[0]["non_cond_frame_outputs"]) == [17, 18, 19]


def test_pruning_keeps_what_the_memory_bank_reads(tracker, sam2_folder):
    """The default bound gives the unpruned masks; two frames fewer already changes them."""
    unbounded = load_video_tracker(NAME, weights=str(sam2_folder), device="cpu", max_memory_frames=10_000)
    too_few = load_video_tracker(NAME, weights=str(sam2_folder), device="cpu",
                                 max_memory_frames=tracker.max_memory_frames - 2)
    results = []
    for tr in (tracker, unbounded, too_few):
        st = tr.start(video(24))
        tr.add_prompt(st, ObjectPrompt(frame=0, obj_id=1, points=[[25, 45]]))
        results.append(dict(stream(tr.propagate(st, 0, 23))))
    assert all(same(results[0][t], results[1][t]) for t in range(24))
    assert not all(same(results[2][t], results[1][t]) for t in range(24))  # the test can see over-pruning


# -- SAM 3 -----------------------------------------------------------------------------------------
def test_sam3_tracker_video_from_both_layouts(tmp_path):
    from safetensors.torch import load_file

    hub = build_sam3_video(tmp_path / "sam3")
    tracker_only = build_sam3_tracker_video(tmp_path / "sam3_tracker")
    trackers = [load_video_tracker("sam3", weights=str(f), device="cpu") for f in (hub, tracker_only)]
    for tr in trackers:
        assert type(tr.model).__name__ == "Sam3TrackerVideoModel" and tr.mean == (0.5, 0.5, 0.5)
        st = two_objects(tr, n=6, f=2)
        out = list(stream(tr.propagate(st, 2, 5))) + list(stream(tr.propagate(st, 1, 0, reverse=True)))
        assert [t for t, _ in out] == [2, 3, 4, 5, 1, 0]
        assert all(sorted(m) == [3, 7] and m[7].shape == (H, W) for _, m in out)
    saved = load_file(str(hub / "model.safetensors"))
    assert not any(k.startswith("tracker_model.tracker_model.") for k in saved)  # the hub's layout
    params = dict(trackers[0].model.named_parameters())
    assert torch.equal(params["memory_attention.layers.0.linear1.weight"],
                       saved["tracker_model.memory_attention.layers.0.linear1.weight"])
    backbone = next(k for k in params if k.startswith("vision_encoder.backbone."))
    assert torch.equal(params[backbone], saved["detector_model." + backbone])


# -- bad input -------------------------------------------------------------------------------------
def test_bad_frames_and_directions(tracker):
    st = tracker.start(ArrayFrames(np.stack([frame(i) for i in range(5)])))
    with pytest.raises(PromptError, match="no prompts yet"):
        tracker.propagate(st, 0, 4)
    with pytest.raises(InputError, match="out of range"):
        tracker.add_prompt(st, ObjectPrompt(frame=5, obj_id=1, points=[[10, 10]]))
    tracker.add_prompt(st, ObjectPrompt(frame=0, obj_id=1, points=[[10, 10]]))
    with pytest.raises(InputError, match="out of range"):
        tracker.propagate(st, 0, 5)
    with pytest.raises(InputError, match="out of range"):
        tracker.propagate(st, -1, 3)
    with pytest.raises(InputError, match="reverse=True"):
        tracker.propagate(st, 4, 1)
    with pytest.raises(InputError, match="backward"):
        tracker.propagate(st, 1, 4, reverse=True)


def test_bad_prompts_leave_the_state_untouched(tracker):
    st = tracker.start(video(3))
    with pytest.raises(PromptError, match="outside the 160x90"):
        tracker.add_prompt(st, ObjectPrompt(frame=0, obj_id=1, points=[[161, 10]]))
    with pytest.raises(PromptError, match="outside"):
        tracker.add_prompt(st, ObjectPrompt(frame=0, obj_id=1, box=[10, 10, 50, 95]))
    with pytest.raises(PromptError, match="labels"):
        tracker.add_prompt(st, ObjectPrompt(frame=0, obj_id=1, points=[[10, 10]], labels=[2]))
    with pytest.raises(PromptError, match="mask prompt"):
        tracker.add_prompt(st, ObjectPrompt(frame=0, obj_id=1, mask=np.ones((H, W + 1), bool)))
    with pytest.raises(PromptError, match="positive"):
        ObjectPrompt(frame=0, obj_id=0, points=[[1, 1]])
    assert st.object_ids == [] and st.retained()["tensor_bytes"] == 0


def test_a_failed_decode_does_not_leave_a_half_added_object(sam2_folder, monkeypatch):
    tr = load_video_tracker(NAME, weights=str(sam2_folder), device="cpu")
    st = tr.start(video(3))

    def boom(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(tr.model, "forward", boom)
    with pytest.raises(RuntimeError):
        tr.add_prompt(st, ObjectPrompt(frame=0, obj_id=5, points=[[10, 10]]))
    monkeypatch.undo()
    assert st.object_ids == []
    tr.add_prompt(st, ObjectPrompt(frame=1, obj_id=6, points=[[10, 10]]))
    idx = st.session.obj_id_to_idx(6)
    old = st.session.point_inputs_per_obj[idx][1]["point_coords"].clone()

    # a failed replacement keeps the old prompt and its output
    monkeypatch.setattr(tr.model, "forward", boom)
    with pytest.raises(RuntimeError):
        tr.add_prompt(st, ObjectPrompt(frame=1, obj_id=6, points=[[50, 50], [60, 60]]))
    monkeypatch.undo()
    assert torch.equal(st.session.point_inputs_per_obj[idx][1]["point_coords"], old)
    assert 1 in st.session.output_dict_per_obj[idx]["cond_frame_outputs"]

    # a step that fails after storing outputs (before their memory is encoded) leaves none behind
    monkeypatch.setattr(tr.model, "_batch_encode_memories", boom)
    with pytest.raises(RuntimeError):
        next(tr.propagate(st, 2, 2))
    monkeypatch.undo()
    assert 2 not in st.session.output_dict_per_obj[idx]["non_cond_frame_outputs"]
    assert [sorted(m) for _, m in stream(tr.propagate(st, 1, 2))] == [[6], [6]]


def test_closed_and_foreign_states(tracker, sam2_folder):
    st = two_objects(tracker, n=3)
    other = load_video_tracker(NAME, weights=str(sam2_folder), device="cpu")
    with pytest.raises(InputError, match="another tracker"):
        other.add_prompt(st, ObjectPrompt(frame=0, obj_id=1, points=[[10, 10]]))
    tracker.close(st)
    tracker.close(st)  # twice is fine
    with pytest.raises(InputError, match="closed"):
        tracker.add_prompt(st, ObjectPrompt(frame=0, obj_id=1, points=[[10, 10]]))
    with pytest.raises(InputError, match="closed"):
        tracker.propagate(st, 0, 2)
    with pytest.raises(InputError, match="state"):
        tracker.propagate(object(), 0, 2)


def test_spans():
    s = _Spans()
    for t in [5, 6, 7, 3, 9, 8, 4, 20, 0]:
        s.add(t)
    assert s.runs == [[0, 0], [3, 9], [20, 20]]
    assert 4 in s and 9 in s and 10 not in s and 1 not in s and 20 in s
    for t in range(21, 1000):
        s.add(t)
    assert len(s) == 3

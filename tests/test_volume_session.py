"""``VolumeSession``: a volume's slices as frames, prompts on slices, propagation both ways, a label volume.

The phantom (:func:`phantom`) is realistic but clear: an ellipsoid 80 HU over a soft-tissue
background with a gradient, a second, dimmer ellipsoid beside it, partial-volume blur and
Gaussian noise (sigma 15 HU), anisotropic spacing (0.8 x 0.7 x 2.5 mm) and an oblique direction.
The classical engine, prompted with a box on the middle slice, reaches Dice ~0.96 on it (measured:
axial 0.961, coronal 0.959); the test asks for >= 0.9.
"""

from __future__ import annotations

import numpy as np
import pytest

from anyseg.errors import InputError, PromptError
from anyseg.volume.base import Volume
from anyseg.volume.session import VolumeSession, check_box3d, mask_contrast

SHAPE = (24, 48, 48)
SPACING = (0.8, 0.7, 2.5)
ORIGIN = (-20.0, 15.0, 40.0)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


DIRECTION = _rotation(0.17, -0.26, 0.35)


def ellipsoid(centre, radii, shape=SHAPE) -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip((k, j, i), centre, radii)) <= 1


def phantom(seed: int = 0, contrast: float = 80.0, noise: float = 15.0, second: float = 0.6
            ) -> tuple[Volume, np.ndarray, np.ndarray]:
    """``(volume, mask of object 1, mask of object 2)`` (module docstring); the second object is
    ``second`` x as bright as the first over the background."""
    from scipy import ndimage

    m1 = ellipsoid((11.5, 22.0, 20.0), (8, 12, 13))
    m2 = ellipsoid((13.0, 30.0, 38.0), (6, 8, 7))
    _, j, _ = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    arr = 30 + 0.5 * j + contrast * m1 + second * contrast * m2
    arr = ndimage.gaussian_filter(arr.astype(np.float64), 0.7) + np.random.default_rng(seed).normal(0, noise, SHAPE)
    return Volume(arr.astype(np.int16), SPACING, ORIGIN, DIRECTION, "HU"), m1, m2


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def box_of(mask2d: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask2d)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.fixture(scope="module")
def case():
    return phantom()


def test_a_box_on_the_middle_slice_propagates_both_ways(case):
    vol, m1, _ = case
    mid = 11
    with VolumeSession(vol, model="classical", window="ct-abdomen") as s:
        s.add_prompt(mid, 1, box=box_of(m1[mid]))
        assert s.plan() == [(mid, 23, False), (mid, 0, True)]
        seen = [i for i, masks in s.propagate()]
        assert seen[0] == mid and set(seen) == set(range(24))  # forward from mid, then backward to 0
        labels = s.labels()
        anchors = {i: int(s.masks(i).data["anchor"][0]) for i in range(24)}
    assert isinstance(labels, Volume) and labels.same_geometry(vol) and labels.array.dtype == np.uint8
    got = labels.array == 1
    assert dice(got, m1) >= 0.9, dice(got, m1)
    assert got[:mid].any() and got[mid + 1:].any()  # both directions reached
    assert dice(got[:mid], m1[:mid]) >= 0.85 and dice(got[mid + 1:], m1[mid + 1:]) >= 0.85
    assert not got[:3].any() and not got[21:].any()  # the object ends: the faded ghost is dropped
    assert all(a == mid for i, a in anchors.items() if got[i].any())


def test_coronal_slices(case):
    vol, m1, _ = case
    mid = int(np.argmax(m1.sum((0, 2))))
    with VolumeSession(vol, model="classical", axis="coronal", window="ct-abdomen") as s:
        assert len(s) == SHAPE[1] and s.size == (SHAPE[0], SHAPE[2])
        s.add_prompt(mid, 1, box=box_of(m1[:, mid, :]))
        labels = s.run().labels().array
    assert dice(labels == 1, m1) >= 0.9


def test_box3d_limits_the_propagation(case):
    vol, m1, _ = case
    bx = box_of(m1[11])
    with VolumeSession(vol, model="classical", window="ct-abdomen") as s:
        s.add_prompt(obj_id=1, box3d=(bx[0], bx[1], 8, bx[2], bx[3], 14))
        assert s.prompted_slices == [11]  # the middle slice (8 + 14) // 2
        assert s.plan() == [(11, 14, False), (11, 8, True)]
        got = s.run().labels().array == 1
    assert got[8:15].any(axis=(1, 2)).all()
    assert not got[:8].any() and not got[15:].any()
    assert dice(got[8:15], m1[8:15]) >= 0.9
    with pytest.raises(PromptError, match="outside object 1's box3d slices 8..14"):
        s2 = VolumeSession(vol, model="classical", window="ct-abdomen")
        s2.add_prompt(obj_id=1, box3d=(bx[0], bx[1], 8, bx[2], bx[3], 14))
        s2.add_prompt(20, 1, box=bx)


def test_two_objects():
    """A brighter second object beside the first (as a kidney by the liver); both from boxes.
    Measured: Dice 0.912 and 0.936 (a dim, small second object's box is segmented poorly by the
    classical image engine: 0.81 on its prompt slice, 0.63 in 3D)."""
    vol, m1, m2 = phantom(second=1.5)
    with VolumeSession(vol, model="classical", window="ct-abdomen") as s:
        s.add_prompt(11, 1, box=box_of(m1[11]))
        s.add_prompt(13, 2, box=box_of(m2[13]))
        assert s.object_ids == [1, 2] and s.plan() == [(11, 23, False), (13, 0, True)]
        labels = s.run().labels().array
    assert dice(labels == 1, m1) >= 0.88 and dice(labels == 2, m2) >= 0.9
    assert set(np.unique(labels).tolist()) == {0, 1, 2}


def test_a_correction_on_a_later_slice_changes_the_result_there(case):
    vol, m1, _ = case
    with VolumeSession(vol, model="classical", window="ct-abdomen") as s:
        s.add_prompt(11, 1, box=box_of(m1[11]))
        s.run()
        before = {i: s.masks(i).masks[0].copy() for i in range(24)}
        half = m1[16].copy()
        half[:, 20:] = False  # a (deliberately different) correction: the left half only
        s.add_prompt(16, 1, mask=half)
        assert s.plan() == [(16, 23, False), (16, 11, True)]  # up to the end, back to the previous prompt
        s.run()
        after = {i: s.masks(i).masks[0] for i in range(24)}
        anchors = {i: int(s.masks(i).data["anchor"][0]) for i in range(24)}
    assert np.array_equal(after[16], half)
    assert after[17].sum() < 0.8 * before[17].sum()  # the slices after it follow the correction
    assert not after[17][:, 24:].any()
    assert all(np.array_equal(after[i], before[i]) for i in range(0, 14))  # nearer to slice 11: unchanged
    assert anchors[13] == 11 and anchors[14] == 16 and anchors[19] == 16  # each slice from its nearest prompt
    assert s.plan() == []  # nothing pending after the re-propagation


def test_merging_takes_the_nearest_prompt(case):
    """Two prompts for one object: each slice between them comes from the nearer one."""
    vol, m1, _ = case
    with VolumeSession(vol, model="classical", window="ct-abdomen") as s:
        s.add_prompt(6, 1, mask=m1[6])
        s.add_prompt(17, 1, mask=m1[17])
        s.run()
        anchors = [int(s.masks(i).data["anchor"][0]) for i in range(24)]
        scores = s.masks(9).scores
    assert anchors[5:12] == [6] * 7 and anchors[12:18] == [17] * 6  # 11.5 is the midpoint: a tie goes forward
    assert 0 < scores[0] <= 1


def test_overlaps_go_to_the_higher_id_and_ids_past_255(case):
    vol, m1, _ = case
    with VolumeSession(vol, model="classical", window="ct-abdomen", fade=None) as s:
        s.add_prompt(11, 1, mask=m1[11])
        s.add_prompt(11, 300, mask=m1[11] & (np.arange(48)[None, :] < 22))
        ids = s.id_map(11)
        labels = s.labels()
    assert ids.dtype == np.uint16 and labels.array.dtype == np.uint16
    assert (ids[m1[11] & (np.arange(48)[None, :] < 22)] == 300).all()


def test_mask_contrast_is_signed_and_zero_when_empty():
    grey = np.zeros((20, 20), np.float32)
    grey[5:15, 5:15] = 100
    m = np.zeros((20, 20), bool)
    m[5:15, 5:15] = True
    assert mask_contrast(grey, m) > 10 and mask_contrast(-grey, m) < -10
    assert mask_contrast(grey, np.zeros_like(m)) == 0.0


def test_bad_prompts_are_one_line(case):
    vol, m1, _ = case
    s = VolumeSession(vol, model="classical", window="ct-abdomen")
    with pytest.raises(PromptError, match="no prompts yet"):
        s.plan()
    with pytest.raises(PromptError, match="slice 24 is outside the volume: it has 24 axial slices"):
        s.add_prompt(24, 1, box=[1, 1, 5, 5])
    with pytest.raises(PromptError, match=r"point \(60, 3\) is outside slice 3 \(48x48 pixels\)"):
        s.add_prompt(3, 1, points=[[60, 3]])
    with pytest.raises(PromptError, match="box .* is outside slice 3"):
        s.add_prompt(3, 1, box=[0, 0, 49, 10])
    with pytest.raises(PromptError, match="mask prompt is 10x10, slice 3 is 48x48"):
        s.add_prompt(3, 1, mask=np.ones((10, 10), bool))
    with pytest.raises(PromptError, match="give box3d alone"):
        s.add_prompt(3, 1, box=[1, 1, 5, 5], box3d=(1, 1, 2, 5, 5, 6))
    with pytest.raises(InputError, match="fade must be"):
        VolumeSession(vol, model="classical", fade=2.0)
    with pytest.raises(InputError, match="--axis must be one of"):
        VolumeSession(vol, model="classical", axis="oblique")


@pytest.mark.parametrize("box3d, message", [
    ((10, 10, 5, 5, 20, 8), "inverted"),
    ((10, 10, 9, 20, 20, 8), "inverted"),
    ((10, 10, 5, 20, 20, 24), "outside the volume"),
    ((-1, 10, 5, 20, 20, 8), "outside the volume"),
    ((10, 10, 5.5, 20, 20, 8), "whole numbers"),
    ((10, 10, 5, 20, 20), "6 numbers"),
])
def test_box3d_checks(box3d, message):
    with pytest.raises(PromptError, match=message):
        check_box3d(box3d, SHAPE, 0)


@pytest.fixture(scope="module")
def sam2_tracker(tmp_path_factory):
    """A tiny random SAM 2.1 video model (tests/tiny_video.py), through the users' loader."""
    pytest.importorskip("transformers")
    import torch

    from anyseg.video.session import load_tracker
    from tiny_video import build_sam2_video

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = build_sam2_video(tmp_path_factory.mktemp("sam2v") / "sam2.1-hiera-tiny")
    yield load_tracker("sam2.1-hiera-tiny", weights=str(folder), device="cpu")
    torch.set_num_threads(threads)


def test_a_sam2_tracker_runs_both_ways_with_reverse(sam2_tracker, monkeypatch):
    """The learned engines get the same passes: forward, then backward with ``reverse=True``."""
    vol, m1, _ = phantom()
    small = Volume(np.asarray(vol.array)[6:14], SPACING, ORIGIN, DIRECTION, "HU")  # 8 slices: the tiny model is slow
    calls = []
    real = sam2_tracker.propagate

    def spy(state, start, end, reverse=False):
        calls.append((start, end, reverse))
        return real(state, start, end, reverse=reverse)

    monkeypatch.setattr(sam2_tracker, "propagate", spy)
    with VolumeSession(small, model=sam2_tracker, window="ct-abdomen") as s:
        assert s.fade is None  # a learned tracker: its own object score, no contrast test
        s.add_prompt(4, 1, box=box_of(m1[10]))
        seen = [i for i, _ in s.propagate()]
        anchors = [int(s.masks(i).data["anchor"][0]) for i in range(8)]
        labels = s.labels()
    assert calls == [(4, 7, False), (4, 0, True)] and sorted(set(seen)) == list(range(8))
    assert anchors == [4] * 8 and labels.same_geometry(small)


class ThresholdModel:
    """A stand-in promptable image model: the bright pixels (smoothed grey over a level) in the box."""

    model_id = name = "threshold"

    def embed(self, image):
        from scipy import ndimage

        return ndimage.gaussian_filter(image[..., 0].astype(np.float32), 1.0)

    def predict(self, embedding, prompt, multimask=False):
        from anyseg.types import Masks

        inside = np.zeros(embedding.shape, bool)
        x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
        inside[y0:y1, x0:x1] = True
        return Masks((embedding > 150) & inside, scores=np.array([0.8], np.float32))


def test_an_image_model_runs_slice_by_slice_from_boxes(case):
    """MedSAM's 3D use: the next slice's box is the previous mask's, widened; both ways; ends when empty."""
    from anyseg.volume.session import ImageTracker

    vol, m1, _ = case
    with VolumeSession(vol, model=ImageTracker(ThresholdModel()), window="ct-abdomen") as s:
        s.add_prompt(11, 1, box=box_of(m1[11]))
        got = s.run().labels().array == 1
        scores = {i: float(s.masks(i).scores[0]) for i in range(24)}
    assert dice(got, m1) >= 0.9 and got[5].any() and got[18].any()
    assert scores[11] == 1.0 and scores[6] == pytest.approx(0.8)


def test_a_promptable_model_that_cannot_track_becomes_an_image_tracker(case, tmp_path):
    pytest.importorskip("transformers")
    from anyseg.volume.session import ImageTracker
    from tiny_models import build_sam

    folder = build_sam(tmp_path / "sam-vit-base")
    vol, m1, _ = case
    small = Volume(np.asarray(vol.array)[9:13], SPACING, ORIGIN, DIRECTION, "HU")
    with VolumeSession(small, model=str(folder), window="ct-abdomen") as s:
        assert isinstance(s.tracker, ImageTracker) and "slice by slice" in s.tracker.name
        s.add_prompt(2, 1, box=box_of(m1[11]))
        assert sorted({i for i, _ in s.propagate()}) == [0, 1, 2, 3]

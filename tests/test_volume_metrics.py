"""Dice, IoU, NSD, HD95 and ASSD with voxel spacing (:mod:`anyseg.eval.volume_metrics`).

Checked three ways: by hand on tiny cases (two cubes one voxel apart, with anisotropic
spacing), against MONAI 1.6's ``compute_surface_dice`` / ``compute_hausdorff_distance`` /
``compute_average_surface_distance`` / ``compute_dice`` / ``compute_iou`` on random blobs and
ellipsoid phantoms in 3D (anisotropic) and 2D, and on the empty cases.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from anyseg.errors import InputError
from anyseg.eval import volume_metrics as vm

TOL = dict(rtol=1e-6, atol=1e-6)  # MONAI's distances are float32: equal to ~1e-7 relative


@pytest.fixture(scope="module")
def monai_metrics():
    pytest.importorskip("monai")
    import torch
    from monai.metrics import (compute_average_surface_distance, compute_dice, compute_hausdorff_distance,
                               compute_iou, compute_surface_dice)

    def one_hot(m: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))

    def scores(pred: np.ndarray, gt: np.ndarray, spacing, tolerance: float) -> dict[str, float]:
        p, g, sp = one_hot(pred), one_hot(gt), list(spacing)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {"nsd": compute_surface_dice(p, g, [tolerance], spacing=sp).item(),
                    "hd95": compute_hausdorff_distance(p, g, percentile=95, spacing=sp).item(),
                    "hd": compute_hausdorff_distance(p, g, spacing=sp).item(),
                    "assd": compute_average_surface_distance(p, g, symmetric=True, spacing=sp).item(),
                    "dice": compute_dice(p, g, include_background=False).item(),
                    "iou": compute_iou(p, g, include_background=False).item()}

    return scores


def blob(shape: tuple[int, ...], seed: int, fill: float = 0.3) -> np.ndarray:
    a = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 1.5)
    return a > np.quantile(a, 1 - fill)


def ellipsoid(shape: tuple[int, ...], centre, radii) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def cubes() -> tuple[np.ndarray, np.ndarray]:
    """A 4x4x4 cube and the same cube one voxel further along axis 0."""
    gt, pred = np.zeros((9, 8, 8), bool), np.zeros((9, 8, 8), bool)
    gt[2:6, 2:6, 2:6] = True
    pred[3:7, 2:6, 2:6] = True
    return pred, gt


def test_two_cubes_one_voxel_apart_by_hand():
    pred, gt = cubes()
    spacing = (2.0, 1.0, 1.0)  # 2 mm between slices: the offset is 2 mm
    assert vm.dice(pred, gt) == pytest.approx(2 * 48 / 128) and vm.iou(pred, gt) == pytest.approx(48 / 80)
    d_pg, d_gp = vm.surface_distances(pred, gt, spacing)
    # 56 boundary voxels each: 36 on the other's boundary, 4 face centres 1 mm from its side ring, 16 on the far face 2 mm out
    for d in (d_pg, d_gp):
        assert len(d) == 56 and np.count_nonzero(d == 0) == 36
        assert np.count_nonzero(d == 1) == 4 and np.count_nonzero(d == 2) == 16
    assert vm.average_surface_distance(pred, gt, spacing) == pytest.approx(36 / 56)
    assert vm.hausdorff_distance(pred, gt, spacing) == pytest.approx(2.0)
    assert vm.hausdorff_distance(pred, gt, spacing, percentile=None) == pytest.approx(2.0)
    assert vm.surface_dice(pred, gt, 1.0, spacing) == pytest.approx(80 / 112)
    assert vm.surface_dice(pred, gt, 2.0, spacing) == 1.0
    assert vm.surface_dice(pred, gt, 0.0, spacing) == pytest.approx(36 / 56)
    # isotropic 1 mm: the far face is 1 mm out, the face centres too
    assert vm.average_surface_distance(pred, gt, 1.0) == pytest.approx(20 / 56)
    s = vm.score_object(pred, gt, spacing, tolerance=1.0)
    assert (s.dice, s.nsd, s.hd95, s.assd, s.pred_voxels, s.gt_voxels) == pytest.approx(
        (0.75, 80 / 112, 2.0, 36 / 56, 64, 64))


def test_two_squares_in_2d_by_hand():
    gt, pred = np.zeros((6, 7), bool), np.zeros((6, 7), bool)
    gt[1:4, 1:4] = True
    pred[1:4, 2:5] = True
    spacing = (1.0, 0.5)  # columns 0.5 mm apart
    d_pg, d_gp = vm.surface_distances(pred, gt, spacing)
    # 8 boundary pixels each (3x3 minus the centre): the 4 on the other's boundary, and 4 one column (0.5 mm) off
    assert sorted(d_pg.tolist()) == sorted(d_gp.tolist()) == [0.0] * 4 + [0.5] * 4
    assert vm.hausdorff_distance(pred, gt, spacing) == pytest.approx(0.5)
    assert vm.surface_dice(pred, gt, 0.25, spacing) == 0.5 and vm.surface_dice(pred, gt, 0.5, spacing) == 1.0


def test_the_same_mask_scores_perfectly():
    m = ellipsoid((10, 20, 20), (5, 10, 10), (3, 6, 7))
    s = vm.score_object(m, m, (3.0, 0.8, 0.8))
    assert (s.dice, s.iou, s.nsd, s.hd95, s.assd) == (1.0, 1.0, 1.0, 0.0, 0.0)


CASES = [((10, 24, 28), (2.5, 0.7, 0.9), seed) for seed in range(3)] + [
    ((32, 40), (1.0, 1.0), 10), ((32, 40), (0.5, 1.3), 11), ((6, 30, 30), (5.0, 1.0, 1.0), 12)]


@pytest.mark.parametrize("shape,spacing,seed", CASES)
@pytest.mark.parametrize("tolerance", [1.0, 2.0])
def test_equal_to_monai_on_random_blobs(monai_metrics, shape, spacing, seed, tolerance):
    pred, gt = blob(shape, seed), blob(shape, seed + 100)
    ref = monai_metrics(pred, gt, spacing, tolerance)
    s = vm.score_object(pred, gt, spacing, tolerance)
    for name in ("dice", "iou", "nsd", "hd95", "assd"):
        assert np.isclose(getattr(s, name), ref[name], **TOL), (name, getattr(s, name), ref[name])
    assert np.isclose(vm.hausdorff_distance(pred, gt, spacing, percentile=None), ref["hd"], **TOL)


@pytest.mark.parametrize("offset,radii", [((0, 0, 0), (3, 8, 10)), ((1, 2, -1), (3, 8, 10)), ((0, 3, 3), (2, 6, 5))])
def test_equal_to_monai_on_ellipsoid_phantoms(monai_metrics, offset, radii):
    """An anisotropic CT-like phantom (5 mm slices, 0.8 mm pixels) and a shifted, reshaped prediction."""
    shape, spacing = (12, 40, 44), (5.0, 0.8, 0.8)
    gt = ellipsoid(shape, (6, 20, 22), (3, 8, 10))
    pred = ellipsoid(shape, (6 + offset[0], 20 + offset[1], 22 + offset[2]), radii)
    ref = monai_metrics(pred, gt, spacing, 2.0)
    s = vm.score_object(pred, gt, spacing, 2.0)
    for name in ("dice", "iou", "nsd", "hd95", "assd"):
        assert np.isclose(getattr(s, name), ref[name], **TOL), (name, getattr(s, name), ref[name])


def test_touching_the_array_border_counts_as_boundary(monai_metrics):
    """MONAI pads by one background voxel: a mask touching the border has its boundary there."""
    gt = np.zeros((5, 12, 12), bool)
    gt[:, :6, :] = True
    pred = np.zeros_like(gt)
    pred[1:, :7, 2:] = True
    ref = monai_metrics(pred, gt, (2.0, 1.0, 1.0), 2.0)
    s = vm.score_object(pred, gt, (2.0, 1.0, 1.0), 2.0)
    assert np.allclose([s.nsd, s.hd95, s.assd], [ref["nsd"], ref["hd95"], ref["assd"]], **TOL)


def test_empty_masks(monai_metrics):
    empty, m = np.zeros((5, 6, 7), bool), np.zeros((5, 6, 7), bool)
    m[1:3, 2:4, 2:5] = True
    both = vm.score_object(empty, empty, (1, 2, 3))
    assert np.isnan([both.nsd, both.hd95, both.assd]).all() and (both.dice, both.iou) == (1.0, 1.0)
    ref = monai_metrics(empty, empty, (1, 2, 3), 2.0)
    assert np.isnan([ref["nsd"], ref["hd95"], ref["assd"], ref["dice"]]).all()
    for pred, gt in ((empty, m), (m, empty)):  # a miss, a false positive
        s = vm.score_object(pred, gt, (1, 2, 3))
        ref = monai_metrics(pred, gt, (1, 2, 3), 2.0)
        assert (s.dice, s.iou, s.nsd, s.hd95, s.assd) == (0.0, 0.0, 0.0, np.inf, np.inf)
        assert ref["nsd"] == 0.0 and ref["assd"] == np.inf and ref["hd"] == np.inf
        assert not np.isfinite(ref["hd95"])  # (MONAI's 95th percentile of infinities is NaN; ours is inf)
    assert np.isnan(vm.dice(m, empty)) and np.isnan(vm.iou(m, empty))  # MONAI's ignore_empty=True
    assert vm.dice(m, empty, ignore_empty=False) == 0.0 and vm.dice(empty, empty, ignore_empty=False) == 1.0
    assert np.isnan(monai_metrics(m, empty, (1, 2, 3), 2.0)["dice"])


def test_records_and_summaries_keep_non_finite_values_out_of_means():
    pred, gt = cubes()
    rec = vm.score_object(np.zeros_like(gt), gt, 1.0).to_record()
    assert rec["hd95"] is None and rec["assd"] is None and rec["dice"] == 0.0 and rec["pred_voxels"] == 0
    ok = vm.score_object(pred, gt, 1.0).to_record()
    assert vm.finite_mean([ok["hd95"], rec["hd95"], float("inf")]) == (ok["hd95"], 2)
    assert vm.finite_mean([None, float("nan")]) == (None, 2)


def test_work_is_bounded_by_the_union_box():
    big = np.zeros((60, 200, 200), bool)
    big[30:33, 100:104, 90:95] = True
    other = np.roll(big, 2, axis=2)
    p, g = vm.crop_to_union(other, big)
    assert p.shape == (3 + 2, 4 + 2, 7 + 2)  # the union's box plus the one-voxel margin
    assert vm.score_object(other, big, (3.0, 1.0, 1.0)).hd95 == pytest.approx(2.0)


def test_bad_input_is_one_line_errors():
    m = np.ones((4, 5, 6), bool)
    with pytest.raises(InputError, match="shape"):
        vm.score_object(m, m[:3])
    with pytest.raises(InputError, match="2D or 3D"):
        vm.score_object(m[0, 0], m[0, 0])
    with pytest.raises(InputError, match="spacing"):
        vm.score_object(m, m, (1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        vm.score_object(m, m, (1.0, 1.0))
    with pytest.raises(InputError, match="tolerance"):
        vm.score_object(m, m, 1.0, tolerance=-1)
    with pytest.raises(InputError, match="percentile"):
        vm.hausdorff_distance(m, m, percentile=120)


def test_array_spacing_reverses_the_volume_spacing():
    from anyseg.volume.base import Volume

    v = Volume(np.zeros((3, 4, 5)), spacing=(0.7, 0.8, 2.5))
    assert vm.array_spacing(v) == (2.5, 0.8, 0.7)

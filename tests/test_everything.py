"""Segment everything: the reference's helpers on crafted inputs, the pipeline on a disc model, tiny SAM models."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from anyseg.errors import InputError
from anyseg.masks.amg import (
    boxes_inclusive, build_all_layer_point_grids, build_point_grid, generate_crop_boxes, is_box_near_crop_edge,
    postprocess_small_regions, rle_encode, stability_score,
)
from anyseg.masks.rle import decode, encode_many
from anyseg.models import load_model
from anyseg.models.sam import SamFamilyPredictor
from anyseg.tasks.everything import EverythingParams, generate
from anyseg.types import Embedding, masks_to_boxes

from tiny_models import BUILDERS

FAMILY_MODEL = {"sam": "sam-vit-base", "sam_hq": "sam-hq-vit-base", "sam2": "sam2.1-hiera-tiny", "sam3_tracker": "sam3"}
#: thresholds that let random-weight masks through (their logits are ~1e-4: stability 0, IoU ~0 or ~0.5)
OPEN = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Two shared cores: torch's two-thread kernels slow ~100x when another process holds a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, SamFamilyPredictor]:
    root = tmp_path_factory.mktemp("tiny_everything")
    return {f: load_model(n, weights=BUILDERS[f](root / f), device="cpu") for f, n in FAMILY_MODEL.items()}


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# -- the reference's helpers ----------------------------------------------------------------
def test_point_grid_offsets_and_layers():
    np.testing.assert_allclose(build_point_grid(2), [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    np.testing.assert_allclose(build_point_grid(1), [[0.5, 0.5]])
    assert [len(g) for g in build_all_layer_point_grids(8, 2, 2)] == [64, 16, 4]
    assert [len(g) for g in build_all_layer_point_grids(5, 1, 2)] == [25, 4]  # int(5 / 2) = 2 per side


def test_crop_boxes_of_a_100x200_image():
    # layer 1: overlap = int(512/1500 * 100 * 2/2) = 34; crop_w = ceil((34 + 200) / 2) = 117,
    # crop_h = ceil((34 + 100) / 2) = 67; x0 in (0, 83), y0 in (0, 33); x outer, y inner
    boxes, layers = generate_crop_boxes((100, 200), 1, 512 / 1500)
    assert boxes == [[0, 0, 200, 100], [0, 0, 117, 67], [0, 33, 117, 100], [83, 0, 200, 67], [83, 33, 200, 100]]
    assert layers == [0, 1, 1, 1, 1]
    boxes, layers = generate_crop_boxes((100, 200), 2, 512 / 1500)
    assert layers == [0] + [1] * 4 + [2] * 16
    # layer 2: overlap = int(34.13 * 0.5) = 17, crop_w = ceil((3*17 + 200) / 4) = 63, crop_h = ceil(151 / 4) = 38
    assert boxes[5] == [0, 0, 63, 38] and boxes[6] == [0, 21, 63, 59] and boxes[-1] == [138, 63, 200, 100]


def test_stability_score_by_hand():
    logits = np.array([[3.0, 2.0, 0.5, -0.5],
                       [1.5, 1.0, 0.2, -2.0],
                       [-0.9, -1.0, -3.0, -0.2],
                       [0.0, 4.0, -1.5, 0.9]], dtype=np.float32)
    # > 1: 3, 2, 1.5, 4 -> 4 pixels; > -1: all but -1.0, -3.0, -2.0, -1.5 -> 12 pixels
    assert stability_score(logits, 0.0, 1.0) == pytest.approx(4 / 12)
    # threshold 0.5, offset 0.5: > 1.0: 3, 2, 1.5, 4 -> 4; > 0.0: 3, 2, .5, 1.5, 1, .2, 4, .9 -> 8
    assert stability_score(logits, 0.5, 0.5) == pytest.approx(4 / 8)
    torch_score = stability_score(torch.from_numpy(np.stack([logits, -logits])), 0.0, 1.0)
    np.testing.assert_allclose(torch_score.numpy(), stability_score(np.stack([logits, -logits]), 0.0, 1.0))
    assert stability_score(np.full((3, 3), -5.0), 0.0, 1.0) == 0.0  # empty union: 0 (the reference: NaN)


def test_boxes_use_the_reference_inclusive_convention():
    m = np.zeros((2, 10, 12), dtype=bool)
    m[0, 2:5, 1:4] = True
    np.testing.assert_array_equal(boxes_inclusive(m), [[1, 2, 3, 4], [0, 0, 0, 0]])
    np.testing.assert_array_equal(boxes_inclusive(torch.from_numpy(m)), boxes_inclusive(m))


def test_edge_filter_drops_interior_crop_edges_only():
    crop, image = [0, 0, 117, 67], [0, 0, 200, 100]  # top-left crop of a 200x100 image
    boxes = np.array([
        [50, 10, 116, 40],  # touches the crop's right edge (x=117), inside the image: dropped
        [0, 10, 40, 40],    # touches the crop's left edge, which is the image's: kept
        [30, 0, 60, 30],    # touches the top edge = image edge: kept
        [30, 10, 60, 47],   # 20 px from the bottom crop edge (67): dropped (|47 - 67| <= 20)
        [30, 10, 60, 46],   # 21 px away: kept
    ], dtype=np.float32)
    np.testing.assert_array_equal(is_box_near_crop_edge(boxes, crop, image), [True, False, False, True, False])
    # bottom-right crop: its left/top edges are interior, its right/bottom edges the image's
    crop = [83, 33, 200, 100]
    boxes = np.array([[0, 30, 40, 50], [40, 30, 116, 66]], dtype=np.float32)  # crop pixels
    np.testing.assert_array_equal(is_box_near_crop_edge(boxes, crop, image), [True, False])


def test_small_region_postprocess_prefers_unchanged_masks():
    a = np.zeros((40, 40), dtype=bool)
    a[10:21, 10:21] = True
    b = a.copy()
    b[35, 35] = True  # a 1-pixel island: cleaned, it duplicates ``a``
    c = np.zeros((40, 40), dtype=bool)
    c[25:35, 2:12] = True
    c[30, 6] = False  # a 1-pixel hole: filled
    keep, rles, boxes = postprocess_small_regions([rle_encode(m) for m in (b, a, c)], 5, 0.7)
    assert keep.tolist() == [1, 2], "b (changed) loses to its unchanged duplicate a although it comes first"
    filled = c.copy()
    filled[30, 6] = True
    from pycocotools import mask as mask_utils

    np.testing.assert_array_equal(mask_utils.decode(rles[2]).astype(bool), filled)
    np.testing.assert_array_equal(boxes[0], [10, 10, 20, 20])  # b's box after cleaning


# -- parameters --------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, words", [
    (dict(points_per_side=0), ["points_per_side", "1..128", "0"]),
    (dict(points_per_side=10000), ["points_per_side", "an integer in 1..128", "10000"]),
    (dict(points_per_batch=1025), ["points_per_batch", "1..1024", "1025"]),
    (dict(crop_n_layers=50), ["crop_n_layers", "0..2", "50"]),
    (dict(crop_n_points_downscale_factor=65), ["crop_n_points_downscale_factor", "1..64"]),
    (dict(points_per_side=None, point_grids=[np.full((128 * 128 + 1, 2), 0.5)]), ["point_grids[0]", "16384"]),
    (dict(points_per_side=2.5), ["points_per_side", "2.5"]),
    (dict(points_per_batch=0), ["points_per_batch", "1..1024"]),
    (dict(pred_iou_thresh=1.5), ["pred_iou_thresh", "[0, 1]", "1.5"]),
    (dict(stability_score_thresh=-0.1), ["stability_score_thresh", "[0, 1]", "-0.1"]),
    (dict(box_nms_thresh=2), ["box_nms_thresh", "[0, 1]"]),
    (dict(crop_nms_thresh=float("nan")), ["crop_nms_thresh"]),
    (dict(stability_score_offset=-1.0), ["stability_score_offset", ">= 0"]),
    (dict(min_mask_region_area=-5), ["min_mask_region_area", ">= 0", "-5"]),
    (dict(crop_n_layers=-1), ["crop_n_layers", "0..2"]),
    (dict(crop_overlap_ratio=1.0), ["crop_overlap_ratio", "[0, 1)"]),
    (dict(granularity="big"), ["granularity", "whole, part, subpart, all", "'big'"]),
    (dict(use_m2m="yes"), ["use_m2m"]),
    (dict(points_per_side=2, crop_n_layers=2, crop_n_points_downscale_factor=2), ["crop layer 2", "no points"]),
    (dict(points_per_side=None), ["exactly one of points_per_side and point_grids"]),
    (dict(points_per_side=None, point_grids=[[[0.5, 1.5]]]), ["point_grids[0]", "[0, 1]"]),
    (dict(points_per_side=None, point_grids=[[[0.5, 0.5]]], crop_n_layers=1), ["point_grids", "2 grids"]),
])
def test_params_validation(kwargs, words):
    with pytest.raises(InputError) as err:
        EverythingParams(**kwargs)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


def test_family_defaults():
    assert EverythingParams.for_family("sam").pred_iou_thresh == 0.88
    assert EverythingParams.for_family("sam_hq").pred_iou_thresh == 0.88
    for fam in ("sam2", "edgetam", "sam3_tracker"):
        assert EverythingParams.for_family(fam).pred_iou_thresh == 0.8
    p = EverythingParams.for_family("sam2", points_per_side=16, pred_iou_thresh=0.5)
    assert (p.points_per_side, p.pred_iou_thresh, p.stability_score_thresh, p.box_nms_thresh) == (16, 0.5, 0.95, 0.7)
    with pytest.raises(InputError, match="unknown model family 'yolo'"):
        EverythingParams.for_family("yolo")
    with pytest.raises(InputError, match="points_per_sides"):
        EverythingParams.for_family("sam", points_per_sides=4)
    assert EverythingParams(points_per_side=None, point_grids=[[[0.5, 0.5]]]).grids()[0].tolist() == [[0.5, 0.5]]


def test_generate_argument_errors(tiny):
    with pytest.raises(InputError, match="sort_by"):
        generate(tiny["sam"], _image(20, 20), sort_by="size")
    with pytest.raises(InputError, match="SAM-HQ"):
        generate(tiny["sam_hq"], _image(20, 20), EverythingParams(granularity="part"))
    with pytest.raises(InputError, match="SAM-family model or 'classical'"):
        generate(types.SimpleNamespace(family="other", name="other"), _image(20, 20))


# -- the pipeline on a model whose masks are known: discs around the click ----------------------
class DiscPredictor(SamFamilyPredictor):
    """Outputs 0, 1, 2 = discs of radius ``radii`` around each click (logits ``slope * (r - distance)``).

    Logits are made on a 128 x 128 grid over the embedded image and upscaled like SAM 2's. With
    a mask input (``use_m2m``) the decoder returns the input unchanged with IoU 0.99.
    """

    def __init__(self, radii=(5.0, 9.0, 14.0), ious=(0.90, 0.92, 0.95), slope=1.0):
        self.name, self.family, self.frame, self.device, self._id = "disc", "sam2", 128, "cpu", "disc"
        self.radii, self.ious, self.slope = np.asarray(radii), np.asarray(ious, dtype=np.float32), slope
        self.mask_inputs: list[torch.Tensor] = []

    def embed(self, image):
        return Embedding(self._id, image.shape[:2], (self.frame, self.frame), None)

    def decode_points(self, embedding, points_xy, multimask=True, mask_inputs=None):
        if mask_inputs is not None:
            self.mask_inputs.append(mask_inputs.clone())
            return mask_inputs[:, None].clone(), torch.full((len(points_xy), 1), 0.99)
        h, w = embedding.original_size
        n = self.frame
        ys, xs = (np.arange(n) + 0.5) * h / n, (np.arange(n) + 0.5) * w / n
        pts = np.asarray(points_xy, dtype=np.float64)
        d = np.hypot(xs[None, None, :] - pts[:, 0, None, None], ys[None, :, None] - pts[:, 1, None, None])
        logits = self.slope * (self.radii[None, :, None, None] - d[:, None])
        ious = np.tile(self.ious, (len(pts), 1))
        return torch.from_numpy(logits.astype(np.float32)), torch.from_numpy(ious)


def _disc_params(**kw) -> EverythingParams:
    base = dict(points_per_side=None, point_grids=[[[0.25, 0.5], [0.75, 0.5]]], **OPEN)
    return EverythingParams(**{**base, **kw})


def test_granularity_maps_to_decoder_outputs():
    p, image = DiscPredictor(), _image(100, 200)
    every = generate(p, image, _disc_params())
    assert len(every) == 6 and sorted(every.data["multimask_index"].tolist()) == [0, 0, 1, 1, 2, 2]
    for name, idx in (("subpart", 0), ("part", 1), ("whole", 2)):
        out = generate(p, image, _disc_params(granularity=name))
        assert out.data["multimask_index"].tolist() == [idx, idx]
        r = p.radii[idx]
        np.testing.assert_allclose(out.areas, np.pi * r * r, rtol=0.15)
        np.testing.assert_allclose(out.data["point_coords"][np.argsort(out.data["point_coords"][:, 0])], [[50, 50], [150, 50]])
    assert np.all(np.diff(every.areas) <= 0)
    assert np.array_equal(every.boxes, masks_to_boxes(every.masks))
    by_score = generate(p, image, _disc_params(), sort_by="score")
    assert np.all(np.diff(by_score.scores) <= 0) and by_score.scores[0] == pytest.approx(0.95)


def test_iou_and_stability_filters():
    p, image = DiscPredictor(), _image(100, 200)
    assert sorted(set(generate(p, image, _disc_params(pred_iou_thresh=0.91)).data["multimask_index"])) == [1, 2]
    assert set(generate(p, image, _disc_params(pred_iou_thresh=0.92)).data["multimask_index"]) == {2}, "strict >"
    # stability of a disc of radius r with unit slope: ((r - 1) / (r + 1))**2 -> 0.44, 0.64, 0.75
    out = generate(p, image, _disc_params())
    want = ((p.radii - 1) / (p.radii + 1)) ** 2
    np.testing.assert_allclose(out.data["stability_score"], want[out.data["multimask_index"]], atol=0.05)
    kept = generate(p, image, _disc_params(stability_score_thresh=0.7))
    assert set(kept.data["multimask_index"]) == {2}


def test_box_nms_within_a_crop_keeps_the_best_predicted_iou():
    p, image = DiscPredictor(radii=(12.0, 12.5, 13.0), ious=(0.9, 0.97, 0.93)), _image(100, 200)
    out = generate(p, image, _disc_params(box_nms_thresh=0.7))
    assert out.data["multimask_index"].tolist() == [1, 1] and np.allclose(out.scores, 0.97)


def test_crops_smaller_crop_wins_and_crop_edges_drop_cut_masks():
    p, image = DiscPredictor(), _image(100, 200)
    crops, _ = generate_crop_boxes((100, 200), 1, 512 / 1500)  # top-left crop: [0, 0, 117, 67]
    # layer 0: a click at (50, 25); layer 1: the same image point in every crop's own pixels
    grids = [[[0.25, 0.25]], [[50 / 117, 25 / 67]]]
    out = generate(p, image, EverythingParams(points_per_side=None, point_grids=grids, crop_n_layers=1,
                                              granularity="subpart", **OPEN))
    at = np.flatnonzero(np.all(np.isclose(out.data["point_coords"], [50, 25]), axis=1))
    assert len(at) == 1, "the layer-0 duplicate is suppressed by cross-crop NMS"
    assert out.data["crop_box"][at[0]].tolist() == crops[1], "the smaller crop's mask wins"
    assert {tuple(b) for b in out.data["crop_box"].tolist()} <= {tuple(c) for c in crops}
    # one click near the left side of every layer-1 crop: the disc sticks out of the crop on
    # the left; kept where that edge is the image's (x = 0), dropped where it is interior (x = 83)
    grids = [[[0.5, 0.9]], [[0.01, 0.5]]]
    out = generate(p, image, EverythingParams(points_per_side=None, point_grids=grids, crop_n_layers=1,
                                              granularity="subpart", **OPEN))
    pts = {(round(x, 2), round(y, 2)) for x, y in out.data["point_coords"].tolist()}
    assert pts == {(100.0, 90.0), (1.17, 33.5), (1.17, 66.5)}, pts


def test_m2m_redecodes_every_candidate_with_its_clamped_logits():
    p, image = DiscPredictor(slope=10.0), _image(100, 200)
    out = generate(p, image, _disc_params(use_m2m=True, points_per_batch=1))
    assert np.allclose(out.scores, 0.99) and len(out) == 6
    sent = torch.cat(p.mask_inputs)
    assert sent.shape == (6, 128, 128) and float(sent.abs().max()) == 32.0  # SAM 2's +-32 clamp


# -- tiny random SAM models ----------------------------------------------------------------------
def _component_sizes(mask: np.ndarray) -> np.ndarray:
    import cv2

    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return stats[1:, -1]


def _check_masks(out, size):
    h, w = size
    n = len(out)
    assert out.masks.shape == (n, h, w) and out.masks.dtype == bool
    assert out.scores.shape == (n,) and out.data["stability_score"].shape == (n,)
    assert out.data["point_coords"].shape == (n, 2) and out.data["crop_box"].shape == (n, 4)
    assert np.all(np.diff(out.areas) <= 0), "sorted by area, largest first"
    np.testing.assert_array_equal(out.boxes, masks_to_boxes(out.masks))
    pts = out.data["point_coords"]
    assert np.all((pts >= 0) & (pts <= [w, h]))
    rles = encode_many(out)
    assert len(rles) == n and all(np.array_equal(decode(r), m) for r, m in zip(rles[:3], out.masks[:3]))


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_tiny_models_end_to_end(tiny, family):
    p, size = tiny[family], (96, 160)
    image = _image(*size, seed=1)
    params = EverythingParams.for_family(family, points_per_side=4, box_nms_thresh=1.0, **OPEN)
    out = generate(p, image, params, progress=True)
    assert len(out) == 48  # 16 points x 3 outputs, nothing filtered, NMS off
    _check_masks(out, size)
    assert np.all(out.data["crop_box"] == [0, 0, 160, 96])
    # granularity keeps one decoder output: exactly the "all" run's masks of that index
    whole = generate(p, image, EverythingParams.for_family(family, points_per_side=4, box_nms_thresh=1.0,
                                                           granularity="whole", **OPEN))
    assert set(whole.data["multimask_index"]) == {2}
    key = lambda m: sorted(zip(m.data["point_coords"][:, 0], m.data["point_coords"][:, 1], m.areas))  # noqa: E731
    assert key(whole) == key(out[out.data["multimask_index"] == 2])
    # default NMS: random masks span the image, so duplicates collapse
    assert 1 <= len(generate(p, image, EverythingParams.for_family(family, points_per_side=4, **OPEN))) < 48


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_tiny_models_crops_cleanup_and_m2m(tiny, family):
    p, size = tiny[family], (90, 150)
    image = _image(*size, seed=2)
    crops, _ = generate_crop_boxes(size, 1, 512 / 1500)
    out = generate(p, image, EverythingParams.for_family(family, points_per_side=4, crop_n_layers=1, **OPEN))
    _check_masks(out, size)
    assert {tuple(b) for b in out.data["crop_box"].astype(int).tolist()} <= {tuple(c) for c in crops}
    area = 30
    base = EverythingParams.for_family(family, points_per_side=4, box_nms_thresh=1.0, **OPEN)
    raw = generate(p, image, base)
    clean = generate(p, image, EverythingParams.for_family(family, points_per_side=4, box_nms_thresh=1.0,
                                                           min_mask_region_area=area, **OPEN))
    _check_masks(clean, size)
    assert 1 <= len(clean) <= len(raw)
    for m in clean.masks:
        islands, holes = _component_sizes(m), _component_sizes(~m)
        assert len(islands) == 1 or islands.min() >= area, "islands below the area are gone (unless all were)"
        assert len(holes) == 0 or holes.min() >= area, "holes below the area are filled"
    assert any(_component_sizes(m).min() < area for m in raw.masks if m.any()), "random masks had specks to clean"
    m2m = generate(p, image, EverythingParams.for_family(family, points_per_side=4, box_nms_thresh=1.0,
                                                         use_m2m=True, **OPEN))
    _check_masks(m2m, size)
    assert len(m2m) == 48 and not np.allclose(np.sort(m2m.scores), np.sort(raw.scores))


@pytest.mark.parametrize("family", ["sam_hq", "sam3_tracker"])
def test_other_families_run(tiny, family):
    out = generate(tiny[family], _image(64, 80), EverythingParams.for_family(family, points_per_side=3,
                                                                             box_nms_thresh=1.0, **OPEN))
    _check_masks(out, (64, 80))
    assert len(out) == (9 if family == "sam_hq" else 27)  # SAM-HQ: one mask per point, as sam-hq's generator


def test_default_thresholds_filter_random_masks(tiny):
    out = generate(tiny["sam2"], _image(64, 64), EverythingParams.for_family("sam2", points_per_side=4))
    assert len(out) == 0 and out.masks.shape == (0, 64, 64) and out.data["point_coords"].shape == (0, 2)


def test_classical_is_dispatched():
    out = generate(load_model("classical"), _image(48, 64), EverythingParams(granularity="whole"))
    assert out.image_size == (48, 64) and len(out) >= 1


def test_memory_stays_bounded_on_a_large_image(tiny):
    """1500 x 2000, 64 clicks in one batch -> 192 candidate masks, none filtered by IoU or stability.

    The originals upscale the whole batch before filtering: 192 x 1500 x 2000 float32 = 2.3 GB.
    Here survivors are upscaled at most 8 at a time (96 MB of float32 for this size, plus about
    3 bool temporaries of 24 MB and the 3 MB RLE buffer), so the section's peak RSS growth must
    stay far below that: the bound, 512 MB, is under a quarter of the originals' batch.
    """
    from anyseg.eval.perf import RSSMonitor

    p, (h, w) = tiny["sam"], (1500, 2000)
    image = _image(h, w, seed=4)
    params = EverythingParams.for_family("sam", points_per_side=8, points_per_batch=64, **OPEN)
    generate(p, image[:64, :64], params)  # warm up the model's own allocations
    with RSSMonitor(interval_s=0.005) as mon:
        out = generate(p, image, params)
    naive_mb = 64 * 3 * h * w * 4 / 2**20
    assert len(out) >= 1
    assert mon.delta_mb < 512 < naive_mb / 4, f"peak RSS grew by {mon.delta_mb:.0f} MB (naive batch: {naive_mb:.0f} MB)"


def test_to_masks_sorts_many_masks_by_exact_area():
    """More than 255 RLEs (pycocotools' ``area`` overflows on longer lists): areas exact, order descending."""
    from anyseg.tasks.everything import _rle_areas, _to_masks

    rng = np.random.default_rng(0)
    n, h, w = 600, 40, 50
    sizes = rng.permutation(n) % (h * w) + 1
    masks = np.zeros((n, h, w), dtype=bool)
    for i, s in enumerate(sizes):
        masks[i].flat[:s] = True
    rles = encode_many(masks)
    np.testing.assert_array_equal(_rle_areas(rles), sizes)
    cols = {"iou": rng.random(n).astype(np.float32), "stability": np.ones(n, np.float32),
            "points": np.zeros((n, 2)), "crop": np.zeros((n, 4), np.float32), "index": np.zeros(n, np.int64)}
    out = _to_masks(rles, cols, (h, w), "area")
    np.testing.assert_array_equal(out.areas, np.sort(sizes)[::-1])
    np.testing.assert_array_equal(out.scores, cols["iou"][np.argsort(-sizes, kind="stable")])
    by_score = _to_masks(rles, cols, (h, w), "score")
    assert np.all(np.diff(by_score.scores) <= 0)
    np.testing.assert_array_equal(by_score.areas, sizes[np.argsort(-cols["iou"], kind="stable")])

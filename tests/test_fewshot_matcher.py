"""Matcher: tiny random SAM + tiny random DINOv2, loaded through the users' path.

The random weights say nothing about quality; these tests check the method's mechanics: the
reference features computed once per fit, masks the size of the image, ``one`` / ``all``,
bidirectional matching (a patch matches itself on identical images), the sampler, the EMD,
fusion of several references and one-line errors.
"""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import build_dinov2, build_sam

from anyseg.errors import InputError, ModelError
from anyseg.fewshot import base
from anyseg.fewshot.base import Reference
from anyseg.fewshot.matcher import (
    MatcherFit, MatcherMethod, MatcherOptions, bidirectional_match, mask_metrics, matched_cells, merge_selection,
    sample_prompts, similarity_score, transport_emd,
)
from anyseg.fewshot.segmenter import Segmenter

#: small settings so that a CPU run takes seconds (the defaults sample up to 128 prompts)
FAST = dict(max_prompts=8, samples=2, sample_range=(1, 3), num_centers=3, iou_thresh=0.0, stability_thresh=0.0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("matcher")
    return build_sam(root / "sam"), build_dinov2(root / "dinov2")


@pytest.fixture(scope="module")
def method(folders):
    sam, dino = folders
    return MatcherMethod.from_options(model=str(sam), features=str(dino), device="cpu", **FAST)


def _scene(seed: int = 0, h: int = 120, w: int = 180, box=(30, 40, 90, 110)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = (rng.random((h, w, 3)) * 60).astype(np.uint8)
    y0, x0, y1, x1 = box
    image[y0:y1, x0:x1] = (200 + rng.random((y1 - y0, x1 - x0, 3)) * 55).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return image, mask


def _count_forwards(feature_model, monkeypatch) -> list[int]:
    calls = [0]
    original = feature_model.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(feature_model, "forward", counted)
    return calls


# -- the method through the users' path --------------------------------------------------------
def test_segmenter_fits_once_and_predicts_image_sized_masks(folders, monkeypatch):
    sam, dino = folders
    seg = Segmenter(method="matcher", model=str(sam), features=str(dino), device="cpu", **FAST)
    calls = _count_forwards(seg.method.features.model, monkeypatch)
    refs = [Reference(*_scene(0), name="a"), Reference(*_scene(1, box=(20, 60, 80, 150)), name="b")]
    seg.fit(refs)
    assert calls[0] == 2 and seg.fits == 1  # one feature pass per reference, once per fit
    target, _ = _scene(2, h=150, w=100, box=(40, 20, 110, 80))
    one = seg.predict(target)
    every = seg.predict(target, instances="all")
    assert calls[0] == 4  # one pass per target image; the references are not recomputed
    assert one.masks.shape == (1, 150, 100) and one.masks.dtype == bool
    assert every.masks.shape[1:] == (150, 100) and 1 <= len(every) <= MatcherOptions().max_instances
    for masks in (one, every):
        assert np.all((masks.scores >= 0) & (masks.scores <= 1))
        assert set(masks.data) >= {"emd", "purity", "coverage"}
        assert np.all(np.diff(masks.scores) <= 1e-6)  # best first
        np.testing.assert_allclose(masks.scores, similarity_score(masks.data["emd"]))
    assert one.data["merged"][0] >= 1


def test_fusion_of_two_references(method):
    refs = [Reference(*_scene(0)), Reference(*_scene(3, h=90, w=200, box=(10, 100, 70, 190)))]
    fit = method.fit(refs)
    grids = [method.features.grid(r.size) for r in refs]
    assert fit.grids == tuple(grids)
    assert fit.feats.shape == (sum(gh * gw for gh, gw in grids), 32)
    np.testing.assert_allclose(np.linalg.norm(fit.feats, axis=1), 1.0, atol=1e-5)
    single = [method.fit([r]) for r in refs]
    assert fit.inside.sum() == sum(s.inside.sum() for s in single)  # both masks, concatenated
    np.testing.assert_array_equal(fit.inside, np.concatenate([s.inside for s in single]))
    out = method.predict(fit, _scene(4)[0], "one")
    assert out.masks.shape == (1, 120, 180)


def test_identical_image_matches_itself(method):
    image, mask = _scene(5)
    fit = method.fit([Reference(image, mask)])
    target = method.features.patch_features(image)
    sim = fit.feats @ target.normalized().T
    for mode in ("bipartite", "nearest"):
        m = bidirectional_match(sim, fit.inside, mode)
        assert len(m.tgt) == fit.inside.sum()
        np.testing.assert_array_equal(m.tgt, m.ref)  # every masked patch onto itself
        np.testing.assert_array_equal(m.back, m.ref)  # and back
        assert m.consistent.all()
    cells = matched_cells(bidirectional_match(sim, fit.inside))
    assert set(cells.tolist()) <= set(np.flatnonzero(fit.inside).tolist())


def test_backward_matching_drops_pairs_that_leave_the_mask():
    # reference patches 0, 1 are masked; target patch 0 looks like 0, target 1 looks more like
    # the unmasked reference patch 2 than like reference patch 1
    sim = np.array([[0.9, 0.1], [0.2, 0.5], [0.1, 0.8]])
    m = bidirectional_match(sim, np.array([True, True, False]))
    assert m.ref.tolist() == [0, 1] and m.tgt.tolist() == [0, 1]
    assert m.back.tolist() == [0, 2] and m.consistent.tolist() == [True, False]
    assert matched_cells(m).tolist() == [0]
    none = bidirectional_match(np.array([[0.1], [0.9]]), np.array([True, False]))
    assert not none.consistent.any() and matched_cells(none).tolist() == [0]  # the reference code keeps them


# -- parts -----------------------------------------------------------------------------------
def test_sampler_levels_sizes_and_determinism():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal((20, 20), 2, (15, 2)), rng.normal((80, 60), 2, (15, 2))])
    opts = MatcherOptions(num_centers=2, sample_range=(1, 4), samples=8, max_prompts=50)
    subsets = sample_prompts(points, opts)
    assert 0 < len(subsets) <= 50
    assert all(1 <= len(s) <= 4 for s in subsets)
    keys = {tuple(map(tuple, np.round(s[np.lexsort(s.T[::-1])], 6))) for s in subsets}
    assert len(keys) == len(subsets)  # no repeats
    members = {tuple(p) for p in points}
    assert all(tuple(p) in members for s in subsets for p in s)  # centres are snapped to matched points
    two_clusters = [s for s in subsets if len(s) == 2 and abs(s[0, 0] - s[1, 0]) > 30]
    one_cluster = [s for s in subsets if len(s) == 2 and abs(s[0, 0] - s[1, 0]) < 15]
    assert two_clusters and one_cluster  # instance / global subsets span clusters, part subsets do not
    again = sample_prompts(points, opts)
    assert all(np.array_equal(a, b) for a, b in zip(subsets, again))
    few = sample_prompts(points[:3], MatcherOptions(sample_range=(1, 3)))
    assert len(few) == 7  # every non-empty subset of 3 points, once
    assert sample_prompts(np.zeros((0, 2)), opts) == []


def test_transport_emd_is_the_exact_one():
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(0)
    cost = rng.random((30, 30))
    r, c = linear_sum_assignment(cost)
    np.testing.assert_allclose(transport_emd(cost), cost[r, c].mean())  # equal sizes: the assignment is the EMD
    row = rng.random((1, 7))
    np.testing.assert_allclose(transport_emd(row), row.mean())  # one source: every column once
    # 2 sources, 4 sinks: each source sends 1/2 to two sinks; the optimum pairs 0 with {0, 1}
    two = np.array([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    assert transport_emd(two) == 0.0
    # sink 3 is expensive from both sources: a quarter of the mass pays 1 whatever the plan
    assert transport_emd(np.array([[0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]])) == 0.25
    assert transport_emd(np.zeros((0, 3))) == 1.0
    np.testing.assert_allclose(similarity_score(np.array([0.0, 0.25, 0.5, 0.9])), [1.0, 0.5, 0.0, 0.0])


def test_mask_metrics_purity_and_coverage(method):
    image, mask = _scene(6)
    target = method.features.patch_features(image)
    feats = target.normalized()
    cells = np.flatnonzero(target.pool_mask(mask).reshape(-1) >= 0.5)
    points = target.cell_centers(cells)
    empty_corner = np.zeros_like(mask)
    empty_corner[:10, :10] = True
    metrics = mask_metrics(np.stack([mask, empty_corner]), target, feats, feats[cells], points)
    assert metrics["coverage"][0] == 1.0 and metrics["coverage"][1] == 0.0
    assert 0.5 < metrics["purity"][0] <= 1.0 and metrics["purity"][1] == 0.0
    assert metrics["emd"][0] < 1e-6 < metrics["emd"][1]  # the mask's own features: no distance


def test_merge_selection_keeps_the_best():
    opts = MatcherOptions()
    assert merge_selection(np.array([0.1, 0.2]), opts, 9).tolist() == [1]  # the best even above the threshold
    picked = merge_selection(np.array([0.9, 0.5, 0.89, 0.895]), opts, 9)
    assert picked[0] == 0 and 1 not in picked.tolist()
    assert len(merge_selection(np.full(20, 0.9), opts, 9)) == 9


# -- errors ------------------------------------------------------------------------------------
def test_no_sam_model_is_one_line_naming_what_to_pull(folders):
    _, dino = folders
    with pytest.raises(ModelError, match="SAM-family.*anyseg models pull sam-vit-base") as e:
        MatcherMethod.from_options(features=str(dino), device="cpu")  # auto: nothing present (isolated dirs)
    assert "\n" not in str(e.value) and "classical" in str(e.value)
    with pytest.raises(ModelError, match="SAM"):
        MatcherMethod.from_options(model="classical", features=str(dino), device="cpu")
    with pytest.raises(ModelError, match="SAM-family"):
        Segmenter(method="matcher", features=str(dino), device="cpu")


def test_missing_features_and_bad_options(folders, method):
    sam, _ = folders
    with pytest.raises(ModelError, match="dinov2-small") as e:
        MatcherMethod.from_options(model=str(sam), device="cpu", allow_download=False)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="unknown matcher option.*bogus"):
        MatcherMethod.from_options(model=str(sam), bogus=1)
    for bad in (dict(matching="best"), dict(sample_range=(3, 1)), dict(num_merging=0), dict(iou_thresh=2.0),
                dict(samples=True)):
        with pytest.raises(InputError):
            MatcherOptions(**bad)
    fit = method.fit([Reference(*_scene(0))])
    with pytest.raises(InputError, match="instances"):
        method.predict(fit, _scene(1)[0], "some")
    with pytest.raises(InputError, match="MatcherMethod.fit"):
        method.predict({"feats": 1}, _scene(1)[0])
    stale = MatcherFit(fit.feats, fit.inside, fit.emd_ref, fit.grids, fit.names, "another-model")
    with pytest.raises(InputError, match="fit them again"):
        method.predict(stale, _scene(1)[0])


def test_registered_and_given_loaded_models(method):
    assert base.method_factory("matcher") == MatcherMethod.from_options
    again = MatcherMethod.from_options(model=method.predictor, features=method.features, **FAST)
    assert again.predictor is method.predictor and again.features is method.features
    assert isinstance(again, base.FewShotMethod)

"""Segment-everything overlays (smallest mask on top, one blend, thin outlines, whole-image masks
left out) and the run record of ``anyseg everything`` (what the generator used)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from anyseg.errors import InputError
from anyseg.masks.overlay import overlay, overlay_regions, palette
from anyseg.tasks.everything import EverythingParams, record_params, write_everything
from anyseg.tasks.everything_classical import classical_params, generate_classical, working_size
from anyseg.types import Masks

H, W = 60, 80
GREY = 100
RED, BLUE = (255, 0, 0), (0, 0, 255)


def _image() -> np.ndarray:
    return np.full((H, W, 3), GREY, np.uint8)


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _blend(color, alpha: float) -> np.ndarray:
    return np.rint(GREY * (1 - alpha) + np.asarray(color, float) * alpha)


def test_smallest_mask_wins_on_a_nested_pair():
    outer, inner = _box(5, 55, 5, 75), _box(20, 40, 30, 50)
    for order in ([outer, inner], [inner, outer]):  # whatever the order of the masks
        colors = [RED, BLUE] if order[0] is outer else [BLUE, RED]
        out = overlay(_image(), Masks(np.stack(order)), alpha=0.5, colors=np.array(colors), contours=False)
        np.testing.assert_allclose(out[30, 40], _blend(BLUE, 0.5), atol=1)  # inside the inner mask: its colour only
        np.testing.assert_allclose(out[10, 10], _blend(RED, 0.5), atol=1)  # outer ring: the outer colour
        np.testing.assert_array_equal(out[58, 78], [GREY] * 3)  # outside both: untouched


def test_one_blend_whatever_the_number_of_covering_masks():
    nested = np.stack([_box(2 + 4 * k, 58 - 4 * k, 2 + 4 * k, 78 - 4 * k) for k in range(5)])  # 5 nested boxes
    same = overlay(_image(), Masks(nested), alpha=0.45, colors=np.array(RED), contours=False)
    np.testing.assert_array_equal(same[30, 40], same[3, 3])  # under 5 masks = under 1 mask
    out = overlay(_image(), Masks(nested), alpha=0.45, contours=False)  # palette colours

    cols = palette(5)
    for (y, x), k in (((30, 40), 4), ((3, 3), 0)):  # innermost (under 5) and outermost ring (under 1)
        np.testing.assert_allclose(out[y, x], _blend(cols[k], 0.45), atol=1)  # its own colour, blended once


def test_whole_image_masks_are_left_out_and_counted():
    full, almost = np.ones((H, W), bool), _box(1, H, 0, W)  # 100 % and 98 % of the image
    small = _box(20, 30, 20, 30)
    masks = Masks(np.stack([full, almost, small]))
    vis, info = overlay_regions(_image(), masks)
    assert info == {"drawn": 1, "skipped_whole_image": 2}
    np.testing.assert_array_equal(vis[45, 60], [GREY] * 3)  # only the whole-image masks cover it: not drawn
    np.testing.assert_array_equal(vis[0, 0], [GREY] * 3)  # and no outline along the image border
    assert not np.array_equal(vis[25, 25], [GREY] * 3)
    _, info = overlay_regions(_image(), masks, max_area_fraction=1.0)
    assert info == {"drawn": 3, "skipped_whole_image": 0}
    _, info = overlay_regions(_image(), Masks(np.stack([small, np.zeros((H, W), bool)])))
    assert info == {"drawn": 1, "skipped_whole_image": 0}  # an empty mask is not drawn either
    with pytest.raises(InputError, match="max_area_fraction"):
        overlay_regions(_image(), masks, max_area_fraction=0)


def test_outlines_are_drawn_on_the_boundary():
    masks = Masks(_box(10, 50, 10, 70)[None])
    with_lines = overlay(_image(), masks, colors=np.array(RED))
    plain = overlay(_image(), masks, colors=np.array(RED), contours=False)
    assert not np.array_equal(with_lines[10, 40], with_lines[30, 40])  # boundary differs from interior
    assert with_lines[10, 40].sum() > with_lines[30, 40].sum()  # white outline: brighter
    np.testing.assert_array_equal(with_lines[30, 40], plain[30, 40])
    np.testing.assert_array_equal(plain[10, 40], plain[30, 40])
    np.testing.assert_array_equal(with_lines[11, 40], plain[11, 40])  # thin: 1 px at this size
    np.testing.assert_array_equal(with_lines[9, 40], [GREY] * 3)  # and inside the mask


def test_wrong_boxes_do_not_lose_pixels():
    m = _box(30, 50, 40, 70)
    wrong = Masks(m[None], boxes=[[0, 0, 5, 5]])  # e.g. a detector's box that misses the mask
    right = Masks(m[None])
    np.testing.assert_array_equal(overlay(_image(), wrong), overlay(_image(), right))


def test_classical_record_lists_what_it_used(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 30, (96, 128, 3)).astype(np.uint8)
    image[20:60, 20:60] = (200, 60, 60)
    params = EverythingParams.for_family("sam", min_mask_region_area=5, granularity="whole")
    masks = generate_classical(image, min_area=5, granularity="whole")
    record, path = write_everything(masks, image, tmp_path / "o", "im", model="classical", params=params)
    used = json.loads(path.read_text())["params"]
    assert used == record["params"] == classical_params((96, 128), min_area=5, granularity="whole")
    sam_only = {"points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
                "stability_score_offset", "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "use_m2m"}
    assert not sam_only & set(used)
    assert used["engine"] == "classical" and used["min_area"] == 5 and used["granularity"] == "whole"
    assert used["working_size"] == [96, 128] and used["slic"]["n_segments"] == 96 * 128 // 400
    assert set(used["merge_levels"]) == {"subpart", "part", "whole"}
    assert record["overlay"] == {"drawn": len(masks), "skipped_whole_image": 0}
    assert np.asarray(Image.open(tmp_path / "o" / "im_overlay.png")).shape == (96, 128, 3)
    # labelled by CLIP, still the classical generator's settings; a SAM model records its own
    assert record_params(params, "classical+clip-vit-b16", (96, 128))["engine"] == "classical"
    sam = record_params(params, "sam-vit-base", (96, 128))
    assert sam["points_per_side"] == 32 and "engine" not in sam and "point_grids" not in sam


def test_classical_working_size_matches_the_record():
    assert working_size(400, 600) == (400, 600)
    assert working_size(3000, 4000) == (480, 640)
    assert working_size(3000, 4000, None) == (3000, 4000)
    p = classical_params((3000, 4000), max_side=None)
    assert p["working_size"] == [3000, 4000] and p["slic"]["n_segments"] == 400 and p["max_side"] is None

"""The Python API as a new user meets it: ``dir(anyseg)``, ``Masks`` repr, ``Masks.overlay`` and ``Masks.save``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

import anyseg
from anyseg.errors import InputError
from anyseg.types import Masks

H, W = 40, 50


def _image() -> np.ndarray:
    return np.full((H, W, 3), 90, np.uint8)


def _disjoint(n: int = 3) -> Masks:
    m = np.zeros((n, H, W), bool)
    for i in range(n):
        m[i, 5 + 10 * i:12 + 10 * i, 4 + 8 * i:20 + 8 * i] = True
    return Masks(m, scores=np.linspace(0.9, 0.5, n), labels=[f"obj{i}" for i in range(n)])


def test_dir_lists_every_lazy_export_and_each_resolves():
    names = set(dir(anyseg))
    assert set(anyseg.__all__) <= names
    assert {"__version__", "__getattr__", "__dir__"} <= names  # the module's real attributes too
    for name in anyseg.__all__:
        assert getattr(anyseg, name) is not None, name
    assert anyseg.Masks is Masks
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        anyseg.nope  # noqa: B018


def test_dir_does_not_import_the_heavy_libraries():
    code = "import sys, anyseg; dir(anyseg); anyseg.Masks; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.split() == ["False", "False"]


def test_repr_is_short_and_informative():
    text = repr(_disjoint())
    assert text == "Masks(n=3, image=40x50, columns=['labels'])"
    assert repr(Masks.empty(4, 5)) == "Masks(n=0, image=4x5)"


def test_masks_overlay_changes_masked_pixels_only():
    masks, image = _disjoint(), _image()
    vis = masks.overlay(image)
    assert vis.shape == (H, W, 3) and vis.dtype == np.uint8
    changed = (vis != image).any(axis=2)
    union = masks.masks.any(axis=0)
    assert changed[union].all() and not changed[~union].any()
    np.testing.assert_array_equal(image, _image())  # input untouched
    np.testing.assert_array_equal(masks.overlay(image, alpha=0.0, contours=False), image)


def test_masks_overlay_labels():
    m = np.zeros((2, 200, 300), bool)
    m[0, 20:100, 20:120] = True
    m[1, 120:190, 150:290] = True
    masks, image = Masks(m, labels=["cup", "saucer"]), np.full((200, 300, 3), 90, np.uint8)
    plain = masks.overlay(image)
    tagged = masks.overlay(image, labels=True)
    rows, cols = np.nonzero((tagged != plain).any(axis=2))
    assert len(rows) > 0
    near = ((rows >= 20) & (rows < 45) & (cols >= 20) & (cols < 120)) | ((rows >= 120) & (rows < 145) & (cols >= 150))
    assert near.all()  # each tag at its box's top-left corner, nothing elsewhere
    assert (masks.overlay(image, labels=["a", "b"]) != plain).any()
    with pytest.raises(InputError, match="2 texts"):
        masks.overlay(image, labels=["a"])
    with pytest.raises(InputError, match="Masks.labels"):
        Masks(m).overlay(image, labels=True)
    with pytest.raises(InputError, match="same size"):
        masks.overlay(image[:10])


def test_save_folder_round_trips(tmp_path):
    masks = _disjoint()
    paths = masks.save(tmp_path / "out", image=_image())
    assert [p.name for p in paths] == ["masks_mask0.png", "masks_mask1.png", "masks_mask2.png", "masks_ids.png",
                                       "masks_overlay.png"]
    for i in range(len(masks)):
        np.testing.assert_array_equal(np.asarray(Image.open(paths[i])) > 127, masks.masks[i])
    ids = np.asarray(Image.open(paths[3]))
    for i in range(len(masks)):
        np.testing.assert_array_equal(ids == i + 1, masks.masks[i])
    np.testing.assert_array_equal(np.asarray(Image.open(paths[4])), masks.overlay(_image()))
    assert [p.name for p in masks.save(str(tmp_path / "plain") + "/", stem="m")] == [
        "m_mask0.png", "m_mask1.png", "m_mask2.png", "m_ids.png"]


def test_save_json_and_png_round_trip(tmp_path):
    masks = _disjoint()
    (path,) = masks.save(tmp_path / "x.json")
    coco = json.loads(path.read_text())
    assert [c["name"] for c in coco["categories"]] == ["obj0", "obj1", "obj2"]
    decoded = np.stack([mask_utils.decode(a["segmentation"]) for a in coco["annotations"]]).astype(bool)
    np.testing.assert_array_equal(decoded, masks.masks)
    (png,) = masks.save(tmp_path / "x.png")
    ids = np.asarray(Image.open(png))
    np.testing.assert_array_equal(np.stack([ids == i + 1 for i in range(len(masks))]), masks.masks)
    (ov,) = masks.save(tmp_path / "x_overlay.png", image=_image(), format="overlay")
    assert np.asarray(Image.open(ov)).shape == (H, W, 3)


def test_save_indexed_keeps_the_smaller_mask_where_masks_overlap(tmp_path):
    m = np.zeros((2, H, W), bool)
    m[1, 5:35, 5:45] = True  # large, listed second
    m[0, 10:20, 10:20] = True  # small
    (png,) = Masks(m).save(tmp_path / "o.png")
    ids = np.asarray(Image.open(png))
    assert ids[15, 15] == 1 and ids[30, 30] == 2 and ids[0, 0] == 0


def test_save_errors_are_one_line(tmp_path):
    masks = _disjoint()
    for args, fragment in (((tmp_path / "x.jpg",), "a folder, a .png or a .json"),
                           ((tmp_path / "x.png", None, "tiff"), "format must be one of"),
                           ((tmp_path / "y.png", None, "overlay"), "needs the image"),
                           ((tmp_path / "z.json", _image()), "image only for a folder")):
        with pytest.raises(InputError, match=fragment):
            masks.save(*args)
    many = Masks(np.zeros((256, 4, 4), bool))
    with pytest.raises(InputError, match="1 to 255 masks; got 256"):
        many.save(tmp_path / "many.png")
    assert len(many.save(tmp_path / "many")) == 256  # a folder: one PNG per mask, no indexed PNG
    assert not (tmp_path / "z.json").exists() and not (tmp_path / "y.png").exists()

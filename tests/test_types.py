"""Core types (Masks, Prompt, Embedding), the embedding cache and image reading."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from anyseg.cache import EmbeddingCache
from anyseg.errors import InputError, PromptError
from anyseg.io.images import image_hash, load_image, load_mask
from anyseg.types import Embedding, Masks, Prompt, masks_to_boxes


def _masks(n=3, h=20, w=30) -> Masks:
    m = np.zeros((n, h, w), bool)
    for i in range(n):
        m[i, i : i + 5, 2 * i : 2 * i + 7] = True
    return Masks(m, scores=np.linspace(0.9, 0.5, n), labels=np.array(["a", "b", "c"][:n]),
                 object_ids=np.arange(n) + 10, data={"extra": np.arange(n) * 2.0})


def test_masks_columns_boxes_and_frozen():
    m = _masks()
    assert len(m) == 3 and m.image_size == (20, 30)
    np.testing.assert_array_equal(m.boxes[0], [0, 0, 7, 5])  # x1/y1 are exclusive pixel edges
    np.testing.assert_array_equal(m.areas, [35, 35, 35])
    with pytest.raises(Exception):
        m.masks[0, 0, 0] = False  # read-only arrays
    with pytest.raises(Exception):
        m.scores = None  # frozen dataclass


def test_masks_selection_returns_new_masks_with_all_columns():
    m = _masks()
    sel = m[np.array([True, False, True])]
    assert isinstance(sel, Masks) and len(sel) == 2
    assert sel.labels.tolist() == ["a", "c"] and sel.object_ids.tolist() == [10, 12]
    assert sel.data["extra"].tolist() == [0.0, 4.0]
    assert len(m[1]) == 1 and m[1].labels.tolist() == ["b"]
    assert m[[2, 0]].object_ids.tolist() == [12, 10]
    assert len(m[1:]) == 2
    by_area = m.sort_by("scores", descending=False)
    assert by_area.scores.tolist() == sorted(m.scores.tolist())
    with pytest.raises(IndexError):
        m[3]
    with pytest.raises(InputError, match=r"boolean selection must have shape \(3,\)"):
        m[np.array([True, False])]


def test_masks_validation_names_expected_and_received_shapes():
    with pytest.raises(InputError, match=r"\(N, H, W\); got 2x3x4x5"):
        Masks(np.zeros((2, 3, 4, 5), bool))
    with pytest.raises(InputError, match=r"scores must have shape \(2, \.\.\.\).*got 3"):
        Masks(np.zeros((2, 4, 4), bool), scores=[1, 2, 3])
    with pytest.raises(InputError, match=r"boxes must have shape \(2x4"):
        Masks(np.zeros((2, 4, 4), bool), boxes=np.zeros((2, 5)))


def test_masks_concatenate_and_empty():
    m = _masks()
    both = Masks.concatenate([m, m[:1]])
    assert len(both) == 4 and both.labels.tolist() == ["a", "b", "c", "a"]
    e = Masks.empty(20, 30)
    assert len(e) == 0 and e.boxes.shape == (0, 4) and e.areas.shape == (0,)
    with pytest.raises(InputError, match="different image sizes"):
        Masks.concatenate([m, Masks.empty(5, 5)])
    assert masks_to_boxes(np.zeros((1, 4, 4), bool)).tolist() == [[0, 0, 0, 0]]


def test_prompt_validation():
    p = Prompt(points=[[1, 2], [3, 4]], labels=[1, 0], box=[0, 0, 10, 10])
    assert p.points.shape == (2, 2) and p.labels.tolist() == [1, 0]
    assert Prompt(points=[5, 6]).labels.tolist() == [1]  # one point, positive by default
    with pytest.raises(PromptError, match=r"points must have shape \(K, 2\).*got 2x3"):
        Prompt(points=[[1, 2, 3], [4, 5, 6]])
    with pytest.raises(PromptError, match=r"labels must have shape \(2,\).*got 3"):
        Prompt(points=[[1, 2], [3, 4]], labels=[1, 0, 1])
    with pytest.raises(PromptError, match="1 \\(positive\\) or 0"):
        Prompt(points=[[1, 2]], labels=[2])
    with pytest.raises(PromptError, match="empty"):
        Prompt(box=[5, 5, 5, 9])
    with pytest.raises(PromptError, match="4 numbers"):
        Prompt(box=[1, 2, 3])
    with pytest.raises(PromptError, match="prompt is empty"):
        Prompt()
    with pytest.raises(PromptError, match="finite"):
        Prompt(points=[[np.nan, 1]])
    with pytest.raises(PromptError, match=r"outside the 10x8 image"):
        Prompt(points=[[11, 1]]).check_within((8, 10))
    with pytest.raises(PromptError, match="mask input must match"):
        Prompt(mask=np.ones((3, 3), bool)).check_within((8, 10))


def _emb(tag: str, nbytes: int) -> Embedding:
    return Embedding("m", (1, 1), (1, 1), np.zeros(nbytes, np.uint8), image_hash=tag)


def test_cache_is_lru_and_bounded_in_bytes():
    cache = EmbeddingCache(max_bytes=1000)
    for tag in "abc":
        cache.put(_emb(tag, 400))
    assert len(cache) == 2 and cache.nbytes == 800  # "a" evicted
    assert cache.get("a", "m") is None and cache.get("b", "m") is not None  # b is now most recent
    cache.put(_emb("d", 400))
    assert cache.get("c", "m") is None and cache.get("b", "m") is not None
    cache.put(_emb("huge", 5000))  # larger than the budget: not kept, nothing evicted
    assert cache.get("huge", "m") is None and len(cache) == 2
    assert cache.get("b", "other-model") is None  # keyed by model too
    with pytest.raises(InputError):
        EmbeddingCache(0)


def test_image_hash_is_content_based():
    a = np.zeros((4, 5, 3), np.uint8)
    assert image_hash(a) == image_hash(a.copy())
    b = a.copy()
    b[0, 0, 0] = 1
    assert image_hash(a) != image_hash(b)
    assert image_hash(a) != image_hash(a.reshape(5, 4, 3))


def test_load_image_modes_and_exif(tmp_path):
    Image.fromarray(np.full((6, 9), 200, np.uint8)).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").shape == (6, 9, 3)
    Image.fromarray(np.zeros((6, 9, 4), np.uint8)).save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "rgba.png").shape == (6, 9, 3)
    im = Image.fromarray(np.zeros((6, 9, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: displayed as 9 x 6 (portrait)
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").shape == (9, 6, 3)
    m = np.zeros((6, 9), np.uint8)
    m[2:4, 3:5] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png").sum() == 4
    with pytest.raises(InputError, match="is 9x6 but the image is 10x10"):
        load_mask(tmp_path / "m.png", size=(10, 10))


def test_import_is_light():
    """Importing anyseg (and its types) must not import torch or transformers."""
    code = "import anyseg, anyseg.types, anyseg.cli, sys; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    assert out == "False False"

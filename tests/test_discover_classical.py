"""The classical discovery baseline (anyseg.discover.classical): normalised cuts on a superpixel RAG."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from anyseg.discover.base import DiscoveryMethod
from anyseg.discover.classical import ClassicalNCut, bipartition
from anyseg.errors import InputError

H, W = 96, 128


def _texture(name: str, tint: tuple[float, float, float], off: int = 0) -> np.ndarray:
    g = getattr(skimage.data, name)()[off:off + H, off:off + W].astype(np.float32)[..., None] / 255.0
    return np.clip(g * np.array(tint) * 255, 0, 255).astype(np.uint8)


def _disc(cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _scene(objects: list[tuple[int, int, int]], fg: str = "brick", bg: str = "grass") -> tuple[np.ndarray, list]:
    """Discs of a red-tinted ``fg`` texture pasted on a green-tinted ``bg`` texture, and their masks."""
    img = _texture(bg, (0.6, 1.2, 0.6))
    paste = _texture(fg, (1.3, 0.6, 0.5), 100)
    masks = []
    for cy, cx, r in objects:
        m = _disc(cy, cx, r)
        img[m] = paste[m]
        masks.append(m)
    return img, masks


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_one_textured_object_is_found():
    img, (gt,) = _scene([(48, 60, 25)])
    method = ClassicalNCut()
    assert isinstance(method, DiscoveryMethod) and method.kind == "objects"
    out = method.discover(img)
    assert len(out) == 1 and out.image_size == (H, W)
    assert _iou(out.masks[0], gt) > 0.8
    assert 0.5 < out.scores[0] <= 1.0
    assert out.data["feature"].shape == (1, 24)


def test_two_objects_by_recursive_cuts():
    img, gts = _scene([(40, 32, 18), (52, 94, 20)])
    out = ClassicalNCut().discover(img, objects=2)
    assert len(out) == 2
    for gt in gts:
        assert max(_iou(m, gt) for m in out.masks) > 0.8
    assert np.all(np.diff(out.scores) <= 0)  # best first


def test_a_colour_object_on_a_plain_background():
    img = np.full((H, W, 3), (40, 90, 200), np.uint8)
    gt = np.zeros((H, W), bool)
    gt[30:70, 50:100] = True
    img[gt] = (230, 200, 40)
    out = ClassicalNCut().discover(img)
    assert len(out) == 1 and _iou(out.masks[0], gt) > 0.9 and out.scores[0] > 0.5


def test_partition_is_disjoint_and_covering():
    img, (gt,) = _scene([(48, 60, 25)])
    method = ClassicalNCut(mode="partition")
    assert method.kind == "partition"
    out = method.discover(img, objects=5)
    assert len(out) == 5
    assert out.masks.sum(0).min() == 1 and out.masks.sum(0).max() == 1
    assert out.labels.tolist() == list(range(5))
    assert out.data["feature"].shape == (5, 24)
    assert ((out.scores >= 0) & (out.scores <= 1)).all()
    inside = [m for m in out.masks if (m & gt).sum() > 0.5 * m.sum()]
    assert inside and _iou(np.any(inside, axis=0), gt) > 0.8  # the cuts follow the object's edge
    assert len(method.discover(img)) == 8  # the default segment count


@pytest.mark.parametrize("kind", ["uniform", "noise"])
def test_no_structure_scores_low(kind):
    rng = np.random.default_rng(3)
    img = np.full((H, W, 3), 128, np.uint8) if kind == "uniform" else rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    out = ClassicalNCut().discover(img, objects=3)
    assert len(out) <= 3 and (out.scores < 0.2).all()
    part = ClassicalNCut(mode="partition").discover(img, objects=4)
    assert (part.scores < 0.2).all() and part.masks.sum(0).min() == 1


def test_deterministic_and_large_images_are_bounded():
    img, (gt,) = _scene([(48, 60, 25)])
    a, b = ClassicalNCut().discover(img), ClassicalNCut().discover(img)
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.scores, b.scores)
    big = np.kron(img, np.ones((5, 5, 1), np.uint8))  # 480x640: worked at 320 on its longest side
    out = ClassicalNCut().discover(big)
    gt_big = np.kron(gt, np.ones((5, 5), bool))
    assert out.image_size == big.shape[:2] and _iou(out.masks[0], gt_big) > 0.8


def test_bipartition_splits_two_cliques():
    W_ = np.full((6, 6), 1e-6)
    W_[:3, :3] = W_[3:, 3:] = 1.0
    side, ncut = bipartition(W_)
    assert sorted([side[:3].tolist(), side[3:].tolist()]) == [[False] * 3, [True] * 3] and ncut < 1e-3


def test_options_and_errors_are_one_line():
    assert ClassicalNCut.from_options().kind == "objects"
    assert ClassicalNCut.from_options(model="classical", device="cpu", mode="partition").kind == "partition"
    img, _ = _scene([(48, 60, 25)])
    bad = [(lambda: ClassicalNCut.from_options(model="dino-vits16"), "uses no model"),
           (lambda: ClassicalNCut.from_options(device="cuda"), "runs on the CPU"),
           (lambda: ClassicalNCut.from_options(mode="semantic"), "mode must be one of"),
           (lambda: ClassicalNCut.from_options(colour=3), "unknown classical option"),
           (lambda: ClassicalNCut(superpixels=2), "superpixels must be"),
           (lambda: ClassicalNCut().discover(img, objects=0), "--objects"),
           (lambda: ClassicalNCut().discover(img[:5, :5]), "at least 8x8")]
    for call, match in bad:
        with pytest.raises(InputError, match=match) as e:
            call()
        assert "\n" not in str(e.value)

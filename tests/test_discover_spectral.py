"""Deep spectral methods (anyseg.discover.spectral) with a fake feature extractor of planted regions."""

from __future__ import annotations

import numpy as np
import pytest

from anyseg.discover.base import DiscoveryMethod
from anyseg.discover.spectral import DeepSpectral, _features, cluster_segments, feature_affinity, kmeans
from anyseg.errors import InputError, ModelError
from anyseg.models.features import PatchFeatures
from anyseg.types import Masks

P = 8
PROTOS = np.random.default_rng(1).standard_normal((4, 16))


class FakeFeatures:
    """Each cell's feature is the prototype of the class its centre pixel's red level encodes, plus noise."""

    name = family = "fake"
    patch_size = P
    model_id = "fake"

    def __init__(self, noise: float = 0.3) -> None:
        self.noise, self.kinds = noise, []

    def patch_features(self, image: np.ndarray, kind: str = "tokens") -> PatchFeatures:
        self.kinds.append(kind)
        h, w = image.shape[:2]
        gh, gw = h // P, w // P
        cls = image[P // 2::P, P // 2::P, 0][:gh, :gw] // 64
        rng = np.random.default_rng(int(image[..., 1].sum()) % 997)
        feats = PROTOS[cls] + self.noise * rng.standard_normal((gh, gw, PROTOS.shape[1]))
        return PatchFeatures(feats.astype(np.float32), P, (gh * P, gw * P), (h, w), "fake")


class NoKind(FakeFeatures):
    def patch_features(self, image: np.ndarray) -> PatchFeatures:  # type: ignore[override]
        return super().patch_features(image)


def _planted(classes=(0, 1, 2), h: int = 96, w: int = 160, shade: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """A non-square image of three rectangles (class c: red level 64 c + 20), and its class map."""
    gt = np.zeros((h, w), np.int64)
    gt[:, 64:] = 1
    gt[48:, 64:] = 2
    cmap = np.asarray(classes)[gt]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = cmap * 64 + 20
    img[..., 1] = shade
    img[..., 2] = 90
    return img, cmap


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_partition_recovers_planted_regions():
    img, gt = _planted()
    ext = FakeFeatures()
    method = DeepSpectral(ext)
    assert isinstance(method, DiscoveryMethod) and method.kind == "partition"
    out = method.discover(img, objects=3)
    assert ext.kinds == ["keys"]  # keys asked for when the extractor takes kind
    assert len(out) == 3 and out.image_size == img.shape[:2]
    assert out.masks.sum(0).min() == 1 and out.masks.sum(0).max() == 1
    assert out.labels.tolist() == [0, 1, 2] and out.data["feature"].shape == (3, 16)
    for c in range(3):
        assert max(_iou(m, gt == c) for m in out.masks) > 0.9
    assert (out.scores > 0.5).all() and (out.scores <= 1).all()
    again = DeepSpectral(FakeFeatures()).discover(img, objects=3)
    assert np.array_equal(again.masks, out.masks)  # deterministic
    assert len(method.discover(img)) <= 8  # the default


def test_extractor_without_kind_and_without_colour_term():
    img, gt = _planted()
    out = DeepSpectral(NoKind(), color_lambda=0).discover(img, objects=3)
    for c in range(3):
        assert max(_iou(m, gt == c) for m in out.masks) > 0.9


def test_structureless_features_score_low():
    class Same(FakeFeatures):
        def patch_features(self, image, kind="tokens"):
            h, w = image.shape[:2]
            f = np.ones((h // P, w // P, 16), np.float32)
            return PatchFeatures(f, P, (h // P * P, w // P * P), (h, w), "same")

    class Noise(FakeFeatures):
        def patch_features(self, image, kind="tokens"):
            h, w = image.shape[:2]
            f = np.random.default_rng(0).standard_normal((h // P, w // P, 16)).astype(np.float32)
            return PatchFeatures(f, P, (h // P * P, w // P * P), (h, w), "noise")

    flat = np.full((96, 160, 3), 120, np.uint8)
    for ext in (Same(), Noise()):
        out = DeepSpectral(ext).discover(flat, objects=4)
        assert out.masks.sum(0).min() == 1 and (out.scores < 0.2).all()


def test_large_grid_is_sparse_and_bounded():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((3000, 8)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    W = feature_affinity(f, max_dense=1000, top_k=16)
    assert W.shape == (3000, 3000) and W.nnz <= 3000 * 16 * 2 and abs(W - W.T).max() < 1e-6
    img, gt = _planted(h=320, w=448)  # a 40x56 grid: 2240 cells, above max_dense
    out = DeepSpectral(FakeFeatures(), max_dense=512, top_k=32).discover(img, objects=3)
    for c in range(3):
        assert max(_iou(m, gt == c) for m in out.masks) > 0.9


def test_cluster_segments_groups_planted_classes_across_images():
    results, truths = [], []
    for i, classes in enumerate([(0, 1, 2), (1, 2, 3), (3, 0, 1)]):
        img, gt = _planted(classes, shade=100 + i)
        results.append(DeepSpectral(FakeFeatures()).discover(img, objects=3))
        truths.append(gt)
    out = cluster_segments(results, k=4)
    assert len(out) == 3
    seen: dict[int, int] = {}  # true class -> cluster id, the same in every image
    for masks, gt in zip(out, truths):
        assert masks.masks.sum(0).min() == 1 and masks.masks.sum(0).max() == 1
        assert set(masks.labels.tolist()) <= set(range(4))
        for m, label in zip(masks.masks, masks.labels):
            true = int(np.bincount(gt[m]).argmax())
            assert seen.setdefault(true, int(label)) == int(label)
    assert len(set(seen.values())) == 4
    merged = cluster_segments(results, k=1)
    assert all(len(m) == 1 and m.masks[0].all() for m in merged)  # one cluster: each image one segment


def test_kmeans_is_deterministic():
    X = np.concatenate([np.zeros((10, 2)), np.ones((10, 2)) * 5])
    a, _ = kmeans(X, 2, seed=3)
    b, _ = kmeans(X, 2, seed=3)
    assert np.array_equal(a, b) and len(set(a[:10])) == 1 and a[0] != a[-1]


def test_errors_are_one_line():
    img, _ = _planted()
    seg = DeepSpectral(FakeFeatures()).discover(img, objects=2)
    bad = [(lambda: cluster_segments([Masks(seg.masks)], 2), "no data\\['feature'\\]"),
           (lambda: cluster_segments([seg], 0), "k \\(the number of clusters\\)"),
           (lambda: cluster_segments([seg], 5), "only 2 segments"),
           (lambda: DeepSpectral(FakeFeatures(), eigenvectors=1), "eigenvectors"),
           (lambda: DeepSpectral(FakeFeatures(), color_lambda=-1), "color_lambda"),
           (lambda: DeepSpectral(FakeFeatures()).discover(img[:12, :12]), "too small"),
           (lambda: DeepSpectral(FakeFeatures()).discover(img, objects=100), "--objects"),
           (lambda: DeepSpectral.from_options(bogus=1), "unknown spectral option")]
    for call, match in bad:
        with pytest.raises(InputError, match=match) as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(ModelError) as e:  # no feature model present: load_features' one-line error
        DeepSpectral.from_options(allow_download=False)
    assert "\n" not in str(e.value)


def test_features_helper_falls_back():
    img, _ = _planted()
    assert _features(NoKind(), img).grid == (12, 20)
    ext = FakeFeatures()
    _features(ext, img)
    assert ext.kinds == ["keys"]

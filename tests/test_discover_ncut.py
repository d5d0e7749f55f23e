"""The normalised-cut core (anyseg.discover.ncut) against a dense generalised eigendecomposition.

The graph is TokenCut's (``W_ij = 1`` if ``cos > tau`` else ``eps``, diagonal included), built
densely here the way the reference builds it; the core must give the same second smallest
eigenpair of ``(D - W) x = lambda D x`` (up to sign) without a dense ``N x N`` matrix for large
``N``, split two planted clusters, stay within a memory bound at 4800 cells, and handle the
degenerate graphs (all features equal, two cells) with a clear result.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy.linalg import eigh

from anyseg.discover.ncut import (MAX_CELLS, affinity, bipartition, density, ncut_value, second_eigenvector)
from anyseg.errors import InputError


def _reference_w(feats: np.ndarray, tau: float, eps: float = 1e-5, active: np.ndarray | None = None) -> np.ndarray:
    """TokenCut's dense ``W`` (object_discovery.py ``ncut``): binary ``cos > tau``, ``eps`` elsewhere."""
    f = np.asarray(feats, np.float64).reshape(-1, feats.shape[-1]).copy()
    if active is not None:
        f[~active] = 0.0  # MaskCut zeroes the features of taken cells
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    f = f / np.maximum(norm, 1e-12)
    a = (f @ f.T) > tau
    return np.where(a, 1.0, eps)


def _reference_pair(w: np.ndarray) -> tuple[float, np.ndarray]:
    d = np.diag(w.sum(axis=1))
    vals, vecs = eigh(d - w, d)  # the reference asks for subset_by_index=[1, 2]: the same pair
    return float(vals[1]), vecs[:, 1]


def _clusters(n: int, c: int, k: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.linalg.qr(rng.normal(size=(c, c)))[0][:k]
    labels = np.arange(n) % k
    return (centers[labels] + noise / np.sqrt(c) * rng.normal(size=(n, c))).astype(np.float32), labels


@pytest.mark.parametrize("n,c,seed", [(30, 6, 0), (120, 8, 1), (300, 12, 2)])
@pytest.mark.parametrize("method,storage", [("dense", "auto"), ("sparse", "bits"), ("sparse", "csr")])
def test_eigenpair_matches_the_dense_generalised_problem(n, c, seed, method, storage):
    feats = np.random.default_rng(seed).normal(size=(n, c)).astype(np.float32)
    w = _reference_w(feats, 0.2)
    value, vector = _reference_pair(w)
    aff = affinity(feats, tau=0.2, storage=storage)
    assert (aff.csr is not None) == (storage == "csr")
    np.testing.assert_allclose(aff.degree, w.sum(axis=1), rtol=1e-12)
    x = np.random.default_rng(seed + 10).normal(size=n)
    np.testing.assert_allclose(aff.matvec(x), w @ x, rtol=1e-9, atol=1e-9)
    eig = second_eigenvector(aff, method=method)
    assert not eig.degenerate
    assert eig.value == pytest.approx(value, rel=1e-7, abs=1e-9)
    sign = np.sign(eig.vector @ vector)
    np.testing.assert_allclose(sign * eig.vector, vector, atol=1e-6)
    assert float(eig.vector @ (w.sum(axis=1) * eig.vector)) == pytest.approx(1.0, rel=1e-6)  # x^T D x = 1


def test_masked_cells_weigh_eps_everywhere():
    """MaskCut's masking: a taken cell's features are zeroed, so its row and column (diagonal too) are eps."""
    feats, _ = _clusters(80, 8, 3, 0.2)
    active = np.ones(80, bool)
    active[::7] = False
    w = _reference_w(feats, 0.15, active=active)
    assert np.all(w[~active] == 1e-5) and np.all(w[:, ~active] == 1e-5)
    aff = affinity(feats, tau=0.15, active=active)
    np.testing.assert_allclose(aff.dense(), w)
    np.testing.assert_array_equal(aff.loops, active)
    value, vector = _reference_pair(w)
    eig = second_eigenvector(aff, method="sparse")
    assert eig.value == pytest.approx(value, rel=1e-7, abs=1e-9)
    np.testing.assert_allclose(np.sign(eig.vector @ vector) * eig.vector, vector, atol=1e-6)


def test_two_clusters_are_split_exactly():
    feats, labels = _clusters(200, 16, 2, 0.1, seed=3)
    aff = affinity(feats, tau=0.2)
    eig = second_eigenvector(aff)
    side = bipartition(eig.vector)
    assert np.array_equal(side, labels == 1) or np.array_equal(side, labels == 0)
    assert eig.value < 1e-3  # the clusters touch only through eps
    assert ncut_value(aff, side) < 1e-3
    assert density(aff, side) == 1.0 and density(aff, labels >= 0) == pytest.approx(99 / 199, abs=0.01)
    assert bipartition(eig.vector, mode="zero").sum() == 100


def test_4800_cells_stay_memory_bounded():
    """ViT-S/8 keys at 480x640: 4800 cells of 384 channels; the dense W alone would be 184 MB."""
    dense_bytes = 4800 * 4800 * 8
    feats, labels = _clusters(4800, 384, 2, 0.5, seed=4)  # half the pairs similar: the bits are used
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        aff = affinity(feats, tau=0.2)
        _, build_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        eig = second_eigenvector(aff)
        _, solve_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert aff.bits is not None and aff.nbytes == 4800 * 600  # N^2 / 8 bytes
    assert build_peak < dense_bytes / 6 and solve_peak < dense_bytes / 6, (build_peak, solve_peak)
    side = bipartition(eig.vector)
    assert np.array_equal(side, labels == 1) or np.array_equal(side, labels == 0)


def test_the_cap_and_bad_input_are_one_line_errors():
    with pytest.raises(InputError, match="cap of 100") as e:
        affinity(np.ones((101, 4)), max_cells=100)
    assert "\n" not in str(e.value)
    assert MAX_CELLS >= 4800
    with pytest.raises(InputError, match="at least 2 cells"):
        affinity(np.ones((1, 4)))
    with pytest.raises(InputError, match="tau"):
        affinity(np.ones((4, 4)), tau=1.0)
    with pytest.raises(InputError, match="eps"):
        affinity(np.ones((4, 4)), eps=0.0)
    with pytest.raises(InputError, match="NaN"):
        affinity(np.full((4, 4), np.nan))
    with pytest.raises(InputError, match="shape"):
        affinity(np.ones(5))
    with pytest.raises(InputError, match="mode"):
        bipartition(np.ones(3), mode="median")


def test_degenerate_graphs_give_a_clear_result():
    same = affinity(np.ones((50, 8)), tau=0.2)
    assert same.complete
    eig = second_eigenvector(same)
    assert eig.degenerate and eig.value == 1.0 and not eig.vector.any()
    assert not bipartition(eig.vector).any()  # no side: nothing to cut
    assert ncut_value(same, np.arange(50) < 10) == pytest.approx(1.0)  # every cut of a complete graph
    apart = affinity(np.array([[1.0, 0.0], [0.0, 1.0]]), tau=0.2)  # two dissimilar cells
    eig = second_eigenvector(apart)
    assert not eig.degenerate and eig.value == pytest.approx(2e-5 / (1 + 1e-5))
    assert bipartition(eig.vector).sum() == 1 and ncut_value(apart, bipartition(eig.vector)) < 1e-4
    alike = affinity(np.array([[1.0, 0.0], [1.0, 0.1]]), tau=0.2)
    assert second_eigenvector(alike).degenerate
    assert ncut_value(apart, np.zeros(2, bool)) == 1.0 and density(apart, np.array([True, False])) == 0.0

"""The normalised-cut core of TokenCut and MaskCut: a thresholded cosine graph and its Fiedler vector.

Follows TokenCut (Wang et al., CVPR 2022; ``object_discovery.py`` ``ncut`` of
YangtaoWANG95/TokenCut) and MaskCut (``maskcut.py`` ``get_affinity_matrix`` /
``second_smallest_eigenvector`` of facebookresearch/CutLER):

* rows are L2-normalised (a zero row stays zero, as ``F.normalize`` leaves it), and
  ``W_ij = 1`` where ``cos(f_i, f_j) > tau`` else ``eps``. The diagonal is included as the
  reference has it (``cos(f_i, f_i) = 1 > tau``: ``W_ii = 1``; a zero row, which MaskCut uses
  for cells already taken by an object, has ``W_ii = eps``). So, exactly,
  ``W = (1 - eps) B + eps 1 1^T`` with ``B = [cos > tau]`` binary: the ``eps`` background is a
  rank-one term that is never stored.
* ``D = diag(W 1)``; the second smallest solution of ``(D - W) x = lambda D x``, normalised as
  ``scipy.linalg.eigh`` normalises it (``x^T D x = 1``), sign arbitrary.

Where it differs (memory): the reference builds the dense ``N x N`` float matrix and calls
dense ``eigh``. Here ``B`` is built in row blocks of the cosine matrix (each block at most
:data:`BLOCK_BYTES`) and stored as a CSR matrix of its ones when it is sparse, else bit-packed
(``N^2 / 8`` bytes whatever the image: a uniform image makes every pair similar, where CSR would
be as large as the dense matrix). For ``N > DENSE_MAX`` the problem is solved as the largest
eigenpairs of ``D^-1/2 W D^-1/2`` with ``scipy.sparse.linalg.eigsh`` on a ``LinearOperator``
(``x = D^-1/2 y``, ``lambda = 1 - mu``; the trivial top pair deflated); ``B x`` is a CSR
product or a byte-table look-up on the packed bits. Small graphs use dense ``eigh``. Graphs
above ``max_cells`` (:data:`MAX_CELLS`) are refused, so memory is bounded: for ViT-S/8 keys
at 480x640 (4800 cells, 384 channels; measured with ``tracemalloc``) ``B`` takes 2.75 MiB as
bits (half the pairs similar, or all of them), the build peaks at 22 MiB (the 7 MiB input's
normalised copy and one 8 MiB cosine block) and the solve at 32 MiB (1.3 s), against 176 MiB
for the reference's dense float64 ``W`` alone (its ``D`` and ``D - W`` are as large again).

>>> aff = affinity(features, tau=0.2)          # (N, C) or (gh, gw, C)
>>> eig = second_eigenvector(aff)             # Eigen(value, vector)
>>> fg = bipartition(eig.vector)              # vector > its mean
>>> ncut_value(aff, fg)                       # the normalised cut of that bipartition, in [0, 2]
>>> density(aff, fg)                          # the fraction of similar pairs inside it, in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anyseg.errors import InputError, ModelError

__all__ = ["Affinity", "Eigen", "affinity", "second_eigenvector", "bipartition", "ncut_value", "density", "MAX_CELLS",
           "DENSE_MAX", "DENSE_LIMIT", "BLOCK_BYTES", "MODES", "STORAGES"]

#: graphs with more cells than this are refused (bits: 32 MiB; one solve: a few seconds on a CPU)
MAX_CELLS = 16384
#: at most this many cells, ``auto`` solves densely (measured: ``eigsh`` is already faster at 256
#: cells, 0.09 s against 0.2 s at 1024); ``dense`` is allowed up to :data:`DENSE_LIMIT` (32 MiB)
DENSE_MAX = 256
DENSE_LIMIT = 2048
#: the cosine row block built at once (float32)
BLOCK_BYTES = 8 << 20
#: how :func:`bipartition` splits the eigenvector
MODES = ("mean", "zero")
#: how :func:`affinity` stores ``B``
STORAGES = ("auto", "csr", "bits")
#: ``(256, 8)`` float64: the bits of every byte, most significant first (``np.packbits``' order)
_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float64)


@dataclass(frozen=True, eq=False)
class Affinity:
    """``W = (1 - eps) B + eps 1 1^T`` over ``n`` cells, ``B`` the binary ``cos > tau`` graph.

    Attributes:
        n: number of cells.
        tau, eps: the threshold and the background weight.
        degree: ``(n,)`` float64, ``W 1``.
        nnz: number of ones in ``B``.
        csr: ``B`` as a float32 CSR matrix (sparse graphs), else ``None``.
        bits: ``B`` as ``(n, ceil(n / 8))`` uint8 packed rows (dense graphs), else ``None``.
        loops: ``(n,)`` bool, ``B_ii`` (false for zero rows: MaskCut's taken cells).
    """

    n: int
    tau: float
    eps: float
    degree: np.ndarray
    nnz: int
    csr: Any = None
    bits: np.ndarray | None = None
    loops: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes that hold ``B`` (CSR arrays or packed bits)."""
        if self.csr is not None:
            return int(self.csr.data.nbytes + self.csr.indices.nbytes + self.csr.indptr.nbytes)
        return int(self.bits.nbytes) if self.bits is not None else 0

    @property
    def complete(self) -> bool:
        """Every pair is similar (``B`` all ones: ``W = 1 1^T``): the graph has no structure to cut."""
        return self.nnz == self.n * self.n

    def binary_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of ``B`` as a bool array."""
        if self.csr is not None:
            return self.csr[start:stop].toarray() > 0
        return np.unpackbits(self.bits[start:stop], axis=1, count=self.n).astype(bool)

    def _bits_matvec(self, x: np.ndarray) -> np.ndarray:
        """``B x`` from the packed bits by table look-up: each byte of a row (8 columns) indexes a
        256-entry table of the partial sums of those 8 entries of ``x`` (``n^2 / 8`` gathers)."""
        groups = self.bits.shape[1]
        padded = np.zeros(groups * 8)
        padded[:self.n] = x
        table = (_BYTE_BITS @ padded.reshape(groups, 8).T).T.reshape(-1)  # (groups * 256,), group-major
        offsets = np.arange(groups, dtype=np.int32) * 256
        out = np.empty(self.n)
        step = max(1, min(self.n, BLOCK_BYTES // (8 * groups)))
        for start in range(0, self.n, step):
            idx = self.bits[start:start + step].astype(np.int32)
            idx += offsets
            out[start:start + step] = table[idx].sum(axis=1)
        return out

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """``W x`` for a ``(n,)`` vector (float64), without forming ``W``."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        bx = self.csr @ x if self.csr is not None else self._bits_matvec(x)
        return (1.0 - self.eps) * bx + self.eps * float(x.sum())

    def dense(self) -> np.ndarray:
        """``W`` as a dense ``(n, n)`` float64 array (only for ``n <= DENSE_LIMIT``: bounded)."""
        if self.n > DENSE_LIMIT:
            raise InputError(f"a dense affinity of {self.n} cells is refused (at most {DENSE_LIMIT})")
        b = self.binary_rows(0, self.n).astype(np.float64)
        return (1.0 - self.eps) * b + self.eps


@dataclass(frozen=True)
class Eigen:
    """The second smallest generalised eigenpair of ``(D - W) x = lambda D x``.

    ``vector`` is ``(n,)`` float64 with ``x^T D x = 1`` (sign arbitrary). A complete graph
    (:attr:`Affinity.complete`) has no second eigenvector worth the name: ``value`` is 1,
    ``vector`` all zeros and ``degenerate`` true.
    """

    value: float
    vector: np.ndarray
    degenerate: bool = False


def _check_params(tau: Any, eps: Any) -> tuple[float, float]:
    for name, v in (("tau", tau), ("eps", eps)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
            raise InputError(f"{name} must be a number; got {v!r}")
    if not 0.0 <= float(tau) < 1.0:  # tau >= 0: a zero row (a taken cell) is similar to nothing
        raise InputError(f"tau must be in [0, 1) (a cosine threshold); got {tau!r}")
    if not 0.0 < float(eps) < 1.0:
        raise InputError(f"eps must be in (0, 1) (the weight of dissimilar pairs); got {eps!r}")
    return float(tau), float(eps)


def _rows_of(features: Any, active: Any, max_cells: int) -> np.ndarray:
    feats = np.asarray(features)
    if feats.ndim == 3:
        feats = feats.reshape(-1, feats.shape[-1])
    if feats.ndim != 2 or feats.shape[1] < 1 or feats.dtype.kind not in "iuf":
        raise InputError(f"features must be a numeric (N, C) or (gh, gw, C) array; got shape {feats.shape}")
    n = feats.shape[0]
    if n < 2:
        raise InputError(f"a normalised cut needs at least 2 cells; got {n}")
    if n > max_cells:
        raise InputError(f"{n} cells are more than the normalised cut's cap of {max_cells} (lower the feature "
                         "size or max_cells)")
    feats = feats.astype(np.float32)
    if not np.all(np.isfinite(feats)):
        raise InputError("features contain NaN or infinite values")
    norm = np.linalg.norm(feats, axis=1, keepdims=True)
    feats /= np.maximum(norm, 1e-12)
    if active is not None:
        keep = np.asarray(active, dtype=bool).reshape(-1)
        if keep.shape != (n,):
            raise InputError(f"active must have one entry per cell ({n}); got {keep.shape}")
        feats[~keep] = 0.0  # MaskCut: a taken cell's features are zeroed, so all its weights are eps
    return feats


def affinity(features: Any, tau: float = 0.2, eps: float = 1e-5, active: Any = None,
             max_cells: int = MAX_CELLS, storage: str = "auto") -> Affinity:
    """The TokenCut graph of ``features`` (``(N, C)`` or ``(gh, gw, C)``), memory-bounded.

    Args:
        tau: cosine threshold: ``B_ij = cos(f_i, f_j) > tau``.
        eps: weight of the pairs below the threshold.
        active: optional ``(N,)`` bool; inactive cells get zero features (MaskCut's masking):
            weight ``eps`` to every cell, themselves included.
        max_cells: larger graphs are a one-line :class:`InputError`.
        storage: ``auto`` (CSR when that is smaller than the bits, i.e. under 1/64 of the pairs
            similar), ``csr`` or ``bits``.
    """
    tau, eps = _check_params(tau, eps)
    if storage not in STORAGES:
        raise InputError(f"storage must be one of {', '.join(STORAGES)}; got {storage!r}")
    feats = _rows_of(features, active, int(max_cells))
    n = feats.shape[0]
    bits = np.empty((n, (n + 7) // 8), np.uint8)
    count = np.empty(n, np.int64)
    loops = np.empty(n, bool)
    step = max(1, min(n, BLOCK_BYTES // (4 * n)))
    for start in range(0, n, step):
        block = (feats[start:start + step] @ feats.T) > tau
        count[start:start + step] = block.sum(axis=1)
        rows = np.arange(block.shape[0])
        loops[start:start + step] = block[rows, start + rows]
        bits[start:start + step] = np.packbits(block, axis=1)
    nnz = int(count.sum())
    degree = (1.0 - eps) * count.astype(np.float64) + eps * n
    if storage == "csr" or (storage == "auto" and nnz * 8 < bits.nbytes):  # CSR (4-byte data + 4-byte index per one) is smaller than the bits
        return Affinity(n, tau, eps, degree, nnz, csr=_csr_of(bits, count, n), loops=loops)
    return Affinity(n, tau, eps, degree, nnz, bits=bits, loops=loops)


def _csr_of(bits: np.ndarray, count: np.ndarray, n: int) -> Any:
    import scipy.sparse as sp

    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(count, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), np.int32)
    step = max(1, min(n, BLOCK_BYTES // max(n, 1)))
    for start in range(0, n, step):
        rows = np.unpackbits(bits[start:start + step], axis=1, count=n)
        _, cols = np.nonzero(rows)  # row-major: the columns of each row, in order
        indices[indptr[start]:indptr[min(start + step, n)]] = cols
    data = np.ones(indices.shape[0], np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(n, n))


def _dense_solve(aff: Affinity) -> tuple[float, np.ndarray]:
    from scipy.linalg import eigh

    s = 1.0 / np.sqrt(aff.degree)
    m = aff.dense()
    m *= s[:, None]
    m *= s[None, :]
    vals, vecs = eigh(m)  # the full decomposition: subset drivers (evx) can return nothing on clustered spectra
    return 1.0 - float(vals[-2]), s * vecs[:, -2]


def _sparse_solve(aff: Affinity) -> tuple[float, np.ndarray]:
    """``eigsh`` on ``M = D^-1/2 W D^-1/2`` with its known top pair (1, ``D^1/2 1``) deflated to -1,
    so that the largest eigenvalue left is the one wanted (3x fewer products than asking for two)."""
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh

    s = 1.0 / np.sqrt(aff.degree)
    top = np.sqrt(aff.degree)
    top /= np.linalg.norm(top)

    def product(y: np.ndarray) -> np.ndarray:
        y = np.ravel(y)
        return s * aff.matvec(s * y) - 2.0 * top * float(top @ y)

    op = LinearOperator((aff.n, aff.n), matvec=product, dtype=np.float64)
    v0 = np.random.default_rng(0).random(aff.n) + 0.5  # deterministic start (ARPACK's is random)
    try:
        vals, vecs = eigsh(op, k=1, which="LA", v0=v0, tol=1e-10, maxiter=max(1000, 20 * aff.n))
    except ArpackNoConvergence as e:
        if e.eigenvalues is None or len(e.eigenvalues) < 1:
            raise ModelError(f"the normalised cut of {aff.n} cells did not converge") from None
        vals, vecs = e.eigenvalues, e.eigenvectors
    except ArpackError as e:
        raise ModelError(f"the normalised cut of {aff.n} cells failed: {str(e).splitlines()[0]}") from None
    return 1.0 - float(vals[0]), s * vecs[:, 0]


def second_eigenvector(aff: Affinity, method: str = "auto") -> Eigen:
    """The second smallest eigenpair of ``(D - W) x = lambda D x`` (TokenCut's Fiedler vector).

    ``method``: ``auto`` (dense ``eigh`` up to :data:`DENSE_MAX` cells, else ``eigsh``),
    ``dense`` or ``sparse``. The vector has ``x^T D x = 1`` and a deterministic but arbitrary
    sign; a complete graph gives the degenerate :class:`Eigen` (value 1, zero vector).
    """
    if method not in ("auto", "dense", "sparse"):
        raise InputError(f"method must be auto, dense or sparse; got {method!r}")
    if aff.complete:
        return Eigen(1.0, np.zeros(aff.n), degenerate=True)
    dense = method == "dense" or (method == "auto" and aff.n <= DENSE_MAX) or aff.n < 3  # ARPACK: k < n
    value, vec = _dense_solve(aff) if dense else _sparse_solve(aff)
    return Eigen(float(np.clip(value, 0.0, 2.0)), np.asarray(vec, np.float64))


def bipartition(vec: Any, mode: str = "mean") -> np.ndarray:
    """``(n,)`` bool: the cells on the positive side of the cut (TokenCut: ``vec > mean(vec)``).

    ``mode``: ``mean`` (the reference's split) or ``zero`` (``vec > 0``). A constant vector
    (the degenerate eigenvector) puts every cell on the negative side.
    """
    if mode not in MODES:
        raise InputError(f"bipartition mode must be one of {', '.join(MODES)}; got {mode!r}")
    v = np.asarray(vec, dtype=np.float64).reshape(-1)
    threshold = float(v.mean()) if mode == "mean" else 0.0
    if v.size and np.ptp(v) <= 1e-12 * max(1.0, float(np.abs(v).max())):
        return np.zeros(v.shape, bool)
    return v > threshold


def ncut_value(aff: Affinity, part: Any) -> float:
    """Shi & Malik's ``Ncut(A, B) = cut / vol(A) + cut / vol(B)`` of the bipartition ``part`` (``A``).

    In ``[0, 2]``: near 0 for a cut between two groups that are not similar to each other; 1
    for any cut of a structureless (complete) graph. An empty side separates nothing: 1.
    """
    a = np.asarray(part, dtype=bool).reshape(-1)
    if a.shape != (aff.n,):
        raise InputError(f"the bipartition must have {aff.n} cells; got {a.shape}")
    if not a.any() or a.all():
        return 1.0
    vol_a = float(aff.degree[a].sum())
    vol_b = float(aff.degree[~a].sum())
    inside = float(aff.matvec(a.astype(np.float64))[a].sum())  # 1_A^T W 1_A
    cut = max(vol_a - inside, 0.0)
    return float(np.clip(cut / vol_a + cut / vol_b, 0.0, 2.0))


def density(aff: Affinity, part: Any) -> float:
    """The fraction of the pairs of distinct cells of ``part`` that are similar (``B_ij = 1``), in ``[0, 1]``.

    1 for a group whose features are all alike, near 0 for cells that are similar to nothing
    (random high-dimensional features, where a low ``Ncut`` only says that nothing is
    connected). Fewer than two cells: 0.
    """
    a = np.asarray(part, dtype=bool).reshape(-1)
    if a.shape != (aff.n,):
        raise InputError(f"the part must have {aff.n} cells; got {a.shape}")
    k = int(a.sum())
    if k < 2:
        return 0.0
    inside = float(aff.matvec(a.astype(np.float64))[a].sum())  # (1 - eps) 1^T B 1 + eps k^2 over the part
    ones = (inside - aff.eps * k * k) / (1.0 - aff.eps)
    diagonal = float(aff.loops[a].sum()) if aff.loops is not None else float(k)
    return float(np.clip((ones - diagonal) / (k * (k - 1)), 0.0, 1.0))

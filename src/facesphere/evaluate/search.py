"""Top-k inner-product search of query vectors against a gallery: numpy brute force or FAISS.

Used for 1:N identification with large galleries (a million distractors fit in memory: 1M x 512 float32 = 2 GB).
Vectors are compared by inner product, which is the cosine when both sides are L2-normalised (``normalize=True``
does that here).

Methods:

* ``"numpy"`` — exact brute force, ``batch`` queries at a time (``queries @ gallery.T`` then a partial sort);
  ties are ordered by gallery index. Always available.
* ``"flat"`` — FAISS ``IndexFlatIP``: exact, with FAISS's fused top-k selection (faster than numpy's partial sort
  on large galleries).
* ``"ivf"`` — FAISS ``IndexIVFFlat`` (inner product): approximate; ``nlist`` inverted lists trained by k-means on the
  gallery, ``nprobe`` lists visited per query.
* ``"hnsw"`` — FAISS ``IndexHNSWFlat`` (inner product): approximate graph search; ``hnsw_m`` links per node,
  ``ef_search`` / ``ef_construction`` beam widths.
* ``"auto"`` — ``"flat"`` when FAISS is installed and the gallery has at least :data:`AUTO_FAISS_MIN_GALLERY`
  vectors, else ``"numpy"``.

FAISS is optional (``pip install "facesphere[faiss]"``) and imported only when a FAISS method is used.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import FaceSphereError, InvalidOptionError, UnknownNameError

SEARCH_METHODS = ("auto", "numpy", "flat", "ivf", "hnsw")
#: Galleries at least this large use FAISS (when installed) under ``method="auto"``.
AUTO_FAISS_MIN_GALLERY = 20_000
#: About this many similarities are held in memory per numpy batch (float32: 4 bytes each).
_NUMPY_BLOCK = 1 << 24

__all__ = ["SEARCH_METHODS", "AUTO_FAISS_MIN_GALLERY", "SearchIndex", "search_topk", "faiss_available"]


def faiss_available() -> bool:
    """Whether the optional ``faiss`` package can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _import_faiss(method: str) -> Any:
    try:
        import faiss
    except ImportError:
        raise FaceSphereError(
            f'search method {method!r} needs FAISS, which is not installed: pip install "facesphere[faiss]" '
            "(or use method='numpy', exact brute force)"
        ) from None
    return faiss


def _as_vectors(values: Any, name: str, normalize: bool) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidOptionError(f"{name} must be a non-empty 2-D array (N, D), got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise InvalidOptionError(f"{name} must hold numbers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InvalidOptionError(f"{name} contains NaN or infinite values")
    if normalize:
        norms = np.sqrt(np.einsum("ij,ij->i", arr, arr))
        arr = arr / np.where(norms > 0, norms, 1.0).astype(np.float32)[:, None]
    return arr


class SearchIndex:
    """A gallery ``(N, D)`` prepared for top-k inner-product search (see the module docstring for ``method``).

    Args:
        gallery: ``(N, D)`` vectors (any float dtype; stored as float32).
        method: one of :data:`SEARCH_METHODS`.
        normalize: L2-normalise gallery and queries (inner product = cosine).
        nlist: IVF lists (default ``clip(4·sqrt(N), 1, N // 39)``, FAISS's minimum of 39 training points per list).
        nprobe: IVF lists visited per query (default ``min(nlist, 32)``).
        hnsw_m, ef_construction, ef_search: HNSW graph degree and beam widths.
        threads: FAISS OpenMP threads (``None``: FAISS's default).
    """

    def __init__(self, gallery: Any, *, method: str = "auto", normalize: bool = True, nlist: int | None = None,
                 nprobe: int | None = None, hnsw_m: int = 32, ef_construction: int = 200, ef_search: int = 128,
                 threads: int | None = None) -> None:
        if method not in SEARCH_METHODS:
            raise UnknownNameError(f"unknown search method {method!r}; valid: {', '.join(SEARCH_METHODS)}")
        self.normalize = bool(normalize)
        self.gallery = _as_vectors(gallery, "gallery", self.normalize)
        n, d = self.gallery.shape
        if method == "auto":
            method = "flat" if n >= AUTO_FAISS_MIN_GALLERY and faiss_available() else "numpy"
        self.method = method
        self.index: Any = None
        if method == "numpy":
            return
        faiss = _import_faiss(method)
        if threads is not None:
            faiss.omp_set_num_threads(int(threads))
        if method == "flat":
            index = faiss.IndexFlatIP(d)
        elif method == "ivf":
            lists = nlist if nlist is not None else int(np.clip(round(4 * math.sqrt(n)), 1, max(1, n // 39)))
            if lists < 1 or lists > n:
                raise InvalidOptionError(f"nlist must be in [1, {n}] (the gallery size), got {lists}")
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, lists, faiss.METRIC_INNER_PRODUCT)
            index.train(self.gallery)
            index.nprobe = int(nprobe) if nprobe is not None else min(lists, 32)
            self._quantizer = quantizer  # keep the coarse quantiser alive as long as the index
        else:
            if hnsw_m < 2:
                raise InvalidOptionError(f"hnsw_m must be >= 2, got {hnsw_m}")
            index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(ef_construction)
            index.hnsw.efSearch = int(ef_search)
        index.add(self.gallery)
        self.index = index

    @property
    def size(self) -> int:
        """Number of gallery vectors N."""
        return int(self.gallery.shape[0])

    @property
    def dim(self) -> int:
        """Vector dimension D."""
        return int(self.gallery.shape[1])

    def search(self, queries: Any, k: int, *, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar gallery vectors of every query.

        Args:
            queries: ``(Q, D)``.
            k: neighbours per query; clipped to the gallery size.
            batch_size: queries per batch (default 1,024 for numpy, whose gallery is then taken in blocks of about
                16M similarities; 4,096 for FAISS).

        Returns:
            ``(scores, indices)``: float32 ``(Q, k')`` inner products, decreasing along each row, and int64
            ``(Q, k')`` gallery row indices, ``k' = min(k, N)``. Approximate methods may return fewer than ``k'``
            hits for a query; the missing slots hold score ``-inf`` and index ``-1``.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidOptionError(f"k must be a positive integer, got {k!r}")
        q = _as_vectors(queries, "queries", self.normalize)
        if q.shape[1] != self.dim:
            raise InvalidOptionError(f"queries have dimension {q.shape[1]}, the gallery {self.dim}")
        k = min(int(k), self.size)
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise InvalidOptionError(f"batch_size must be >= 1, got {batch_size!r}")
        scores = np.empty((q.shape[0], k), dtype=np.float32)
        indices = np.empty((q.shape[0], k), dtype=np.int64)
        if self.method == "numpy":
            # about _NUMPY_BLOCK similarities at a time: up to 1,024 queries x a gallery block, so a large gallery
            # is read once per query batch rather than once per few queries
            batch = int(batch_size) if batch_size is not None else min(q.shape[0], 1024)
            gallery_block = max(k, _NUMPY_BLOCK // max(1, min(batch, q.shape[0])))
            for start in range(0, q.shape[0], batch):
                stop = min(start + batch, q.shape[0])
                scores[start:stop], indices[start:stop] = _numpy_topk(q[start:stop], self.gallery, k, gallery_block)
            return scores, indices
        batch = int(batch_size) if batch_size is not None else 4096
        for start in range(0, q.shape[0], batch):
            stop = min(start + batch, q.shape[0])
            d, i = self.index.search(q[start:stop], k)
            scores[start:stop] = np.where(i >= 0, d, -np.inf)
            indices[start:stop] = i
        return scores, indices

    def __repr__(self) -> str:
        return f"SearchIndex({self.size} x {self.dim}, method={self.method!r})"


def _block_topk(sims: np.ndarray, offset: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of a similarity block (unsorted), with gallery indices ``offset + column``; ties at the
    k-th value are resolved towards the lowest index."""
    n = sims.shape[1]
    if k >= n:
        return sims, np.broadcast_to(np.arange(offset, offset + n), sims.shape)
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(sims, part, axis=1)
    kth = part_scores.min(axis=1)
    ties_outside = (sims == kth[:, None]).sum(axis=1) > (part_scores == kth[:, None]).sum(axis=1)
    for r in np.flatnonzero(ties_outside):  # rare with real-valued scores
        above = np.flatnonzero(sims[r] > kth[r])
        tied = np.flatnonzero(sims[r] == kth[r])[: k - above.size]
        part[r] = np.concatenate((above, tied))
        part_scores[r] = sims[r, part[r]]
    return part_scores, part + offset


def _select(scores: np.ndarray, index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best candidates sorted by score descending, then gallery index ascending."""
    by_index = np.argsort(index, axis=1, kind="stable")
    s = np.take_along_axis(scores, by_index, axis=1)
    order = np.take_along_axis(by_index, np.argsort(-s, axis=1, kind="stable"), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(index, order, axis=1)


def _numpy_topk(queries: np.ndarray, gallery: np.ndarray, k: int, gallery_block: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``queries @ gallery.T`` by rows, the gallery taken ``gallery_block`` rows at a time (each
    block's best k merged into a running top-k); ties ordered by gallery index."""
    best_s: np.ndarray | None = None
    best_i: np.ndarray | None = None
    for start in range(0, gallery.shape[0], gallery_block):
        sims = queries @ gallery[start:start + gallery_block].T
        s, i = _block_topk(sims, start, k)
        if best_s is not None:
            s, i = np.concatenate((best_s, s), axis=1), np.concatenate((best_i, i), axis=1)
        best_s, best_i = _select(s, i, k)
    return best_s.astype(np.float32, copy=False), best_i.astype(np.int64, copy=False)


def search_topk(gallery: Any, queries: Any, k: int, *, method: str = "auto", normalize: bool = True,
                batch_size: int | None = None, **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """One-shot :class:`SearchIndex` build + :meth:`SearchIndex.search`: ``(scores (Q, k'), indices (Q, k'))``."""
    return SearchIndex(gallery, method=method, normalize=normalize, **options).search(queries, k,
                                                                                       batch_size=batch_size)

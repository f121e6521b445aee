"""Top-k inner-product search: the one search engine of facesphere (the gallery and 1:N evaluation both use it).

Vectors are compared by inner product, which is the cosine when both sides are L2-normalised. Kinds:

* ``"numpy"`` — exact brute force (``queries @ vectors.T`` in blocks, then a partial sort); ties are ordered by
  position. Always available.
* ``"flat"`` — FAISS ``IndexFlatIP``: exact, with FAISS's fused top-k selection.
* ``"ivf"`` — FAISS ``IndexIVFFlat``: approximate; ``nlist`` inverted lists trained by k-means, ``nprobe`` lists
  visited per query.
* ``"hnsw"`` — FAISS ``IndexHNSWFlat``: approximate graph search; ``hnsw_m`` links per node, ``ef_search`` /
  ``ef_construction`` beam widths.

:class:`VectorIndex` holds vectors labelled by int64 ids and supports adding and removing them (the gallery's
in-memory index, serialisable for its cache file); :class:`SearchIndex` is a fixed gallery matrix searched once
(1:N evaluation with millions of distractors), labels = row numbers. FAISS is optional
(``pip install "facesphere[faiss]"``) and imported only when a FAISS kind is used.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ..errors import FaceSphereError, InvalidOptionError, UnknownNameError

INDEX_KINDS = ("numpy", "flat", "ivf", "hnsw")
SEARCH_METHODS = ("auto",) + INDEX_KINDS
#: Galleries at least this large use FAISS (when installed) under ``method="auto"`` in :class:`SearchIndex`.
AUTO_FAISS_MIN_GALLERY = 20_000
#: Default index options (``nlist`` None: :func:`ivf_lists`).
DEFAULT_INDEX_OPTIONS: dict[str, Any] = {"nlist": None, "nprobe": 16, "hnsw_m": 32, "ef_construction": 80,
                                         "ef_search": 128}
FAISS_HINT = 'install it with: pip install "facesphere[faiss]"'
#: About this many similarities are held in memory per numpy block (float32: 4 bytes each).
_NUMPY_BLOCK = 1 << 24
#: FAISS's k-means wants at least this many training points per IVF list.
_IVF_MIN_POINTS = 39
#: An IVF index is trained on at most this many points per list (FAISS would subsample to the same).
_IVF_MAX_POINTS = 256

__all__ = ["INDEX_KINDS", "SEARCH_METHODS", "AUTO_FAISS_MIN_GALLERY", "DEFAULT_INDEX_OPTIONS", "VectorIndex",
           "SearchIndex", "search_topk", "faiss_available", "import_faiss", "ivf_lists", "normalize_rows"]


def faiss_available() -> bool:
    """Whether the optional ``faiss`` package can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def import_faiss(purpose: str) -> Any:
    """The ``faiss`` module, or a :class:`FaceSphereError` saying what needed it and how to install it."""
    try:
        import faiss
    except ImportError:
        raise FaceSphereError(f"{purpose} needs FAISS, which is not installed; {FAISS_HINT}") from None
    return faiss


def ivf_lists(count: int, nlist: int | None = None) -> int:
    """IVF list count for ``count`` vectors: ``nlist`` or 4·√count, at most count / 39 (FAISS's minimum of training
    points per list), at least 1."""
    wanted = nlist if nlist else int(round(4 * math.sqrt(max(count, 1))))
    return max(1, min(int(wanted), count // _IVF_MIN_POINTS))


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit norm (zero rows left as they are)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.where(norms > 0, norms, 1.0).astype(np.float32)[:, None]


def _as_vectors(values: Any, name: str, normalize: bool) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidOptionError(f"{name} must be a non-empty 2-D array (N, D), got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise InvalidOptionError(f"{name} must hold numbers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InvalidOptionError(f"{name} contains NaN or infinite values")
    return normalize_rows(arr) if normalize else arr


# ----------------------------------------------------------------------------------------------------------------
# exact numpy top-k


def _block_topk(sims: np.ndarray, offset: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of a similarity block (unsorted), with positions ``offset + column``; ties at the k-th value
    are resolved towards the lowest position."""
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
    """Per row, the k best candidates sorted by score descending, then position ascending."""
    by_index = np.argsort(index, axis=1, kind="stable")
    s = np.take_along_axis(scores, by_index, axis=1)
    order = np.take_along_axis(by_index, np.argsort(-s, axis=1, kind="stable"), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(index, order, axis=1)


def numpy_topk(queries: np.ndarray, vectors: np.ndarray, k: int, batch_size: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``queries @ vectors.T``: float32 scores ``(Q, k)`` descending and int64 positions ``(Q, k)``
    (ties by position), ``k <= len(vectors)``. Up to ``batch_size`` queries (default 1,024) against blocks of about
    16M similarities, each block's best k merged into a running top-k."""
    n_q = queries.shape[0]
    scores = np.empty((n_q, k), dtype=np.float32)
    positions = np.empty((n_q, k), dtype=np.int64)
    batch = int(batch_size) if batch_size is not None else max(1, min(n_q, 1024))
    block = max(k, _NUMPY_BLOCK // max(1, min(batch, n_q)))
    for q_start in range(0, n_q, batch):
        q = queries[q_start:q_start + batch]
        best_s: np.ndarray | None = None
        best_i: np.ndarray | None = None
        for start in range(0, vectors.shape[0], block):
            s, i = _block_topk(q @ vectors[start:start + block].T, start, k)
            if best_s is not None:
                s, i = np.concatenate((best_s, s), axis=1), np.concatenate((best_i, i), axis=1)
            best_s, best_i = _select(s, i, k)
        scores[q_start:q_start + len(q)], positions[q_start:q_start + len(q)] = best_s, best_i
    return scores, positions


# ----------------------------------------------------------------------------------------------------------------
# the index


class VectorIndex:
    """Float32 vectors ``(N, D)`` labelled by int64 ids, searched by inner product (see the module docstring).

    Args:
        dim: D.
        kind: one of :data:`INDEX_KINDS`.
        options: ``nlist``, ``nprobe``, ``hnsw_m``, ``ef_construction``, ``ef_search`` (:data:`DEFAULT_INDEX_OPTIONS`).
        threads: FAISS OpenMP threads (``None``: FAISS's default).

    An IVF index is (re)trained when it is built and whenever the number of vectors has grown enough to want twice
    the lists; an HNSW graph cannot delete nodes, so a removal rebuilds it from the remaining vectors.
    """

    def __init__(self, dim: int, kind: str = "numpy", options: Mapping[str, Any] | None = None, *,
                 threads: int | None = None) -> None:
        if kind not in INDEX_KINDS:
            raise UnknownNameError(f"unknown index kind {kind!r}; valid: {', '.join(INDEX_KINDS)}")
        self.dim, self.kind = int(dim), kind
        self.options = {**DEFAULT_INDEX_OPTIONS, **dict(options or {})}
        self.nprobe = int(self.options["nprobe"])
        self.ef_search = int(self.options["ef_search"])
        self.faiss = None if kind == "numpy" else import_faiss(f"the {kind!r} search index")
        if self.faiss is not None and threads is not None:
            self.faiss.omp_set_num_threads(int(threads))
        self.index: Any = None  # the FAISS index (None while empty)
        self.nlist = 0
        self.trained_on = 0
        self._matrix = np.zeros((0, self.dim), dtype=np.float32)  # numpy kind
        self._ids = np.zeros(0, dtype=np.int64)

    # --- construction -------------------------------------------------------------------------------------------
    def _build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        faiss = self.faiss
        self.index, self.nlist, self.trained_on = None, 0, 0
        if len(ids) == 0:
            return
        if self.kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        elif self.kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(self.dim, int(self.options["hnsw_m"]), faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = int(self.options["ef_construction"])
            index = faiss.IndexIDMap2(hnsw)
        else:
            self.nlist = ivf_lists(len(ids), self.options["nlist"])
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
            quantizer.this.disown()
            index.own_fields = True
            sample = vectors
            if len(vectors) > _IVF_MAX_POINTS * self.nlist:  # FAISS's k-means would subsample: do it reproducibly
                rows = np.random.default_rng(0).choice(len(vectors), _IVF_MAX_POINTS * self.nlist, replace=False)
                sample = vectors[np.sort(rows)]
            index.train(np.ascontiguousarray(sample))
            index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct() and remove_ids() by id
            self.trained_on = len(ids)
        index.add_with_ids(np.ascontiguousarray(vectors), np.ascontiguousarray(ids, dtype=np.int64))
        self.index = index

    def load(self, payload: np.ndarray, header: Mapping[str, Any]) -> None:
        """Restore a FAISS index from :meth:`serialize`'s bytes (``header``: ``nlist``, ``trained_on``)."""
        if self.faiss is None:
            raise InvalidOptionError("a numpy index has no serialised form")
        self.index = self.faiss.deserialize_index(payload)
        self.nlist = int(header.get("nlist", 0))
        self.trained_on = int(header.get("trained_on", 0))

    def write(self, path: str) -> None:
        """Write the FAISS index to ``path`` (``faiss.write_index``; :meth:`load` reads its bytes back)."""
        self.faiss.write_index(self.index, path)

    # --- changes ------------------------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        if self.faiss is None:
            return int(self._ids.size)
        return 0 if self.index is None else int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add float32 ``vectors`` (N, D) under the int64 ``ids`` (N,) (new ids, larger than those held)."""
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.faiss is None:
            self._matrix = np.concatenate([self._matrix, vectors]) if len(self._matrix) else vectors.copy()
            self._ids = np.concatenate([self._ids, ids])
            return
        count = self.ntotal + len(ids)
        if self.index is None or (self.kind == "ivf" and ivf_lists(count, self.options["nlist"]) >= 2 * self.nlist):
            old_ids, old_vectors = self.all_vectors()  # (re)train the IVF lists for the grown set
            self._build(np.concatenate([old_ids, ids]), np.concatenate([old_vectors, vectors]))
        else:
            self.index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.faiss is None:
            keep = ~np.isin(self._ids, ids)
            self._matrix, self._ids = self._matrix[keep], self._ids[keep]
            return
        if self.index is None or len(ids) == 0:
            return
        if self.kind == "hnsw":  # HNSW graphs cannot delete nodes: rebuild from the remaining vectors
            all_ids, all_vectors = self.all_vectors()
            keep = ~np.isin(all_ids, ids)
            self._build(all_ids[keep], all_vectors[keep])
        else:
            self.index.remove_ids(ids)
            if self.index.ntotal == 0:
                self.index, self.nlist, self.trained_on = None, 0, 0

    # --- reading ------------------------------------------------------------------------------------------------
    @property
    def exact(self) -> bool:
        """Whether :meth:`search` returns the exact top-k (numpy, flat, IVF visiting every list)."""
        return self.kind in ("numpy", "flat") or (self.kind == "ivf" and self.nprobe >= self.nlist)

    def _labels(self) -> np.ndarray:
        if self.kind == "ivf":
            invlists = self.index.invlists
            parts = [self.faiss.rev_swig_ptr(invlists.get_ids(lst), invlists.list_size(lst)).copy()
                     for lst in range(self.nlist) if invlists.list_size(lst)]
            return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        return np.sort(self.faiss.vector_to_array(self.index.id_map).astype(np.int64))

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids ascending, vectors)`` of everything held."""
        if self.faiss is None:
            return self._ids, self._matrix
        if self.index is None:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        ids = self._labels()
        return ids, self.vectors(ids)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (all held), float32 ``(len(ids), D)``."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.faiss is None:
            return self._matrix[np.searchsorted(self._ids, ids)]
        return self.index.reconstruct_batch(ids).reshape(len(ids), self.dim)

    def search(self, queries: np.ndarray, k: int, *, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``: float32 ``(Q, k')`` inner products, decreasing along each row, and the int64 ids
        ``(Q, k')`` of each query's ``k' = min(k, N)`` best vectors. Approximate kinds may return fewer hits: the
        missing slots hold score ``-inf`` and id ``-1``. ``batch_size``: queries per batch (default 1,024 for numpy,
        4,096 for FAISS)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(int(k), self.ntotal)
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.faiss is None:
            scores, positions = numpy_topk(queries, self._matrix, k, batch_size)
            return scores, self._ids[positions]
        if self.kind == "ivf":
            self.index.nprobe = self.nprobe
        elif self.kind == "hnsw":
            self.faiss.downcast_index(self.index.index).hnsw.efSearch = max(self.ef_search, k)
        batch = int(batch_size) if batch_size is not None else 4096
        scores = np.empty((len(queries), k), dtype=np.float32)
        labels = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), batch):
            d, i = self.index.search(queries[start:start + batch], k)
            scores[start:start + len(d)] = np.where(i >= 0, d, -np.inf)
            labels[start:start + len(d)] = i
        return scores, labels

    def __repr__(self) -> str:
        return f"VectorIndex({self.ntotal} x {self.dim}, kind={self.kind!r})"


class SearchIndex:
    """A fixed gallery ``(N, D)`` prepared for top-k search (1:N evaluation); labels are gallery row numbers.

    Args:
        gallery: ``(N, D)`` vectors (any float dtype; stored as float32).
        method: one of :data:`SEARCH_METHODS`; ``"auto"`` is ``"flat"`` when FAISS is installed and the gallery has at
            least :data:`AUTO_FAISS_MIN_GALLERY` vectors, else ``"numpy"``.
        normalize: L2-normalise gallery and queries (inner product = cosine).
        nlist, nprobe: IVF lists (default :func:`ivf_lists`) and lists visited per query (default ``min(nlist, 32)``).
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
        if method == "ivf" and nlist is not None and not 1 <= nlist <= n:
            raise InvalidOptionError(f"nlist must be in [1, {n}] (the gallery size), got {nlist}")
        if method == "hnsw" and hnsw_m < 2:
            raise InvalidOptionError(f"hnsw_m must be >= 2, got {hnsw_m}")
        self.method = method
        lists = ivf_lists(n, nlist) if method == "ivf" else 0
        options = {"nlist": lists or None, "nprobe": int(nprobe) if nprobe is not None else max(1, min(lists, 32)),
                   "hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
        self.index = VectorIndex(d, method, options, threads=threads)
        self.index.add(np.arange(n, dtype=np.int64), self.gallery)

    @property
    def size(self) -> int:
        """Number of gallery vectors N."""
        return int(self.gallery.shape[0])

    @property
    def dim(self) -> int:
        """Vector dimension D."""
        return int(self.gallery.shape[1])

    def search(self, queries: Any, k: int, *, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (Q, k'), rows (Q, k'))`` of the ``k' = min(k, N)`` most similar gallery rows of every query (see
        :meth:`VectorIndex.search`)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidOptionError(f"k must be a positive integer, got {k!r}")
        q = _as_vectors(queries, "queries", self.normalize)
        if q.shape[1] != self.dim:
            raise InvalidOptionError(f"queries have dimension {q.shape[1]}, the gallery {self.dim}")
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise InvalidOptionError(f"batch_size must be >= 1, got {batch_size!r}")
        return self.index.search(q, k, batch_size=batch_size)

    def __repr__(self) -> str:
        return f"SearchIndex({self.size} x {self.dim}, method={self.method!r})"


def search_topk(gallery: Any, queries: Any, k: int, *, method: str = "auto", normalize: bool = True,
                batch_size: int | None = None, **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """One-shot :class:`SearchIndex` build + :meth:`SearchIndex.search`: ``(scores (Q, k'), rows (Q, k'))``."""
    return SearchIndex(gallery, method=method, normalize=normalize, **options).search(queries, k,
                                                                                       batch_size=batch_size)

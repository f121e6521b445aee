"""A persistent face gallery on disk: identities, image paths and embeddings, searched by cosine similarity.

    from facesphere.infer.gallery import Gallery
    gallery = Gallery.create("my_gallery", dim=512, model="r50.onnx | ...")   # or Gallery.open("my_gallery")
    ids = gallery.add(embeddings, ["alice", "alice", "bob"], paths=["a1.jpg", "a2.jpg", "b.jpg"])
    gallery.search(query_embeddings, k=5)      # -> [[Match(identity, score, path, id), ...], ...] per query

A gallery is a directory holding

* ``gallery.sqlite`` — **the source of truth**: table ``meta`` (format, dim, metric, index kind and options, the
  model fingerprint, a version counter), ``entries`` (id = vector id, identity, image path, added timestamp, optional
  JSON extra) and ``vectors`` (id, float32 little-endian BLOB). SQLite makes every ``add`` / ``remove`` one atomic,
  durable transaction, and its WAL journal lets any number of readers work while one writer commits.
* ``index.faiss`` — a **cache** of the FAISS index built from those vectors (``faiss.write_index`` bytes followed
  by a checksummed trailer naming the gallery version it reflects). It is replaced atomically (temp file +
  ``os.replace``); when it is missing, corrupt, from another gallery or behind the database it is brought up to date
  from SQLite (rows added since are appended; after a removal it is rebuilt), with a :class:`GalleryWarning` when it
  was missing or corrupt. Losing it never loses data.
* ``gallery.lock`` — writers hold an exclusive ``fcntl.flock`` on it while they change the database and rewrite the
  index, so concurrent ``add`` / ``remove`` calls from several processes are serialised.

Search is exact by default (``index="flat"``): candidates come from FAISS (``IndexFlatIP``) or from a numpy
float32 matrix product when faiss is not installed, and are then re-scored in float64; the candidate set is grown
until float32 rounding provably cannot change the answer, so both backends return the same entries, scores and
order. Ties are broken by the smaller entry id (the earlier added). ``index="ivf"`` / ``"hnsw"`` are approximate
FAISS indexes for large galleries (exact numpy search when faiss is missing). See ``docs/gallery.md``.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
import uuid
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..errors import DataError, FaceSphereError, InvalidOptionError, UnknownNameError

FORMAT_NAME = "facesphere-gallery"
FORMAT_VERSION = 1
DB_NAME = "gallery.sqlite"
INDEX_NAME = "index.faiss"
LOCK_NAME = "gallery.lock"
METRICS = ("cosine", "ip")
INDEX_KINDS = ("flat", "ivf", "hnsw")
BACKENDS = ("auto", "faiss", "numpy")
DEFAULT_INDEX_OPTIONS: dict[str, Any] = {
    "nlist": None,  # IVF lists; None: 4*sqrt(N), at most N/39 (FAISS's minimum of 39 training points per list)
    "nprobe": 16,  # IVF lists visited per query
    "hnsw_m": 32,  # HNSW neighbours per node
    "ef_construction": 80,
    "ef_search": 128,
}

_INDEX_MAGIC = b"FSGALIDX"
_INDEX_FILE_VERSION = 1
_SQL_CHUNK = 500  # ids per "IN (...)" query
_FAISS_HINT = 'install it with: pip install "facesphere[faiss]"'

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT NOT NULL,
    path TEXT,
    added TEXT NOT NULL,
    extra TEXT
);
CREATE INDEX entries_identity ON entries (identity);
CREATE TABLE vectors (id INTEGER PRIMARY KEY, vector BLOB NOT NULL);
"""


class GalleryWarning(UserWarning):
    """The index cache was missing, corrupt or could not be written; the gallery still works (from SQLite)."""


class GalleryLockedError(FaceSphereError):
    """Another process held the gallery's writer lock for longer than ``lock_timeout``."""


@dataclass(frozen=True)
class Match:
    """One search hit: the entry's ``identity``, cosine (or inner product) ``score``, image ``path`` and ``id``."""

    identity: str
    score: float
    path: str | None
    id: int


@dataclass(frozen=True)
class Entry:
    """One gallery row: ``id``, ``identity``, image ``path``, ``added`` (ISO 8601 UTC) and the JSON ``extra``."""

    id: int
    identity: str
    path: str | None
    added: str
    extra: Any


def model_fingerprint(embedder: Any, *, flip: str = "sum") -> str:
    """A string naming a recogniser and its input convention (name, input size, colour order, normalisation,
    flip fusion) for :meth:`Gallery.create` / :meth:`Gallery.add` ``model=``: embeddings of two models (or of one
    model fed differently) are not comparable, so a gallery refuses embeddings whose fingerprint differs."""
    height, width = embedder.input_size
    return (f"{embedder.name} | {height}x{width} {str(embedder.color).upper()} "
            f"(p - {float(embedder.mean):g}) / {float(embedder.std):g} | flip={flip}")


# ------------------------------------------------------------------------------------------------------------------
# helpers


def _import_faiss(required: bool) -> Any:
    try:
        import faiss  # noqa: PLC0415 - optional dependency, imported lazily
    except ImportError:
        if required:
            raise FaceSphereError(f"the gallery's FAISS backend needs faiss, which is not installed; {_FAISS_HINT}") \
                from None
        return None
    return faiss


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _vector_blob(vector: np.ndarray) -> bytes:
    """float32 ``(D,)`` -> little-endian bytes (the ``vectors.vector`` BLOB)."""
    return vector.astype("<f4", copy=False).tobytes()


def _write_faiss_index(faiss: Any, index: Any, path: Path) -> None:
    """``faiss.write_index`` of ``index`` to ``path`` (the index file's payload)."""
    faiss.write_index(index, str(path))


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_index_file(directory: Path, header: dict[str, Any], faiss: Any, index: Any) -> None:
    """Atomically replace ``directory/index.faiss`` by ``index`` as FAISS writes it, followed by a trailer: the
    JSON ``header`` (with the payload's length and CRC-32), its length (uint32 LE) and 8 magic bytes. A crash at any
    point leaves either the old file or the new one, never a mixture (a stray ``.index.faiss.tmp-*`` at worst,
    removed by the next writer). ``faiss.read_index`` reads the file as it is (it stops before the trailer)."""
    temporary = directory / f".{INDEX_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_faiss_index(faiss, index, temporary)
        crc, size = 0, 0
        with open(temporary, "r+b") as handle:
            for chunk in iter(lambda: handle.read(16 << 20), b""):
                crc, size = zlib.crc32(chunk, crc), size + len(chunk)
            header_bytes = json.dumps({**header, "payload_bytes": size, "crc32": crc}, sort_keys=True).encode()
            handle.write(header_bytes + len(header_bytes).to_bytes(4, "little") + _INDEX_MAGIC)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, directory / INDEX_NAME)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


class _CorruptIndex(Exception):
    pass


def _read_index_file(path: Path) -> tuple[dict[str, Any], np.ndarray] | None:
    """``(header, payload uint8)`` of an index file; ``None`` when absent; :class:`_CorruptIndex` when unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _CorruptIndex(f"cannot read it ({error})") from None
    if len(data) < 12 or data[-8:] != _INDEX_MAGIC:
        raise _CorruptIndex("no facesphere trailer (truncated, or not written by facesphere)")
    header_length = int.from_bytes(data[-12:-8], "little")
    if header_length > len(data) - 12:
        raise _CorruptIndex("bad trailer")
    try:
        header = json.loads(data[len(data) - 12 - header_length:-12].decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _CorruptIndex("its trailer is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != _INDEX_FILE_VERSION:
        found = header.get("format") if isinstance(header, dict) else "?"
        raise _CorruptIndex(f"unsupported index file format {found}")
    payload = np.frombuffer(data, dtype=np.uint8, count=len(data) - 12 - header_length)
    if payload.size != header.get("payload_bytes"):
        raise _CorruptIndex(f"{payload.size} index bytes, the trailer says {header.get('payload_bytes')}")
    if zlib.crc32(payload) != header.get("crc32"):
        raise _CorruptIndex("checksum mismatch")
    return header, payload


class _FileLock:
    """An exclusive advisory lock on ``path`` (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows), re-entrant
    within one :class:`Gallery` object."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._depth = 0

    def _try_lock(self, fd: int) -> bool:
        try:
            import fcntl  # noqa: PLC0415
        except ImportError:  # pragma: no cover - Windows
            import msvcrt  # noqa: PLC0415

            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(self, fd: int) -> None:
        try:
            import fcntl  # noqa: PLC0415
        except ImportError:  # pragma: no cover - Windows
            import msvcrt  # noqa: PLC0415

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
            return
        fcntl.flock(fd, fcntl.LOCK_UN)

    def wait_for_writer(self) -> None:
        """Wait (at most ``timeout``) until no process holds the lock: a writer that has committed a change may
        still be saving the index. Returns at once when this object holds the lock or on Windows."""
        if self._depth:
            return
        try:
            import fcntl  # noqa: PLC0415
        except ImportError:  # pragma: no cover - Windows
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    time.sleep(0.005)
                    continue
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
        finally:
            os.close(fd)

    @contextmanager
    def hold(self, *, blocking: bool = True) -> Iterator[bool]:
        """Hold the lock; yields ``False`` instead of waiting when ``blocking=False`` and another process has it."""
        if self._depth:
            self._depth += 1
            try:
                yield True
            finally:
                self._depth -= 1
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise FaceSphereError(f"{self.path.parent}: cannot write to this gallery ({error.strerror}); "
                                  "open it with readonly=True to search it") from None
        deadline = time.monotonic() + self.timeout
        try:
            while not self._try_lock(fd):
                if not blocking:
                    yield False
                    return
                if time.monotonic() > deadline:
                    raise GalleryLockedError(
                        f"{self.path.parent}: another process has been writing to this gallery for more than "
                        f"{self.timeout:g} s (lock file {self.path.name}); try again later")
                time.sleep(0.005)
            self._depth = 1
            try:
                yield True
            finally:
                self._depth = 0
                self._unlock(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------------------------------------------
# in-memory searchers: numpy matrix or a FAISS index, both keyed by entry id


class _NumpySearcher:
    """Exact search over a float32 matrix ``(N, D)`` whose rows are the entries ``ids`` (ascending)."""

    exact = True

    def __init__(self, dim: int) -> None:
        self.matrix = np.zeros((0, dim), dtype=np.float32)
        self.ids = np.zeros(0, dtype=np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.matrix = np.concatenate([self.matrix, vectors]) if len(self.matrix) else vectors.copy()
        self.ids = np.concatenate([self.ids, ids])

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self.ids, ids)
        self.matrix, self.ids = self.matrix[keep], self.ids[keep]

    def top(self, queries: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 scores ``(Q, m)`` (descending) and entry ids ``(Q, m)`` of each query's ``m`` best entries."""
        scores = queries @ self.matrix.T
        if m < scores.shape[1]:
            part = np.argpartition(-scores, m - 1, axis=1)[:, :m]
        else:
            part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        rows = np.take_along_axis(part, order, axis=1)
        return np.take_along_axis(part_scores, order, axis=1), self.ids[rows]

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return self.matrix[np.searchsorted(self.ids, ids)]

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        return self.ids, self.matrix


class _FaissSearcher:
    """A FAISS index (flat / IVF / HNSW, inner product) whose labels are entry ids."""

    def __init__(self, faiss: Any, dim: int, kind: str, options: Mapping[str, Any]) -> None:
        self.faiss, self.dim, self.kind, self.options = faiss, dim, kind, dict(options)
        self.index: Any = None
        self.nlist = 0
        self.trained_on = 0
        self.nprobe = int(options["nprobe"])
        self.ef_search = int(options["ef_search"])

    # --- construction -------------------------------------------------------------------------------------------
    def target_nlist(self, count: int) -> int:
        wanted = self.options["nlist"] or int(round(4 * math.sqrt(max(count, 1))))
        return max(1, min(int(wanted), count // 39))

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        faiss = self.faiss
        self.index = None
        self.nlist = self.trained_on = 0
        if len(ids) == 0:
            return
        if self.kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        elif self.kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(self.dim, int(self.options["hnsw_m"]), faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = int(self.options["ef_construction"])
            index = faiss.IndexIDMap2(hnsw)
        else:
            self.nlist = self.target_nlist(len(ids))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
            quantizer.this.disown()
            index.own_fields = True
            sample = vectors
            if len(vectors) > 256 * self.nlist:  # what FAISS's k-means would subsample to, chosen reproducibly
                rows = np.random.default_rng(0).choice(len(vectors), 256 * self.nlist, replace=False)
                sample = vectors[np.sort(rows)]
            index.train(np.ascontiguousarray(sample))
            index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct() and remove_ids() by id
            self.trained_on = len(ids)
        index.add_with_ids(np.ascontiguousarray(vectors), ids)
        self.index = index

    def load(self, payload: np.ndarray, header: Mapping[str, Any]) -> None:
        self.index = self.faiss.deserialize_index(payload)
        self.nlist = int(header.get("nlist", 0))
        self.trained_on = int(header.get("trained_on", 0))

    # --- changes ------------------------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        count = self.ntotal + len(ids)
        if self.index is None or (self.kind == "ivf" and self.target_nlist(count) >= 2 * self.nlist):
            old_ids, old_vectors = self.all_vectors()  # (re)train the IVF lists for the grown gallery
            self.build(np.concatenate([old_ids, ids]), np.concatenate([old_vectors, vectors]))
        else:
            self.index.add_with_ids(np.ascontiguousarray(vectors), ids)

    def remove(self, ids: np.ndarray) -> None:
        if self.index is None or len(ids) == 0:
            return
        if self.kind == "hnsw":  # HNSW graphs cannot delete nodes: rebuild from the remaining vectors
            all_ids, all_vectors = self.all_vectors()
            keep = ~np.isin(all_ids, ids)
            self.build(all_ids[keep], all_vectors[keep])
        else:
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
            if self.index.ntotal == 0:
                self.index, self.nlist, self.trained_on = None, 0, 0

    # --- queries ------------------------------------------------------------------------------------------------
    @property
    def exact(self) -> bool:
        return self.kind == "flat" or (self.kind == "ivf" and self.nprobe >= self.nlist)

    def _labels(self) -> np.ndarray:
        if self.kind == "ivf":
            invlists = self.index.invlists
            parts = [self.faiss.rev_swig_ptr(invlists.get_ids(lst), invlists.list_size(lst)).copy()
                     for lst in range(self.nlist) if invlists.list_size(lst)]
            return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        return np.sort(self.faiss.vector_to_array(self.index.id_map).astype(np.int64))

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        if self.index is None:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        ids = self._labels()
        return ids, self.vectors(ids)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return self.index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64)).reshape(len(ids), self.dim)

    def top(self, queries: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "ivf":
            self.index.nprobe = self.nprobe
        elif self.kind == "hnsw":
            self.faiss.downcast_index(self.index.index).hnsw.efSearch = max(self.ef_search, m)
        scores, labels = self.index.search(np.ascontiguousarray(queries), m)
        return scores, labels


# ------------------------------------------------------------------------------------------------------------------
# a consistent in-memory snapshot of the gallery


class _State:
    """The gallery as of database ``version``: entry ids (ascending), their identity codes, and a searcher."""

    def __init__(self, *, uuid_: str, version: int, token: str, searcher: Any) -> None:
        self.uuid, self.version, self.token = uuid_, version, token
        self.searcher = searcher
        self.ids = np.zeros(0, dtype=np.int64)
        self.codes = np.zeros(0, dtype=np.int32)
        self.names: list[str] = []
        self._code_of: dict[str, int] = {}
        self._identity_count: int | None = None

    @property
    def identity_count(self) -> int:
        """Number of distinct identities among the entries held."""
        if self._identity_count is None:
            self._identity_count = len(np.unique(self.codes))
        return self._identity_count

    @property
    def max_id(self) -> int:
        return int(self.ids[-1]) if len(self.ids) else 0

    def _encode(self, identities: Sequence[str]) -> np.ndarray:
        codes = np.empty(len(identities), dtype=np.int32)
        for position, name in enumerate(identities):
            code = self._code_of.get(name)
            if code is None:
                code = self._code_of[name] = len(self.names)
                self.names.append(name)
            codes[position] = code
        return codes

    def append_labels(self, ids: np.ndarray, identities: Sequence[str]) -> None:
        """Record entries (ids larger than every id held) without touching the searcher."""
        if len(ids) and len(self.ids) and ids[0] <= self.ids[-1]:
            raise AssertionError("gallery entry ids must grow")  # pragma: no cover - AUTOINCREMENT guarantees it
        self.ids = np.concatenate([self.ids, ids])
        self.codes = np.concatenate([self.codes, self._encode(identities)])
        self._identity_count = None

    def add(self, ids: np.ndarray, identities: Sequence[str], vectors: np.ndarray) -> None:
        self.append_labels(ids, identities)
        self.searcher.add(ids, vectors)

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self.ids, ids)
        self.ids, self.codes = self.ids[keep], self.codes[keep]
        self._identity_count = None
        self.searcher.remove(ids)

    def identity_codes(self, ids: np.ndarray) -> np.ndarray:
        return self.codes[np.searchsorted(self.ids, ids)]

    # --- search -------------------------------------------------------------------------------------------------
    def rescore(self, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact float64 inner products ``(len(ids),)`` of the stored float32 vectors with ``query`` (float32
        products are exact in float64; each row is summed the same way, so equal vectors give equal scores)."""
        scores = np.empty(len(ids), dtype=np.float64)
        query64 = query.astype(np.float64)
        for start in range(0, len(ids), 4096):
            block = self.searcher.vectors(ids[start:start + 4096]).astype(np.float64)
            scores[start:start + 4096] = np.multiply(block, query64).sum(axis=1)
        return scores

    def search(self, queries: np.ndarray, k: int, per_identity: bool, threshold: float | None,
               max_norm: float) -> list[list[tuple[int, int, float]]]:
        """Per query, up to ``k`` ``(entry id, identity code, score)``, best first (ties: smaller id first)."""
        count = len(self.ids)
        results: list[list[tuple[int, int, float]]] = [[] for _ in range(len(queries))]
        if count == 0:
            return results
        dim = queries.shape[1]
        # |float32 dot - exact dot| <= gamma_D |q| |x| for any summation order (Higham, Thm 3.1 / 3.5)
        gamma = 1.01 * dim * 2.0 ** -24
        query_norms = np.linalg.norm(queries.astype(np.float64), axis=1)
        m = min(count, 4 * k + 16 if per_identity else k + 16)
        wanted = min(k, self.identity_count if per_identity else count)  # hits there can be at most
        pending = list(range(len(queries)))
        while pending:
            approx, labels = self.searcher.top(queries[pending], m)
            unfinished = []
            for row, query_index in enumerate(pending):
                valid = labels[row] >= 0
                ids, approx_scores = labels[row][valid].astype(np.int64), approx[row][valid]
                scores = self.rescore(queries[query_index], ids)
                order = np.lexsort((ids, -scores))
                ids, scores = ids[order], scores[order]
                if threshold is not None:
                    keep = scores >= threshold
                    ids, scores = ids[keep], scores[keep]
                codes = self.identity_codes(ids)
                if per_identity:
                    _, first = np.unique(codes, return_index=True)
                    first.sort()
                    ids, scores, codes = ids[first], scores[first], codes[first]
                ids, scores, codes = ids[:k], scores[:k], codes[:k]
                done = m >= count
                if not done and self.searcher.exact:
                    # entries not returned score <= bound; the answer is final once the k-th score beats it
                    bound = float(approx_scores[-1]) + gamma * query_norms[query_index] * max_norm
                    needed = scores[-1] if len(ids) == wanted else (-math.inf if threshold is None else threshold)
                    done = needed > bound
                elif not done:  # approximate index: stop once k hits are found (or the rest fall under threshold)
                    done = len(ids) == wanted or (threshold is not None and len(approx_scores) > 0
                                             and float(approx_scores[-1]) < threshold)
                if done:
                    results[query_index] = [(int(i), int(c), float(s)) for i, c, s in zip(ids, codes, scores)]
                else:
                    unfinished.append(query_index)
            pending = unfinished
            m = min(count, 2 * m)
        return results


# ------------------------------------------------------------------------------------------------------------------


class Gallery:
    """A persistent face gallery directory (see the module docstring and ``docs/gallery.md``).

    Open one with :meth:`Gallery.create`, :meth:`Gallery.open` or :meth:`Gallery.open_or_create`. A ``Gallery``
    object keeps one SQLite connection and an in-memory index; it is safe to share between threads (calls are
    serialised), and any number of processes may open the same directory. ``auto_refresh=True``: every search first
    checks (one tiny query) whether another process changed the gallery and, if so, catches up; ``False`` keeps the
    snapshot loaded at the first search until :meth:`refresh`.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection, *, readonly: bool, backend: str,
                 auto_refresh: bool, lock_timeout: float) -> None:
        self.path = path
        self.readonly = readonly
        self.auto_refresh = auto_refresh
        self._connection = connection
        self._mutex = threading.RLock()
        self._lock = _FileLock(path / LOCK_NAME, lock_timeout)
        self._state: _State | None = None
        meta = self._read_meta()
        self.dim = int(meta["dim"])
        self.metric = meta["metric"]
        self.index_kind = meta["index"]
        self.index_options = {**DEFAULT_INDEX_OPTIONS, **json.loads(meta.get("index_options") or "{}")}
        self.uuid = meta["uuid"]
        self.created = meta.get("created")
        faiss = _import_faiss(required=backend == "faiss") if backend != "numpy" else None
        self._faiss = faiss
        self.backend = "faiss" if faiss is not None else "numpy"
        #: IVF lists visited per query and HNSW search breadth (index="ivf" / "hnsw"); change them freely
        self.nprobe = int(self.index_options["nprobe"])
        self.ef_search = int(self.index_options["ef_search"])

    # --- opening ------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], dim: int, *, metric: str = "cosine", index: str = "flat",
               model: str | None = None, index_options: Mapping[str, Any] | None = None, overwrite: bool = False,
               backend: str = "auto", lock_timeout: float = 60.0) -> "Gallery":
        """Create an empty gallery in directory ``path`` (created if needed) for ``dim``-dimensional embeddings.

        ``metric``: ``"cosine"`` (embeddings and queries are L2-normalised; scores in [-1, 1]) or ``"ip"`` (raw inner
        product). ``index``: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"`` (approximate, for large galleries; tune with
        ``index_options``: ``nlist``, ``nprobe``, ``hnsw_m``, ``ef_construction``, ``ef_search``). ``model``: the
        fingerprint of the recogniser whose embeddings the gallery holds (:func:`model_fingerprint`); set on the first
        :meth:`add` that passes one when not given here. ``overwrite=True`` replaces an existing gallery there (only
        the gallery's own files are deleted; nobody else may have it open). ``backend``: ``"auto"`` (faiss when
        installed), ``"faiss"`` or ``"numpy"``.
        """
        dim = _positive_int(dim, "dim")
        if metric not in METRICS:
            raise UnknownNameError(f"unknown gallery metric {metric!r}; valid: {', '.join(METRICS)}")
        if index not in INDEX_KINDS:
            raise UnknownNameError(f"unknown gallery index {index!r}; valid: {', '.join(INDEX_KINDS)}")
        options = _check_index_options(index_options)
        if backend not in BACKENDS:
            raise UnknownNameError(f"unknown gallery backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if backend == "faiss":
            _import_faiss(required=True)
        directory = Path(path)
        if directory.exists() and not directory.is_dir():
            raise DataError(f"{directory}: is a file, not a gallery directory")
        database = directory / DB_NAME
        if database.exists() and not overwrite:
            raise DataError(f"{directory}: a gallery already exists here; open it (Gallery.open) or pass "
                            "overwrite=True to replace it")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DataError(f"{directory}: cannot create the gallery directory ({error.strerror})") from None
        with _FileLock(directory / LOCK_NAME, lock_timeout).hold():
            if database.exists() and not overwrite:  # somebody created it meanwhile
                raise DataError(f"{directory}: a gallery already exists here; open it (Gallery.open) or pass "
                                "overwrite=True to replace it")
            for name in (DB_NAME + "-wal", DB_NAME + "-shm", INDEX_NAME):
                (directory / name).unlink(missing_ok=True)
            temporary = directory / f".{DB_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                connection = sqlite3.connect(temporary, isolation_level=None)
                try:
                    # 16 KiB pages hold several vector rows each (a 512-d float32 row is 2 KiB + a few bytes:
                    # the default 4 KiB page would hold one and waste half the file)
                    connection.execute("PRAGMA page_size=16384")
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.execute("BEGIN")
                    for statement in _SCHEMA.strip().split(";"):
                        if statement.strip():
                            connection.execute(statement)
                    meta = {
                        "format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "dim": str(dim),
                        "metric": metric, "index": index, "index_options": json.dumps(options, sort_keys=True),
                        "model": model, "uuid": uuid.uuid4().hex, "version": "0", "token": uuid.uuid4().hex,
                        "remove_version": "0", "max_norm": "0", "created": _now(),
                    }
                    connection.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
                    connection.execute("COMMIT")
                finally:
                    connection.close()
                os.replace(temporary, database)
                _fsync_directory(directory)
            finally:
                for name in (temporary.name, temporary.name + "-wal", temporary.name + "-shm"):
                    (directory / name).unlink(missing_ok=True)
        return cls.open(directory, backend=backend, lock_timeout=lock_timeout)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False, backend: str = "auto",
             auto_refresh: bool = True, lock_timeout: float = 60.0) -> "Gallery":
        """Open the gallery in directory ``path``. ``readonly=True`` never writes (not even the index cache) and
        works on read-only media. Raises :class:`DataError` when ``path`` is not a facesphere gallery."""
        if backend not in BACKENDS:
            raise UnknownNameError(f"unknown gallery backend {backend!r}; valid: {', '.join(BACKENDS)}")
        directory = Path(path)
        if not directory.exists():
            raise DataError(f"{directory}: no such gallery directory (create one with Gallery.create or "
                            "`facesphere gallery add`)")
        if not directory.is_dir():
            raise DataError(f"{directory}: is a file, not a gallery directory")
        database = directory / DB_NAME
        if not database.is_file():
            raise DataError(f"{directory}: not a facesphere gallery (no {DB_NAME} in it)")
        connection = _connect(database, readonly=readonly, timeout=lock_timeout)
        try:
            meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as error:
            connection.close()
            raise DataError(f"{database}: not a facesphere gallery database ({error})") from None
        if meta.get("format") != FORMAT_NAME:
            connection.close()
            raise DataError(f"{database}: not a facesphere gallery database (its meta table has no "
                            f"format={FORMAT_NAME!r})")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            connection.close()
            raise DataError(f"{database}: gallery format {meta['format_version']} is newer than this facesphere "
                            f"reads ({FORMAT_VERSION}); upgrade facesphere")
        try:
            return cls(directory, connection, readonly=readonly, backend=backend, auto_refresh=auto_refresh,
                       lock_timeout=lock_timeout)
        except BaseException:
            connection.close()
            raise

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], dim: int, **options: Any) -> "Gallery":
        """:meth:`open` the gallery at ``path`` if there is one (its ``dim`` must equal ``dim``), else
        :meth:`create` it with ``options`` (``metric``, ``index``, ``model``, ``index_options``, ``backend``,
        ``lock_timeout``)."""
        if (Path(path) / DB_NAME).exists():
            open_options = {key: options[key] for key in ("backend", "lock_timeout") if key in options}
            gallery = cls.open(path, **open_options)
            if gallery.dim != int(dim):
                gallery.close()
                raise DataError(f"{path}: the gallery holds {gallery.dim}-d embeddings, these are {dim}-d "
                                "(another recogniser?); use a new gallery directory")
            return gallery
        return cls.create(path, dim, **options)

    def close(self) -> None:
        with self._mutex:
            self._state = None
            self._connection.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- database helpers ---------------------------------------------------------------------------------------
    def _read_meta(self) -> dict[str, str]:
        return dict(self._connection.execute("SELECT key, value FROM meta").fetchall())

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield connection
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _rows(self, sql: str, args: Sequence[Any]) -> tuple[np.ndarray, list[str], np.ndarray]:
        """``(ids, identities, vectors (N, D) float32)`` of the entries selected by ``sql``."""
        ids: list[int] = []
        identities: list[str] = []
        blobs: list[bytes] = []
        for entry_id, identity, blob in self._connection.execute(sql, args):
            if len(blob) != 4 * self.dim:
                raise DataError(f"{self.path / DB_NAME}: entry {entry_id} holds a {len(blob)}-byte vector, "
                                f"expected {4 * self.dim} (corrupt gallery database)")
            ids.append(entry_id)
            identities.append(identity)
            blobs.append(blob)
        vectors = np.frombuffer(b"".join(blobs), dtype="<f4").astype(np.float32).reshape(len(ids), self.dim)
        return np.asarray(ids, dtype=np.int64), identities, vectors

    def _rows_after(self, after: int) -> tuple[np.ndarray, list[str], np.ndarray]:
        return self._rows("SELECT e.id, e.identity, v.vector FROM entries e JOIN vectors v ON v.id = e.id "
                          "WHERE e.id > ? ORDER BY e.id", (after,))

    # --- the in-memory snapshot ---------------------------------------------------------------------------------
    def _new_searcher(self) -> Any:
        if self._faiss is None:
            return _NumpySearcher(self.dim)
        return _FaissSearcher(self._faiss, self.dim, self.index_kind, self.index_options)

    def _index_header(self, state: _State) -> dict[str, Any]:
        searcher = state.searcher
        return {"format": _INDEX_FILE_VERSION, "uuid": state.uuid, "version": state.version, "token": state.token,
                "max_id": state.max_id, "ntotal": searcher.ntotal, "kind": self.index_kind, "dim": self.dim,
                "metric": self.metric, "nlist": searcher.nlist, "trained_on": searcher.trained_on,
                "faiss_version": getattr(self._faiss, "__version__", None)}

    def _load_index_cache(self, meta: Mapping[str, str]) -> tuple[_State | None, str | None, str]:
        """``(state, None, "")``: the state held by ``index.faiss``, which matches this gallery and can be caught up
        to ``meta``'s version by appending rows. Else ``(None, code, message)``: ``code`` ``"retry"`` (the file is
        newer than our database snapshot: a writer committed meanwhile), ``"removed"`` (entries were removed since
        it was written) or ``"missing"`` (a writer may be about to save it; ``message`` is empty when the gallery is
        empty), ``"bad"`` (corrupt or foreign: rebuild with a warning)."""
        version, remove_version = int(meta["version"]), int(meta["remove_version"])
        path = self.path / INDEX_NAME
        try:
            found = _read_index_file(path)
        except _CorruptIndex as problem:
            return None, "bad", f"{path} is corrupt ({problem})"
        if found is None:
            count = self._connection.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
            return None, "missing", (f"{path} is missing" if count else "")
        header, payload = found
        if header.get("uuid") != meta["uuid"] or header.get("kind") != self.index_kind \
                or header.get("dim") != self.dim or header.get("metric") != self.metric:
            return None, "bad", f"{path} belongs to another gallery or index kind"
        if int(header["version"]) > version:
            return None, "retry", ""
        if int(header["version"]) == version and header.get("token") != meta["token"]:
            return None, "bad", f"{path} does not match the database (restored from a backup?)"
        if remove_version > int(header["version"]):
            return None, "removed", ""
        searcher = self._new_searcher()
        try:
            searcher.load(payload, header)
        except RuntimeError as error:
            return None, "bad", f"{path} is corrupt (faiss cannot read it: {str(error).splitlines()[0]})"
        ids = []
        identities = []
        for entry_id, identity in self._connection.execute(
                "SELECT id, identity FROM entries WHERE id <= ? ORDER BY id", (int(header["max_id"]),)):
            ids.append(entry_id)
            identities.append(identity)
        if len(ids) != searcher.ntotal:
            return None, "bad", (f"{path} does not match the database ({searcher.ntotal} vectors for {len(ids)} "
                                 "entries)")
        state = _State(uuid_=meta["uuid"], version=int(header["version"]), token=header["token"], searcher=searcher)
        state.append_labels(np.asarray(ids, dtype=np.int64), identities)
        return state, None, ""

    def _load_state(self) -> tuple[_State, bool]:
        """Bring the in-memory snapshot up to the database's current version: ``(state, rebuilt)`` where
        ``rebuilt`` says the index was built from scratch (worth saving)."""
        waited = False
        for attempt in range(5):
            if waited is None:
                self._lock.wait_for_writer()
                waited = True
            with self._transaction(write=False):
                meta = self._read_meta()
                version, remove_version = int(meta["version"]), int(meta["remove_version"])
                state = self._state
                if state is not None and state.token == meta["token"]:
                    return state, False
                rebuilt = False
                if state is None or not (state.version <= version and remove_version <= state.version):
                    state = None
                    if self._faiss is not None:
                        state, code, message = self._load_index_cache(meta)
                        if code == "retry" and attempt < 4:
                            continue
                        if waited is False and (code == "removed" or (code == "missing" and message)):
                            # a writer that committed a removal (or the first entries) may be saving the index
                            waited = None
                            continue
                        if message:
                            warnings.warn(f"{message}; rebuilding the index from {DB_NAME}", GalleryWarning,
                                          stacklevel=4)
                    if state is None:
                        state = _State(uuid_=meta["uuid"], version=0, token="", searcher=self._new_searcher())
                        rebuilt = self._faiss is not None
                ids, identities, vectors = self._rows_after(state.max_id)
                state.add(ids, identities, vectors)
                state.version, state.token = version, meta["token"]
                self._state = state
                return state, rebuilt
        raise AssertionError("unreachable")  # pragma: no cover

    def refresh(self) -> None:
        """Catch up with changes other processes made (searches do this themselves when ``auto_refresh``)."""
        with self._mutex:
            _, rebuilt = self._load_state()
            if rebuilt:
                self._save_index(blocking=False)

    def _current_state(self) -> _State:
        with self._mutex:
            if self._state is not None and not self.auto_refresh:
                return self._state
            if self._state is not None:
                token = self._connection.execute("SELECT value FROM meta WHERE key = 'token'").fetchone()[0]
                if token == self._state.token:
                    return self._state
            state, rebuilt = self._load_state()
            if rebuilt:
                self._save_index(blocking=False)
            return state

    def _save_index(self, *, blocking: bool = True) -> bool:
        """Write the in-memory FAISS index to ``index.faiss`` (under the writer lock) if it reflects the database's
        current version. ``False`` when not written (numpy backend, read-only, lock busy, snapshot outdated, or an
        I/O error, reported as a :class:`GalleryWarning`)."""
        state = self._state
        if self.readonly or self._faiss is None or state is None:
            return False
        with self._lock.hold(blocking=blocking) as locked:
            if not locked:
                return False
            token = self._connection.execute("SELECT value FROM meta WHERE key = 'token'").fetchone()[0]
            if token != state.token:
                return False
            for stray in self.path.glob(f".{INDEX_NAME}.tmp-*"):  # left by a writer killed mid-write
                stray.unlink(missing_ok=True)
            try:
                if state.searcher.index is None:
                    (self.path / INDEX_NAME).unlink(missing_ok=True)
                    return True
                _write_index_file(self.path, self._index_header(state), self._faiss, state.searcher.index)
            except (OSError, RuntimeError) as error:  # faiss reports its I/O errors as RuntimeError
                warnings.warn(f"{self.path / INDEX_NAME}: could not write the index cache ({error}); the gallery "
                              f"is intact in {DB_NAME} and the index will be rebuilt", GalleryWarning, stacklevel=3)
                return False
        return True

    def save_index(self) -> bool:
        """Bring the index cache ``index.faiss`` up to date now (``add(..., update_index=False)`` leaves it
        behind). Returns whether it was written."""
        with self._mutex, self._lock.hold():
            self._load_state()
            return self._save_index()

    def rebuild_index(self) -> None:
        """Discard the in-memory index and the cache file and rebuild both from the database."""
        self._require_writable()
        with self._mutex, self._lock.hold():
            self._state = None
            (self.path / INDEX_NAME).unlink(missing_ok=True)
            state = _State(uuid_=self.uuid, version=0, token="", searcher=self._new_searcher())
            with self._transaction(write=False):
                meta = self._read_meta()
                state.add(*self._rows_after(0))
                state.version, state.token = int(meta["version"]), meta["token"]
            self._state = state
            self._save_index()

    # --- writing ------------------------------------------------------------------------------------------------
    def _require_writable(self) -> None:
        if self.readonly:
            raise InvalidOptionError(f"{self.path}: the gallery was opened read-only")

    def _prepare(self, embeddings: Any, what: str) -> np.ndarray:
        array = np.asarray(embeddings)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2:
            raise DataError(f"{what} must be an (N, {self.dim}) array, got shape {array.shape}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise DataError(f"{what} must be numbers, got dtype {array.dtype}")
        if array.shape[1] != self.dim:
            raise DataError(f"{what} are {array.shape[1]}-d but the gallery {self.path} holds {self.dim}-d "
                            "embeddings (another recogniser, or flip=concat vs sum?)")
        array = array.astype(np.float64)
        bad = ~np.isfinite(array).all(axis=1)
        if bad.any():
            raise DataError(f"{what}: row {int(np.flatnonzero(bad)[0])} contains NaN or infinity "
                            "(a face that was not found?)")
        if self.metric == "cosine":
            norms = np.linalg.norm(array, axis=1, keepdims=True)
            if (norms == 0).any():
                raise DataError(f"{what}: row {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros and has no "
                                "direction (cosine metric)")
            array = array / norms
        return np.ascontiguousarray(array, dtype=np.float32)

    def _check_model(self, model: str | None, stored: str | None, action: str) -> None:
        if model is not None and stored is not None and model != stored:
            raise DataError(f"{self.path}: the gallery holds embeddings of model {stored!r}; refusing to {action} "
                            f"embeddings of model {model!r} (they are not comparable). Use the same recogniser and "
                            "input options, or another gallery directory")

    def add(self, embeddings: Any, identities: str | Sequence[str], paths: Sequence[Any] | None = None,
            extra: Any = None, *, model: str | None = None, update_index: bool = True) -> np.ndarray:
        """Add ``embeddings`` ``(N, D)`` (or ``(D,)``) under ``identities`` (one name for all, or N names), with
        optional image ``paths`` (N, stored as given: pass absolute paths to find them again) and ``extra``
        (a JSON-able value stored with every row; a list or tuple is one value per row, so it must have N items).
        One transaction: all rows are added or none.

        ``model``: the fingerprint of the recogniser that made the embeddings; refused when the gallery holds
        another model's embeddings (recorded when the gallery has none yet). Returns the new entry ids (int64,
        ascending). ``update_index=False`` skips rewriting the index cache (faster for many small adds; readers
        then catch up from the database, and :meth:`save_index` writes it later).
        """
        self._require_writable()
        vectors = self._prepare(embeddings, "embeddings")
        count = len(vectors)
        names = [identities] * count if isinstance(identities, str) else list(identities)
        if len(names) != count:
            raise DataError(f"{len(names)} identities for {count} embeddings")
        for position, name in enumerate(names):
            if not isinstance(name, str) or not name.strip():
                raise DataError(f"identity #{position} must be a non-empty string, got {name!r}")
        if paths is None:
            path_texts: list[str | None] = [None] * count
        else:
            path_texts = [None if p is None else os.fspath(p) for p in paths]
            if len(path_texts) != count:
                raise DataError(f"{len(path_texts)} image paths for {count} embeddings")
        extras = list(extra) if isinstance(extra, (list, tuple)) else [extra] * count
        if len(extras) != count:
            raise DataError(f"{len(extras)} extra values for {count} embeddings")
        try:
            extra_texts = [None if value is None else json.dumps(value, ensure_ascii=False) for value in extras]
        except (TypeError, ValueError) as error:
            raise InvalidOptionError(f"extra must be JSON-serialisable: {error}") from None
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        added = _now()
        with self._mutex, self._lock.hold():
            if update_index and self._faiss is not None:
                self._load_state()  # the index as of the current version, to extend with the new rows
            with self._transaction(write=True) as connection:
                meta = self._read_meta()
                self._check_model(model, meta.get("model"), "add")
                if model is not None and meta.get("model") is None:
                    connection.execute("UPDATE meta SET value = ? WHERE key = 'model'", (model,))
                row = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'entries'").fetchone()
                last = max(row[0] if row else 0,
                           connection.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()[0])
                ids = np.arange(last + 1, last + 1 + count, dtype=np.int64)
                connection.executemany(
                    "INSERT INTO entries (id, identity, path, added, extra) VALUES (?, ?, ?, ?, ?)",
                    zip(ids.tolist(), names, path_texts, [added] * count, extra_texts))
                connection.executemany("INSERT INTO vectors (id, vector) VALUES (?, ?)",
                                       ((int(i), _vector_blob(v)) for i, v in zip(ids, vectors)))
                max_norm = max(float(meta["max_norm"]), float(np.linalg.norm(vectors, axis=1).max()))
                version = int(meta["version"]) + 1
                token = uuid.uuid4().hex
                connection.executemany("UPDATE meta SET value = ? WHERE key = ?",
                                       [(str(version), "version"), (token, "token"), (repr(max_norm), "max_norm")])
            state = self._state
            if state is not None and state.version == version - 1:
                state.add(ids, names, vectors)
                state.version, state.token = version, token
                if update_index:
                    self._save_index()
        return ids

    def remove(self, identity: str | Sequence[str] | None = None, ids: Sequence[int] | None = None, *,
               update_index: bool = True) -> int:
        """Remove every entry of ``identity`` (a name or a list of names) and/or the entries ``ids``; returns how
        many entries were removed (0 when none matched)."""
        self._require_writable()
        if identity is None and ids is None:
            raise InvalidOptionError("remove() needs identity= and/or ids=")
        names = [] if identity is None else ([identity] if isinstance(identity, str) else list(identity))
        wanted = [] if ids is None else [int(i) for i in np.asarray(ids, dtype=np.int64).ravel()]
        with self._mutex, self._lock.hold():
            if update_index and self._faiss is not None:
                self._load_state()
            with self._transaction(write=True) as connection:
                found: set[int] = set()
                for start in range(0, len(names), _SQL_CHUNK):
                    chunk = names[start:start + _SQL_CHUNK]
                    found.update(r[0] for r in connection.execute(
                        f"SELECT id FROM entries WHERE identity IN ({','.join('?' * len(chunk))})", chunk))
                for start in range(0, len(wanted), _SQL_CHUNK):
                    chunk = wanted[start:start + _SQL_CHUNK]
                    found.update(r[0] for r in connection.execute(
                        f"SELECT id FROM entries WHERE id IN ({','.join('?' * len(chunk))})", chunk))
                removed = np.asarray(sorted(found), dtype=np.int64)
                if len(removed) == 0:
                    return 0
                for table in ("entries", "vectors"):
                    connection.executemany(f"DELETE FROM {table} WHERE id = ?", ((int(i),) for i in removed))
                meta = self._read_meta()
                version = int(meta["version"]) + 1
                token = uuid.uuid4().hex
                connection.executemany("UPDATE meta SET value = ? WHERE key = ?", [
                    (str(version), "version"), (token, "token"), (str(version), "remove_version")])
            state = self._state
            if state is not None and state.version == version - 1:
                state.remove(removed)
                state.version, state.token = version, token
                if update_index:
                    self._save_index()
            else:
                self._state = None
        return len(removed)

    def set_model(self, model: str | None) -> None:
        """Replace the recorded model fingerprint (e.g. after renaming the model file): the caller vouches that the
        stored embeddings and future ones come from the same recogniser."""
        self._require_writable()
        with self._mutex, self._lock.hold(), self._transaction(write=True) as connection:
            connection.execute("UPDATE meta SET value = ? WHERE key = 'model'", (model,))

    # --- reading ------------------------------------------------------------------------------------------------
    @property
    def model(self) -> str | None:
        """The fingerprint of the recogniser whose embeddings the gallery holds (``None`` if never given)."""
        with self._mutex:
            row = self._connection.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
        return None if row is None else row[0]

    @property
    def version(self) -> int:
        """The database version: +1 on every committed add / remove."""
        with self._mutex:
            return int(self._connection.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0])

    def __len__(self) -> int:
        """Number of entries in the database now (searches use the snapshot of the last refresh)."""
        with self._mutex:
            return int(self._connection.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def identities(self) -> dict[str, int]:
        """``{identity: number of entries}``, sorted by identity."""
        with self._mutex:
            rows = self._connection.execute(
                "SELECT identity, COUNT(*) FROM entries GROUP BY identity ORDER BY identity").fetchall()
        return {name: int(count) for name, count in rows}

    def entries(self, ids: Sequence[int] | None = None, *, identity: str | None = None) -> list[Entry]:
        """The entries ``ids`` (those that exist, ascending), those of ``identity``, or all of them."""
        with self._mutex:
            if ids is not None:
                wanted = [int(i) for i in np.asarray(ids, dtype=np.int64).ravel()]
                rows = []
                for start in range(0, len(wanted), _SQL_CHUNK):
                    chunk = wanted[start:start + _SQL_CHUNK]
                    rows += self._connection.execute(
                        "SELECT id, identity, path, added, extra FROM entries "
                        f"WHERE id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
                rows.sort()
            elif identity is not None:
                rows = self._connection.execute("SELECT id, identity, path, added, extra FROM entries "
                                                "WHERE identity = ? ORDER BY id", (identity,)).fetchall()
            else:
                rows = self._connection.execute(
                    "SELECT id, identity, path, added, extra FROM entries ORDER BY id").fetchall()
        return [Entry(int(i), name, path, added, None if extra is None else json.loads(extra))
                for i, name, path, added, extra in rows]

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored (normalised, for cosine) float32 embeddings ``(len(ids), D)`` of entries ``ids``."""
        wanted = [int(i) for i in np.asarray(ids, dtype=np.int64).ravel()]
        out = np.empty((len(wanted), self.dim), dtype=np.float32)
        with self._mutex:
            found: dict[int, bytes] = {}
            for start in range(0, len(wanted), _SQL_CHUNK):
                chunk = wanted[start:start + _SQL_CHUNK]
                found.update(self._connection.execute(
                    f"SELECT id, vector FROM vectors WHERE id IN ({','.join('?' * len(chunk))})", chunk).fetchall())
        for row, entry_id in enumerate(wanted):
            if entry_id not in found:
                raise DataError(f"{self.path}: no gallery entry {entry_id}")
            out[row] = np.frombuffer(found[entry_id], dtype="<f4")
        return out

    def search(self, queries: Any, k: int = 5, *, per_identity: bool = True, threshold: float | None = None,
               model: str | None = None) -> list[list[Match]]:
        """The best gallery matches of each query embedding ``(Q, D)`` (or ``(D,)``): a list (one per query) of up
        to ``k`` :class:`Match`, best first.

        ``per_identity=True``: the ``k`` best identities, each represented by its best entry; ``False``: the ``k``
        best entries. ``threshold``: only matches scoring at least this. Scores are the exact inner products
        of the (normalised) query with the stored float32 vectors; equal scores rank the smaller entry id first.
        ``model``: the queries' recogniser fingerprint, checked against the gallery's.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidOptionError(f"k must be a positive integer, got {k!r}")
        query_vectors = self._prepare(queries, "queries")
        if model is not None:
            self._check_model(model, self.model, "search with")
        if threshold is not None:
            threshold = float(threshold)
        with self._mutex:
            state = self._current_state()
            max_norm = 1.0 if self.metric == "cosine" else float(
                self._connection.execute("SELECT value FROM meta WHERE key = 'max_norm'").fetchone()[0])
            state.searcher.nprobe, state.searcher.ef_search = int(self.nprobe), int(self.ef_search)
            ranked: list[list[tuple[int, int, float]]] = []
            chunk = max(1, (1 << 24) // max(1, len(state.ids)))
            for start in range(0, len(query_vectors), chunk):
                ranked += state.search(query_vectors[start:start + chunk], int(k), per_identity, threshold,
                                       max_norm)
            names = state.names
            paths = self._paths(sorted({entry for hits in ranked for entry, _, _ in hits}))
        return [[Match(names[code], score, paths.get(entry), entry) for entry, code, score in hits]
                for hits in ranked]

    def _paths(self, ids: list[int]) -> dict[int, str | None]:
        paths: dict[int, str | None] = {}
        for start in range(0, len(ids), _SQL_CHUNK):
            chunk = ids[start:start + _SQL_CHUNK]
            paths.update(self._connection.execute(
                f"SELECT id, path FROM entries WHERE id IN ({','.join('?' * len(chunk))})", chunk).fetchall())
        return paths

    def info(self) -> dict[str, Any]:
        """A summary for display: path, dim, metric, index kind and options, model, counts, version, backend."""
        with self._mutex:
            identities = self.identities()
            return {"path": str(self.path), "dim": self.dim, "metric": self.metric, "index": self.index_kind,
                    "index_options": dict(self.index_options), "model": self.model, "entries": sum(identities.values()),
                    "identities": len(identities), "version": self.version, "created": self.created,
                    "backend": self.backend}

    def __repr__(self) -> str:
        try:
            size = f"{len(self)} entries"
        except sqlite3.ProgrammingError:
            size = "closed"
        return f"Gallery({str(self.path)!r}, {size}, dim {self.dim}, {self.metric}, {self.index_kind}, {self.backend})"


def _connect(database: Path, *, readonly: bool, timeout: float) -> sqlite3.Connection:
    options = {"timeout": timeout, "isolation_level": None, "check_same_thread": False}
    try:
        if not readonly:
            return sqlite3.connect(database, **options)
        uri = database.resolve().as_uri()
        shm = database.with_name(database.name + "-shm")
        if not os.access(database.parent, os.W_OK) and not shm.exists():
            # read-only media: SQLite cannot create the WAL index (-shm); nobody can write there either, so the
            # database may be read as immutable
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, **options)
        return sqlite3.connect(f"{uri}?mode=ro", uri=True, **options)
    except sqlite3.Error as error:
        raise DataError(f"{database}: cannot open the gallery database ({error})") from None


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidOptionError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_index_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = dict(DEFAULT_INDEX_OPTIONS)
    for key, value in (options or {}).items():
        if key not in DEFAULT_INDEX_OPTIONS:
            raise UnknownNameError(f"unknown gallery index option {key!r}; valid: {', '.join(DEFAULT_INDEX_OPTIONS)}")
        if not (key == "nlist" and value is None):
            _positive_int(value, f"index option {key}")
        merged[key] = value
    return merged


__all__ = ["Gallery", "Match", "Entry", "GalleryWarning", "GalleryLockedError", "model_fingerprint", "METRICS",
           "INDEX_KINDS"]

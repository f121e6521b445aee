"""The :class:`Gallery` (see the package docstring and ``docs/gallery.md``)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
import warnings
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ...errors import DataError, InvalidOptionError, OutputError, UnknownNameError
from ...files import atomic_path, temp_files_of
from ..search import DEFAULT_INDEX_OPTIONS, VectorIndex, faiss_available, import_faiss
from .snapshot import Snapshot
from .storage import (
    DB_NAME,
    INDEX_FILE_VERSION,
    INDEX_NAME,
    LOCK_NAME,
    SCHEMA,
    CorruptIndex,
    FileLock,
    connect,
    read_index_file,
    write_index_file,
)

FORMAT_NAME = "facesphere-gallery"
FORMAT_VERSION = 1
METRICS = ("cosine", "ip")
INDEX_KINDS = ("flat", "ivf", "hnsw")
BACKENDS = ("auto", "faiss", "numpy")
_SQL_CHUNK = 500  # ids per "IN (...)" query
_OWN_META = frozenset({"format", "format_version", "dim", "metric", "index", "index_options", "model", "uuid",
                       "version", "token", "remove_version", "max_norm", "created"})


class GalleryWarning(UserWarning):
    """The index cache was missing, corrupt or could not be written; the gallery still works (from SQLite)."""


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _vector_blob(vector: np.ndarray) -> bytes:
    """float32 ``(D,)`` -> little-endian bytes (the ``vectors.vector`` BLOB)."""
    return vector.astype("<f4", copy=False).tobytes()


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
        self._lock = FileLock(path / LOCK_NAME, lock_timeout)
        self._state: Snapshot | None = None
        meta = self._read_meta()
        self.dim = int(meta["dim"])
        self.metric = meta["metric"]
        self.index_kind = meta["index"]
        self.index_options = {**DEFAULT_INDEX_OPTIONS, **json.loads(meta.get("index_options") or "{}")}
        self.uuid = meta["uuid"]
        self.created = meta.get("created")
        if backend == "faiss":
            import_faiss("the gallery's FAISS backend")
        self.backend = "faiss" if backend != "numpy" and faiss_available() else "numpy"
        #: IVF lists visited per query and HNSW search breadth (index="ivf" / "hnsw"); change them freely
        self.nprobe = int(self.index_options["nprobe"])
        self.ef_search = int(self.index_options["ef_search"])

    # --- opening ------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], dim: int, *, metric: str = "cosine", index: str = "flat",
               model: str | None = None, index_options: Mapping[str, Any] | None = None, overwrite: bool = False,
               backend: str = "auto", lock_timeout: float = 60.0, exist_ok: bool = False) -> "Gallery":
        """Create an empty gallery in directory ``path`` (created if needed) for ``dim``-dimensional embeddings.

        ``metric``: ``"cosine"`` (embeddings and queries are L2-normalised; scores in [-1, 1]) or ``"ip"`` (raw inner
        product). ``index``: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"`` (approximate, for large galleries; tune with
        ``index_options``: ``nlist``, ``nprobe``, ``hnsw_m``, ``ef_construction``, ``ef_search``). ``model``: the
        fingerprint of the recogniser whose embeddings the gallery holds (:func:`model_fingerprint`); set on the first
        :meth:`add` that passes one when not given here. ``overwrite=True`` replaces an existing gallery there (only
        the gallery's own files are deleted; nobody else may have it open). ``backend``: ``"auto"`` (faiss when
        installed), ``"faiss"`` or ``"numpy"``. ``exist_ok=True`` opens the gallery instead when one exists there
        already (creation is atomic: of several processes creating one gallery at once, one creates it and the others
        open it).
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
            import_faiss("the gallery's FAISS backend")
        directory = Path(path)
        if directory.exists() and not directory.is_dir():
            raise DataError(f"{directory}: is a file, not a gallery directory")
        database = directory / DB_NAME
        if database.exists() and not overwrite and not exist_ok:
            raise DataError(f"{directory}: a gallery already exists here; open it (Gallery.open) or pass "
                            "overwrite=True to replace it")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DataError(f"{directory}: cannot create the gallery directory ({error.strerror})") from None
        with FileLock(directory / LOCK_NAME, lock_timeout).hold():
            if database.exists() and not overwrite:  # somebody created it meanwhile
                if exist_ok:
                    return cls.open(directory, backend=backend, lock_timeout=lock_timeout)
                raise DataError(f"{directory}: a gallery already exists here; open it (Gallery.open) or pass "
                                "overwrite=True to replace it")
            for name in (DB_NAME + "-wal", DB_NAME + "-shm", INDEX_NAME):
                (directory / name).unlink(missing_ok=True)
            with atomic_path(database, what="gallery database") as temporary:
                try:
                    connection = sqlite3.connect(temporary, isolation_level=None)
                    try:
                        # 16 KiB pages hold several vector rows each (a 512-d float32 row is 2 KiB + a few bytes:
                        # the default 4 KiB page would hold one and waste half the file)
                        connection.execute("PRAGMA page_size=16384")
                        connection.execute("PRAGMA journal_mode=WAL")
                        connection.execute("BEGIN")
                        for statement in SCHEMA.strip().split(";"):
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
                    except sqlite3.Error as error:
                        raise OutputError(f"{database}: cannot create the gallery ({error}); nothing was "
                                          "written") from None
                    finally:
                        connection.close()
                finally:
                    for name in (temporary.name + "-wal", temporary.name + "-shm"):
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
        connection = connect(database, readonly=readonly, timeout=lock_timeout)
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
        else:
            gallery = cls.create(path, dim, exist_ok=True, **options)
        if gallery.dim != int(dim):
            gallery.close()
            raise DataError(f"{path}: the gallery holds {gallery.dim}-d embeddings, these are {dim}-d "
                            "(another recogniser?); use a new gallery directory")
        return gallery

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
        """One SQLite transaction: committed whole or rolled back whole. An SQLite failure (disk full, I/O error, a
        corrupt database) becomes an :class:`OutputError` (writing) or :class:`DataError` (reading) naming the
        database; a rolled-back write leaves the gallery as it was."""
        connection = self._connection
        try:
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield connection
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            if connection.in_transaction:
                with suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            database = self.path / DB_NAME
            if write:
                raise OutputError(f"{database}: cannot write to the gallery ({error}); the change was rolled back "
                                  "and the gallery is as it was") from None
            raise DataError(f"{database}: cannot read the gallery database ({error})") from None

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
    def _new_searcher(self) -> VectorIndex:
        return VectorIndex(self.dim, self.index_kind if self.backend == "faiss" else "numpy", self.index_options)

    def _index_header(self, state: Snapshot) -> dict[str, Any]:
        searcher = state.searcher
        return {"format": INDEX_FILE_VERSION, "uuid": state.uuid, "version": state.version, "token": state.token,
                "max_id": state.max_id, "ntotal": searcher.ntotal, "kind": self.index_kind, "dim": self.dim,
                "metric": self.metric, "nlist": searcher.nlist, "trained_on": searcher.trained_on,
                "faiss_version": getattr(searcher.faiss, "__version__", None)}

    def _load_index_cache(self, meta: Mapping[str, str]) -> tuple[Snapshot | None, str | None, str]:
        """``(state, None, "")``: the state held by ``index.faiss``, which matches this gallery and can be caught up
        to ``meta``'s version by appending rows. Else ``(None, code, message)``: ``code`` ``"retry"`` (the file is
        newer than our database snapshot: a writer committed meanwhile), ``"removed"`` (entries were removed since
        it was written) or ``"missing"`` (a writer may be about to save it; ``message`` is empty when the gallery is
        empty), ``"bad"`` (corrupt or foreign: rebuild with a warning)."""
        version, remove_version = int(meta["version"]), int(meta["remove_version"])
        path = self.path / INDEX_NAME
        try:
            found = read_index_file(path)
        except CorruptIndex as problem:
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
        state = Snapshot(uuid_=meta["uuid"], version=int(header["version"]), token=header["token"], searcher=searcher)
        state.append_labels(np.asarray(ids, dtype=np.int64), identities)
        return state, None, ""

    def _load_state(self) -> tuple[Snapshot, bool]:
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
                    if self.backend == "faiss":
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
                        state = Snapshot(uuid_=meta["uuid"], version=0, token="", searcher=self._new_searcher())
                        rebuilt = self.backend == "faiss"
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

    def _current_state(self) -> Snapshot:
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
        if self.readonly or self.backend == "numpy" or state is None:
            return False
        with self._lock.hold(blocking=blocking) as locked:
            if not locked:
                return False
            token = self._connection.execute("SELECT value FROM meta WHERE key = 'token'").fetchone()[0]
            if token != state.token:
                return False
            # left by a writer killed mid-write (the second pattern: galleries written by facesphere 0.1)
            for stray in [*temp_files_of(self.path / INDEX_NAME), *self.path.glob(f".{INDEX_NAME}.tmp-*")]:
                stray.unlink(missing_ok=True)
            try:
                if state.searcher.index is None:
                    (self.path / INDEX_NAME).unlink(missing_ok=True)
                    return True
                write_index_file(self.path / INDEX_NAME, self._index_header(state), state.searcher)
            except (OSError, OutputError, RuntimeError) as error:  # faiss reports its I/O errors as RuntimeError
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
            state = Snapshot(uuid_=self.uuid, version=0, token="", searcher=self._new_searcher())
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
            if update_index and self.backend == "faiss":
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
            if update_index and self.backend == "faiss":
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

    def get_meta(self, key: str) -> str | None:
        """An application value recorded with :meth:`set_meta` (None when absent)."""
        with self._mutex:
            row = self._connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str | None) -> None:
        """Record an application value in the ``meta`` table (e.g. ``model_source``: how to open the gallery's
        recogniser); the gallery's own keys are refused."""
        self._require_writable()
        if key in _OWN_META:
            raise InvalidOptionError(f"{key!r} is managed by the gallery itself; use another meta key")
        with self._mutex, self._lock.hold(), self._transaction(write=True) as connection:
            connection.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

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

    def entries(self, ids: Sequence[int] | None = None, *, identity: str | None = None,
                paths: Sequence[str] | None = None) -> list[Entry]:
        """The entries ``ids`` (those that exist, ascending), those of ``identity``, those whose image path is one
        of ``paths`` (as stored), or all of them."""
        with self._mutex:
            if paths is not None:
                rows = []
                wanted_paths = [os.fspath(p) for p in paths]
                for start in range(0, len(wanted_paths), _SQL_CHUNK):
                    chunk = wanted_paths[start:start + _SQL_CHUNK]
                    rows += self._connection.execute(
                        "SELECT id, identity, path, added, extra FROM entries "
                        f"WHERE path IN ({','.join('?' * len(chunk))})", chunk).fetchall()
                rows.sort()
            elif ids is not None:
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

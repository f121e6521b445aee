"""The gallery's files: the SQLite database connection, the index cache file with its checksummed trailer, and the
writers' lock."""

from __future__ import annotations

import json
import os
import sqlite3
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ...errors import DataError, FaceSphereError, GalleryLockedError
from ...files import atomic_path
from ..search import VectorIndex

DB_NAME = "gallery.sqlite"
INDEX_NAME = "index.faiss"
LOCK_NAME = "gallery.lock"
INDEX_FILE_VERSION = 1
_INDEX_MAGIC = b"FSGALIDX"

SCHEMA = """
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


def write_index_file(path: Path, header: dict[str, Any], index: VectorIndex) -> None:
    """Atomically replace ``path`` (the gallery's ``index.faiss``) by ``index`` as FAISS writes it, followed by a
    trailer: the JSON ``header`` (with the payload's length and CRC-32), its length (uint32 LE) and 8 magic bytes. A
    crash at any point leaves either the old file or the new one, never a mixture (a stray temporary file at worst,
    removed by the next writer: :func:`facesphere.files.temp_files_of`). ``faiss.read_index`` reads the file as it
    is (it stops before the trailer)."""
    with atomic_path(path, what="gallery index cache") as temporary:
        index.write(str(temporary))
        crc, size = 0, 0
        with open(temporary, "r+b") as handle:
            for chunk in iter(lambda: handle.read(16 << 20), b""):
                crc, size = zlib.crc32(chunk, crc), size + len(chunk)
            header_bytes = json.dumps({**header, "payload_bytes": size, "crc32": crc}, sort_keys=True).encode()
            handle.write(header_bytes + len(header_bytes).to_bytes(4, "little") + _INDEX_MAGIC)


class CorruptIndex(Exception):
    pass


def read_index_file(path: Path) -> tuple[dict[str, Any], np.ndarray] | None:
    """``(header, payload uint8)`` of an index file; ``None`` when absent; :class:`CorruptIndex` when unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise CorruptIndex(f"cannot read it ({error})") from None
    if len(data) < 12 or data[-8:] != _INDEX_MAGIC:
        raise CorruptIndex("no facesphere trailer (truncated, or not written by facesphere)")
    header_length = int.from_bytes(data[-12:-8], "little")
    if header_length > len(data) - 12:
        raise CorruptIndex("bad trailer")
    try:
        header = json.loads(data[len(data) - 12 - header_length:-12].decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptIndex("its trailer is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != INDEX_FILE_VERSION:
        found = header.get("format") if isinstance(header, dict) else "?"
        raise CorruptIndex(f"unsupported index file format {found}")
    payload = np.frombuffer(data, dtype=np.uint8, count=len(data) - 12 - header_length)
    if payload.size != header.get("payload_bytes"):
        raise CorruptIndex(f"{payload.size} index bytes, the trailer says {header.get('payload_bytes')}")
    if zlib.crc32(payload) != header.get("crc32"):
        raise CorruptIndex("checksum mismatch")
    return header, payload


class FileLock:
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


def connect(database: Path, *, readonly: bool, timeout: float) -> sqlite3.Connection:
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

"""RecordIO framing: the magic word, ``lrecord = cflag << 29 | length``, 4-byte padding, records split where the
payload holds the magic word; :class:`RecordWriter` / :class:`RecordReader` (byte-compatible with mxnet's
``MXIndexedRecordIO``)."""

from __future__ import annotations

import os
import struct
import threading
import warnings
from typing import Iterator

import numpy as np

from ...errors import DataError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
LEN_BITS = 29
LEN_MASK = (1 << LEN_BITS) - 1
_FRAME = struct.Struct("<II")
_MAX_HINT = 16 << 20  # largest single read issued on a guess of the record's size
_INT64 = 1 << 63

# --------------------------------------------------------------------------------------------------------------
# framing


def _encode_lrec(cflag: int, length: int) -> bytes:
    return _FRAME.pack(MAGIC, (cflag << LEN_BITS) | length)


def encode_record(payload: bytes) -> bytes:
    """Frame one payload exactly as mxnet's ``RecordIOWriter::WriteRecord`` does.

    Wherever the magic word occurs in the payload at a 4-byte-aligned position, the payload is cut there and the
    magic word dropped: the parts go out with ``cflag`` 1 (first), 2 (middle), 3 (last); an uncut payload has
    ``cflag`` 0. Only the last part can have a length that is not a multiple of 4; it is padded with zero bytes.
    """
    data = bytes(payload)
    n = len(data)
    if n >= 1 << LEN_BITS:
        raise ValueError(f"RecordIO records must be shorter than 2**29 bytes, got {n}")
    out = bytearray()
    dptr = 0
    pos = data.find(MAGIC_BYTES)
    while pos != -1:
        if pos % 4 == 0:
            out += _encode_lrec(1 if dptr == 0 else 2, pos - dptr)
            out += data[dptr:pos]
            dptr = pos + 4
            pos = data.find(MAGIC_BYTES, dptr)
        else:
            pos = data.find(MAGIC_BYTES, pos + 1)
    out += _encode_lrec(3 if dptr != 0 else 0, n - dptr)
    out += data[dptr:]
    out += b"\0" * (-n % 4)
    return bytes(out)


def resolve_prefix(prefix_or_rec: str | os.PathLike) -> tuple[str, str]:
    """Return ``(path_rec, path_idx)`` for ``/x/train``, ``/x/train.rec``, ``/x/train.idx`` or a folder.

    A folder resolves to its ``train.rec`` if present, else to its only ``*.rec`` file.
    """
    path = os.fspath(prefix_or_rec)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "train.rec")):
            base = os.path.join(path, "train")
        else:
            recs = sorted(f for f in os.listdir(path) if f.endswith(".rec"))
            if len(recs) != 1:
                found = ", ".join(recs) if recs else "none"
                raise DataError(
                    f"{path}: is a folder; expected train.rec or exactly one .rec file inside it (found {found}); "
                    "pass the .rec path or its prefix"
                )
            base = os.path.join(path, recs[0][:-4])
    elif path.endswith(".rec") or path.endswith(".idx"):
        base = path[:-4]
    else:
        base = path
    return base + ".rec", base + ".idx"


class RecordWriter:
    """Write an indexed RecordIO pair, like ``mx.recordio.MXIndexedRecordIO(idx, rec, 'w')``.

    ``write(key, payload)`` appends the framed payload to ``path_rec`` and the line ``key<TAB>offset`` to
    ``path_idx`` (omitted when ``path_idx`` is None). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path_rec: str | os.PathLike, path_idx: str | os.PathLike | None = None) -> None:
        self.path_rec = os.fspath(path_rec)
        self.path_idx = None if path_idx is None else os.fspath(path_idx)
        self._rec = open(self.path_rec, "wb")
        self._idx = None
        try:
            if self.path_idx is not None:
                self._idx = open(self.path_idx, "w", encoding="ascii", newline="\n")
        except BaseException:
            self._rec.close()
            raise
        self._pos = 0
        self._keys: set[int] = set()

    def tell(self) -> int:
        """Byte offset where the next record will start."""
        return self._pos

    def write(self, key: int, payload: bytes) -> int:
        """Append one record; returns its byte offset in the ``.rec`` file."""
        if self._rec is None:
            raise ValueError(f"{self.path_rec}: writer is closed")
        key = int(key)
        if key in self._keys:
            raise ValueError(f"{self.path_rec}: key {key} written twice")
        framed = encode_record(payload)
        offset = self._pos
        self._rec.write(framed)
        self._pos += len(framed)
        self._keys.add(key)
        if self._idx is not None:
            self._idx.write(f"{key}\t{offset}\n")
        return offset

    def close(self) -> None:
        for name in ("_rec", "_idx"):
            f = getattr(self, name)
            if f is not None:
                f.close()
                setattr(self, name, None)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


class RecordReader:
    """Read an (optionally indexed) RecordIO file.

    * ``read(key)`` -- random access through the ``.idx`` (keys and offsets validated on open). Without an
      ``.idx`` the records are indexed by a header-only scan on first use and keyed ``0, 1, 2, ...`` in file order.
    * iteration / :meth:`scan` -- sequential reading from the start of the file, no ``.idx`` needed.

    Multi-part records are joined with the magic word re-inserted. The file is opened lazily per process and read
    with ``os.pread`` (a locked seek+read where ``pread`` is missing), so a reader can be shared across threads and
    pickled into worker processes. Every problem with the files raises :class:`DataError` naming the file, the
    key (when known) and the byte offset.
    """

    def __init__(self, path_rec: str | os.PathLike, path_idx: str | os.PathLike | None = None) -> None:
        self.path_rec = os.fspath(path_rec)
        self.path_idx = None if path_idx is None else os.fspath(path_idx)
        if not os.path.isfile(self.path_rec):
            raise DataError(f"{self.path_rec}: RecordIO file not found")
        self.size = os.path.getsize(self.path_rec)
        self._fd: int | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._keys: np.ndarray | None = None  # idx order
        self._offsets: np.ndarray | None = None  # idx order
        self._sorted_keys: np.ndarray | None = None
        self._sorted_key_pos: np.ndarray | None = None
        self._contiguous = False
        self._spans: np.ndarray | None = None  # idx order: bytes to the next record start, for read-size hints
        if self.path_idx is not None:
            if not os.path.isfile(self.path_idx):
                raise DataError(f"{self.path_idx}: RecordIO index file not found")
            keys, offsets = self._parse_idx()
            self._set_index(keys, offsets)

    # ---- index ------------------------------------------------------------------------------------------------
    def _parse_idx(self) -> tuple[np.ndarray, np.ndarray]:
        keys = offsets = None
        if os.path.getsize(self.path_idx) == 0:
            keys = offsets = np.zeros(0, dtype=np.int64)
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "input contained no data" for whitespace-only files
                    table = np.loadtxt(self.path_idx, dtype=np.int64, ndmin=2, comments=None, encoding="latin-1")
                if table.shape[0] == 0:
                    keys = offsets = np.zeros(0, dtype=np.int64)
                elif table.shape[1] == 2:
                    keys, offsets = table[:, 0].copy(), table[:, 1].copy()
            except (ValueError, OverflowError):
                pass
        if keys is None:  # locate the offending line
            with open(self.path_idx, "rb") as f:
                keys, offsets = self._parse_idx_slow(f.read())
        if len(keys) == 0 and self.size > 0:
            raise DataError(f"{self.path_idx}: the index lists no records but {self.path_rec} holds {self.size} bytes; "
                            "the .idx is truncated or does not belong to this .rec")
        bad = np.flatnonzero(offsets < 0)
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{self.path_idx}: key {int(keys[i])} has a negative offset {int(offsets[i])}")
        past = np.flatnonzero(offsets > self.size - 8)  # not offsets + 8: that could overflow int64
        if past.size:
            i = int(past[0])
            raise DataError(
                f"{self.path_idx}: key {int(keys[i])} points at offset {int(offsets[i])}, past the end of "
                f"{self.path_rec} ({self.size} bytes); the .idx does not belong to this .rec or the .rec is truncated"
                + (f" ({past.size} keys affected)" if past.size > 1 else "")
            )
        return keys, offsets

    def _parse_idx_slow(self, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
        keys, offsets = [], []
        for lineno, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                if len(parts) != 2:
                    raise ValueError
                k, o = int(parts[0]), int(parts[1])
                if not (-_INT64 <= k < _INT64 and -_INT64 <= o < _INT64):
                    text = line.decode("utf-8", "replace")[:80]
                    raise DataError(
                        f"{self.path_idx}: line {lineno}: key or offset out of range in {text!r} (both must be "
                        "64-bit integers)"
                    )
            except ValueError:
                text = line.decode("utf-8", "replace")[:80]
                raise DataError(
                    f"{self.path_idx}: line {lineno}: expected 'key<TAB>offset' (two integers), got {text!r}"
                ) from None
            keys.append(k)
            offsets.append(o)
        return np.asarray(keys, dtype=np.int64), np.asarray(offsets, dtype=np.int64)

    def _set_index(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        n = len(keys)
        self._keys = keys
        self._offsets = offsets
        self._contiguous = bool(n == 0 or (keys[0] == 0 and np.array_equal(keys, np.arange(n, dtype=np.int64))))
        if not self._contiguous:
            order = np.argsort(keys, kind="stable")
            sk = keys[order]
            dup = np.flatnonzero(sk[1:] == sk[:-1])
            if dup.size:
                where = self.path_idx or self.path_rec
                raise DataError(f"{where}: key {int(sk[dup[0]])} appears more than once in the index")
            self._sorted_keys = sk
            self._sorted_key_pos = order
        # bytes from each record's offset to the next record's (or EOF): the size of a whole-record read
        if n and np.all(offsets[1:] >= offsets[:-1]):
            self._spans = np.diff(offsets, append=np.int64(self.size))
        else:
            order = np.argsort(offsets, kind="stable")
            so = offsets[order]
            self._spans = np.empty(n, dtype=np.int64)
            self._spans[order] = np.diff(so, append=np.int64(self.size))

    def _ensure_index(self) -> None:
        if self._keys is None:
            offsets = np.asarray(list(self.scan_offsets()), dtype=np.int64)
            self._set_index(np.arange(len(offsets), dtype=np.int64), offsets)

    @property
    def keys(self) -> np.ndarray:
        """All keys, in ``.idx`` order (``0..n-1`` in file order when there is no ``.idx``)."""
        self._ensure_index()
        return self._keys

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: int) -> bool:
        return self._position(int(key)) is not None

    def has_keys(self, keys: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``keys`` are in the index."""
        self._ensure_index()
        keys = np.asarray(keys, dtype=np.int64)
        if self._contiguous:
            return (keys >= 0) & (keys < len(self._keys))
        sk = self._sorted_keys
        if len(sk) == 0:
            return np.zeros(keys.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(sk, keys), len(sk) - 1)
        return sk[pos] == keys

    def _position(self, key: int) -> int | None:
        if self._keys is None:
            self._ensure_index()
        if self._contiguous:
            return key if 0 <= key < len(self._keys) else None
        i = int(self._sorted_keys.searchsorted(key))
        if i < len(self._sorted_keys) and int(self._sorted_keys[i]) == key:
            return int(self._sorted_key_pos[i])
        return None

    def offset(self, key: int) -> int:
        """Byte offset of record ``key``; :class:`DataError` if the key is not in the index."""
        pos = self._position(int(key))
        if pos is None:
            raise DataError(f"{self.path_idx or self.path_rec}: key {int(key)} is not in the index")
        return int(self._offsets[pos])

    def offsets(self, keys: np.ndarray) -> np.ndarray:
        """Byte offsets of many keys at once (all must exist)."""
        keys = np.asarray(keys, dtype=np.int64)
        ok = self.has_keys(keys)
        if not ok.all():
            missing = int(keys[np.flatnonzero(~ok)[0]])
            raise DataError(f"{self.path_idx or self.path_rec}: key {missing} is not in the index")
        if self._contiguous:
            return self._offsets[keys]
        return self._offsets[self._sorted_key_pos[np.searchsorted(self._sorted_keys, keys)]]

    # ---- file access ------------------------------------------------------------------------------------------
    def _get_fd(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            # a descriptor inherited through fork is shared with the parent: never reuse it
            try:
                self._fd = os.open(self.path_rec, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except OSError as e:
                raise DataError(f"{self.path_rec}: cannot open RecordIO file: {e.strerror}") from None
            self._pid = pid
        return self._fd

    if hasattr(os, "pread"):

        def _pread(self, n: int, offset: int) -> bytes:
            return os.pread(self._get_fd(), n, offset)

    else:  # pragma: no cover - Windows

        def _pread(self, n: int, offset: int) -> bytes:
            fd = self._get_fd()
            with self._lock:
                os.lseek(fd, offset, os.SEEK_SET)
                return os.read(fd, n)

    def _where(self, key: int | None, offset: int) -> str:
        if key is None:
            return f"{self.path_rec}: record at offset {offset}"
        return f"{self.path_rec}: record key {key} at offset {offset}"

    def _read_frames(self, offset: int, key: int | None, hint: int = 0, limit: int | None = None):
        """Parse the record starting at ``offset``; returns ``(payload, next_offset)``.

        ``hint`` is how many bytes to fetch in the first read. With ``limit`` only the first part is read when it
        already holds ``limit`` payload bytes (the returned payload may then be shorter than the full record).
        """
        buf = self._pread(max(hint, 8), offset)
        base = offset
        parts = []
        pos = offset
        first = True
        while True:
            rel = pos - base
            if rel + 8 > len(buf):
                buf = self._pread(8, pos)
                base = pos
                rel = 0
            if len(buf) - rel < 8:
                raise DataError(
                    f"{self._where(key, offset)}: file ends inside a record header at byte {pos} "
                    f"({self.size} bytes): the .rec file is truncated"
                )
            magic, lrec = _FRAME.unpack_from(buf, rel)
            if magic != MAGIC:
                raise DataError(
                    f"{self._where(key, offset)}: bad magic 0x{magic:08x} at byte {pos} (expected 0x{MAGIC:08x}): "
                    "the file is not RecordIO, is corrupt, or the .idx does not belong to it"
                )
            cflag, length = lrec >> LEN_BITS, lrec & LEN_MASK
            if (first and cflag not in (0, 1)) or (not first and cflag not in (2, 3)):
                what = "a record cannot start with" if first else "a continued record cannot have"
                raise DataError(f"{self._where(key, offset)}: {what} part flag {cflag} (at byte {pos})")
            start = pos + 8
            rel = start - base
            if start + length > self.size:  # before reading: a part's length is read from the file
                raise DataError(
                    f"{self._where(key, offset)}: record part needs {length} bytes from byte {start} but the file "
                    f"has only {max(self.size - start, 0)}: the .rec file is truncated"
                )
            if rel + length <= len(buf):
                data = buf[rel : rel + length]
            else:
                data = self._pread(length, start)
            if len(data) < length:
                raise DataError(
                    f"{self._where(key, offset)}: record part needs {length} bytes from byte {start} but the file "
                    f"has only {max(self.size - start, 0)}: the .rec file is truncated"
                )
            parts.append(data)
            pos = start + ((length + 3) & ~3)
            if cflag in (0, 3):
                break
            if limit is not None and first and length >= limit:
                break
            first = False
        payload = parts[0] if len(parts) == 1 else MAGIC_BYTES.join(parts)
        return payload, pos

    def read(self, key: int) -> bytes:
        """The payload of record ``key`` (multi-part records joined)."""
        key = int(key)
        pos = self._position(key)
        if pos is None:
            raise DataError(f"{self.path_idx or self.path_rec}: key {key} is not in the index")
        off = int(self._offsets[pos])
        return self._read_frames(off, key, hint=min(int(self._spans[pos]), _MAX_HINT))[0]

    def read_prefix(self, key: int, n: int) -> bytes:
        """At least the first ``n`` bytes of record ``key``'s payload (fewer only if the payload is shorter)."""
        key = int(key)
        off = self.offset(key)
        return self._read_frames(off, key, hint=8 + n, limit=n)[0]

    def read_at(self, offset: int) -> tuple[bytes, int]:
        """The payload of the record at byte ``offset`` and the offset of the next record."""
        return self._read_frames(int(offset), None, hint=8)

    def scan_offsets(self) -> Iterator[int]:
        """Offsets of every record in file order, reading only the part headers."""
        pos = 0
        while pos < self.size:
            rec_start = pos
            first = True
            while True:
                head = self._pread(8, pos)
                if len(head) < 8:
                    raise DataError(
                        f"{self._where(None, rec_start)}: file ends inside a record header at byte {pos}: "
                        "the .rec file is truncated"
                    )
                magic, lrec = _FRAME.unpack(head)
                if magic != MAGIC:
                    raise DataError(
                        f"{self._where(None, rec_start)}: bad magic 0x{magic:08x} at byte {pos} "
                        f"(expected 0x{MAGIC:08x}): the file is not RecordIO or is corrupt"
                    )
                cflag, length = lrec >> LEN_BITS, lrec & LEN_MASK
                if (first and cflag not in (0, 1)) or (not first and cflag not in (2, 3)):
                    raise DataError(f"{self._where(None, rec_start)}: unexpected part flag {cflag} at byte {pos}")
                if pos + 8 + length > self.size:
                    raise DataError(
                        f"{self._where(None, rec_start)}: record part needs {length} bytes from byte {pos + 8} but "
                        f"the file has only {self.size - pos - 8}: the .rec file is truncated"
                    )
                pos += 8 + ((length + 3) & ~3)
                if cflag in (0, 3):
                    break
                first = False
            yield rec_start

    def scan(self) -> Iterator[tuple[int, bytes]]:
        """``(offset, payload)`` for every record in file order (no ``.idx`` needed)."""
        pos = 0
        while pos < self.size:
            payload, nxt = self._read_frames(pos, None, hint=8)
            yield pos, payload
            pos = nxt

    def __iter__(self) -> Iterator[bytes]:
        for _, payload in self.scan():
            yield payload

    # ---- lifecycle --------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
        self._pid = None

    def __enter__(self) -> "RecordReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fd"] = None
        state["_pid"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RecordReader({self.path_rec!r}, {self.path_idx!r})"

"""MXNet RecordIO (``.rec`` + ``.idx``) in pure Python, with InsightFace's face-set layout.

Byte-compatible with mxnet's ``MXIndexedRecordIO`` and ``mx.recordio.pack``/``unpack`` (see
``docs/data-formats.md`` and ``shared/spec/FORMATS.md`` section 1). Three layers:

* framing: :class:`RecordWriter` / :class:`RecordReader` (magic word, ``lrecord`` = ``cflag << 29 | length``,
  4-byte padding, records split where the payload holds the magic word at a 4-byte boundary);
* the image-record header: :func:`pack_image_record` / :func:`unpack_image_record` (``IRHeader`` = ``'IfQQ'``
  plus an optional float32 label array);
* the InsightFace training-set layout: :class:`RecordIOFaceSet` (reading), :func:`pack_folder` and
  :func:`unpack` (folder of class folders <-> ``.rec``/``.idx``/``property``).

Readers open their file lazily in each process (state pickles the path, not the handle) and read with
``os.pread``, so one reader can be shared by threads and by DataLoader worker processes.
"""

from __future__ import annotations

import io
import math
import numbers
import os
import struct
import threading
import warnings
from collections import namedtuple
from typing import Iterator, Sequence

import numpy as np

from ..errors import DataError

__all__ = [
    "MAGIC",
    "IRHeader",
    "RecordWriter",
    "RecordReader",
    "RecordIOFaceSet",
    "encode_record",
    "pack_image_record",
    "unpack_image_record",
    "pack_folder",
    "unpack",
    "resolve_prefix",
    "detect_image_extension",
    "IMAGE_EXTENSIONS",
]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LEN_BITS = 29
_LEN_MASK = (1 << _LEN_BITS) - 1
_FRAME = struct.Struct("<II")
_MAX_HINT = 16 << 20  # largest single read issued on a guess of the record's size

IR_FORMAT = "<IfQQ"  # flag, label, id, id2 -- no padding: the same 24 bytes as mxnet's native 'IfQQ'
_IR = struct.Struct(IR_FORMAT)
IR_SIZE = _IR.size

IRHeader = namedtuple("IRHeader", ["flag", "label", "id", "id2"])
IRHeader.__doc__ = "The header of an image record: ``flag`` (label-array length), ``label``, ``id``, ``id2``."

#: File extensions :func:`pack_folder` treats as images (compared lower-case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".pgm", ".ppm", ".pbm", ".tif", ".tiff")


# --------------------------------------------------------------------------------------------------------------
# framing


def _encode_lrec(cflag: int, length: int) -> bytes:
    return _FRAME.pack(MAGIC, (cflag << _LEN_BITS) | length)


def encode_record(payload: bytes) -> bytes:
    """Frame one payload exactly as mxnet's ``RecordIOWriter::WriteRecord`` does.

    Wherever the magic word occurs in the payload at a 4-byte-aligned position, the payload is cut there and the
    magic word dropped: the parts go out with ``cflag`` 1 (first), 2 (middle), 3 (last); an uncut payload has
    ``cflag`` 0. Only the last part can have a length that is not a multiple of 4; it is padded with zero bytes.
    """
    data = bytes(payload)
    n = len(data)
    if n >= 1 << _LEN_BITS:
        raise ValueError(f"RecordIO records must be shorter than 2**29 bytes, got {n}")
    out = bytearray()
    dptr = 0
    pos = data.find(_MAGIC_BYTES)
    while pos != -1:
        if pos % 4 == 0:
            out += _encode_lrec(1 if dptr == 0 else 2, pos - dptr)
            out += data[dptr:pos]
            dptr = pos + 4
            pos = data.find(_MAGIC_BYTES, dptr)
        else:
            pos = data.find(_MAGIC_BYTES, pos + 1)
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
        bad = np.flatnonzero(offsets < 0)
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{self.path_idx}: key {int(keys[i])} has a negative offset {int(offsets[i])}")
        past = np.flatnonzero(offsets + 8 > self.size)
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
            cflag, length = lrec >> _LEN_BITS, lrec & _LEN_MASK
            if (first and cflag not in (0, 1)) or (not first and cflag not in (2, 3)):
                what = "a record cannot start with" if first else "a continued record cannot have"
                raise DataError(f"{self._where(key, offset)}: {what} part flag {cflag} (at byte {pos})")
            start = pos + 8
            rel = start - base
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
        payload = parts[0] if len(parts) == 1 else _MAGIC_BYTES.join(parts)
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
                cflag, length = lrec >> _LEN_BITS, lrec & _LEN_MASK
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


# --------------------------------------------------------------------------------------------------------------
# image records


def pack_image_record(label, image_bytes: bytes, id: int = 0, id2: int = 0) -> bytes:  # noqa: A002
    """Payload of an image record, as ``mx.recordio.pack(IRHeader(0, label, id, id2), image_bytes)``.

    A number label is stored in the header (``flag = 0``); a sequence is stored as a float32 array after the header
    (``flag = len``, header label 0).
    """
    if isinstance(label, numbers.Number) or (isinstance(label, np.ndarray) and label.ndim == 0):
        head = _IR.pack(0, float(label), int(id), int(id2))
        return head + bytes(image_bytes)
    arr = np.asarray(label, dtype="<f4").ravel()
    head = _IR.pack(arr.size, 0.0, int(id), int(id2))
    return head + arr.tobytes() + bytes(image_bytes)


def unpack_image_record(payload: bytes, *, source: str = "image record"):
    """Split an image-record payload into ``(IRHeader, label, image_bytes)``.

    ``label`` is a float when ``flag == 0`` and a float32 array of ``flag`` values otherwise (``IRHeader.label``
    then keeps the raw header float). ``source`` names the record in error messages.
    """
    if len(payload) < IR_SIZE:
        raise DataError(f"{source}: payload of {len(payload)} bytes is shorter than the {IR_SIZE}-byte image header")
    header = IRHeader(*_IR.unpack_from(payload, 0))
    if header.flag == 0:
        return header, float(header.label), bytes(payload[IR_SIZE:])
    end = IR_SIZE + 4 * header.flag
    if end > len(payload):
        raise DataError(
            f"{source}: header declares a label array of {header.flag} floats but the payload has only "
            f"{len(payload) - IR_SIZE} bytes after the header"
        )
    label = np.frombuffer(payload, dtype="<f4", count=header.flag, offset=IR_SIZE).astype(np.float32)
    return header, label, bytes(payload[end:])


def detect_image_extension(data: bytes) -> str:
    """File extension (with dot) for encoded image bytes, from their magic bytes; ``.dat`` if unknown."""
    head = bytes(data[:16])
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return ".gif"
    if head.startswith(b"BM"):
        return ".bmp"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return ".webp"
    if head.startswith((b"II*\0", b"MM\0*")):
        return ".tif"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n":
        return {b"1": ".pbm", b"4": ".pbm", b"2": ".pgm", b"5": ".pgm", b"3": ".ppm", b"6": ".ppm"}[head[1:2]]
    return ".dat"


# --------------------------------------------------------------------------------------------------------------
# InsightFace face sets


class RecordIOFaceSet:
    """A face training set stored as InsightFace RecordIO (``train.rec`` + ``train.idx`` + ``property``).

    Layout (detected from record key 0):

    * key 0 with a label array ``[a, b]`` and no image bytes: image records are keys ``1 .. a-1``; keys
      ``a .. b-1`` are identity records (``[start, end)`` image-key range of each class; possibly none);
    * otherwise (key 0 an ordinary image record, e.g. ``flag == 0``): every key in the ``.idx`` is an image,
      in ``.idx`` order.

    ``read(i)`` returns ``(label, image_bytes)`` for the i-th image: the class id as int (the header float, or
    the first element of a label array) and the encoded bytes, undecoded. ``labels`` (all class ids, np.int64)
    comes from a scan that reads only record headers, and is cached. Without an ``.idx`` file the records are
    indexed by a scan and keyed ``0, 1, ...`` in file order. Picklable (workers re-open the file).
    """

    def __init__(self, prefix_or_rec: str | os.PathLike) -> None:
        rec, idx = resolve_prefix(prefix_or_rec)
        if not os.path.isfile(rec):
            raise DataError(f"{rec}: RecordIO file not found (from {os.fspath(prefix_or_rec)!r})")
        self.rec_path = rec
        self.idx_path = idx if os.path.isfile(idx) else None
        self.property_path = os.path.join(os.path.dirname(rec), "property")
        self._reader = RecordReader(rec, self.idx_path)
        self._labels: np.ndarray | None = None
        self._class_ranges: np.ndarray | None = None
        self.header: tuple[int, int] | None = None
        self._prop = self._read_property()
        self._detect_layout()

    # ---- setup ------------------------------------------------------------------------------------------------
    def _read_property(self) -> tuple[int, int, int] | None:
        path = self.property_path
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().strip()
        try:
            vals = [int(v) for v in text.split(",")]
            if len(vals) != 3 or min(vals) < 0:
                raise ValueError
        except ValueError:
            raise DataError(
                f"{path}: expected 'num_classes,height,width' (three non-negative integers), got {text[:80]!r}"
            ) from None
        return vals[0], vals[1], vals[2]

    def _detect_layout(self) -> None:
        r = self._reader
        keys = r.keys
        is_header = False
        if 0 in r:
            head, label, img = unpack_image_record(r.read(0), source=f"{self.rec_path}: record key 0")
            if head.flag > 0 and len(img) == 0:
                if head.flag < 2:
                    raise DataError(
                        f"{self.rec_path}: record key 0 looks like an InsightFace header but its label array has "
                        f"{head.flag} value(s); expected [a, b]"
                    )
                is_header = True
        if not is_header:
            self._image_keys = keys.copy()
            self._a = self._b = None
            return
        a, b = float(label[0]), float(label[1])
        if not (a.is_integer() and b.is_integer() and 1 <= a <= b):
            raise DataError(
                f"{self.rec_path}: record key 0 header [a, b] = [{a:g}, {b:g}] is invalid; expected integers "
                "1 <= a <= b (image keys 1..a-1, identity keys a..b-1)"
            )
        a, b = int(a), int(b)
        self.header = (a, b)
        needed = np.arange(1, b, dtype=np.int64)
        ok = r.has_keys(needed)
        if not ok.all():
            miss = np.flatnonzero(~ok)
            first = int(needed[miss[0]])
            kind = "image" if first < a else "identity"
            raise DataError(
                f"{self.idx_path or self.rec_path}: header record says keys 1..{b - 1} exist, but {kind} key "
                f"{first} is missing from the index ({miss.size} missing)"
            )
        self._a, self._b = a, b
        self._image_keys = np.arange(1, a, dtype=np.int64)

    # ---- metadata ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._image_keys)

    @property
    def keys(self) -> np.ndarray:
        """Record keys of the images, in dataset order (np.int64)."""
        return self._image_keys

    @property
    def has_header(self) -> bool:
        return self.header is not None

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(height, width)`` from ``property``, or None without one."""
        return None if self._prop is None else (self._prop[1], self._prop[2])

    @property
    def num_classes(self) -> int:
        """From ``property`` if present, else the number of identity records, else ``max(labels) + 1``."""
        if self._prop is not None:
            return self._prop[0]
        if self._a is not None and self._b > self._a:
            return self._b - self._a
        labels = self.labels
        return int(labels.max()) + 1 if labels.size else 0

    def _label_int(self, value: float, key: int) -> int:
        value = float(value)
        if not (math.isfinite(value) and value.is_integer() and value >= 0):
            raise DataError(
                f"{self.rec_path}: record key {key}: label {value!r} is not a non-negative integer class id"
            )
        return int(value)

    @property
    def labels(self) -> np.ndarray:
        """Class id of every image (np.int64, dataset order); header-only scan, cached."""
        if self._labels is None:
            self._labels = self._scan_labels()
        return self._labels

    def _scan_labels(self) -> np.ndarray:
        r = self._reader
        keys = self._image_keys
        n = len(keys)
        out = np.empty(n, dtype=np.float64)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        offsets = r.offsets(keys)
        want = IR_SIZE + 4  # the header and the first label-array value
        nread = 8 + want
        head = struct.Struct("<IIIf")  # magic, lrecord, flag, label
        first_value = struct.Struct("<f")
        fd = r._get_fd()
        pread = os.pread if hasattr(os, "pread") else (lambda _fd, k, o: r._pread(k, o))
        chunk = 1 << 16
        for c0 in range(0, n, chunk):
            for j, off in enumerate(offsets[c0 : c0 + chunk].tolist(), c0):
                buf = pread(fd, nread, off)
                if len(buf) == nread:
                    magic, lrec, flag, label = head.unpack_from(buf)
                    if magic == MAGIC and lrec >> _LEN_BITS == 0:
                        length = lrec & _LEN_MASK
                        if flag == 0 and length >= IR_SIZE:
                            out[j] = label
                            continue
                        if flag > 0 and length >= want:
                            out[j] = first_value.unpack_from(buf, 8 + IR_SIZE)[0]
                            continue
                # unusual or broken record: the careful path (raises a precise DataError)
                key = int(keys[j])
                h, label, _ = unpack_image_record(r.read_prefix(key, want), source=f"{self.rec_path}: record key {key}")
                out[j] = float(label[0]) if h.flag > 0 else float(label)
        bad = ~(np.isfinite(out) & (out >= 0) & (np.floor(out) == out))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            self._label_int(out[i], int(keys[i]))
        return out.astype(np.int64)

    @property
    def class_ranges(self) -> np.ndarray | None:
        """``(num_identities, 2)`` int64 array of ``[start, end)`` image keys per class, or None if the set has no
        identity records. Row ``c`` is class ``c``."""
        if self._a is None or self._b == self._a:
            return None
        if self._class_ranges is None:
            rows = []
            for key in range(self._a, self._b):
                head, label, _ = unpack_image_record(
                    self._reader.read(key), source=f"{self.rec_path}: identity record key {key}"
                )
                if head.flag < 2:
                    raise DataError(
                        f"{self.rec_path}: identity record key {key} has no [start, end) label array"
                    )
                rows.append((int(label[0]), int(label[1])))
            self._class_ranges = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
        return self._class_ranges

    # ---- records ----------------------------------------------------------------------------------------------
    def read(self, i: int) -> tuple[int, bytes]:
        """``(label, image_bytes)`` of the i-th image (raw encoded bytes, not decoded)."""
        n = len(self._image_keys)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for {n} images in {self.rec_path}")
        key = int(self._image_keys[i])
        head, label, img = unpack_image_record(self._reader.read(key), source=f"{self.rec_path}: record key {key}")
        value = float(label[0]) if head.flag > 0 else label
        return self._label_int(value, key), img

    __getitem__ = read

    def read_key(self, key: int) -> tuple[IRHeader, float | np.ndarray, bytes]:
        """The unpacked record with this key (any record: image, header or identity)."""
        return unpack_image_record(self._reader.read(int(key)), source=f"{self.rec_path}: record key {int(key)}")

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> "RecordIOFaceSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RecordIOFaceSet({self.rec_path!r}, images={len(self)}, header={self.header})"


# --------------------------------------------------------------------------------------------------------------
# folder <-> RecordIO


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="img", leave=False)


def _list_class_folders(src: str):
    try:
        entries = sorted(os.scandir(src), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"{src}: cannot list folder: {e.strerror}") from None
    classes, empty, ignored = [], [], 0
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            ignored += 1
            continue
        try:
            files = sorted(
                f.name
                for f in os.scandir(entry.path)
                if not f.name.startswith(".") and f.is_file() and os.path.splitext(f.name)[1].lower() in IMAGE_EXTENSIONS
            )
        except OSError as e:
            raise DataError(f"{entry.path}: cannot list folder: {e.strerror}") from None
        if files:
            classes.append((entry.name, [os.path.join(entry.path, f) for f in files]))
        else:
            empty.append(entry.name)
    return classes, empty, ignored


def _image_size(data: bytes, path: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
    return h, w


def _remove_quietly(paths: Sequence[str]) -> None:
    for p in paths:
        try:
            os.remove(p)
        except OSError:
            pass


def pack_folder(src_folder: str | os.PathLike, out_prefix: str | os.PathLike, *, progress: bool = True) -> dict:
    """Pack ``SRC/<class>/<image>`` into InsightFace RecordIO: ``OUT.rec``, ``OUT.idx``, ``property``,
    ``OUT.classes.txt``.

    Classes are the non-hidden sub-folders holding at least one image (extension in :data:`IMAGE_EXTENSIONS`),
    numbered 0.. in sorted folder-name order; images go in sorted file-name order, keys ``1..N``, label = class id
    (float). Key 0 is the header ``[N+1, N+1+C]``, keys ``N+1 .. N+C`` the identity records ``[start, end)``.
    Image bytes are copied verbatim. ``property`` (``C,height,width``; the most common image size) is written to
    ``os.path.join(dirname(OUT), "property")``; ``OUT.classes.txt`` lists ``id<TAB>folder``. Every file is written
    under a temporary name and renamed into place at the end. Returns a summary dict.
    """
    src = os.fspath(src_folder)
    if not os.path.isdir(src):
        raise DataError(f"{src}: source folder not found (expected SRC/<class>/<image> files)")
    out_arg = os.fspath(out_prefix)
    if os.path.isdir(out_arg):  # an existing folder: InsightFace's names inside it
        out_arg = os.path.join(out_arg, "train")
    rec_path, idx_path = resolve_prefix(out_arg)
    base = rec_path[:-4]
    out_dir = os.path.dirname(os.path.abspath(base))
    classes, empty, ignored = _list_class_folders(src)
    if not classes:
        raise DataError(f"{src}: no class folders with images found (expected SRC/<class>/<image>.jpg)")
    num_images = sum(len(files) for _, files in classes)
    num_classes = len(classes)
    if num_images + num_classes + 1 > 1 << 24:
        raise DataError(
            f"{src}: {num_images} images and {num_classes} classes are too many for the InsightFace layout, whose "
            "float32 header and identity records hold keys exactly only up to 2**24; split the set"
        )
    os.makedirs(out_dir, exist_ok=True)
    prop_path = os.path.join(os.path.dirname(base), "property")
    classes_path = base + ".classes.txt"
    finals = [rec_path, idx_path, classes_path, prop_path]
    tag = f".tmp-{os.getpid()}"
    temps = [p + tag for p in finals]
    sizes: dict[tuple[int, int], int] = {}
    total_bytes = 0
    a = num_images + 1
    b = a + num_classes
    try:
        with RecordWriter(temps[0], temps[1]) as w:
            w.write(0, pack_image_record([a, b], b""))
            key = 1
            ranges = []

            def items():
                for cid, (_, files) in enumerate(classes):
                    for path in files:
                        yield cid, path

            for cid, path in _progress(items(), num_images, "pack", progress):
                if key == 1 or ranges[-1][0] != cid:
                    ranges.append([cid, key, key])
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError as e:
                    raise DataError(f"{path}: cannot read image: {e.strerror}") from None
                hw = _image_size(data, path)
                sizes[hw] = sizes.get(hw, 0) + 1
                total_bytes += len(data)
                w.write(key, pack_image_record(float(cid), data, id=key))
                key += 1
                ranges[-1][2] = key
            for cid, start, end in ranges:
                w.write(a + cid, pack_image_record([start, end], b""))
        with open(temps[2], "w", encoding="utf-8", newline="\n") as f:
            for cid, (name, _) in enumerate(classes):
                f.write(f"{cid}\t{name}\n")
        (h, wd), _ = max(sizes.items(), key=lambda kv: kv[1])
        with open(temps[3], "w", encoding="ascii", newline="\n") as f:
            f.write(f"{num_classes},{h},{wd}\n")
        for tmp, final in zip(temps, finals):
            os.replace(tmp, final)
    except BaseException:
        _remove_quietly(temps)
        raise
    return {
        "rec": rec_path,
        "idx": idx_path,
        "property": prop_path,
        "classes_file": classes_path,
        "num_images": num_images,
        "num_classes": num_classes,
        "image_size": (h, wd),
        "image_sizes": {f"{hh}x{ww}": c for (hh, ww), c in sorted(sizes.items())},
        "image_bytes": total_bytes,
        "rec_bytes": os.path.getsize(rec_path),
        "header": (a, b),
        "skipped_empty_folders": empty,
        "ignored_top_level_files": ignored,
    }


def unpack(
    prefix_or_rec: str | os.PathLike,
    out_folder: str | os.PathLike,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Write every image of a RecordIO face set to ``OUT/<class id>/<record key><ext>``.

    Class folders are the class id zero-padded to the width of the largest id (``00``, ``01``, ... ``23``), file
    names the record key zero-padded to the width of the largest key, the extension detected from the image's
    magic bytes (``.jpg``, ``.png``, ...; ``.dat`` if unknown). Zero-padding keeps sorted order equal to numeric
    order, so packing the result again gives the same class ids and image order. Bytes are written verbatim.
    ``OUT`` must be empty or missing unless ``overwrite``. Returns a summary dict.
    """
    ds = RecordIOFaceSet(prefix_or_rec)
    out = os.fspath(out_folder)
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise DataError(f"{out}: exists and is not a folder")
        if os.listdir(out) and not overwrite:
            raise DataError(f"{out}: output folder is not empty; choose an empty folder (or pass overwrite=True)")
    os.makedirs(out, exist_ok=True)
    labels = ds.labels
    keys = ds.keys
    n = len(ds)
    cw = len(str(int(labels.max()))) if n else 1
    kw = len(str(int(keys.max()))) if n else 1
    made: set[int] = set()
    exts: dict[str, int] = {}
    with ds:
        for i in _progress(range(n), n, "unpack", progress):
            label, img = ds.read(i)
            folder = os.path.join(out, f"{label:0{cw}d}")
            if label not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(label)
            ext = detect_image_extension(img)
            exts[ext] = exts.get(ext, 0) + 1
            path = os.path.join(folder, f"{int(keys[i]):0{kw}d}{ext}")
            with open(path, "wb") as f:
                f.write(img)
    return {
        "out": out,
        "rec": ds.rec_path,
        "num_images": n,
        "num_classes": len(made),
        "extensions": exts,
        "class_folder_width": cw,
        "file_name_width": kw,
    }

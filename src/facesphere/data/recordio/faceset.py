"""The InsightFace training-set layout read back: :class:`RecordIOFaceSet` (header record, identity records, labels)."""

from __future__ import annotations

import math
import os
import struct

import numpy as np

from ...errors import DataError
from .. import limits
from .framing import LEN_BITS, LEN_MASK, MAGIC, RecordReader, resolve_prefix
from .records import IR_SIZE, IRHeader, unpack_image_record

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
        try:
            with open(path, "rb") as f:
                raw = f.read(1025)  # one short line; anything longer is not a property file
        except OSError as e:
            raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
        text = raw.decode("utf-8", errors="replace").strip()
        try:
            if len(raw) > 1024:
                raise ValueError
            vals = [int(v) for v in text.split(",")]
            if len(vals) != 3 or min(vals) < 0:
                raise ValueError
        except ValueError:
            raise DataError(
                f"{path}: expected 'num_classes,height,width' (three non-negative integers), got {text[:80]!r}"
            ) from None
        if vals[0] > limits.MAX_CLASSES:
            raise DataError(
                f"{path}: claims {vals[0]} classes, more than facesphere's limit of {limits.MAX_CLASSES} "
                "(RecordIO class ids are float32, exact only up to 2**24): the property file is corrupt"
            )
        if vals[1] * vals[2] > limits.MAX_IMAGE_PIXELS:
            raise DataError(
                f"{path}: claims {vals[1]}x{vals[2]} images, more than facesphere's limit of "
                f"{limits.MAX_IMAGE_PIXELS} pixels: the property file is corrupt"
            )
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
        elif self.idx_path is not None and len(keys) and r.size >= 8:
            # the file starts with InsightFace's header record, but the index does not list it: an index cut
            # short (or of another file) would silently read a different, smaller set
            try:
                first, _ = r.read_at(0)
                flag = struct.unpack_from("<I", first)[0] if len(first) >= IR_SIZE else 0
                looks_like_header = flag >= 2 and len(first) == IR_SIZE + 4 * flag
            except DataError:
                looks_like_header = False
            if looks_like_header:
                raise DataError(
                    f"{self.idx_path}: {self.rec_path} starts with an InsightFace header record but the index has "
                    "no key 0: the .idx is truncated or does not belong to this .rec"
                )
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
        if b - 1 > len(keys):  # checked before any allocation sized by the header
            raise DataError(
                f"{self.rec_path}: record key 0 header [a, b] = [{a}, {b}] says keys 1..{b - 1} exist, but the "
                f"{'index' if self.idx_path else 'file'} holds only {len(keys)} records: the header is corrupt"
            )
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
                    if magic == MAGIC and lrec >> LEN_BITS == 0:
                        length = lrec & LEN_MASK
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
        labels = out.astype(np.int64)
        self._check_labels(labels)
        return labels

    def _check_labels(self, labels: np.ndarray) -> None:
        """Labels within the class count and, where the set has identity records, in their class's key range."""
        if not labels.size:
            return
        limit = self._prop[0] if self._prop is not None else limits.MAX_CLASSES
        over = np.flatnonzero(labels >= limit)
        if over.size:
            i = int(over[0])
            where = f"{self.property_path} says {limit} classes" if self._prop is not None else (
                f"facesphere's limit is {limit} classes")
            raise DataError(f"{self.rec_path}: record key {int(self._image_keys[i])}: label {int(labels[i])} is out "
                            f"of range ({where}; {over.size} record(s) affected)")
        wrong = self.contradicted_labels(labels)
        if wrong.size:
            i = int(wrong[0])
            raise DataError(f"{self.rec_path}: {self.label_contradiction(i, int(labels[i]))}"
                            + (f" ({wrong.size} records affected)" if wrong.size > 1 else ""))

    def expected_labels(self) -> np.ndarray | None:
        """The class of every image (dataset order) according to the identity records: ``-1`` where no record
        covers its key; None without identity records."""
        ranges = self.class_ranges
        if ranges is None:
            return None
        by_key = np.full(self._a, -1, dtype=np.int64)  # image keys are 1 .. a-1
        for c, (start, end) in enumerate(ranges.tolist()):
            by_key[start:end] = c
        return by_key[self._image_keys]

    def contradicted_labels(self, labels: np.ndarray) -> np.ndarray:
        """Dataset positions whose label disagrees with the identity records (empty without them)."""
        expected = self.expected_labels()
        if expected is None:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(expected != labels)

    def label_contradiction(self, i: int, label: int) -> str:
        """Why image ``i``'s ``label`` contradicts the identity records (for messages)."""
        key = int(self._image_keys[i])
        expected = self.expected_labels()
        c = int(expected[i]) if expected is not None else -1
        if c < 0:
            return (f"record key {key} has label {label} but no identity record (keys {self._a}..{self._b - 1}) "
                    "covers this key")
        start, end = (int(v) for v in self.class_ranges[c])
        return (f"record key {key} has label {label} but identity record key {self._a + c} says keys "
                f"[{start}, {end}) are class {c}")

    @property
    def class_ranges(self) -> np.ndarray | None:
        """``(num_identities, 2)`` int64 array of ``[start, end)`` image keys per class, or None if the set has no
        identity records. Row ``c`` is class ``c``."""
        if self._a is None or self._b == self._a:
            return None
        if self._class_ranges is None:
            rows = []
            previous_end = 1
            for key in range(self._a, self._b):
                where = f"{self.rec_path}: identity record key {key}"
                head, label, _ = unpack_image_record(self._reader.read(key), source=where)
                if head.flag < 2:
                    raise DataError(f"{where} has no [start, end) label array")
                start, end = float(label[0]), float(label[1])
                if not (start.is_integer() and end.is_integer() and previous_end <= start <= end <= self._a):
                    raise DataError(
                        f"{where}: [start, end) = [{start:g}, {end:g}] is invalid; expected integers with "
                        f"{previous_end} <= start <= end <= {self._a} (image keys 1..{self._a - 1}, classes in key "
                        "order, not overlapping)"
                    )
                previous_end = int(end)
                rows.append((int(start), int(end)))
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

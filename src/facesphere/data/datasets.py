"""Training datasets (folder, list file, RecordIO) and the bad-sample markers of a batch.

Every dataset is a map-style :class:`torch.utils.data.Dataset` whose items are ``(image, label)``: ``image`` the
decoded ``uint8`` ``(H, W, 3)`` RGB array and ``label`` an ``int`` class id in ``[0, num_classes)``
(:meth:`FaceDataset.load_array`; the trainer augments and normalises, :mod:`facesphere.train.data`). Each dataset also
exposes ``labels`` (``np.int64``, one per item), ``num_classes``, ``classes`` (class names, index = id) and
``source(i)`` (the file or record an item comes from, as named in error messages).

Bad samples
-----------
A bad image (corrupt, truncated, wrong size, missing file, broken record) raises :class:`~facesphere.errors.DataError`
from ``load_array``. The trainer turns it into a :class:`BadSample` marker (policy ``skip``) that
:func:`collate_skip_bad` drops when a batch is assembled, returning ``(images, labels, num_bad)`` so the count travels
with the batch from whichever DataLoader worker met the bad file; a batch can therefore hold fewer than ``batch_size``
items (even none: check ``labels.numel()``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.utils.data
from torch.utils.data import Dataset, default_collate

from ..errors import DataError
from . import limits
from .image import decode_image, is_image_file, read_image_bytes
from .recordio import RecordIOFaceSet
from .specs import TRAIN_KINDS, parse_data_spec

__all__ = [
    "FaceDataset",
    "ImageFolderDataset",
    "ListFileDataset",
    "RecordIODataset",
    "BadSample",
    "Batch",
    "collate_skip_bad",
    "build_dataset",
    "read_identity_list",
    "scan_image_folder",
    "parse_list_file",
]

logger = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------------------------------
# base class


class FaceDataset(Dataset):
    """Common behaviour: decode the encoded bytes of item ``i`` (:meth:`_load`) into a uint8 RGB array."""

    labels: np.ndarray
    classes: list[str]

    def __init__(self, expected_size: tuple[int, int] | None = None):
        self.expected_size = None if expected_size is None else (int(expected_size[0]), int(expected_size[1]))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:  # pragma: no cover - subclasses
        raise NotImplementedError

    def _load(self, index: int) -> tuple[bytes, int, str]:  # pragma: no cover - subclasses
        """``(encoded_bytes, label, source)`` of item ``index``; DataError if unreadable."""
        raise NotImplementedError

    def source(self, index: int) -> str:  # pragma: no cover - subclasses
        raise NotImplementedError

    def _check_index(self, index: int) -> int:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of {n} items")
        return i

    def load_array(self, index: int) -> tuple[np.ndarray, int]:
        """The decoded ``uint8 (H, W, 3)`` RGB image and label of item ``index``."""
        data, label, source = self._load(self._check_index(index))
        return decode_image(data, source=source, expected_size=self.expected_size), label

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.load_array(index)


# --------------------------------------------------------------------------------------------------------------------
# folder


def scan_image_folder(root: str | os.PathLike[str]) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """Scan ``root/<identity>/<image>``: returns ``(classes, paths, labels, empty_folders)``.

    Classes are the non-hidden sub-folders holding at least one image file (extension in ``IMAGE_EXTENSIONS``), in
    sorted name order (the same rule as :func:`facesphere.data.recordio.pack_folder`, so folder and packed RecordIO
    agree on class ids); files are sorted by name within a class; hidden files and sub-sub-folders are ignored.
    """
    r = os.fspath(root)
    if not os.path.exists(r):
        raise DataError(f"{r}: image folder not found (expected ROOT/<identity>/<image>.jpg)")
    if not os.path.isdir(r):
        raise DataError(f"{r}: is a file, expected a folder of identity sub-folders (ROOT/<identity>/<image>.jpg)")
    try:
        entries = sorted(os.scandir(r), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"{r}: cannot list folder: {exc.strerror or exc}") from None
    classes: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    top_level_images = 0
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            top_level_images += is_image_file(entry.name)
            continue
        try:
            files = sorted(f.name for f in os.scandir(entry.path) if is_image_file(f.name) and f.is_file())
        except OSError as exc:
            raise DataError(f"{entry.path}: cannot list folder: {exc.strerror or exc}") from None
        if not files:
            empty.append(entry.name)
            continue
        cid = len(classes)
        classes.append(entry.name)
        paths.extend(os.path.join(entry.path, f) for f in files)
        labels.extend([cid] * len(files))
    if not classes:
        if top_level_images:
            raise DataError(
                f"{r}: holds {top_level_images} image(s) but no identity sub-folders; expected "
                "ROOT/<identity>/<image>.jpg (one folder per identity)"
            )
        what = f"{len(empty)} sub-folder(s) without images" if empty else "no sub-folders"
        raise DataError(f"{r}: no images found ({what}); expected ROOT/<identity>/<image>.jpg")
    return classes, paths, np.asarray(labels, dtype=np.int64), empty


class ImageFolderDataset(FaceDataset):
    """Images in ``root/<identity>/*.{jpg,png,pgm,...}``; class ids in sorted folder-name order.

    Attributes: ``classes`` (folder names), ``paths``, ``labels`` (np.int64), ``num_classes``.
    Identity folders without images are skipped (logged) and get no class id.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        expected_size: tuple[int, int] | None = None,
    ):
        super().__init__(expected_size)
        self.root = os.fspath(root)
        self.classes, self.paths, self.labels, empty = scan_image_folder(self.root)
        if empty:
            logger.warning(
                "%s: skipped %d identity folder(s) without images (e.g. %s)", self.root, len(empty), empty[0]
            )

    def __len__(self) -> int:
        return len(self.paths)

    def source(self, index: int) -> str:
        return self.paths[index]

    def _load(self, index: int) -> tuple[bytes, int, str]:
        path = self.paths[index]
        return read_image_bytes(path), int(self.labels[index]), path

    def __repr__(self) -> str:
        return f"ImageFolderDataset({self.root!r}, images={len(self)}, classes={self.num_classes})"


# --------------------------------------------------------------------------------------------------------------------
# list file


@dataclass
class ParsedList:
    """What :func:`parse_list_file` found: ``paths`` (joined with the root), raw ``label_tokens``, ``line_numbers``."""

    paths: list[str]
    label_tokens: list[str]
    line_numbers: list[int]
    format: str  # "plain" or "mxnet-lst"


def _int_token(tok: str) -> int | None:
    try:
        return int(tok)
    except ValueError:
        pass
    try:
        v = float(tok)
    except ValueError:
        return None
    return int(v) if np.isfinite(v) and v.is_integer() else None


def parse_list_file(
    list_file: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    errors: list[tuple[str, str]] | None = None,
) -> ParsedList:
    """Parse a training list file.

    Two layouts, chosen from the first data line:

    * OpenSphere / plain: ``relative/path.jpg label`` (whitespace-separated; the label is the last field, so paths may
      contain spaces);
    * MXNet ``im2rec`` ``.lst``: ``index<TAB>label[<TAB>label...]<TAB>relative/path`` (3+ tab-separated fields; the
      first label is the class).

    Blank lines and lines starting with ``#`` are skipped. Paths are relative to ``root`` (default: the list file's
    folder) unless absolute. A malformed line raises :class:`DataError` naming ``file:line`` -- or, when ``errors``
    is a list, is appended to it as ``("file:line", problem)`` and skipped (what ``verify`` uses).
    """
    lf = os.fspath(list_file)
    if not os.path.exists(lf):
        raise DataError(f"{lf}: list file not found")
    if os.path.isdir(lf):
        raise DataError(f"{lf}: is a folder, expected a list file ('relative/path label' per line)")
    base = os.fspath(root) if root is not None else os.path.dirname(os.path.abspath(lf))
    try:
        with open(lf, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{lf}: not a UTF-8 text list file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{lf}: cannot read list file: {exc.strerror or exc}") from None
    paths: list[str] = []
    tokens: list[str] = []
    numbers: list[int] = []
    fmt: str | None = None
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if fmt is None:
            fields = line.split("\t")
            fmt = "mxnet-lst" if len(fields) >= 3 and _int_token(fields[0].strip()) is not None else "plain"
        problem = None
        if fmt == "plain":
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                problem = f"expected 'relative/path label', got {raw.strip()[:120]!r}"
            else:
                rel, tok = parts
        else:
            fields = [x.strip() for x in line.split("\t")]
            if len(fields) < 3:
                problem = f"expected 'index<TAB>label<TAB>path' (MXNet .lst), got {raw.strip()[:120]!r}"
            else:
                rel, tok = fields[-1], fields[1]
        if problem is None and fmt == "mxnet-lst" and _int_token(tok) is None:
            problem = f"label {tok!r} is not a number (MXNet .lst labels are numeric)"
        if problem is not None:
            where = f"{lf}:{lineno}"
            if errors is None:
                raise DataError(f"{where}: {problem}")
            errors.append((where, problem))
            continue
        paths.append(os.path.join(base, rel))
        tokens.append(tok)
        numbers.append(lineno)
    return ParsedList(paths, tokens, numbers, fmt or "plain")


def labels_from_tokens(
    list_file: str, tokens: Sequence[str], line_numbers: Sequence[int], *, errors: list[tuple[str, str]] | None = None
) -> tuple[np.ndarray, list[str], list[bool]]:
    """Integer ids if every label is a non-negative integer, else class names mapped in sorted order."""
    ints = [_int_token(t) for t in tokens]
    keep = [True] * len(tokens)
    if all(v is not None for v in ints):
        for k, (v, ln) in enumerate(zip(ints, line_numbers)):
            if v is not None and not 0 <= v < limits.MAX_CLASSES:
                msg = (f"label {v} is negative; class ids must be >= 0" if v < 0 else
                       f"label {v} is larger than facesphere's limit of {limits.MAX_CLASSES} classes")
                if errors is None:
                    raise DataError(f"{list_file}:{ln}: {msg}")
                errors.append((f"{list_file}:{ln}", msg))
                keep[k] = False
        vals = [v if v is not None and 0 <= v < limits.MAX_CLASSES else 0 for v in ints]
        num = (max(vals) + 1) if vals else 0
        return np.asarray(vals, dtype=np.int64), [str(i) for i in range(num)], keep
    names = sorted(set(tokens))
    ids = {n: i for i, n in enumerate(names)}
    return np.asarray([ids[t] for t in tokens], dtype=np.int64), names, keep


class ListFileDataset(FaceDataset):
    """Images listed in a text file (see :func:`parse_list_file`).

    Labels: if every label is an integer, it *is* the class id (``num_classes = max + 1``); otherwise every label is a
    class name and names get ids in sorted order. Files are not checked for existence up front (use
    ``facesphere data verify``); a missing file is a :class:`DataError` when read.
    """

    def __init__(
        self,
        list_file: str | os.PathLike[str],
        root: str | os.PathLike[str] | None = None,
        expected_size: tuple[int, int] | None = None,
    ):
        super().__init__(expected_size)
        self.list_file = os.fspath(list_file)
        parsed = parse_list_file(self.list_file, root)
        if not parsed.paths:
            raise DataError(f"{self.list_file}: the list file has no entries ('relative/path label' per line)")
        self.root = os.fspath(root) if root is not None else os.path.dirname(os.path.abspath(self.list_file))
        self.format = parsed.format
        self.paths = parsed.paths
        self.line_numbers = parsed.line_numbers
        self.labels, self.classes, _ = labels_from_tokens(self.list_file, parsed.label_tokens, parsed.line_numbers)

    def __len__(self) -> int:
        return len(self.paths)

    def source(self, index: int) -> str:
        return f"{self.paths[index]} (listed at {self.list_file}:{self.line_numbers[index]})"

    def _load(self, index: int) -> tuple[bytes, int, str]:
        path = self.paths[index]
        try:
            data = read_image_bytes(path)
        except DataError as exc:
            raise DataError(f"{exc} (listed at {self.list_file}:{self.line_numbers[index]})") from None
        return data, int(self.labels[index]), path

    def __repr__(self) -> str:
        return f"ListFileDataset({self.list_file!r}, images={len(self)}, classes={self.num_classes})"


# --------------------------------------------------------------------------------------------------------------------
# RecordIO


class RecordIODataset(FaceDataset):
    """An InsightFace RecordIO training set (``train.rec`` + ``train.idx`` [+ ``property``]).

    Wraps :class:`facesphere.data.recordio.RecordIOFaceSet`, which opens the ``.rec`` lazily in each process (a forked
    DataLoader worker never shares the parent's file descriptor) and reads with ``pread``. ``labels`` is read on
    first use (a header-only scan). ``classes`` come from ``<prefix>.classes.txt`` (written by ``pack_folder``) when
    present, else are the ids as strings.
    """

    def __init__(
        self,
        prefix_or_rec: str | os.PathLike[str],
        expected_size: tuple[int, int] | None = None,
    ):
        super().__init__(expected_size)
        self.faceset = RecordIOFaceSet(prefix_or_rec)
        self.rec_path: str = self.faceset.rec_path
        self._num_classes = int(self.faceset.num_classes)
        self._classes: list[str] | None = None

    @property
    def labels(self) -> np.ndarray:  # type: ignore[override]
        return self.faceset.labels

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        if self._classes is None:
            names = self._read_classes_file()
            self._classes = names if names is not None else [str(i) for i in range(self._num_classes)]
        return self._classes

    def _read_classes_file(self) -> list[str] | None:
        path = self.rec_path[:-4] + ".classes.txt"
        if not os.path.isfile(path):
            return None
        names: dict[int, str] = {}
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    parts = line.rstrip("\n").split("\t", 1)
                    if len(parts) == 2 and parts[0].strip().isdigit():
                        names[int(parts[0])] = parts[1]
        except (OSError, UnicodeDecodeError):
            return None
        if sorted(names) != list(range(self._num_classes)):
            return None
        return [names[i] for i in range(self._num_classes)]

    def __len__(self) -> int:
        return len(self.faceset)

    def source(self, index: int) -> str:
        return f"{self.rec_path} record key {int(self.faceset.keys[index])}"

    def _load(self, index: int) -> tuple[bytes, int, str]:
        label, data = self.faceset.read(index)
        return data, int(label), self.source(index)

    def __repr__(self) -> str:
        return f"RecordIODataset({self.rec_path!r}, images={len(self)}, classes={self.num_classes})"


# --------------------------------------------------------------------------------------------------------------------
# bad samples


@dataclass(frozen=True)
class BadSample:
    """Returned by :class:`SkipBadSamples` (policy ``"skip"``) in place of an item that could not be loaded."""

    index: int
    source: str
    message: str


class Batch(NamedTuple):
    """What :func:`collate_skip_bad` returns: the good items stacked, and how many bad items were dropped."""

    images: torch.Tensor
    labels: torch.Tensor
    num_bad: int


def collate_skip_bad(batch: Sequence[Any]) -> Batch:
    """Collate ``(image, label)`` items, dropping :class:`BadSample` markers (and ``None``).

    Returns ``Batch(images (B', 3, H, W), labels (B',) int64, num_bad)`` with ``B' = len(batch) - num_bad``. When every
    item is bad, ``images`` is an empty ``(0,)`` float32 tensor and ``labels`` an empty int64 tensor.
    """
    good = [b for b in batch if b is not None and not isinstance(b, BadSample)]
    num_bad = len(batch) - len(good)
    if not good:
        return Batch(torch.empty(0, dtype=torch.float32), torch.empty(0, dtype=torch.int64), num_bad)
    images, labels = default_collate(good)
    if not isinstance(labels, torch.Tensor):  # pragma: no cover - labels are ints
        labels = torch.as_tensor(labels)
    return Batch(images, labels.to(torch.int64), num_bad)


def read_identity_list(path: str | os.PathLike[str]) -> list[str]:
    """Identity (class) names, one per line (blank lines and ``#`` comments ignored), as ``data.exclude``,
    ``facesphere data overlap`` and ``facesphere data split`` write them; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: list of identity names not found (data.exclude; `facesphere data overlap` and "
                        "`facesphere data split` write such lists: run them first, or pass --data.exclude '[]')") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the list of identity names ({error})") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def build_dataset(
    spec: str | os.PathLike[str],
    *,
    expected_size: tuple[int, int] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> FaceDataset:
    """Build a training dataset from a spec: ``folder:DIR``, ``list:FILE`` (``root`` = base folder of its paths),
    ``rec:PREFIX`` (``PREFIX``, ``PREFIX.rec`` or a folder with ``train.rec``), or a bare path (see
    :func:`~facesphere.data.specs.detect_format`). Another kind raises :class:`UnknownNameError` listing the valid
    ones."""
    parsed = parse_data_spec(spec, TRAIN_KINDS, check_exists=False)
    path = str(parsed.path)
    if parsed.kind == "folder":
        return ImageFolderDataset(path, expected_size=expected_size)
    if parsed.kind == "list":
        return ListFileDataset(path, root=root, expected_size=expected_size)
    return RecordIODataset(path, expected_size=expected_size)

"""Training datasets (folder, list file, RecordIO), the bad-sample policy and the training DataLoader.

Every dataset is a map-style :class:`torch.utils.data.Dataset` whose items are ``(image, label)``: ``image`` a
``float32`` tensor ``(3, H, W)`` (the ``transform``'s output; by default :func:`build_eval_transform`, i.e.
``(x - 127.5) / 127.5`` in RGB order) and ``label`` an ``int`` class id in ``[0, num_classes)``. Each dataset also
exposes ``labels`` (``np.int64``, one per item), ``num_classes``, ``classes`` (class names, index = id) and
``source(i)`` (the file or record an item comes from, as named in error messages).

Bad samples
-----------
A bad image (corrupt, truncated, wrong size, missing file, broken record) raises :class:`~facesphere.errors.DataError`
from ``dataset[i]``. :class:`SkipBadSamples` wraps a dataset with a policy:

* ``"fail"``: re-raise (the run stops, naming the file);
* ``"skip"``: log one warning per bad file (per process) and return a :class:`BadSample` marker instead of the item.

:func:`collate_skip_bad` drops the markers when a batch is assembled and returns ``(images, labels, num_bad)``, so the
count travels with the batch from whichever DataLoader worker met the bad file to the main process: no shared
memory, exact with any number of workers. :class:`FaceDataLoader` (what :func:`make_train_loader` returns) adds the
counts up (``loader.num_bad``, ``loader.num_samples``) and raises a clean :class:`DataError` when more than
``max_bad_fraction`` of the dataset turns out bad within one epoch -- a run survives a few bad JPEGs, not a broken
dataset. A batch can therefore hold fewer than ``batch_size`` items (even none: check ``labels.numel()``).
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.utils.data
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import default_collate

from ..errors import DataError, InvalidOptionError, UnknownNameError
from .image import decode_image, is_image_file, read_image_bytes
from .transforms import Compose, Normalize, ToCHWTensor, build_eval_transform

__all__ = [
    "FaceDataset",
    "ImageFolderDataset",
    "ListFileDataset",
    "RecordIODataset",
    "BadSample",
    "SkipBadSamples",
    "Batch",
    "collate_skip_bad",
    "FaceDataLoader",
    "build_dataset",
    "detect_format",
    "make_train_loader",
    "NORMALIZE_IN",
    "seed_worker",
    "scan_image_folder",
    "parse_list_file",
    "DATASET_SCHEMES",
]

logger = logging.getLogger(__name__)

#: The ``scheme:`` prefixes :func:`build_dataset` understands.
DATASET_SCHEMES = ("folder", "list", "rec")

Transform = Callable[[np.ndarray], Any]


# --------------------------------------------------------------------------------------------------------------------
# base class


class FaceDataset(Dataset):
    """Common behaviour: decode the encoded bytes of item ``i`` (:meth:`_load`) and apply ``transform``."""

    labels: np.ndarray
    classes: list[str]

    def __init__(self, transform: Transform | None = None, expected_size: tuple[int, int] | None = None):
        self.transform: Transform = transform if transform is not None else build_eval_transform()
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
        """The decoded ``uint8 (H, W, 3)`` RGB image and label of item ``index`` (no transform)."""
        data, label, source = self._load(self._check_index(index))
        return decode_image(data, source=source, expected_size=self.expected_size), label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        arr, label = self.load_array(index)
        return self.transform(arr), label


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
        transform: Transform | None = None,
        expected_size: tuple[int, int] | None = None,
    ):
        super().__init__(transform, expected_size)
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


def _labels_from_tokens(
    list_file: str, tokens: Sequence[str], line_numbers: Sequence[int], *, errors: list[tuple[str, str]] | None = None
) -> tuple[np.ndarray, list[str], list[bool]]:
    """Integer ids if every label is a non-negative integer, else class names mapped in sorted order."""
    ints = [_int_token(t) for t in tokens]
    keep = [True] * len(tokens)
    if all(v is not None for v in ints):
        for k, (v, ln) in enumerate(zip(ints, line_numbers)):
            if v is not None and v < 0:
                msg = f"label {v} is negative; class ids must be >= 0"
                if errors is None:
                    raise DataError(f"{list_file}:{ln}: {msg}")
                errors.append((f"{list_file}:{ln}", msg))
                keep[k] = False
        vals = [v if v is not None and v >= 0 else 0 for v in ints]
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
        transform: Transform | None = None,
        expected_size: tuple[int, int] | None = None,
    ):
        super().__init__(transform, expected_size)
        self.list_file = os.fspath(list_file)
        parsed = parse_list_file(self.list_file, root)
        if not parsed.paths:
            raise DataError(f"{self.list_file}: the list file has no entries ('relative/path label' per line)")
        self.root = os.fspath(root) if root is not None else os.path.dirname(os.path.abspath(self.list_file))
        self.format = parsed.format
        self.paths = parsed.paths
        self.line_numbers = parsed.line_numbers
        self.labels, self.classes, _ = _labels_from_tokens(self.list_file, parsed.label_tokens, parsed.line_numbers)

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
        transform: Transform | None = None,
        expected_size: tuple[int, int] | None = None,
    ):
        super().__init__(transform, expected_size)
        from .recordio import RecordIOFaceSet

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


class SkipBadSamples(Dataset):
    """Apply a bad-sample policy to a dataset (see the module docstring).

    Args:
        dataset: any dataset whose ``__getitem__`` raises :class:`DataError` for a bad item.
        policy: ``"skip"`` (return a :class:`BadSample`, warn once per file per process) or ``"fail"`` (re-raise).
        max_bad_fraction: largest tolerated fraction of bad items per epoch, enforced by :class:`FaceDataLoader`
            over all workers (and here, for in-process use without a loader); ``None`` = unlimited.

    ``num_bad`` / ``num_seen`` count what *this process* has met (in-process iteration only; with workers use the
    loader's counts). ``labels``, ``num_classes``, ``classes`` and ``source`` are forwarded from ``dataset``.
    """

    def __init__(self, dataset: Dataset, policy: str = "skip", max_bad_fraction: float | None = 0.01):
        if policy not in ("skip", "fail"):
            raise InvalidOptionError(f"bad_sample_policy must be 'skip' or 'fail', got {policy!r}")
        if max_bad_fraction is not None and not 0.0 <= max_bad_fraction <= 1.0:
            raise InvalidOptionError(f"max_bad_fraction must be in [0, 1] or None, got {max_bad_fraction!r}")
        self.dataset = dataset
        self.policy = policy
        self.max_bad_fraction = max_bad_fraction
        self.num_bad = 0
        self.num_seen = 0
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    @property
    def labels(self) -> np.ndarray:
        return self.dataset.labels  # type: ignore[attr-defined]

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes  # type: ignore[attr-defined]

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes  # type: ignore[attr-defined]

    @property
    def transform(self) -> Any:
        return getattr(self.dataset, "transform", None)

    def source(self, index: int) -> str:
        src = getattr(self.dataset, "source", None)
        return src(index) if callable(src) else f"item {index}"

    def max_bad(self) -> float:
        """How many bad items one epoch may hold (``inf`` when unlimited)."""
        if self.max_bad_fraction is None:
            return float("inf")
        return self.max_bad_fraction * len(self)

    def __getitem__(self, index: int) -> Any:
        self.num_seen += 1
        try:
            return self.dataset[index]
        except DataError as exc:
            if self.policy == "fail":
                raise
            self.num_bad += 1
            message = str(exc)
            source = self.source(index)
            if source not in self._warned:
                self._warned.add(source)
                logger.warning("skipping bad sample %d: %s", index, message)
            if torch.utils.data.get_worker_info() is None and self.num_bad > self.max_bad():
                raise DataError(_too_many_bad(self.num_bad, self.num_seen, len(self), self.max_bad_fraction, message))
            return BadSample(int(index), source, message)

    def __repr__(self) -> str:
        return f"SkipBadSamples({self.dataset!r}, policy={self.policy!r}, max_bad_fraction={self.max_bad_fraction})"


def _too_many_bad(num_bad: int, num_seen: int, total: int, fraction: float | None, last: str) -> str:
    return (
        f"{num_bad} bad samples among the first {num_seen} read this epoch exceed max_bad_fraction={fraction} of "
        f"{total} items; the dataset looks broken (last: {last}). Run 'facesphere data verify' on it, or raise "
        "max_bad_fraction"
    )


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


# --------------------------------------------------------------------------------------------------------------------
# normalising batches instead of items

NORMALIZE_IN = ("main", "worker", "none")


class _DeferredNormalize(Dataset):
    """A :class:`FaceDataset` whose final :class:`Normalize` is replaced by :class:`ToCHWTensor` (uint8 items)."""

    def __init__(self, dataset: FaceDataset, transform: Callable[[np.ndarray], Any]):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> np.ndarray:
        return self.dataset.labels

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    def source(self, index: int) -> str:
        return self.dataset.source(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        arr, label = self.dataset.load_array(index)
        return self.transform(arr), label


def _split_normalize(dataset: Dataset) -> tuple[Dataset, Normalize | None]:
    """If ``dataset`` is a FaceDataset whose transform ends in :class:`Normalize`, the uint8 twin and that Normalize."""
    if not isinstance(dataset, FaceDataset):
        return dataset, None
    t = dataset.transform
    steps = list(t.transforms) if isinstance(t, Compose) else [t]
    if not steps or type(steps[-1]) is not Normalize:
        return dataset, None
    norm = steps[-1]
    # the same transform objects (and so the same random streams) up to the final step
    return _DeferredNormalize(dataset, Compose(steps[:-1] + [ToCHWTensor(norm.color)])), norm


# --------------------------------------------------------------------------------------------------------------------
# loader


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy's and Python's global RNGs from the worker's torch seed.

    The torch seed of a worker is ``base_seed + worker_id`` with ``base_seed`` drawn from the loader's generator, so
    this is distinct per worker and reproducible for a seeded loader. (facesphere's own transforms do not need it --
    they seed themselves from ``torch.initial_seed()``, see :mod:`facesphere.data.transforms` -- but user transforms
    calling ``np.random`` / ``random`` do.)
    """
    seed = torch.initial_seed()
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _clean_worker_message(exc: BaseException) -> str:
    """The original message of an exception re-raised by a DataLoader worker (without the traceback text)."""
    text = str(exc)
    if not text.startswith("Caught "):
        return text
    cls = type(exc)
    marker = f"{cls.__module__}.{cls.__qualname__}: "
    pos = text.rfind(marker)
    if pos < 0:
        return text
    return text[pos + len(marker) :].strip()


class FaceDataLoader(DataLoader):
    """A :class:`torch.utils.data.DataLoader` that counts bad samples across workers.

    Iterating yields whatever the collate function returns -- with :func:`collate_skip_bad` (the default of
    :func:`make_train_loader`) a :class:`Batch` ``(images, labels, num_bad)``. With ``normalize_in="main"`` the
    workers send uint8 batches and the loader normalises them here with ``normalizer``. It adds up ``num_bad`` into
    ``num_bad`` / ``num_samples`` (lifetime) and ``epoch_bad`` / ``epoch_samples`` (current iteration), and raises
    :class:`DataError` when ``epoch_bad > max_bad_fraction * len(dataset)``. A :class:`DataError` raised in a worker
    (policy ``"fail"``) is re-raised here with its original message, without the worker traceback text.
    """

    def __init__(
        self,
        dataset: Dataset,
        *args: Any,
        max_bad_fraction: float | None = None,
        normalizer: Normalize | None = None,
        normalize_in: str = "worker",
        pin_after_normalize: bool = False,
        **kwargs: Any,
    ):
        super().__init__(dataset, *args, **kwargs)
        if max_bad_fraction is None and isinstance(dataset, SkipBadSamples):
            max_bad_fraction = dataset.max_bad_fraction
        self.max_bad_fraction = max_bad_fraction
        #: The Normalize that turns this loader's uint8 batches into float32 ones (None when items are normalised in
        #: the workers). With ``normalize_in="none"`` apply it yourself: ``loader.normalizer.batch(images.cuda())``.
        self.normalizer = normalizer
        self.normalize_in = normalize_in
        self._pin_after = pin_after_normalize
        self.num_bad = 0
        self.num_samples = 0
        self.epoch_bad = 0
        self.epoch_samples = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        it = super().__iter__()
        self.epoch_bad = 0
        self.epoch_samples = 0
        try:
            total = len(self.dataset)  # type: ignore[arg-type]
        except TypeError:  # pragma: no cover - iterable datasets
            total = 0
        limit = float("inf") if self.max_bad_fraction is None else self.max_bad_fraction * total
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except DataError as exc:
                raise type(exc)(_clean_worker_message(exc)) from None
            if isinstance(batch, Batch):
                n_bad = int(batch.num_bad)
                n = int(batch.labels.shape[0]) + n_bad
                self.num_bad += n_bad
                self.epoch_bad += n_bad
                self.num_samples += n
                self.epoch_samples += n
                if self.epoch_bad > limit:
                    raise DataError(
                        _too_many_bad(
                            self.epoch_bad,
                            self.epoch_samples,
                            total,
                            self.max_bad_fraction,
                            "see the warnings above for the files",
                        )
                    )
                if self.normalize_in == "main" and self.normalizer is not None:
                    images = batch.images
                    if images.dtype == torch.uint8:
                        images = self.normalizer.batch(images)
                        if self._pin_after:
                            images = images.pin_memory()
                    batch = Batch(images, batch.labels, batch.num_bad)
            yield batch


def make_train_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 2,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = True,
    *,
    pin_memory: bool = False,
    bad_sample_policy: str | None = "skip",
    max_bad_fraction: float | None = 0.01,
    prefetch_factor: int | None = None,
    persistent_workers: bool | None = None,
    sampler: torch.utils.data.Sampler | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    multiprocessing_context: Any = None,
    normalize_in: str = "main",
) -> FaceDataLoader:
    """The training DataLoader.

    * ``dataset`` is wrapped in :class:`SkipBadSamples` (``bad_sample_policy``, ``max_bad_fraction``) unless it already
      is one or ``bad_sample_policy`` is None; batches are :class:`Batch` ``(images, labels, num_bad)``.
    * Shuffling uses a ``RandomSampler`` with its own ``torch.Generator`` derived from ``seed``: the same seed gives the
      same order every run (a new permutation each epoch), whatever ``num_workers`` is. The workers' seeds derive from
      ``seed`` too (through the loader's generator), so augmentations are reproducible for a given ``num_workers``.
    * Workers: ``persistent_workers`` (default: on when ``num_workers > 0``), ``worker_init_fn`` =
      :func:`seed_worker`, ``prefetch_factor`` (torch's default 2 when None).
    * ``sampler``: e.g. a ``DistributedSampler``; then ``shuffle`` must be False (the sampler shuffles).
    * ``normalize_in`` -- where a dataset transform's final :class:`Normalize` runs (other datasets are unaffected):

      - ``"main"`` (default): workers stop before it and send ``uint8`` items/batches; the loader normalises each batch
        in the main process. The batches are bit-for-bit those of ``"worker"``, but moving uint8 instead of float32
        batches between processes is much cheaper (see ``docs/data.md``, "Loader throughput");
      - ``"worker"``: every item is normalised in the worker, as ``dataset[i]`` returns it (also what a custom
        ``collate_fn`` gets with ``"main"``);
      - ``"none"``: batches stay ``uint8 (B, 3, H, W)``; normalise them on the GPU with
        ``loader.normalizer.batch(images.to(device))``.
    """
    if normalize_in not in NORMALIZE_IN:
        raise InvalidOptionError(f"normalize_in must be one of {', '.join(NORMALIZE_IN)}, got {normalize_in!r}")
    if batch_size <= 0:
        raise InvalidOptionError(f"batch_size must be positive, got {batch_size}")
    if num_workers < 0:
        raise InvalidOptionError(f"num_workers must be >= 0, got {num_workers}")
    if sampler is not None and shuffle:
        raise InvalidOptionError("make_train_loader: pass shuffle=False with a sampler (the sampler decides the order)")
    if collate_fn is not None and normalize_in == "main":
        normalize_in = "worker"  # a custom collate's batches are not ours to normalise
    normalizer: Normalize | None = None
    if normalize_in != "worker":
        if isinstance(dataset, SkipBadSamples):
            inner, normalizer = _split_normalize(dataset.dataset)
            if normalizer is not None:
                dataset = SkipBadSamples(inner, dataset.policy, dataset.max_bad_fraction)
        else:
            dataset, normalizer = _split_normalize(dataset)
    if bad_sample_policy is not None and not isinstance(dataset, SkipBadSamples):
        dataset = SkipBadSamples(dataset, bad_sample_policy, max_bad_fraction)
    pin_after = bool(pin_memory and normalizer is not None and normalize_in == "main" and torch.cuda.is_available())
    n = len(dataset)  # type: ignore[arg-type]
    if drop_last and n < batch_size:
        raise InvalidOptionError(
            f"the dataset has {n} items, fewer than batch_size={batch_size}, and drop_last=True would give no batch; "
            "lower the batch size"
        )
    # Two streams from one seed: the shuffling order does not depend on num_workers (the sampler has its own
    # generator), and the loader's generator gives each new set of workers its base seed.
    streams = np.random.SeedSequence(int(seed)).spawn(2)
    sampler_seed, worker_seed = (int(s.generate_state(1, np.uint64)[0] >> 1) for s in streams)
    if sampler is None and shuffle:
        sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(sampler_seed))
    generator = torch.Generator()
    generator.manual_seed(worker_seed)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["persistent_workers"] = True if persistent_workers is None else bool(persistent_workers)
        kwargs["worker_init_fn"] = seed_worker
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
        if multiprocessing_context is not None:
            kwargs["multiprocessing_context"] = multiprocessing_context
    return FaceDataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn if collate_fn is not None else collate_skip_bad,
        pin_memory=pin_memory and not pin_after,
        drop_last=drop_last,
        generator=generator,
        max_bad_fraction=max_bad_fraction if bad_sample_policy is not None else None,
        normalizer=normalizer,
        normalize_in=normalize_in,
        pin_after_normalize=pin_after,
        **kwargs,
    )


# --------------------------------------------------------------------------------------------------------------------
# specs

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]+):(.*)$", re.DOTALL)


def _split_scheme(spec: str) -> tuple[str | None, str]:
    m = _SCHEME_RE.match(spec)
    if m is None or os.path.exists(spec):
        return None, spec
    return m.group(1).lower(), m.group(2)


def _dir_rec_prefix(path: str) -> str | None:
    if os.path.isfile(os.path.join(path, "train.rec")):
        return os.path.join(path, "train")
    try:
        names = os.listdir(path)
    except OSError:
        return None
    recs = [n for n in names if n.endswith(".rec") and os.path.isfile(os.path.join(path, n))]
    has_subdirs = any(os.path.isdir(os.path.join(path, n)) and not n.startswith(".") for n in names)
    if len(recs) == 1 and not has_subdirs:
        return os.path.join(path, recs[0][:-4])
    return None


def detect_format(path: str, *, evaluation: bool = False) -> tuple[str, str]:
    """``(kind, path)`` for a bare path: ``rec`` / ``folder`` / ``list`` (and with ``evaluation``: ``bin`` / ``pairs``).

    * ``X.rec``, ``X.idx``, or a prefix ``X`` with ``X.rec`` beside it -> ``rec``; a folder holding ``train.rec`` (the
      InsightFace layout), or exactly one ``.rec`` and no sub-folders -> ``rec``;
    * ``X.bin`` -> ``bin``; a ``pairs.txt`` file, or a folder holding one -> ``pairs`` (evaluation only);
    * any other folder -> ``folder``; a ``.txt`` / ``.lst`` / ``.list`` file -> ``list``.
    """
    p = os.fspath(path)
    low = p.lower()
    if low.endswith((".rec", ".idx")) or (not os.path.exists(p) and os.path.isfile(p + ".rec")):
        return "rec", p
    if not os.path.exists(p):
        raise DataError(f"{p}: no such file or folder")
    if os.path.isdir(p):
        prefix = _dir_rec_prefix(p)
        if prefix is not None:
            return "rec", prefix
        if evaluation and os.path.isfile(os.path.join(p, "pairs.txt")):
            return "pairs", p
        return "folder", p
    if evaluation and low.endswith(".bin"):
        return "bin", p
    if evaluation and os.path.basename(low) == "pairs.txt":
        return "pairs", p
    if low.endswith((".txt", ".lst", ".list")):
        return "list", p
    valid = "folder:DIR, list:FILE, rec:PREFIX" + (", bin:FILE, pairs:DIR" if evaluation else "")
    raise DataError(f"{p}: cannot tell the dataset format from the name; prefix it with one of {valid}")


def build_dataset(
    spec: str | os.PathLike[str],
    *,
    transform: Transform | None = None,
    expected_size: tuple[int, int] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> FaceDataset:
    """Build a training dataset from a spec: ``folder:DIR``, ``list:FILE`` (``root`` = base folder of its paths),
    ``rec:PREFIX`` (``PREFIX``, ``PREFIX.rec`` or a folder with ``train.rec``), or a bare path (see
    :func:`detect_format`). An unknown ``scheme:`` raises :class:`UnknownNameError` listing the valid ones."""
    text = os.fspath(spec)
    scheme, rest = _split_scheme(text)
    if scheme is None:
        scheme, rest = detect_format(rest)
    elif scheme not in DATASET_SCHEMES:
        raise UnknownNameError(
            f"{text}: unknown dataset scheme {scheme!r}; valid: folder:DIR, list:FILE, rec:PREFIX, or a bare path"
        )
    if not rest:
        raise DataError(f"{text}: the dataset spec names no path after '{scheme}:'")
    if scheme == "folder":
        return ImageFolderDataset(rest, transform=transform, expected_size=expected_size)
    if scheme == "list":
        return ListFileDataset(rest, root=root, transform=transform, expected_size=expected_size)
    return RecordIODataset(rest, transform=transform, expected_size=expected_size)

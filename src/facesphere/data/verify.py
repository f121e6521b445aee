"""``facesphere data verify``: decode every image of a dataset and list every bad item.

Supported inputs (a ``kind:`` prefix or a bare path, see :mod:`facesphere.data.specs`):

* ``folder:DIR`` -- ``DIR/<identity>/<image>``;
* ``list:FILE`` -- a training list (malformed lines, missing files and undecodable images are all reported);
* ``rec:PREFIX`` -- InsightFace RecordIO (a ``.rec``/``.idx`` that cannot be opened -- e.g. truncated so the index
  points past its end -- is reported as one bad item; unreadable records, undecodable images and labels outside
  ``[0, num_classes)`` one item each). Without ``expected_size`` the size in ``property`` is expected;
* ``bin:FILE`` -- an InsightFace verification ``.bin`` (pairs of encoded images);
* ``lfw:DIR`` -- an LFW-style folder with ``pairs.txt`` (images at ``DIR/images/<name>/<name>_<NNNN>.jpg`` or
  ``DIR/<name>/...``): every line parsed, every referenced image checked;
* ``pairs:FILE`` -- an OpenSphere pair list (``label path0 path1``), or an LFW ``pairs.txt`` given as a file (told
  apart by its numeric header line): every line parsed, every referenced image checked.

The report never stops at the first problem; only a path that does not exist at all raises :class:`DataError`.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError
from .binfile import read_bin
from .datasets import labels_from_tokens, parse_list_file, scan_image_folder
from .image import decode_image, is_image_file, read_image_bytes
from .pairs import lfw_images_root
from .paths import confined, is_plain_name
from .recordio import RecordIOFaceSet, resolve_prefix
from .specs import VERIFY_KINDS, parse_data_spec

__all__ = ["VerifyReport", "verify_dataset"]


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_dataset`.

    ``total`` counts the images checked; ``bad`` lists ``(item, problem)`` for every bad image, record or line (an
    item is a file path, ``file:line``, ``train.rec record key K`` or ``x.bin image I``); ``notes`` holds
    observations that are not errors (skipped empty folders, ignored files); ``sizes`` counts decoded image sizes
    (``"112x112"`` = height x width).
    """

    path: str
    kind: str
    total: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    num_classes: int | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.bad

    @property
    def num_bad(self) -> int:
        return len(self.bad)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "total": self.total,
            "num_bad": self.num_bad,
            "ok": self.ok,
            "bad": [{"item": i, "problem": p} for i, p in self.bad],
            "notes": list(self.notes),
            "sizes": dict(self.sizes),
            "num_classes": self.num_classes,
            "seconds": round(self.seconds, 3),
        }

    def format_table(self, max_rows: int | None = 50) -> str:
        """A plain-text summary plus a table of bad items (at most ``max_rows``; None = all)."""
        sizes = ", ".join(f"{k}: {v}" for k, v in sorted(self.sizes.items(), key=lambda kv: -kv[1])) or "-"
        lines = [
            f"dataset : {self.path} ({self.kind})",
            f"images  : {self.total} checked"
            + (f", {self.num_classes} classes" if self.num_classes is not None else "")
            + f" in {self.seconds:.1f} s",
            f"sizes   : {sizes} (HxW)",
            f"bad     : {self.num_bad}",
        ]
        for note in self.notes:
            lines.append(f"note    : {note}")
        if self.bad:
            rows = self.bad if max_rows is None else self.bad[:max_rows]
            width = min(max(len("item"), *(len(i) for i, _ in rows)), 100)
            lines.append("")
            lines.append(f"{'item':<{width}} | problem")
            lines.append(f"{'-' * width}-+-{'-' * 40}")
            for item, problem in rows:
                lines.append(f"{item:<{width}} | {_strip_item(problem, item)}")
            if len(rows) < len(self.bad):
                lines.append(f"... and {len(self.bad) - len(rows)} more")
            lines.append("")
            lines.append(f"FAILED: {self.num_bad} bad item(s) among {self.total} images")
        else:
            lines.append("OK: every item decoded")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def _strip_item(problem: str, item: str) -> str:
    """Messages usually start with the item already (``"<path>: cannot decode ..."``): avoid saying it twice."""
    for prefix in (f"{item}: ", f"{item.split(' (listed at ')[0]}: "):
        if problem.startswith(prefix):
            return problem[len(prefix) :]
    return problem


# --------------------------------------------------------------------------------------------------------------------
# checking images, possibly in worker processes


def _size_key(arr: np.ndarray) -> str:
    return f"{arr.shape[0]}x{arr.shape[1]}"


def _check_bytes(data: bytes, source: str, expected_size: tuple[int, int] | None) -> tuple[str | None, str | None]:
    """``(size_key, problem)`` for one encoded image."""
    try:
        arr = decode_image(data, source=source, expected_size=None)
    except DataError as exc:
        return None, str(exc)
    key = _size_key(arr)
    if expected_size is not None and arr.shape[:2] != tuple(expected_size):
        got = f"{arr.shape[0]}x{arr.shape[1]}"
        return key, f"{source}: image is {got} (HxW), expected {expected_size[0]}x{expected_size[1]} (HxW)"
    return key, None


def _check_file(path: str, expected_size: tuple[int, int] | None) -> tuple[str | None, str | None]:
    try:
        data = read_image_bytes(path)
    except DataError as exc:
        return None, str(exc)
    return _check_bytes(data, path, expected_size)


_Result = tuple[int, "str | None", "str | None"]


def _paths_chunk(args: tuple[list[tuple[int, str]], tuple[int, int] | None]) -> list[_Result]:
    items, expected = args
    return [(order, *_check_file(path, expected)) for order, path in items]


_REC_STATE: dict[str, Any] = {}


def _rec_chunk(args: tuple[str, list[int], tuple[int, int] | None, int, Any]) -> list[tuple[int, str | None,
                                                                                           str | None]]:
    """Check records ``indices``; ``identity`` is None or ``(a, classes, ranges)``: per index the class its identity
    record gives (-1: none) and that record's ``[start, end)``."""
    rec_path, indices, expected, num_classes, identity = args
    faceset = _REC_STATE.get(rec_path)
    if faceset is None:
        faceset = RecordIOFaceSet(rec_path)
        _REC_STATE.clear()
        _REC_STATE[rec_path] = faceset
    out = []
    keys = faceset.keys
    for j, i in enumerate(indices):
        source = f"{faceset.rec_path} record key {int(keys[i])}"
        try:
            label, data = faceset.read(i)
        except DataError as exc:
            out.append((i, None, str(exc)))
            continue
        size, problem = _check_bytes(data, source, expected)
        if problem is None and num_classes > 0 and not 0 <= label < num_classes:
            problem = f"{source}: label {label} is outside [0, {num_classes}) (num_classes from property/header)"
        if problem is None and identity is not None:
            a, classes, ranges = identity
            c = int(classes[j])
            if c < 0:
                problem = f"{source}: label {label} but no identity record covers this key"
            elif c != label:
                start, end = (int(v) for v in ranges[j])
                problem = (f"{source}: label {label} contradicts the identity records: identity record key {a + c} "
                           f"says keys [{start}, {end}) are class {c}")
        out.append((i, size, problem))
    return out


def _run_chunks(
    fn: Callable[[Any], list[tuple[int, str | None, str | None]]],
    chunks: Sequence[Any],
    chunk_lengths: Sequence[int],
    workers: int,
    progress: bool,
    desc: str,
) -> list[tuple[int, str | None, str | None]]:
    total = sum(chunk_lengths)
    bar = _progress_bar(total, desc, progress)
    results: list[tuple[int, str | None, str | None]] = []
    try:
        if workers <= 1 or len(chunks) <= 1:
            for chunk, n in zip(chunks, chunk_lengths):
                results.extend(fn(chunk))
                if bar is not None:
                    bar.update(n)
        else:
            ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
            with ctx.Pool(workers) as pool:
                for part in pool.imap_unordered(fn, chunks):
                    results.extend(part)
                    if bar is not None:
                        bar.update(len(part))
    finally:
        if bar is not None:
            bar.close()
    results.sort(key=lambda r: r[0])
    return results


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, unit="img", leave=False)


def _chunked(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _collect(
    report: VerifyReport, results: Iterable[tuple[int, str | None, str | None]], name: Callable[[int], str]
) -> None:
    sizes: Counter[str] = Counter(report.sizes)
    for order, size, problem in results:
        report.total += 1
        if size is not None:
            sizes[size] += 1
        if problem is not None:
            report.bad.append((name(order), problem))
    report.sizes = dict(sizes)


# --------------------------------------------------------------------------------------------------------------------
# per format


def _verify_paths(
    report: VerifyReport,
    paths: Sequence[str],
    names: Sequence[str],
    expected: tuple[int, int] | None,
    workers: int,
    progress: bool,
    chunk: int,
) -> None:
    items = list(enumerate(paths))
    chunks = [(c, expected) for c in _chunked(items, chunk)]
    results = _run_chunks(_paths_chunk, chunks, [len(c[0]) for c in chunks], workers, progress, "verify")
    _collect(report, results, lambda i: names[i])


def _verify_folder(report: VerifyReport, root: str, expected, workers, progress, chunk) -> None:
    if not os.path.isdir(root):
        raise DataError(f"{root}: image folder not found")
    try:
        classes, paths, _labels, empty = scan_image_folder(root)
    except DataError as exc:
        report.bad.append((root, str(exc)))
        return
    report.num_classes = len(classes)
    if empty:
        shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
        report.notes.append(f"{len(empty)} identity folder(s) without images were skipped: {shown}")
    ignored = 0
    top_level = 0
    for entry in os.scandir(root):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if entry.name in classes or entry.name in empty:
                ignored += sum(
                    1 for f in os.scandir(entry.path) if not f.name.startswith(".") and not is_image_file(f.name)
                )
        else:
            top_level += 1
    if ignored:
        report.notes.append(f"{ignored} non-image file(s) or sub-folder(s) inside identity folders were ignored")
    if top_level:
        report.notes.append(f"{top_level} file(s) directly in {root} (not in an identity folder) were ignored")
    _verify_paths(report, paths, paths, expected, workers, progress, chunk)


def _verify_list(report: VerifyReport, list_file: str, expected, workers, progress, chunk) -> None:
    errors: list[tuple[str, str]] = []
    parsed = parse_list_file(list_file, errors=errors)
    report.bad.extend(errors)
    if not parsed.paths:
        if not errors:
            problem = f"{list_file}: the list file has no entries ('relative/path label' per line)"
            report.bad.append((list_file, problem))
        return
    label_errors: list[tuple[str, str]] = []
    _labels, classes, keep = labels_from_tokens(
        list_file, parsed.label_tokens, parsed.line_numbers, errors=label_errors
    )
    report.bad.extend(label_errors)
    report.num_classes = len(classes)
    paths = [p for p, k in zip(parsed.paths, keep) if k]
    lines = [ln for ln, k in zip(parsed.line_numbers, keep) if k]
    names = [f"{p} (listed at {list_file}:{ln})" for p, ln in zip(paths, lines)]
    _verify_paths(report, paths, names, expected, workers, progress, chunk)


def _verify_rec(report: VerifyReport, prefix: str, expected, workers, progress, chunk) -> None:
    rec_path, _idx = resolve_prefix(prefix)
    report.path = rec_path
    if not os.path.exists(rec_path):
        raise DataError(f"{rec_path}: RecordIO file not found (from {prefix!r})")
    try:
        faceset = RecordIOFaceSet(prefix)
        n = len(faceset)
        num_classes = int(faceset.num_classes)
    except DataError as exc:
        report.bad.append((rec_path, str(exc)))
        return
    report.num_classes = num_classes
    if expected is None and faceset.image_size is not None:
        expected = faceset.image_size
        report.notes.append(f"expected image size {expected[0]}x{expected[1]} (HxW) from {faceset.property_path}")
    if faceset.idx_path is None:
        report.notes.append(f"no .idx beside {rec_path}: records were indexed by scanning the file")
    if faceset.header is None:
        report.notes.append("no InsightFace header record (key 0): every record is an image")
    keys = faceset.keys
    # identity records (class ranges) must be readable and consistent, and every label must agree with them
    try:
        ranges = faceset.class_ranges
        classes = faceset.expected_labels()
    except DataError as exc:
        report.bad.append((f"{rec_path} identity records", str(exc)))
        ranges = classes = None
    faceset.close()
    if ranges is not None and len(ranges) != num_classes:
        report.notes.append(f"{len(ranges)} identity records but num_classes = {num_classes}")
    chunks = []
    for part in _chunked(list(range(n)), chunk):
        identity = None
        if classes is not None:
            own = classes[part]
            identity = (faceset.header[0], own, ranges[np.maximum(own, 0)])
        chunks.append((rec_path, part, expected, num_classes, identity))
    results = _run_chunks(_rec_chunk, chunks, [len(c[1]) for c in chunks], workers, progress, "verify")
    _REC_STATE.clear()
    _collect(report, results, lambda i: f"{rec_path} record key {int(keys[i])}")


def _verify_bin(report: VerifyReport, path: str, expected, workers, progress, chunk) -> None:
    if not os.path.exists(path):
        raise DataError(f"{path}: verification .bin file not found")
    try:
        bins, issame = read_bin(path)
    except DataError as exc:
        report.bad.append((path, str(exc)))
        return
    issame = np.asarray(issame)
    if len(bins) != 2 * len(issame):
        report.bad.append(
            (path, f"{path}: {len(bins)} images for {len(issame)} pairs; expected exactly {2 * len(issame)}")
        )
    names = [f"{path} image {i} (pair {i // 2})" for i in range(len(bins))]
    bar = _progress_bar(len(bins), "verify", progress)
    results = []
    for i, data in enumerate(bins):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            results.append((i, None, f"{names[i]}: expected encoded image bytes, got {type(data).__name__}"))
        else:
            results.append((i, *_check_bytes(bytes(data), names[i], expected)))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    _collect(report, results, lambda i: names[i])


def _parse_pairs(pairs_file: str, report: VerifyReport) -> list[tuple[str, int, int]]:
    """Parse LFW View-2 ``pairs.txt``; returns the referenced ``(name, number, line)`` images; problems go to
    ``report``."""
    try:
        with open(pairs_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        report.bad.append((pairs_file, f"{pairs_file}: cannot read: {exc}"))
        return []
    images: list[tuple[str, int, int]] = []
    header: tuple[int, int] | None = None
    num_pairs = 0
    for lineno, raw in enumerate(lines, 1):
        fields = raw.split()
        if not fields:
            continue
        where = f"{pairs_file}:{lineno}"
        if header is None and lineno == 1 and len(fields) in (1, 2) and all(f.isdigit() for f in fields):
            header = (int(fields[0]), int(fields[1])) if len(fields) == 2 else (1, int(fields[0]))
            continue
        try:
            if len(fields) == 3:
                a = (fields[0], int(fields[1]))
                b = (fields[0], int(fields[2]))
            elif len(fields) == 4:
                a = (fields[0], int(fields[1]))
                b = (fields[2], int(fields[3]))
            else:
                raise ValueError
        except ValueError:
            report.bad.append(
                (where, f"{where}: expected 'name i j' or 'name1 i name2 j', got {raw.strip()[:120]!r}")
            )
            continue
        num_pairs += 1
        images.extend([(*a, lineno), (*b, lineno)])
    if header is not None:
        want = header[0] * header[1] * 2
        if num_pairs != want:
            report.bad.append(
                (
                    pairs_file,
                    f"{pairs_file}: header says {header[0]} folds x {header[1]} pairs per class "
                    f"({want} pairs) but {num_pairs} pair lines were found",
                )
            )
    return images


def _verify_lfw_pairs(report: VerifyReport, folder: str, pairs_file: str, expected, workers, progress,
                      chunk) -> None:
    if not os.path.isfile(pairs_file):
        raise DataError(f"{pairs_file}: pairs file not found")
    image_root = str(lfw_images_root(folder))
    refs = _parse_pairs(pairs_file, report)
    seen: dict[str, None] = {}
    for name, num, lineno in refs:
        where = f"{pairs_file}:{lineno}"
        try:  # names are people, not paths: never read outside the images folder
            if not is_plain_name(name):
                raise DataError(f"{where}: {name!r} is not a person's name (a folder name inside {image_root}); "
                                "refused")
            path = confined(image_root, os.path.join(name, f"{name}_{num:04d}.jpg"), source=where, what="image")
        except DataError as exc:
            report.bad.append((where, str(exc)))
            continue
        seen.setdefault(path, None)
    paths = list(seen)
    report.num_classes = len({n for n, _, _ in refs})
    report.notes.append(f"{len(refs) // 2} pairs referencing {len(paths)} distinct images under {image_root}")
    _verify_paths(report, paths, paths, expected, workers, progress, chunk)


def _verify_lfw(report: VerifyReport, path: str, expected, workers, progress, chunk) -> None:
    _verify_lfw_pairs(report, path, os.path.join(path, "pairs.txt"), expected, workers, progress, chunk)


def _looks_like_lfw_pairs(path: str) -> bool:
    """Whether a pairs file starts with LFW's numeric header (``10 300``) rather than an OpenSphere ``label a b`` line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if fields:
                    return len(fields) in (1, 2) and all(field.isdigit() for field in fields)
    except OSError:
        return False
    return False


def _verify_pair_list(report: VerifyReport, path: str, expected, workers, progress, chunk) -> None:
    if _looks_like_lfw_pairs(path):
        _verify_lfw_pairs(report, os.path.dirname(os.path.abspath(path)), path, expected, workers, progress, chunk)
        return
    seen: dict[str, None] = {}
    pairs = 0
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        report.bad.append((path, f"{path}: cannot read: {exc}"))
        return
    for lineno, raw in enumerate(lines, 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            where = f"{path}:{lineno}"
            report.bad.append((where, f"{where}: expected 'label path0 path1' with label 0 or 1, got "
                                      f"{raw.strip()[:120]!r}"))
            continue
        pairs += 1
        seen.setdefault(fields[1], None)
        seen.setdefault(fields[2], None)
    paths = list(seen)
    report.notes.append(f"{pairs} pairs referencing {len(paths)} distinct images")
    _verify_paths(report, paths, paths, expected, workers, progress, chunk)


_VERIFIERS = {
    "folder": _verify_folder,
    "list": _verify_list,
    "rec": _verify_rec,
    "bin": _verify_bin,
    "lfw": _verify_lfw,
    "pairs": _verify_pair_list,
}


def verify_dataset(
    path_or_spec: str | os.PathLike[str],
    *,
    expected_size: tuple[int, int] | None = None,
    progress: bool = True,
    workers: int = 1,
    chunk_size: int = 256,
) -> VerifyReport:
    """Decode every image of a dataset and report every bad item (see the module docstring).

    Args:
        path_or_spec: ``folder:DIR``, ``list:FILE``, ``rec:PREFIX``, ``bin:FILE``, ``lfw:DIR``, ``pairs:FILE`` or a
            bare path.
        expected_size: ``(height, width)`` every image must have (for ``rec``, default: ``property``'s size).
        progress: show a tqdm bar on stderr.
        workers: processes decoding in parallel (1 = in this process).

    Raises:
        DataError: only when the path does not exist; every other problem is listed in the report.
        UnknownNameError: for an unknown ``scheme:`` prefix.
    """
    spec = parse_data_spec(path_or_spec, VERIFY_KINDS, check_exists=False)
    scheme, rest = spec.kind, str(spec.path)
    if spec.kind != "rec" and not spec.path.exists():
        raise DataError(f"{rest}: no such file or folder")
    exp = None if expected_size is None else (int(expected_size[0]), int(expected_size[1]))
    report = VerifyReport(path=rest, kind=scheme)
    start = time.perf_counter()
    _VERIFIERS[scheme](report, rest, exp, max(1, int(workers)), progress, max(1, int(chunk_size)))
    report.seconds = time.perf_counter() - start
    return report

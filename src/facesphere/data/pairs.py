"""Pair sets for 1:1 verification: LFW ``pairs.txt`` (View 2), OpenSphere ``label path0 path1`` files, InsightFace
``.bin`` sets and the built-in synthetic pairs.

The two list readers return a :class:`PairList` (two path lists, the same/different flags and a fold index per pair);
:func:`open_pair_set` opens any pair-set spec (``synthetic``, ``bin:``, ``lfw:``, ``pairs:``; see
:mod:`facesphere.data.specs`) as a :class:`PairSet`: every unique image once, behind ``load(i)``, and the pairs as
index arrays into them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import DataError
from .binfile import read_bin
from .dropped import DROPPED_NAME, dropped_note
from .image import decode_image, read_image
from .paths import confined, is_plain_name
from .specs import PAIR_KINDS, DataSpec, parse_data_spec
from .synthetic import synthetic_pairs

__all__ = ["PairList", "PairSet", "cached_pair_set", "CACHE_MAX_BYTES", "read_lfw_pairs", "read_pair_list", "contiguous_folds", "open_pair_set",
           "lfw_images_root", "read_lfw_spec", "LFW_HINT"]

#: what an ``lfw:`` failure adds: the other way to name pairs
LFW_HINT = ("(lfw: expects LFW's pairs.txt, 'name i j' / 'name1 i name2 j' lines naming DIR/images/<name>/"
            "<name>_<iiii>.jpg; for pairs of ordinary image paths write 'label path0 path1' lines and use "
            "pairs:FILE, or lfw:FILE with such a file)")


@dataclass
class PairList:
    """Pairs of image paths with labels.

    ``paths1[k]``, ``paths2[k]`` form pair ``k``; ``issame[k]`` (np.bool_) says whether they show the same
    person; ``folds[k]`` (np.int64) is the cross-validation fold the pair belongs to.
    """

    paths1: list[str]
    paths2: list[str]
    issame: np.ndarray
    folds: np.ndarray

    def __post_init__(self) -> None:
        self.issame = np.asarray(self.issame, dtype=np.bool_)
        self.folds = np.asarray(self.folds, dtype=np.int64)
        n = len(self.paths1)
        if not (len(self.paths2) == n == len(self.issame) == len(self.folds)):
            raise ValueError(
                f"PairList fields differ in length: paths1 {n}, paths2 {len(self.paths2)}, "
                f"issame {len(self.issame)}, folds {len(self.folds)}"
            )

    def __len__(self) -> int:
        return len(self.paths1)

    @property
    def num_folds(self) -> int:
        return int(self.folds.max()) + 1 if len(self.folds) else 0

    def unique_paths(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(paths, index1, index2)``: the sorted unique paths, and for each pair the positions of its two images
        in ``paths`` (np.int64), so that every image is embedded once: ``emb[index1[k]]``, ``emb[index2[k]]``."""
        paths = sorted(set(self.paths1) | set(self.paths2))
        where = {p: i for i, p in enumerate(paths)}
        i1 = np.fromiter((where[p] for p in self.paths1), dtype=np.int64, count=len(self.paths1))
        i2 = np.fromiter((where[p] for p in self.paths2), dtype=np.int64, count=len(self.paths2))
        return paths, i1, i2


def contiguous_folds(n: int, k: int) -> np.ndarray:
    """Fold index of each of ``n`` items split into ``k`` contiguous blocks in order (sizes differ by <= 1)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = max(1, min(int(k), n))
    return (np.arange(n, dtype=np.int64) * k) // n


def _check_exists(paths_by_line: list[tuple[int, str]], source: str) -> None:
    seen: set[str] = set()
    missing: list[tuple[int, str]] = []
    for lineno, p in paths_by_line:
        if p in seen:
            continue
        seen.add(p)
        if not os.path.isfile(p):
            missing.append((lineno, p))
    if missing:
        lineno, p = missing[0]
        more = f" ({len(missing)} referenced images are missing in all)" if len(missing) > 1 else ""
        raise DataError(f"{source}: line {lineno}: image not found: {p}{more}{dropped_note(q for _, q in missing)}")


def _read_lines(path: str, what: str) -> list[str]:
    if not os.path.isfile(path):
        raise DataError(f"{path}: {what} not found")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text file ({e})") from None


def _positive_int(tok: str) -> int:
    v = int(tok)
    if v < 1:
        raise ValueError
    return v


def read_lfw_pairs(
    pairs_txt: str | os.PathLike,
    images_root: str | os.PathLike,
    ext: str = "jpg",
    *,
    check_files: bool = True,
) -> PairList:
    """Read LFW's ``pairs.txt`` (View 2; View 1's ``pairsDevTrain.txt``/``pairsDevTest.txt`` work too).

    The first line is ``folds pairs_per_class`` (``10 300``) or just ``pairs_per_class`` (View 1, one fold).
    Then, fold by fold, lines ``name i j`` (same person) and ``name1 i name2 j`` (different people), separated by
    tabs or spaces; image ``i`` of ``name`` is ``images_root/name/name_000i.<ext>`` (4-digit zero padding). Fold
    ``f`` is the ``f``-th contiguous block of ``2 * pairs_per_class`` pairs. With ``check_files`` every image must
    exist. Names are people, not paths: a name with a path separator (``../x``) or an image that resolves outside
    ``images_root`` (through a symbolic link) is refused. Problems raise :class:`DataError` naming the file and line.
    """
    src = os.fspath(pairs_txt)
    root = os.fspath(images_root)
    ext = ext.lstrip(".")
    lines = _read_lines(src, "LFW pairs file")
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise DataError(f"{src}: empty pairs file; expected a first line such as '10 300'")
    head_no, head = numbered[0]
    try:
        nums = [_positive_int(t) for t in head.split()]
        if len(nums) not in (1, 2):
            raise ValueError
    except ValueError:
        raise DataError(
            f"{src}: line {head_no}: expected the header 'folds pairs_per_class' (e.g. '10 300'), got {head.strip()!r}"
        ) from None
    num_folds, per = (1, nums[0]) if len(nums) == 1 else (nums[0], nums[1])
    body = numbered[1:]
    expected = num_folds * 2 * per
    if len(body) != expected:
        raise DataError(
            f"{src}: header line {head_no} promises {num_folds} folds x 2 x {per} = {expected} pairs, "
            f"but the file has {len(body)} pair lines"
        )

    def img(name: str, i: int, lineno: int) -> str:
        # names are people (folder names), not paths: never read outside the images folder
        where = f"{src}: line {lineno}"
        if not is_plain_name(name):
            raise DataError(f"{where}: {name!r} is not a person's name (a folder name inside {root}); refused")
        return confined(root, os.path.join(name, f"{name}_{i:04d}.{ext}"), source=where, what="image")

    p1: list[str] = []
    p2: list[str] = []
    same = np.empty(expected, dtype=np.bool_)
    refs: list[tuple[int, str]] = []
    for k, (lineno, line) in enumerate(body):
        tok = line.split()
        try:
            if len(tok) == 3:
                a, b = img(tok[0], _positive_int(tok[1]), lineno), img(tok[0], _positive_int(tok[2]), lineno)
                same[k] = True
            elif len(tok) == 4:
                a, b = img(tok[0], _positive_int(tok[1]), lineno), img(tok[2], _positive_int(tok[3]), lineno)
                same[k] = False
            else:
                raise ValueError
        except ValueError:
            raise DataError(
                f"{src}: line {lineno}: expected 'name i j' (same person) or 'name1 i name2 j' (different people) "
                f"with positive image numbers, got {line.strip()!r}"
            ) from None
        p1.append(a)
        p2.append(b)
        refs.append((lineno, a))
        refs.append((lineno, b))
    if check_files:
        _check_exists(refs, src)
    folds = np.arange(expected, dtype=np.int64) // (2 * per)
    return PairList(p1, p2, same, folds)


def read_pair_list(
    path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    num_folds: int = 10,
    check_files: bool = True,
) -> PairList:
    """Read an OpenSphere pair list: one pair per line, ``label path0 path1`` (label 1 = same, 0 = different).

    Relative paths are joined to ``root`` when given (absolute paths are kept): the file names paths by design, so
    they are not confined to a folder (see docs/security.md). Folds are ``num_folds``
    contiguous blocks in file order (see :func:`contiguous_folds`). With ``check_files`` every image must exist.
    Blank lines and lines starting with ``#`` are skipped. Problems raise :class:`DataError` naming file and line.
    """
    src = os.fspath(path)
    base = None if root is None else os.fspath(root)
    lines = _read_lines(src, "pair list")
    p1: list[str] = []
    p2: list[str] = []
    same: list[bool] = []
    refs: list[tuple[int, str]] = []
    for lineno, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        tok = s.split()
        if len(tok) != 3 or tok[0] not in ("0", "1"):
            raise DataError(f"{src}: line {lineno}: expected 'label path0 path1' with label 0 or 1, got {s!r}")
        a, b = tok[1], tok[2]
        if base is not None:
            a, b = os.path.join(base, a), os.path.join(base, b)
        p1.append(a)
        p2.append(b)
        same.append(tok[0] == "1")
        refs.append((lineno, a))
        refs.append((lineno, b))
    if not p1:
        raise DataError(f"{src}: no pairs found; expected lines 'label path0 path1'")
    if check_files:
        _check_exists(refs, src)
    return PairList(p1, p2, np.asarray(same, dtype=np.bool_), contiguous_folds(len(p1), num_folds))


# ----------------------------------------------------------------------------------------------------------------
# pair sets

#: turns a decoded image (and its source, for messages) into the model's input crop, e.g. detect and align it
Prepare = Callable[[np.ndarray, str], np.ndarray]


@dataclass
class PairSet:
    """Pairs over ``num_images`` unique images: ``load(i) -> uint8 (H, W, 3)`` RGB; ``idx1`` / ``idx2`` (N,) int64
    positions of each pair's images, ``issame`` (N,) bool, ``folds`` (N,) int64 or None (10 contiguous blocks)."""

    name: str
    load: Callable[[int], np.ndarray]
    num_images: int
    idx1: np.ndarray
    idx2: np.ndarray
    issame: np.ndarray
    folds: np.ndarray | None = None


#: The most decoded pixels :func:`cached_pair_set` keeps per set (4 GiB: an InsightFace ``.bin`` of 12,000 112x112
#: crops is 450 MB); a larger set is decoded at every pass instead.
CACHE_MAX_BYTES = 4 << 30


def cached_pair_set(pairs: PairSet, max_bytes: int = CACHE_MAX_BYTES) -> PairSet:
    """``pairs`` whose ``load(i)`` decodes image ``i`` once and then returns the kept uint8 array (read-only).

    For sets embedded again and again (the trainer validates every ``train.val_every`` steps): the ``.bin`` / LFW
    JPEGs are decoded at the first validation only. When the first image times ``num_images`` exceeds
    ``max_bytes`` the set is returned unchanged (decoded at every pass)."""
    if pairs.num_images == 0 or getattr(pairs.load, "cached", False):
        return pairs
    first = pairs.load(0)
    if first.nbytes * pairs.num_images > max_bytes:
        return pairs
    kept: list[np.ndarray | None] = [None] * pairs.num_images
    source = pairs.load

    def load(i: int) -> np.ndarray:
        image = kept[i]
        if image is None:
            image = first if i == 0 else source(i)
            image = np.ascontiguousarray(image)
            image.setflags(write=False)
            kept[i] = image
        return image

    load.cached = True  # type: ignore[attr-defined]
    return dataclasses.replace(pairs, load=load)


def _check_size(image: np.ndarray, size: tuple[int, int], source: str) -> np.ndarray:
    if tuple(image.shape[:2]) != tuple(size):
        raise DataError(
            f"{source}: image is {image.shape[0]}x{image.shape[1]}, the model takes aligned {size[0]}x{size[1]} "
            "crops: align the set first (5-point alignment to the ArcFace template)"
        )
    return image


def lfw_images_root(folder: str | os.PathLike[str]) -> Path:
    """Where an LFW-layout folder keeps its images: ``DIR/images`` when present, else ``DIR``."""
    root = Path(folder)
    return root / "images" if (root / "images").is_dir() else root


def _looks_like_path_pairs(lines: list[str]) -> bool:
    """Whether a pairs file names image paths (``label path0 path1`` or ``path0 path1 label``) rather than LFW's
    ``10 300`` header and names."""
    for line in lines:
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) in (1, 2) and all(t.isdigit() for t in tokens):
            return False
        return len(tokens) == 3 and (tokens[0] in ("0", "1") or tokens[2] in ("0", "1")) and not (
            tokens[1].isdigit() and tokens[2].isdigit())
    return False


def read_lfw_spec(path: str | os.PathLike[str], *, check_files: bool = True) -> PairList:
    """The pairs of an ``lfw:`` spec: a folder holding ``pairs.txt`` (images in ``DIR/images`` or ``DIR``), or a
    pairs file itself (images beside it, or in ``images/`` beside it).

    The file is LFW's (:func:`read_lfw_pairs`), or one that names image paths, one pair per line as
    ``label path0 path1`` or ``path0 path1 label`` (label 1 same, 0 different; relative paths from the images folder,
    else from the file's folder; 10 contiguous folds). A failure of an LFW-style file says how to use ordinary
    paths instead (:data:`LFW_HINT`).
    """
    given = Path(path)
    pairs_file = given if given.is_file() else given / "pairs.txt"
    folder = pairs_file.parent
    root = lfw_images_root(folder)
    lines = _read_lines(str(pairs_file), "LFW pairs file")
    if _looks_like_path_pairs(lines):
        return _read_path_pairs(str(pairs_file), lines, root, folder, check_files)
    try:
        return read_lfw_pairs(pairs_file, root, check_files=check_files)
    except DataError as error:
        if DROPPED_NAME in str(error):  # the images are missing because align dropped them, not for their names
            raise
        raise DataError(f"{error} {LFW_HINT}") from None


def _read_path_pairs(source: str, lines: list[str], root: Path, folder: Path, check_files: bool) -> PairList:
    p1: list[str] = []
    p2: list[str] = []
    same: list[bool] = []
    refs: list[tuple[int, str]] = []

    def resolve(text: str) -> str:
        candidate = Path(text)
        if candidate.is_absolute():
            return text
        return str(root / candidate) if (root / candidate).exists() or not (folder / candidate).exists() \
            else str(folder / candidate)

    for lineno, line in enumerate(lines, 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) == 3 and tokens[0] in ("0", "1"):
            label, a, b = tokens
        elif len(tokens) == 3 and tokens[2] in ("0", "1"):
            a, b, label = tokens
        else:
            raise DataError(f"{source}: line {lineno}: expected 'label path0 path1' or 'path0 path1 label' with label "
                            f"0 or 1, got {line.strip()!r}")
        a, b = resolve(a), resolve(b)
        p1.append(a)
        p2.append(b)
        same.append(label == "1")
        refs += [(lineno, a), (lineno, b)]
    if not p1:
        raise DataError(f"{source}: no pairs found")
    if check_files:
        _check_exists(refs, source)
    return PairList(p1, p2, np.asarray(same, dtype=np.bool_), contiguous_folds(len(p1), 10))


def open_pair_set(spec: str | DataSpec, *, image_size: Sequence[int] = (112, 112), seed: int = 0,
                  pairs_per_fold: int = 60, difficulty: float = 1.0, identity_spread: float = 1.0,
                  prepare: Prepare | None = None) -> PairSet:
    """Open a verification pair set from its spec (``synthetic``, ``bin:FILE``, ``lfw:DIR``, ``pairs:FILE``).

    ``prepare(image, source) -> crop``, if given, turns every decoded image of a ``bin:``, ``lfw:`` or ``pairs:``
    set into the model's input crop (e.g. detect and align it); by default images must already be aligned crops of
    ``image_size`` and any other size is a :class:`DataError`. The synthetic set takes ``seed``,
    ``pairs_per_fold``, ``difficulty`` and ``identity_spread``, overridden by the spec's own options.
    """
    parsed = spec if isinstance(spec, DataSpec) else parse_data_spec(spec, PAIR_KINDS)
    size = (int(image_size[0]), int(image_size[1]))
    if parsed.kind == "synthetic":
        options = {"seed": seed, "pairs_per_fold": pairs_per_fold, "difficulty": difficulty,
                   "identity_spread": identity_spread, **parsed.options}
        images, idx1, idx2, issame, folds = synthetic_pairs(image_size=size[0], **options)
        return PairSet("synthetic", lambda i: images[i], len(images), idx1, idx2, issame, folds)
    path = str(parsed.path)
    if parsed.kind == "bin":
        blobs, issame = read_bin(path)
        n = len(issame)
        if prepare is None:
            load = lambda i: decode_image(blobs[i], source=f"{path}[{i}]", expected_size=size)  # noqa: E731
        else:
            load = lambda i: prepare(decode_image(blobs[i], source=f"{path}[{i}]"), f"{path}[{i}]")  # noqa: E731
        return PairSet(parsed.name, load, len(blobs), np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2),
                       np.asarray(issame, dtype=bool))
    if parsed.kind == "lfw":
        pairs = read_lfw_spec(path)
    else:
        pairs = read_pair_list(path)
    paths, idx1, idx2 = pairs.unique_paths()
    if prepare is None:
        load = lambda i: _check_size(read_image(paths[i]), size, str(paths[i]))  # noqa: E731
    else:
        load = lambda i: prepare(read_image(paths[i]), str(paths[i]))  # noqa: E731
    return PairSet(parsed.name, load, len(paths), np.asarray(idx1), np.asarray(idx2),
                   np.asarray(pairs.issame, dtype=bool), np.asarray(pairs.folds))

"""Reader of the IJB-B / IJB-C protocol files (InsightFace release): landmarks, templates, media, pairs and the 1:N
gallery / probe lists.

``read_ijb(DIR)`` finds the meta files ``*_name_5pts_score.txt``, ``*_face_tid_mid.txt`` and
``*_template_pair_label.txt`` in ``DIR`` or ``DIR/meta``, the loose crops in ``DIR/loose_crop`` (or ``DIR/images``, or
``DIR``), and the 1:N lists when ``*1N_gallery_G1.csv``, ``*1N_gallery_G2.csv`` and ``*1N_probe_mixed.csv`` are there.
Problems raise :class:`~facesphere.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["IJBMeta", "read_ijb"]


@dataclass
class IJBMeta:
    """IJB meta data (docs/data-formats.md, "IJB-B / IJB-C"), one row per face image.

    ``names`` (n,) image file names; ``landmarks`` (n, 5, 2) on the loose crop; ``faceness`` (n,); ``template_ids``
    and ``media_ids`` (n,) int64; ``pairs`` (P, 3) int64 rows ``t1 t2 label``; ``gallery`` ``{"G1": (templates,
    subjects), "G2": ...}`` and ``probe`` ``(templates, subjects)`` for 1:N (None when the CSVs are absent).
    """

    root: Path
    image_dir: Path
    names: list[str]
    landmarks: np.ndarray
    faceness: np.ndarray
    template_ids: np.ndarray
    media_ids: np.ndarray
    pairs: np.ndarray
    gallery: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    probe: tuple[np.ndarray, np.ndarray] | None = None


def _find_one(root: Path, pattern: str, what: str, required: bool = True) -> Path | None:
    found: list[Path] = []
    for folder in (root, root / "meta"):
        if folder.is_dir():
            found += sorted(p for p in folder.glob(pattern) if p.is_file())
    if not found:
        if required:
            raise DataError(f"{root}: no IJB {what} file ({pattern}) here or in {root / 'meta'}")
        return None
    if len(found) > 1:
        raise DataError(f"{root}: several IJB {what} files ({', '.join(p.name for p in found)}); point ijb: at a "
                        "folder holding one protocol")
    return found[0]


def _read_text_rows(path: Path) -> list[tuple[int, list[str]]]:
    try:
        with open(path, encoding="utf-8") as f:
            return [(n, line.split()) for n, line in enumerate(f, 1) if line.strip()]
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a UTF-8 text file ({error})") from None


def _read_int_table(path: Path, columns: int, what: str) -> np.ndarray:
    try:
        table = np.loadtxt(path, dtype=np.int64, ndmin=2)
    except ValueError as error:
        raise DataError(f"{path}: cannot read the {what} ({error})") from None
    if table.size == 0:
        raise DataError(f"{path}: the {what} file is empty")
    if table.shape[1] != columns:
        raise DataError(f"{path}: expected {columns} integer columns per line ({what}), found {table.shape[1]}")
    return table


def _read_csv_templates(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Unique (TEMPLATE_ID, SUBJECT_ID) of a 1:N protocol CSV."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = [h.strip().upper() for h in next(reader, [])]
            try:
                t_col, s_col = header.index("TEMPLATE_ID"), header.index("SUBJECT_ID")
            except ValueError:
                raise DataError(f"{path}: expected columns TEMPLATE_ID and SUBJECT_ID, got {header}") from None
            subject_of: dict[int, int] = {}
            for line_no, row in enumerate(reader, 2):
                if not row:
                    continue
                try:
                    t, s = int(row[t_col]), int(row[s_col])
                except (ValueError, IndexError):
                    raise DataError(f"{path}: line {line_no}: bad TEMPLATE_ID / SUBJECT_ID in {row!r}") from None
                if subject_of.setdefault(t, s) != s:
                    raise DataError(f"{path}: line {line_no}: template {t} has two subjects ({subject_of[t]}, {s})")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a UTF-8 text file ({error})") from None
    if not subject_of:
        raise DataError(f"{path}: no templates listed")
    templates = np.array(sorted(subject_of), dtype=np.int64)
    return templates, np.array([subject_of[t] for t in templates], dtype=np.int64)


def read_ijb(root: str | os.PathLike) -> IJBMeta:
    """Read an IJB-B / IJB-C protocol folder (see the module docstring); problems raise :class:`DataError`."""
    root = Path(root)
    lmk_path = _find_one(root, "*_name_5pts_score.txt", "landmark (name_5pts_score)")
    tid_path = _find_one(root, "*_face_tid_mid.txt", "template/media (face_tid_mid)")
    pair_path = _find_one(root, "*_template_pair_label.txt", "template pair (template_pair_label)")
    names: list[str] = []
    landmarks: list[list[float]] = []
    faceness: list[float] = []
    for line_no, tokens in _read_text_rows(lmk_path):
        if len(tokens) not in (11, 12):
            raise DataError(f"{lmk_path}: line {line_no}: expected 'image x1 y1 ... x5 y5 faceness' (12 fields), "
                            f"got {len(tokens)}")
        try:
            values = [float(t) for t in tokens[1:]]
        except ValueError:
            raise DataError(f"{lmk_path}: line {line_no}: landmarks and faceness must be numbers") from None
        if Path(tokens[0]).is_absolute() or ".." in Path(tokens[0]).parts:  # names of files in the image folder
            raise DataError(f"{lmk_path}: line {line_no}: the image name {tokens[0]!r} is not inside the image "
                            "folder; refused")
        names.append(tokens[0])
        landmarks.append(values[:10])
        faceness.append(values[10] if len(values) == 11 else 1.0)
    tid_rows = _read_text_rows(tid_path)
    tid_names = [tokens[0] for _, tokens in tid_rows]
    for line_no, tokens in tid_rows:
        if len(tokens) != 3:
            raise DataError(f"{tid_path}: line {line_no}: expected 'image template_id media_id', got {len(tokens)} "
                            "fields")
    try:
        tm = np.array([[int(tokens[1]), int(tokens[2])] for _, tokens in tid_rows], dtype=np.int64).reshape(-1, 2)
    except ValueError:
        raise DataError(f"{tid_path}: template and media ids must be integers") from None
    if tid_names != names:  # not row-aligned: match by image name
        where = {name: i for i, name in enumerate(names)}
        if len(where) != len(names):
            raise DataError(f"{lmk_path}: image names repeat and the two meta files are not row-aligned")
        missing = [n for n in tid_names if n not in where]
        if missing:
            raise DataError(f"{tid_path}: {len(missing)} images have no landmarks in {lmk_path.name} "
                            f"(first: {missing[0]})")
        order = [where[n] for n in tid_names]
        names = tid_names
        landmarks = [landmarks[i] for i in order]
        faceness = [faceness[i] for i in order]
    if not names:
        raise DataError(f"{tid_path}: no images listed")
    pairs = _read_int_table(pair_path, 3, "template pairs")
    if not np.isin(pairs[:, 2], (0, 1)).all():
        raise DataError(f"{pair_path}: labels (third column) must be 0 or 1")
    known = np.unique(tm[:, 0])
    unknown = ~np.isin(pairs[:, :2], known)
    if unknown.any():
        raise DataError(f"{pair_path}: {int(unknown.sum())} pair entries name templates with no image in "
                        f"{tid_path.name} (first: {int(pairs[:, :2][unknown][0])})")
    image_dir = next((d for d in (root / "loose_crop", root / "loose_crops", root / "images") if d.is_dir()), root)
    meta = IJBMeta(root, image_dir, names, np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2),
                   np.asarray(faceness, dtype=np.float64), tm[:, 0].copy(), tm[:, 1].copy(), pairs)
    g1 = _find_one(root, "*1N_gallery_G1.csv", "1:N gallery G1", required=False)
    g2 = _find_one(root, "*1N_gallery_G2.csv", "1:N gallery G2", required=False)
    probe = _find_one(root, "*1N_probe_mixed.csv", "1:N probe", required=False)
    if g1 is not None and probe is not None:
        meta.gallery = {"G1": _read_csv_templates(g1)}
        if g2 is not None:
            meta.gallery["G2"] = _read_csv_templates(g2)
        meta.probe = _read_csv_templates(probe)
        for name, (templates, _) in [*meta.gallery.items(), ("probe", meta.probe)]:
            missing = templates[~np.isin(templates, known)]
            if missing.size:
                raise DataError(f"{root}: 1:N {name} template {int(missing[0])} has no image in {tid_path.name} "
                                f"({missing.size} missing)")
    return meta

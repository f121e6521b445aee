"""Reader of 1:N identification folders: ``DIR/gallery/<identity>/*``, ``DIR/probe/<identity>/*`` and optionally
``DIR/distractors/**`` (any depth; every distractor image its own identity).

A folder made by ``facesphere data align`` lists the photos it dropped in ``DIR/align_dropped.txt``; the probes among
them are reported as ``missing_probes`` (an evaluation counts them as misses instead of leaving them out)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .dropped import DROPPED_NAME, read_dropped
from .image import is_image_file

__all__ = ["IdentSet", "read_ident"]


@dataclass
class IdentSet:
    """An ``ident:DIR`` folder: image paths with identity names (gallery, probe) and distractor paths; the probe
    and gallery images an alignment dropped (``missing_probes`` / ``missing_gallery``: path, identity)."""

    root: Path
    gallery: list[tuple[Path, str]]
    probe: list[tuple[Path, str]]
    distractors: list[Path]
    missing_probes: list[tuple[Path, str]] = field(default_factory=list)
    missing_gallery: list[tuple[Path, str]] = field(default_factory=list)


def _identity_images(folder: Path) -> list[tuple[Path, str]]:
    out = []
    for identity in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out += [(f, identity.name) for f in sorted(identity.iterdir()) if f.is_file() and is_image_file(f)]
    return out


def read_ident(root: str | os.PathLike) -> IdentSet:
    """Read ``root/gallery/<id>/*``, ``root/probe/<id>/*`` and optional ``root/distractors/**``."""
    root = Path(root)
    parts = {}
    for part in ("gallery", "probe"):
        folder = root / part
        if not folder.is_dir():
            raise DataError(f"{root}: no {part}/ folder (expected {part}/<identity>/<images>)")
        parts[part] = _identity_images(folder)
        if not parts[part]:
            raise DataError(f"{folder}: no images in <identity>/ sub-folders")
    distractor_dir = root / "distractors"
    distractors = sorted(p for p in distractor_dir.rglob("*") if p.is_file() and is_image_file(p)) \
        if distractor_dir.is_dir() else []
    missing: dict[str, list[tuple[Path, str]]] = {"gallery": [], "probe": []}
    for relative in read_dropped(root / DROPPED_NAME):
        pieces = Path(relative).parts
        if len(pieces) >= 3 and pieces[0] in missing and not (root / relative).exists():
            missing[pieces[0]].append((root / relative, pieces[1]))
    return IdentSet(root, parts["gallery"], parts["probe"], distractors, missing["probe"], missing["gallery"])

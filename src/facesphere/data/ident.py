"""Reader of 1:N identification folders: ``DIR/gallery/<identity>/*``, ``DIR/probe/<identity>/*`` and optionally
``DIR/distractors/**`` (any depth; every distractor image its own identity)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .image import is_image_file

__all__ = ["IdentSet", "read_ident"]


@dataclass
class IdentSet:
    """An ``ident:DIR`` folder: image paths with identity names (gallery, probe) and distractor paths."""

    root: Path
    gallery: list[tuple[Path, str]]
    probe: list[tuple[Path, str]]
    distractors: list[Path]


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
    return IdentSet(root, parts["gallery"], parts["probe"], distractors)

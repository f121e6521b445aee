"""The list of photos ``facesphere data align`` dropped (no face found, unreadable), kept beside the aligned images
so that a later evaluation can say why an image is missing.

``DST/align_dropped.txt``: a comment line, then one line per dropped photo, ``relative/path<TAB>reason`` (the path
relative to the aligned folder, as the aligned image would have been named).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

__all__ = ["DROPPED_NAME", "dropped_text", "read_dropped", "find_dropped_list", "dropped_note"]

DROPPED_NAME = "align_dropped.txt"


def dropped_text(entries: Iterable[tuple[str, str]]) -> str:
    """The file's text for ``(relative path, reason)`` entries."""
    lines = ["# photos facesphere data align dropped (path relative to this folder, then the reason)"]
    lines += [f"{path}\t{reason}" for path, reason in entries]
    return "\n".join(lines) + "\n"


def read_dropped(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{relative path: reason}`` from a dropped list (empty when absent or unreadable)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        relative, _, reason = line.partition("\t")
        out[Path(relative.strip()).as_posix()] = reason.strip() or "dropped"
    return out


def find_dropped_list(image: str | os.PathLike[str], levels: int = 4) -> Path | None:
    """The dropped list of the aligned folder ``image`` would lie in: the nearest ``align_dropped.txt`` among its
    parent folders (up to ``levels`` up), or None."""
    folder = Path(image).parent
    for _ in range(levels):
        candidate = folder / DROPPED_NAME
        if candidate.is_file():
            return candidate
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def dropped_note(missing: Iterable[str | os.PathLike[str]]) -> str:
    """`` (N of them are listed in DIR/align_dropped.txt: photos facesphere data align dropped …)`` for missing
    images that an alignment dropped, else ``""``."""
    missing = [Path(p) for p in missing]
    if not missing:
        return ""
    listing = find_dropped_list(missing[0])
    if listing is None:
        return ""
    dropped = read_dropped(listing)
    root = listing.parent
    listed = []
    for path in missing:
        try:
            relative = path.relative_to(root).as_posix()
        except ValueError:
            continue
        if relative in dropped:
            listed.append(dropped[relative])
    if not listed:
        return ""
    reasons = sorted(set(listed))
    return (f"; {len(listed)} of the missing images are listed in {listing}: photos `facesphere data align` dropped "
            f"({', '.join(reasons)}): re-align them (a lower --det-threshold, another detector, or --no-face) or "
            "leave their pairs out")

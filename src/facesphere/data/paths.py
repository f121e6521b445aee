"""Keeping the paths a data file names inside the folder they belong to (see docs/security.md, "Paths").

Some data files name *things*, not paths: an LFW ``pairs.txt`` names people (folder names inside the images
folder), an IJB protocol names image files inside its ``loose_crop`` folder. A name such as ``../../etc/x`` in such a
file must not make facesphere read outside that folder. :func:`confined` joins a name to its root and refuses the
result unless it stays inside the root once ``..`` and symbolic links are resolved.

Files that name paths by design (OpenSphere pair lists, training list files, landmark files of ``data align`` relative
to their source folder: see each reader) are not confined here.
"""

from __future__ import annotations

import os

from ..errors import DataError

__all__ = ["confined", "is_plain_name"]


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is one path component: non-empty, no separator, not ``.`` or ``..``, no NUL."""
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    return bool(name) and name not in (".", "..") and "\0" not in name and not any(s in name for s in separators)


def confined(root: str | os.PathLike[str], relative: str, *, source: str, what: str = "name") -> str:
    """``root/relative`` (as given, not resolved), after checking that it resolves to a path inside ``root``.

    Raises :class:`DataError` starting with ``source`` (the file and line that named it) when ``relative`` is
    absolute, climbs out with ``..``, or leads out through a symbolic link."""
    root = os.fspath(root)
    if "\0" in relative or os.path.isabs(relative) or os.path.splitdrive(relative)[0]:
        raise DataError(f"{source}: the {what} {relative!r} is not inside {root}; refused")
    path = os.path.join(root, relative)
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise DataError(f"{source}: the {what} {relative!r} leads to {real}, outside {root}; refused")
    return path

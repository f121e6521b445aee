"""Writing files safely: one way to replace a file atomically, used by every writer in facesphere.

:func:`atomic_path` hands out a temporary file created beside the target with ``O_EXCL`` under an unpredictable name
(``tempfile.mkstemp``: a planted file or symlink can neither be overwritten nor followed), with the permissions the
user's umask gives a new file (not mkstemp's 0600), and renames it over the target only when the writer finished:
a process killed at any moment leaves either the previous file or the new one, never a truncated mixture, and
``os.replace`` replaces a symlink at the target instead of writing through it. A failed write (disk full,
permissions) raises :class:`~facesphere.errors.OutputError` naming the file and saying the previous version is intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from .errors import OutputError

TEMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permission bits an ordinary new file gets: ``0o666`` minus the umask."""
    return 0o666 & ~current_umask()


def temp_files_of(path: str | os.PathLike[str]) -> list[Path]:
    """Temporary files :func:`atomic_path` left beside ``path`` when a writer was killed (safe to delete)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}*"))


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not support it
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, what: str = "file", suffix: str = "") -> Iterator[Path]:
    """Yield a new empty temporary file beside ``path``; on success it is synced and renamed over ``path``.

    On an exception (or a kill) the temporary file is removed (or left as ``.NAME.XXXX.tmp``, see
    :func:`temp_files_of`) and ``path`` keeps its previous content. ``what`` names the file in error messages;
    ``suffix`` is appended to the temporary name (for writers that look at the extension, e.g. ``.onnx``).
    """
    path = Path(path)
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX + suffix, dir=path.parent)
        os.close(fd)
    except OSError as error:
        raise OutputError(f"{path}: cannot create the {what} ({error.strerror or error})") from None
    temporary = Path(name)
    try:
        os.chmod(temporary, new_file_mode())
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(error, OSError):
            kept = "the previous version is intact" if existed else "nothing was written"
            raise OutputError(f"{path}: cannot write the {what} ({error.strerror or error}); {kept}") from None
        raise


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any], *, what: str = "file") -> None:
    """Write ``path`` atomically with ``write(handle)`` on a binary handle (see :func:`atomic_path`)."""
    with atomic_path(path, what=what) as temporary:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, what: str = "file") -> None:
    atomic_write(path, lambda handle: handle.write(data), what=what)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, what: str = "file") -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")), what=what)


__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text", "current_umask",
           "new_file_mode", "temp_files_of"]

"""Verification ``.bin`` files (lfw.bin, cfp_fp.bin, agedb_30.bin, ...): a pickle of ``(bins, issame_list)``.

``bins`` holds 2N encoded images (pairs ``bins[2i], bins[2i+1]``), ``issame_list`` N booleans. Many published files
were written by Python 2, so they are loaded with ``encoding="bytes"``.

A pickle can run arbitrary code while it loads. :func:`read_bin` therefore uses :class:`SafeUnpickler`, whose
``find_class`` admits only the handful of globals that plain data and numpy arrays/scalars need, and raises
:class:`~facesphere.errors.UnsafePickleError` (naming the file and the refused global) for anything else -- before
the global is imported or called, so nothing from the file is executed.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Sequence

import numpy as np

from ..errors import DataError, UnsafePickleError
from ..files import atomic_write

__all__ = ["read_bin", "write_bin", "SafeUnpickler", "safe_load", "ALLOWED_GLOBALS"]


def _numpy_core(name: str):
    """``numpy._core.<name>`` (numpy >= 2) or ``numpy.core.<name>`` (numpy 1.x), without deprecation warnings."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:  # pragma: no cover - numpy 1.x
        return importlib.import_module(f"numpy.core.{name}")


def _resolve(module: str, name: str):
    """The object for an admitted global (looked up in our own table, never by importing ``module``)."""
    if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        return getattr(_numpy_core("multiarray"), name)
    if module in ("numpy.core.numeric", "numpy._core.numeric"):
        return getattr(_numpy_core("numeric"), name)
    if module == "numpy":
        return getattr(np, name)
    if module in ("builtins", "__builtin__"):
        import builtins

        return getattr(builtins, name)
    raise KeyError((module, name))  # pragma: no cover - guarded by ALLOWED_GLOBALS


def _latin1_encoder(source: str):
    """Stand-in for ``_codecs.encode`` that allows only what Python 3 writes for bytes: latin-1 text."""

    def encode(obj, encoding="latin1", errors="strict"):
        if not isinstance(encoding, str) or encoding.lower().replace("_", "-") not in (
            "latin1", "latin-1", "iso-8859-1", "l1"
        ):
            raise UnsafePickleError(
                f"{source}: refused _codecs.encode with encoding {encoding!r} (only latin-1 text is plain data); "
                "it was not executed"
            )
        if not isinstance(obj, str):
            raise UnsafePickleError(f"{source}: refused _codecs.encode of a {type(obj).__name__}")
        return obj.encode("latin-1", errors if errors in ("strict",) else "strict")

    return encode


#: Globals a ``.bin`` pickle may name: ``(module, name)``. Everything else is refused.
ALLOWED_GLOBALS = frozenset(
    {
        # numpy arrays (protocol <= 4) and numpy scalars, numpy 1.x and 2.x module names
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        # numpy arrays pickled with protocol 5
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # bytes pickled by Python 3 with protocol <= 2: _codecs.encode(str, 'latin1')
        ("_codecs", "encode"),
        # plain containers that protocols <= 2 build through a global
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "bytes"),
        ("builtins", "complex"),
        ("__builtin__", "set"),
        ("__builtin__", "frozenset"),
        ("__builtin__", "bytearray"),
        ("__builtin__", "bytes"),
        ("__builtin__", "complex"),
    }
)


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that loads plain data (containers, bytes, str, numbers, bools, numpy arrays and scalars) only.

    ``find_class`` refuses every global outside :data:`ALLOWED_GLOBALS` with :class:`UnsafePickleError`;
    ``persistent_load`` is refused too. ``source`` names the file in messages.
    """

    def __init__(self, file, *, source: str = "<pickle>", encoding: str = "bytes", **kwargs) -> None:
        super().__init__(file, encoding=encoding, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self.source}: refused to load the global {module}.{name}: this file is not a plain-data pickle "
                "(a verification .bin holds only image bytes and booleans); it was not executed. "
                "Only load .bin files from sources you trust."
            )
        if module == "_codecs":
            return _latin1_encoder(self.source)
        return _resolve(module, name)

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source}: refused a persistent reference in the pickle; it was not executed")


def safe_load(fileobj, *, source: str = "<pickle>", encoding: str = "bytes"):
    """Load one pickle from ``fileobj`` through :class:`SafeUnpickler`; malformed pickles raise DataError."""
    try:
        return SafeUnpickler(fileobj, source=source, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, MemoryError, OverflowError) as e:
        raise DataError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from None


def _as_image_bytes(item, path: str, i: int) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype in (np.uint8, np.int8) and item.ndim == 1:
        return item.tobytes()
    if isinstance(item, np.ndarray) and item.dtype.kind == "S" and item.ndim == 0:
        return item.item()
    if isinstance(item, str):  # written by a Python 3 tool as text: latin-1 maps code points 0..255 back to bytes
        try:
            return item.encode("latin-1")
        except UnicodeEncodeError:
            pass
    raise DataError(
        f"{path}: image {i} is a {type(item).__name__}"
        + (f" (dtype {item.dtype}, shape {item.shape})" if isinstance(item, np.ndarray) else "")
        + "; expected encoded image bytes (or a 1-D uint8 array of them)"
    )


def _as_issame(obj, path: str) -> np.ndarray:
    if isinstance(obj, np.ndarray):
        arr = obj.ravel()
    elif isinstance(obj, (list, tuple)):
        arr = obj
    else:
        raise DataError(f"{path}: issame_list is a {type(obj).__name__}; expected a list of booleans")
    out = np.empty(len(arr), dtype=np.bool_)
    for i, v in enumerate(arr):
        if isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and int(v) in (0, 1)):
            out[i] = bool(v)
        else:
            raise DataError(f"{path}: issame_list[{i}] is {v!r}; expected a boolean (or 0/1)")
    return out


def read_bin(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
    """Read a verification ``.bin``: ``(images, issame)``.

    ``images`` is the list of 2N encoded images (bytes; pairs ``images[2i], images[2i+1]``), ``issame`` a bool
    array of N. Loaded safely (see :class:`SafeUnpickler`) with ``encoding="bytes"`` so Python 2 files work.
    Raises :class:`UnsafePickleError` for a pickle that names anything but plain data, :class:`DataError` for a
    malformed file (not a pair ``(bins, issame)``, ``len(bins) != 2 * len(issame)``, non-image entries).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: verification .bin file not found")
    with open(path, "rb") as f:
        obj = safe_load(f, source=path)
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        what = f"a {type(obj).__name__}" + (f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else "")
        raise DataError(f"{path}: expected a pickled pair (bins, issame_list), got {what}")
    bins, issame = obj
    if isinstance(bins, np.ndarray) and bins.ndim == 2 and bins.dtype == np.uint8:
        bins = list(bins)  # fixed-length rows: unusual but unambiguous
    if not isinstance(bins, (list, tuple, np.ndarray)):
        raise DataError(f"{path}: bins is a {type(bins).__name__}; expected a list of encoded images")
    flags = _as_issame(issame, path)
    if len(bins) != 2 * len(flags):
        raise DataError(
            f"{path}: holds {len(bins)} images but {len(flags)} issame labels; expected exactly 2 images per "
            f"label ({2 * len(flags)})"
        )
    images = [_as_image_bytes(b, path, i) for i, b in enumerate(bins)]
    return images, flags


def write_bin(
    path: str | os.PathLike,
    images: Sequence[bytes],
    issame: Sequence[bool] | np.ndarray,
    *,
    protocol: int = 4,
) -> None:
    """Write a verification ``.bin`` that InsightFace-style loaders read back.

    Pickles the tuple ``(list of bytes, list of bool)`` with ``protocol`` (default 4: compact for bytes, readable
    by Python >= 3.4 including ``pickle.load(f, encoding="bytes")``; use 2 for Python 2 readers, at the cost of
    larger files since Python 3 pickles bytes as latin-1 text under protocol 2). Written to a temporary file in
    the same folder and renamed into place.
    """
    path = os.fspath(path)
    if not 2 <= protocol <= pickle.HIGHEST_PROTOCOL:
        raise ValueError(f"protocol must be between 2 and {pickle.HIGHEST_PROTOCOL}, got {protocol}")
    bins = [bytes(b) for b in images]
    flags = [bool(v) for v in np.asarray(issame).ravel()]
    if len(bins) != 2 * len(flags):
        raise DataError(
            f"{path}: cannot write {len(bins)} images with {len(flags)} issame labels; need exactly 2 images per label"
        )
    atomic_write(path, lambda handle: pickle.dump((bins, flags), handle, protocol=protocol), what=".bin file")


def _loads(data: bytes, *, source: str = "<bytes>"):
    """Safe-load a pickle held in memory (used by tests and tools)."""
    return safe_load(io.BytesIO(data), source=source)

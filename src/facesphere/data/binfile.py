"""Verification ``.bin`` files (lfw.bin, cfp_fp.bin, agedb_30.bin, ...): a pickle of ``(bins, issame_list)``.

``bins`` holds 2N encoded images (pairs ``bins[2i], bins[2i+1]``), ``issame_list`` N booleans. Many published files
were written by Python 2, so they are loaded with ``encoding="bytes"``.

A pickle can run arbitrary code while it loads, and even the numpy objects a plain-data pickle needs hand the file's
bytes to native code (a malformed dtype state given to ``numpy.dtype.__setstate__`` can make numpy read memory it
does not own). :func:`read_bin` therefore never gives the file's content to anything but plain Python:

* the opcode stream is checked first (:func:`check_opcodes`): every length and memo index must fit in the file, so
  the unpickler never allocates more than the file's own size;
* :class:`SafeUnpickler`'s ``find_class`` admits only the handful of globals plain data needs and raises
  :class:`~facesphere.errors.UnsafePickleError` (naming the file and the refused global) for anything else, before
  the global is imported or called;
* the admitted numpy globals (``numpy.dtype``, ``_reconstruct``, ``scalar``, ``_frombuffer``) and ``bytes`` /
  ``bytearray`` are stand-ins written here: they record the ints, strings and bytes the pickle gives them, accept a
  dtype only from a whitelist of known-good states (booleans, integers, floats, byte strings; see
  :data:`PLAIN_DTYPES`) and build arrays with ``numpy.frombuffer`` from bytes whose length matches the validated
  shape. numpy's own ``__setstate__`` never runs on the file's data.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
from typing import Any, Sequence

import numpy as np

from ..errors import DataError, UnsafePickleError
from ..files import atomic_write

__all__ = ["read_bin", "write_bin", "SafeUnpickler", "safe_load", "check_opcodes", "ALLOWED_GLOBALS",
           "PLAIN_DTYPES"]

#: dtype codes a ``.bin`` may carry (with any byte order), besides byte strings ``S<n>``
PLAIN_DTYPES = frozenset({"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"})
_MAX_NDIM = 32
_ENDIANS = {"<": "<", ">": ">", "=": "=", "|": "|"}


def _text(value: Any, what: str, source: str) -> str:
    """A short ASCII string from the pickle (Python 2 files give bytes under ``encoding="bytes"``)."""
    if isinstance(value, (bytes, bytearray)) and len(value) <= 64:
        try:
            return bytes(value).decode("ascii")
        except UnicodeDecodeError:
            pass
    elif isinstance(value, str) and len(value) <= 64:
        return value
    raise UnsafePickleError(f"{source}: refused a numpy {what} of {_describe(value)}; it was not passed to numpy")


def _describe(value: Any) -> str:
    """A short description of a value from the file for messages (never a long or deep ``repr``)."""
    if isinstance(value, (str, bytes, bytearray)):
        text = repr(value[:60])
    elif isinstance(value, (bool, float, type(None))) or (isinstance(value, int) and value.bit_length() < 200):
        text = repr(value)
    else:
        text = f"a {type(value).__name__}"
    return text if len(text) <= 64 else text[:61] + "..."


def _plain_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whitelisted_dtype(spec: Any, state: Any, source: str) -> np.dtype:
    """The numpy dtype a pickled ``(spec, state)`` stands for, if it is one of the known-good plain dtypes."""
    code = _text(spec, "dtype", source)
    shown = (f"({', '.join(_describe(v) for v in state[:9])})" if isinstance(state, tuple) else _describe(state))
    refused = UnsafePickleError(
        f"{source}: refused the numpy dtype {code!r} with state {shown} (a .bin holds only booleans, numbers and "
        "byte strings); it was not passed to numpy"
    )
    if not isinstance(state, tuple) or len(state) not in (8, 9):
        raise refused
    version, endian, subarray, names, fields, elsize, alignment, flags = state[:8]
    if version not in (3, 4) or (len(state) == 9 and state[8] is not None):
        raise refused
    if subarray is not None or names is not None or fields is not None or flags != 0:
        raise refused
    if not (_plain_int(elsize) and _plain_int(alignment)):
        raise refused
    order = _ENDIANS.get(_text(endian, "byte order", source))
    if order is None:
        raise refused
    if code in PLAIN_DTYPES:
        dtype = np.dtype(code)
        if dtype.itemsize > 1:
            if order == "|":
                raise refused
            dtype = dtype.newbyteorder(order)
        if elsize not in (-1, dtype.itemsize) or alignment not in (-1, dtype.alignment):
            raise refused
        return dtype
    if code.startswith("S") and code[1:].isdigit() and len(code) <= 12:
        size = int(code[1:])
        if not 1 <= size < 2**31 or elsize != size or alignment not in (-1, 1):
            raise refused
        return np.dtype(f"S{size}")
    raise refused


class _DTypeStub:
    """What ``numpy.dtype(spec, align, copy)`` gives while unpickling: the spec, then (BUILD) a whitelisted dtype."""

    __slots__ = ("spec", "dtype", "source")

    def __init__(self, spec: Any, source: str) -> None:
        self.spec = spec
        self.dtype: np.dtype | None = None
        self.source = source

    def __setstate__(self, state: Any) -> None:
        if self.dtype is not None:
            raise UnsafePickleError(f"{self.source}: refused a second state for one numpy dtype")
        self.dtype = _whitelisted_dtype(self.spec, state, self.source)


def _built_dtype(value: Any, source: str) -> np.dtype:
    if isinstance(value, _DTypeStub) and value.dtype is not None:
        return value.dtype
    raise DataError(f"{source}: a numpy array or scalar names {_describe(value)} as its dtype, not a complete dtype")


def _shape(value: Any, source: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > _MAX_NDIM or not all(_plain_int(v) and v >= 0 for v in value):
        raise DataError(f"{source}: a numpy array has the invalid shape {_describe(value)}")
    return value


def _array_from_bytes(raw: Any, dtype: np.dtype, shape: tuple[int, ...], order: str, source: str) -> np.ndarray:
    """``numpy.frombuffer`` on bytes whose length matches ``shape`` exactly (checked with Python integers)."""
    if isinstance(raw, pickle.PickleBuffer):
        raw = raw.raw().tobytes()
    if not isinstance(raw, (bytes, bytearray)):
        raise DataError(f"{source}: a numpy array's data is a {type(raw).__name__}, not bytes")
    count = math.prod(shape)
    if dtype.itemsize == 0 or count * dtype.itemsize != len(raw):
        raise DataError(
            f"{source}: a numpy array of shape {shape} and dtype {dtype} needs {count * dtype.itemsize} bytes of "
            f"data, the file gives {len(raw)}"
        )
    return np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order=order)


class _ArrayStub:
    """What ``numpy.core.multiarray._reconstruct(ndarray, ...)`` gives while unpickling; BUILD gives it its data."""

    __slots__ = ("array", "source")

    def __init__(self, source: str) -> None:
        self.array: np.ndarray | None = None
        self.source = source

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise UnsafePickleError(f"{self.source}: refused a second state for one numpy array")
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise DataError(f"{self.source}: a numpy array has a malformed state ({_describe(state)})")
        shape, dtype, fortran, raw = state
        if fortran not in (0, 1):  # False / True included
            raise DataError(f"{self.source}: a numpy array has a malformed memory order ({_describe(fortran)})")
        self.array = _array_from_bytes(raw, _built_dtype(dtype, self.source), _shape(shape, self.source),
                                       "F" if fortran else "C", self.source)


_NDARRAY = ("numpy.ndarray",)  # the marker find_class gives for numpy.ndarray: only _reconstruct accepts it


def _numpy_stand_ins(source: str) -> dict[str, Any]:
    """The admitted numpy globals, each a plain-Python stand-in bound to ``source`` (named in messages)."""

    def dtype(spec: Any, align: Any = False, copy: Any = True) -> _DTypeStub:
        if align not in (0, 1) or copy not in (0, 1):
            raise UnsafePickleError(f"{source}: refused numpy.dtype arguments {align!r}, {copy!r}")
        return _DTypeStub(spec, source)

    def reconstruct(subtype: Any, shape: Any, typecode: Any) -> _ArrayStub:
        if subtype is not _NDARRAY:
            raise UnsafePickleError(f"{source}: refused numpy _reconstruct of {_describe(subtype)} (only ndarray)")
        return _ArrayStub(source)

    def scalar(dtype_: Any, data: Any = None) -> Any:
        real = _built_dtype(dtype_, source)
        if not isinstance(data, (bytes, bytearray)) or len(data) != real.itemsize:
            raise DataError(f"{source}: a numpy {real} scalar needs {real.itemsize} bytes of data, the file gives "
                            f"{_describe(data)}")
        return np.frombuffer(bytes(data), dtype=real)[0]

    def frombuffer(buffer: Any, dtype_: Any, shape: Any, order: Any) -> np.ndarray:
        if order not in ("C", "F"):
            raise DataError(f"{source}: a numpy array has the memory order {_describe(order)}")
        return _array_from_bytes(buffer, _built_dtype(dtype_, source), _shape(shape, source), order, source)

    return {"dtype": dtype, "_reconstruct": reconstruct, "scalar": scalar, "_frombuffer": frombuffer,
            "ndarray": _NDARRAY}


def _bytes_stand_in(kind: type, source: str):
    """``bytes`` / ``bytearray`` as protocols <= 2 call them: no argument, a bytes object, or latin-1 text."""

    def make(*args: Any) -> Any:
        if not args:
            return kind()
        if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
            return kind(args[0])
        if len(args) == 2 and isinstance(args[0], str) and _is_latin1(args[1]):
            return kind(args[0].encode("latin-1"))
        raise UnsafePickleError(f"{source}: refused {kind.__name__} of {', '.join(_describe(a) for a in args)} "
                                "(only bytes or latin-1 text are plain data); it was not executed")

    return make


def _is_latin1(encoding: Any) -> bool:
    return isinstance(encoding, str) and encoding.lower().replace("_", "-") in ("latin1", "latin-1", "iso-8859-1", "l1")


def _latin1_encoder(source: str):
    """Stand-in for ``_codecs.encode`` that allows only what Python 3 writes for bytes: latin-1 text."""

    def encode(obj, encoding="latin1", errors="strict"):
        if not _is_latin1(encoding):
            raise UnsafePickleError(
                f"{source}: refused _codecs.encode with encoding {encoding!r} (only latin-1 text is plain data); "
                "it was not executed"
            )
        if not isinstance(obj, str):
            raise UnsafePickleError(f"{source}: refused _codecs.encode of a {type(obj).__name__}")
        try:
            return obj.encode("latin-1")
        except UnicodeEncodeError:
            raise DataError(f"{source}: a byte string holds characters beyond latin-1") from None

    return encode


#: Globals a ``.bin`` pickle may name: ``(module, name)``. Everything else is refused; these are stand-ins.
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
_PLAIN_BUILTINS = {"set": set, "frozenset": frozenset, "complex": complex}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that loads plain data (containers, bytes, str, numbers, bools, numpy arrays and scalars) only.

    ``find_class`` refuses every global outside :data:`ALLOWED_GLOBALS` with :class:`UnsafePickleError` and gives
    plain-Python stand-ins for the admitted ones (see the module docstring); ``persistent_load`` is refused too.
    Arrays come back as stand-ins that :func:`safe_load` replaces. ``source`` names the file in messages.
    """

    def __init__(self, file, *, source: str = "<pickle>", encoding: str = "bytes", **kwargs) -> None:
        super().__init__(file, encoding=encoding, **kwargs)
        self.source = source
        self._numpy = _numpy_stand_ins(source)

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self.source}: refused to load the global {module}.{name}: this file is not a plain-data pickle "
                "(a verification .bin holds only image bytes and booleans); it was not executed. "
                "Only load .bin files from sources you trust."
            )
        if module == "_codecs":
            return _latin1_encoder(self.source)
        if module.startswith("numpy"):
            return self._numpy[name]
        if name in ("bytes", "bytearray"):
            return _bytes_stand_in(bytes if name == "bytes" else bytearray, self.source)
        return _PLAIN_BUILTINS[name]

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source}: refused a persistent reference in the pickle; it was not executed")


_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def check_opcodes(data: bytes, *, source: str = "<pickle>") -> None:
    """Walk the opcode stream of the pickle in ``data`` without building anything (:mod:`pickletools`).

    Raises :class:`DataError` for a stream that is malformed or truncated, whose declared lengths (strings, bytes,
    frames) exceed the bytes that follow, or whose memo indices exceed the number of opcodes: the checks that keep
    the real unpickler from allocating more memory than the file's own size.
    """
    count = 0
    size = len(data)
    try:
        for opcode, arg, position in pickletools.genops(io.BytesIO(data)):
            count += 1
            if opcode.name in _MEMO_PUTS and not (isinstance(arg, int) and 0 <= arg <= count):
                raise DataError(f"{source}: not a readable pickle (memo index {arg!r} at byte {position} is larger "
                                "than the pickle could use)")
            if opcode.name == "FRAME" and arg > size - position:
                raise DataError(f"{source}: not a readable pickle (a frame of {arg} bytes at byte {position}, past "
                                f"the end of the {size}-byte file)")
    except DataError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError, OverflowError, MemoryError,
            RecursionError, EOFError) as error:
        raise DataError(f"{source}: not a readable pickle ({type(error).__name__}: {error})") from None
    if count == 0:
        raise DataError(f"{source}: not a readable pickle (empty)")


def _materialise(value: Any, depth: int = 0) -> Any:
    """Replace the array stand-ins in the top levels of a loaded structure by their arrays."""
    if isinstance(value, _ArrayStub):
        if value.array is None:
            raise DataError(f"{value.source}: a numpy array without data")
        return value.array
    if depth < 3 and isinstance(value, list):
        return [_materialise(item, depth + 1) for item in value]
    if depth < 3 and isinstance(value, tuple):
        return tuple(_materialise(item, depth + 1) for item in value)
    return value


def safe_load(fileobj, *, source: str = "<pickle>", encoding: str = "bytes"):
    """Load one plain-data pickle from ``fileobj`` (read whole) through :func:`check_opcodes` and
    :class:`SafeUnpickler`; malformed pickles raise :class:`DataError`, unsafe ones :class:`UnsafePickleError`."""
    data = fileobj.read()
    if not isinstance(data, bytes):
        data = bytes(data)
    check_opcodes(data, source=source)
    try:
        loaded = SafeUnpickler(io.BytesIO(data), source=source, encoding=encoding).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, MemoryError, OverflowError, RecursionError) as e:
        raise DataError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from None
    return _materialise(loaded)


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

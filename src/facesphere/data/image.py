"""Decoding encoded face images (JPEG, PNG, PGM, ...) to ``uint8`` RGB arrays with Pillow.

Every dataset reader in :mod:`facesphere.data` decodes through :func:`decode_image`, so every reader fails the
same way on a bad image: a :class:`~facesphere.errors.DataError` whose message starts with the *source* (a file
path, or ``train.rec#1234`` for a RecordIO record) and says what is wrong.

Truncated files are errors, not grey bottoms: the image is fully decoded with ``Image.load()`` while Pillow's
``ImageFile.LOAD_TRUNCATED_IMAGES`` is ``False`` (its default; facesphere never changes it, and
:func:`decode_image` refuses to run silently if some other code has switched it on -- see below).
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from typing import Literal, Sequence

import numpy as np
from PIL import Image, ImageFile

from ..errors import DataError, InvalidOptionError
from . import limits

__all__ = ["IMAGE_EXTENSIONS", "decode_image", "read_image", "is_image_file", "image_size", "as_rgb_uint8", "image_grid"]

#: File name extensions (lower case) that the folder readers treat as images. The same set as
#: :data:`facesphere.data.recordio.IMAGE_EXTENSIONS`, so a folder and its packed RecordIO agree on class ids.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pbm", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

ColorOrder = Literal["rgb", "bgr"]

_warned_truncated_flag = False


def is_image_file(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive) and is not a hidden file."""
    base = os.path.basename(os.fspath(name))
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def _check_color(color: str) -> None:
    if color not in ("rgb", "bgr"):
        raise InvalidOptionError(f"color must be 'rgb' or 'bgr', got {color!r}")


def _format_size(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]} (HxW)"


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert any decoded Pillow image to a contiguous ``uint8`` (H, W, 3) RGB array."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit int) grey, e.g. a 16-bit PGM: scale to 8 bit instead of clipping.
        # Pillow opens PGMs with maxval > 255 as mode "I" rescaled to 0..65535.
        arr = np.asarray(im).astype(np.int64)
        peak = int(arr.max()) if arr.size else 0
        if mode.startswith("I;16"):
            maxval = 65535
        else:
            maxval = 255 if peak <= 255 else (65535 if peak <= 65535 else peak)
        grey = np.clip((arr * 255 + maxval // 2) // maxval, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(im)
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if mode == "L":
        grey = np.asarray(im)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def _wrong_size(got: tuple[int, int], exp: tuple[int, int], source: str) -> DataError:
    return DataError(f"{source}: image is {_format_size(got)}, expected {_format_size(exp)}; "
                     "align/resize the images first or pass the matching expected size")


def decode_image(
    data: bytes | bytearray | memoryview,
    *,
    source: str,
    expected_size: tuple[int, int] | None = None,
    color: ColorOrder = "rgb",
) -> np.ndarray:
    """Decode encoded image bytes to a ``uint8`` array of shape ``(H, W, 3)``.

    Args:
        data: the encoded file (JPEG, PNG, PGM/PPM, BMP, WebP, TIFF -- whatever Pillow reads).
        source: what the bytes are, for error messages (a path, or ``"train.rec#17"``).
        expected_size: ``(height, width)``; when given, an image of another size is a :class:`DataError`.
        color: channel order of the result, ``"rgb"`` (default) or ``"bgr"`` (what OpenCV-trained models expect).

    Grey (``L``, 16-bit PGM), palette, ``LA``/``RGBA`` (alpha dropped), ``CMYK`` and ``YCbCr`` images are converted
    to three channels. Multi-frame files give their first frame.

    Raises:
        DataError: ``"<source>: cannot decode image: <why>"`` for empty, corrupt or truncated data,
            ``"<source>: image is 250x250 (HxW), expected 112x112 (HxW)"`` for a wrong size, and an image of more
            than :data:`facesphere.data.limits.MAX_IMAGE_PIXELS` pixels (both told from the header, before decoding).
    """
    global _warned_truncated_flag
    _check_color(color)
    if ImageFile.LOAD_TRUNCATED_IMAGES and not _warned_truncated_flag:  # pragma: no cover - defensive
        _warned_truncated_flag = True
        warnings.warn(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES was set to True by some other code: truncated images will now "
            "decode with grey bottoms instead of raising; facesphere expects it to stay False",
            RuntimeWarning,
            stacklevel=2,
        )
    if len(data) == 0:
        raise DataError(f"{source}: cannot decode image: the data is empty (0 bytes)")
    exp = None if expected_size is None else (int(expected_size[0]), int(expected_size[1]))
    try:
        with Image.open(io.BytesIO(data)) as im:
            # the header's size decides before any pixel is decoded: a few KB can claim 100 megapixels
            width, height = im.size
            if width * height > limits.MAX_IMAGE_PIXELS:
                raise DataError(
                    f"{source}: image is {height}x{width} (HxW) = {width * height} pixels, more than facesphere's "
                    f"limit of {limits.MAX_IMAGE_PIXELS} (facesphere.data.limits.MAX_IMAGE_PIXELS); not decoded"
                )
            if exp is not None and (height, width) != exp:
                raise _wrong_size((height, width), exp, source)
            im.load()  # force the full decode: truncated data raises here
            arr = _to_rgb_array(im)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{source}: cannot decode image: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error) as exc:
        # Pillow raises UnidentifiedImageError (an OSError) for unknown formats, OSError for truncated data,
        # and assorted ValueError/SyntaxError/struct.error from plugins on garbage headers.
        why = str(exc) or type(exc).__name__
        raise DataError(f"{source}: cannot decode image: {why}") from None
    if arr.ndim != 3 or arr.shape[2] != 3:  # pragma: no cover - _to_rgb_array guarantees this
        raise DataError(f"{source}: cannot decode image: unexpected decoded shape {arr.shape}")
    if exp is not None and (arr.shape[0], arr.shape[1]) != exp:
        raise _wrong_size((arr.shape[0], arr.shape[1]), exp, source)
    if color == "bgr":
        arr = arr[:, :, ::-1]
    if not arr.flags.c_contiguous or not arr.flags.writeable:
        arr = np.array(arr, order="C", copy=True)
    return arr


def read_image(
    path: str | os.PathLike[str],
    *,
    expected_size: tuple[int, int] | None = None,
    color: ColorOrder = "rgb",
) -> np.ndarray:
    """Read and decode one image file (see :func:`decode_image`); a missing/unreadable file is a DataError."""
    p = os.fspath(path)
    return decode_image(read_image_bytes(p), source=p, expected_size=expected_size, color=color)


def read_image_bytes(path: str | os.PathLike[str]) -> bytes:
    """The encoded bytes of image file ``path``; a missing / unreadable file raises :class:`DataError` naming it."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{p}: no such image file") from None
    except IsADirectoryError:
        raise DataError(f"{p}: is a directory, expected an image file") from None
    except OSError as exc:
        raise DataError(f"{p}: cannot read image file: {exc.strerror or exc}") from None
    except ValueError as exc:  # a path with a NUL byte (from a list file, say) is not a path
        raise DataError(f"{p!r}: not a valid file path ({exc})") from None


def image_size(data: bytes, *, source: str) -> tuple[int, int]:
    """``(height, width)`` from the image header only (no full decode); DataError if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{source}: cannot decode image: {exc}") from None
    return h, w


def as_rgb_uint8(image: np.ndarray, source: str) -> np.ndarray:
    """uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> contiguous uint8 (H, W, 3) RGB; DataError naming ``source``."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise DataError(f"{source}: expected uint8 pixels, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim != 3 or array.shape[2] != 3:
        raise DataError(f"{source}: expected an (H, W, 3) RGB or (H, W) grey image, got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise DataError(f"{source}: the image is empty (shape {array.shape})")
    return np.ascontiguousarray(array)


def image_grid(rows: Sequence[Sequence[np.ndarray | None]], *, gap: int = 2, fill: int = 255) -> np.ndarray:
    """uint8 RGB images laid out in rows (``None`` leaves a cell empty) as one uint8 ``(H, W, 3)`` sheet with ``gap``
    pixels of ``fill`` between cells; every cell is as large as the largest image."""
    cells = [image for row in rows for image in row if image is not None]
    if not cells:
        raise DataError("image_grid: no images to lay out")
    h = max(image.shape[0] for image in cells)
    w = max(image.shape[1] for image in cells)
    cols = max(len(row) for row in rows)
    sheet = np.full((len(rows) * (h + gap) + gap, cols * (w + gap) + gap, 3), fill, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            if image is None:
                continue
            image = as_rgb_uint8(image, "image_grid")
            y, x = gap + r * (h + gap), gap + c * (w + gap)
            sheet[y:y + image.shape[0], x:x + image.shape[1]] = image
    return sheet

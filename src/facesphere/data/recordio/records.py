"""The image-record header: ``IRHeader`` = ``'IfQQ'`` plus an optional float32 label array (mxnet's
``recordio.pack`` / ``unpack``)."""

from __future__ import annotations

import numbers
import struct
from collections import namedtuple

import numpy as np

from ...errors import DataError

IR_FORMAT = "<IfQQ"  # flag, label, id, id2 -- no padding: the same 24 bytes as mxnet's native 'IfQQ'
IR_STRUCT = struct.Struct(IR_FORMAT)
IR_SIZE = IR_STRUCT.size

IRHeader = namedtuple("IRHeader", ["flag", "label", "id", "id2"])
IRHeader.__doc__ = "The header of an image record: ``flag`` (label-array length), ``label``, ``id``, ``id2``."

#: File extensions :func:`pack_folder` treats as images (compared lower-case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".pgm", ".ppm", ".pbm", ".tif", ".tiff")




# --------------------------------------------------------------------------------------------------------------
# image records


def pack_image_record(label, image_bytes: bytes, id: int = 0, id2: int = 0) -> bytes:  # noqa: A002
    """Payload of an image record, as ``mx.recordio.pack(IRHeader(0, label, id, id2), image_bytes)``.

    A number label is stored in the header (``flag = 0``); a sequence is stored as a float32 array after the header
    (``flag = len``, header label 0).
    """
    if isinstance(label, numbers.Number) or (isinstance(label, np.ndarray) and label.ndim == 0):
        head = IR_STRUCT.pack(0, float(label), int(id), int(id2))
        return head + bytes(image_bytes)
    arr = np.asarray(label, dtype="<f4").ravel()
    head = IR_STRUCT.pack(arr.size, 0.0, int(id), int(id2))
    return head + arr.tobytes() + bytes(image_bytes)


def unpack_image_record(payload: bytes, *, source: str = "image record"):
    """Split an image-record payload into ``(IRHeader, label, image_bytes)``.

    ``label`` is a float when ``flag == 0`` and a float32 array of ``flag`` values otherwise (``IRHeader.label``
    then keeps the raw header float). ``source`` names the record in error messages.
    """
    if len(payload) < IR_SIZE:
        raise DataError(f"{source}: payload of {len(payload)} bytes is shorter than the {IR_SIZE}-byte image header")
    header = IRHeader(*IR_STRUCT.unpack_from(payload, 0))
    if header.flag == 0:
        return header, float(header.label), bytes(payload[IR_SIZE:])
    end = IR_SIZE + 4 * header.flag
    if end > len(payload):
        raise DataError(
            f"{source}: header declares a label array of {header.flag} floats but the payload has only "
            f"{len(payload) - IR_SIZE} bytes after the header"
        )
    label = np.frombuffer(payload, dtype="<f4", count=header.flag, offset=IR_SIZE).astype(np.float32)
    return header, label, bytes(payload[end:])


def detect_image_extension(data: bytes) -> str:
    """File extension (with dot) for encoded image bytes, from their magic bytes; ``.dat`` if unknown."""
    head = bytes(data[:16])
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return ".gif"
    if head.startswith(b"BM"):
        return ".bmp"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return ".webp"
    if head.startswith((b"II*\0", b"MM\0*")):
        return ".tif"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n":
        return {b"1": ".pbm", b"4": ".pbm", b"2": ".pgm", b"5": ".pgm", b"3": ".ppm", b"6": ".ppm"}[head[1:2]]
    return ".dat"

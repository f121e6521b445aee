"""MXNet RecordIO (``.rec`` + ``.idx``) in pure Python, with InsightFace's face-set layout.

Byte-compatible with mxnet's ``MXIndexedRecordIO`` and ``mx.recordio.pack``/``unpack`` (see
``docs/data-formats.md``). Three layers:

* framing: :class:`RecordWriter` / :class:`RecordReader` (magic word, ``lrecord`` = ``cflag << 29 | length``,
  4-byte padding, records split where the payload holds the magic word at a 4-byte boundary);
* the image-record header: :func:`pack_image_record` / :func:`unpack_image_record` (``IRHeader`` = ``'IfQQ'``
  plus an optional float32 label array);
* the InsightFace training-set layout: :class:`RecordIOFaceSet` (reading), :func:`pack_folder` and
  :func:`unpack` (folder of class folders <-> ``.rec``/``.idx``/``property``).

Readers open their file lazily in each process (state pickles the path, not the handle) and read with
``os.pread``, so one reader can be shared by threads and by DataLoader worker processes.
"""

from __future__ import annotations

from .faceset import RecordIOFaceSet
from .folders import pack_folder, unpack
from .framing import MAGIC, RecordReader, RecordWriter, encode_record, resolve_prefix
from .records import (
    IMAGE_EXTENSIONS,
    IRHeader,
    detect_image_extension,
    pack_image_record,
    unpack_image_record,
)

__all__ = [
    "MAGIC",
    "IRHeader",
    "RecordWriter",
    "RecordReader",
    "RecordIOFaceSet",
    "encode_record",
    "pack_image_record",
    "unpack_image_record",
    "pack_folder",
    "unpack",
    "resolve_prefix",
    "detect_image_extension",
    "IMAGE_EXTENSIONS",
]

"""Limits on what a data file may ask of facesphere before anything is allocated (see docs/security.md).

A small file can claim a huge size: a RecordIO ``property`` of 200 million classes, a 97 KB PNG of 100 megapixels.
Every size facesphere reads from a user's file is checked against the file's real size or against these limits
first; a file over a limit is a :class:`~facesphere.errors.DataError` naming it. The limits are module attributes,
read at each call: raise one (``facesphere.data.limits.MAX_IMAGE_PIXELS = 200_000_000``) for data that really needs
it.
"""

from __future__ import annotations

#: Most classes a training set may have. RecordIO stores class ids as float32, exact only up to 2**24; the largest
#: public face sets have a few million identities. A head of this many 512-d classes is already 32 GiB.
MAX_CLASSES = 1 << 24

#: Most pixels (width x height) an image may have; checked from the header, before decoding. 8192 x 8192: above any
#: face photo's needs (PIL's own warning starts at ~89 megapixels, its error at twice that).
MAX_IMAGE_PIXELS = 8192 * 8192

#: Largest config (YAML) file facesphere reads, and most values (after expanding YAML aliases) it may hold.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 100_000

__all__ = ["MAX_CLASSES", "MAX_IMAGE_PIXELS", "MAX_CONFIG_BYTES", "MAX_CONFIG_VALUES"]

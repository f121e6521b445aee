"""facesphere: hyperspherical face recognition in one toolkit.

Public API::

    import facesphere as fs
    fs.list_heads(); head = fs.build_head("arcface", embed_dim=512, num_classes=10_000)
    fs.list_backbones(); backbone = fs.build_backbone("iresnet50", embed_dim=512)

Importing the package has no side effects beyond defining these names.
"""

from __future__ import annotations

from .backbones import build_backbone, list_backbones
from .errors import DataError, FaceSphereError, InvalidOptionError, UnknownNameError, UnsafePickleError
from .heads import HeadOutput, build_head, list_heads

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "build_head",
    "list_heads",
    "HeadOutput",
    "build_backbone",
    "list_backbones",
    "FaceSphereError",
    "UnknownNameError",
    "InvalidOptionError",
    "DataError",
    "UnsafePickleError",
]

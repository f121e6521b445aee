"""facesphere: hyperspherical face recognition in one toolkit.

Public API::

    import facesphere as fs
    fs.list_heads(); head = fs.build_head("arcface", embed_dim=512, num_classes=10_000)
    fs.list_backbones(); backbone = fs.build_backbone("iresnet50", embed_dim=512)
    rec = fs.FaceRecognizer.from_path("runs/my_run", detector="scrfd_2.5g_bnkps.onnx")
    rec.verify("a.jpg", "b.jpg")

Importing the package has no side effects beyond defining these names.
"""

from __future__ import annotations

from .backbones import build_backbone, list_backbones
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    FaceSphereError,
    FaceSphereWarning,
    GalleryLockedError,
    InvalidOptionError,
    NoFaceError,
    OutputError,
    RunExistsError,
    TrainingError,
    TrainingInterrupted,
    UnknownNameError,
    UnsafePickleError,
)
from .heads import HeadOutput, build_head, list_heads
from .infer.embedders import load_embedder
from .infer.recognizer import FaceRecognizer
from .run import load_config, load_run
from .version import __version__

__all__ = [
    "__version__",
    "build_head",
    "list_heads",
    "HeadOutput",
    "FaceRecognizer",
    "load_embedder",
    "build_backbone",
    "list_backbones",
    "load_config",
    "load_run",
    "FaceSphereError",
    "UnknownNameError",
    "InvalidOptionError",
    "ConfigError",
    "DataError",
    "UnsafePickleError",
    "NoFaceError",
    "OutputError",
    "CheckpointError",
    "TrainingError",
    "TrainingInterrupted",
    "RunExistsError",
    "GalleryLockedError",
    "FaceSphereWarning",
]

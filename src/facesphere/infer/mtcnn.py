"""Deprecated import path: this module moved to :mod:`facesphere.infer.detectors.mtcnn` (docs/architecture.md); the old path
re-exports it for one release (removed in facesphere 0.3)."""

import warnings

from .detectors.mtcnn import *  # noqa: F401,F403
from .detectors.mtcnn import __all__  # noqa: F401

warnings.warn("facesphere.infer.mtcnn moved to facesphere.infer.detectors.mtcnn; import it from there (the old path goes in facesphere 0.3)",
              DeprecationWarning, stacklevel=2)

"""Deprecated import path: this module moved to :mod:`facesphere.infer.embedders` (docs/architecture.md); the old path
re-exports it for one release (removed in facesphere 0.3)."""

import warnings

from .embedders import *  # noqa: F401,F403
from .embedders import __all__  # noqa: F401

warnings.warn("facesphere.infer.models moved to facesphere.infer.embedders; import it from there (the old path goes in facesphere 0.3)",
              DeprecationWarning, stacklevel=2)

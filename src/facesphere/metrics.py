"""Deprecated import path: this module moved to :mod:`facesphere.evaluate.metrics` (docs/architecture.md); the old path
re-exports it for one release (removed in facesphere 0.3)."""

import warnings

from .evaluate.metrics import *  # noqa: F401,F403
from .evaluate.metrics import __all__  # noqa: F401

warnings.warn("facesphere.metrics moved to facesphere.evaluate.metrics; import it from there (the old path goes in facesphere 0.3)",
              DeprecationWarning, stacklevel=2)

"""Deprecated import path: this module moved to :mod:`facesphere.workflows.invert` (docs/architecture.md); the old path
re-exports it for one release (removed in facesphere 0.3)."""

import warnings

from .workflows.invert import *  # noqa: F401,F403
from .workflows.invert import __all__  # noqa: F401

warnings.warn("facesphere.inversion moved to facesphere.workflows.invert; import it from there (the old path goes in facesphere 0.3)",
              DeprecationWarning, stacklevel=2)
